"""Quality gate of the embedded Fashion-MNIST prior (issue 3).

Figures: class agreement (the share of class-conditional samples a classifier assigns to their own
class; gate >= 85% over 1000 samples) and within-class diversity (mean pairwise distance of
classifier features within a class, beside the same figure for real test images, plus the pixel
L1 figure); in the classifier's penultimate feature space, the Frechet distance between real and
sampled features (beside the same figure for two disjoint halves of real images) and k-NN precision and
recall (Kynkaanniemi et al. 2019, k = 3); with --distill-check, what distillation needs: ConvNet-3
trained on 10 random samples per class against 10 random real images per class, and at IPC 1 on the
average-noise latent of each class against one random real image (the `dc` protocol, 5 networks,
--draws draws). The classifier is the shipped proxy `embedded:fashion-mnist` when it loads; otherwise
a stand-in ConvNet trained here for about a minute (the output says which one gave the figures).

    python bench/bench_prior_quality.py [--generator fashion-mnist | --checkpoint checkpoints/prior |
                                         --checkpoint assets/training/fashion_mnist_prior_state.pt]
                                        [--classifier auto|proxy|standin] [--distill-check] [--threads 1]
                                        [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.data import load_dataset  # noqa: E402
from engine.generators.embedded import EmbeddedConfig, EmbeddedGenerator, load_embedded  # noqa: E402
from engine.prior.grid import save_grid  # noqa: E402

GATE = 0.85


class StandInNet(nn.Module):
    """A small ConvNet, only for when the proxy classifier is not available yet."""

    def __init__(self, seed: int):
        super().__init__()
        torch_gen_state = torch.Generator().manual_seed(seed)
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(128 * 16, 256), nn.ReLU())
        self.head = nn.Linear(256, 10)
        with torch.no_grad():  # explicit, seeded initialisation instead of the global RNG
            for p in self.parameters():
                if p.dim() > 1:
                    p.copy_(torch.randn(p.shape, generator=torch_gen_state) * (2 / p[0].numel()) ** 0.5)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def train_stand_in(train, steps: int, seed: int) -> StandInNet:
    net = StandInNet(seed)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(steps):
        idx = torch.randint(len(train), (128,), generator=gen)
        x = train.images[idx].float() / 127.5 - 1
        loss = F.cross_entropy(net(x), train.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def classifier_and_features(kind: str, train, steps: int, seed: int, cache: Path | None):
    """(name, logits_fn, features_fn); features are pooled penultimate activations."""
    if kind in ("auto", "proxy"):
        try:
            from engine.classifiers import load_classifier
            proxy = load_classifier("embedded:fashion-mnist", "cpu")
        except (ImportError, ValueError) as e:
            if kind == "proxy":
                raise
            print(f"proxy classifier unavailable ({e}); training a stand-in ConvNet for {steps} steps")
        else:
            return "proxy embedded:fashion-mnist", proxy, _hooked_features(proxy, proxy.cam_layer)
    net = _cached_stand_in(train, steps, seed, cache)
    return f"stand-in ConvNet ({steps} Adam steps of batch 128, seed {seed})", net, net.features


def _cached_stand_in(train, steps: int, seed: int, cache: Path | None) -> StandInNet:
    """Train the stand-in, or reload it from `cache` when that file was trained with the same steps and seed."""
    if cache is not None and cache.is_file():
        blob = torch.load(cache, weights_only=True)
        if blob["steps"] == steps and blob["seed"] == seed:
            net = StandInNet(seed)
            net.load_state_dict(blob["state_dict"])
            return net.eval()
    net = train_stand_in(train, steps, seed)
    if cache is not None:
        torch.save({"steps": steps, "seed": seed, "state_dict": net.state_dict()}, cache)
    return net


def _hooked_features(model: nn.Module, layer: nn.Module):
    def features(x: torch.Tensor) -> torch.Tensor:
        grabbed = []
        handle = layer.register_forward_hook(lambda m, i, o: grabbed.append(o))
        try:
            model(x)
        finally:
            handle.remove()
        return grabbed[0].mean(dim=(2, 3))
    return features


@torch.no_grad()
def generate(G: EmbeddedGenerator, per_class: int, seed: int, psi: float) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(G.num_classes).repeat_interleave(per_class)
    z = torch.randn(len(labels), G.z_dim, generator=gen)
    images = torch.cat([G(G.mapping(zc, F.one_hot(lc, G.num_classes).float(), psi))
                        for zc, lc in zip(z.split(200), labels.split(200))])
    return images, labels


def within_class_distance(x: torch.Tensor, labels: torch.Tensor, p: float) -> float:
    """Mean over classes of the mean pairwise distance (L_p on flattened rows) within the class."""
    per_class = []
    for c in labels.unique():
        rows = x[labels == c].flatten(1)
        d = torch.cdist(rows, rows, p=p)
        n = len(rows)
        per_class.append(d.sum() / (n * (n - 1)))
    return torch.stack(per_class).mean().item()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) of two feature sets (rows are samples)."""
    from scipy import linalg
    a, b = a.double().numpy(), b.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(s_a @ s_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * root.real))


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """k-NN manifolds: precision = share of fakes inside some real sample's k-NN ball, recall the reverse."""
    def covered(ref: torch.Tensor, query: torch.Tensor) -> float:
        radii = torch.cdist(ref, ref).kthvalue(k + 1, dim=1).values  # +1: each point is its own nearest
        return (torch.cdist(query, ref) <= radii.unsqueeze(0)).any(1).float().mean().item()
    return covered(real, fake), covered(fake, real)


@torch.no_grad()
def measure(G, logits_fn, features_fn, real_images, real_labels, per_class: int, seed: int, psi: float,
            real_half: torch.Tensor) -> dict:
    images, labels = generate(G, per_class, seed, psi)
    pred = torch.cat([logits_fn(x).argmax(1) for x in images.split(200)])
    per_class_acc = [(pred[labels == c] == c).float().mean().item() for c in range(G.num_classes)]
    feats = torch.cat([features_fn(x) for x in images.split(200)])
    real_feats = torch.cat([features_fn(x) for x in real_images.split(200)])
    other_feats = torch.cat([features_fn(x) for x in real_half.split(200)])
    precision, recall = precision_recall(real_feats, feats)
    return {"psi": psi, "samples": len(labels), "class_agreement": (pred == labels).float().mean().item(),
            "per_class_agreement": [round(a, 3) for a in per_class_acc],
            "feature_diversity": within_class_distance(feats, labels, 2.0),
            "feature_diversity_real": within_class_distance(real_feats, real_labels, 2.0),
            "frechet_distance": frechet_distance(real_feats, feats),
            "frechet_distance_real_vs_real": frechet_distance(real_feats, other_feats),
            "precision": precision, "recall": recall,
            "pixel_l1_diversity": within_class_distance(images, labels, 1.0) / images[0].numel(),
            "pixel_l1_diversity_real": within_class_distance(real_images, real_labels, 1.0) / images[0].numel()}


def distill_check(G, train, test, draws: int, epochs: int, seed: int) -> dict:
    """ConvNet-3 (dc protocol, 5 networks) on 10 samples per class vs 10 random real images per class,
    and at IPC 1 on each class's average-noise latent vs one random real image; `draws` draws each."""
    from engine.evaluate import evaluate_synset, get_protocol
    from engine.data import RealSampler
    from engine.streams import Streams
    info, protocol = train.info, get_protocol("dc", epochs)
    out = {"epochs": epochs, "draws": draws, "ipc10_samples": [], "ipc10_real": [], "ipc1_avg": [], "ipc1_real": []}
    for draw in range(draws):
        streams = Streams(seed + draw)
        sampler = RealSampler(train, "cpu", streams["real"])
        for ipc, real_key in ((10, "ipc10_real"), (1, "ipc1_real")):
            real, labels = sampler.sample_all(ipc)
            out[real_key].append(evaluate_synset(real, labels, test, "convnet", protocol, 5, draw).mean)
        labels = torch.arange(10).repeat_interleave(10)
        c = F.one_hot(labels, 10).float()
        with torch.no_grad():
            z = torch.randn(len(labels), G.z_dim, generator=streams["latents"])
            fake = info.from_generator(G(G.mapping(z, c)))
            avg = info.from_generator(G(G.mean_ws(torch.eye(10), n=1000, generator=streams["latents"])))
        out["ipc10_samples"].append(evaluate_synset(fake, labels, test, "convnet", protocol, 5, draw).mean)
        out["ipc1_avg"].append(evaluate_synset(avg, torch.arange(10), test, "convnet", protocol, 5, draw).mean)
    return out


def load_generator_under_test(args) -> tuple[EmbeddedGenerator, str]:
    if args.checkpoint is None:
        G = load_embedded(args.generator, "cpu")
        return G, f"asset {args.generator} (meta {G.meta})"
    path = Path(args.checkpoint)  # a training folder, or a state file (train-prior --state-file)
    state = torch.load(path / "checkpoint.pt" if path.is_dir() else path, map_location="cpu", weights_only=True)
    G = EmbeddedGenerator(EmbeddedConfig(**state["config"]["generator"]))
    G.load_state_dict(state["G_ema"])
    return G.eval().requires_grad_(False), f"checkpoint {args.checkpoint} at {state['images_seen'] / 1000:.1f} kimg"


def real_per_class(test, per_class: int, skip: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_class` test images of every class after the first `skip` ones ([-1, 1] range)."""
    idx = torch.cat([torch.nonzero(test.labels == c).flatten()[skip:skip + per_class] for c in range(10)])
    return test.images[idx].float() / 127.5 - 1, test.labels[idx]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="fashion-mnist", help="embedded prior name (the shipped asset)")
    parser.add_argument("--checkpoint", default=None, help="measure the EMA generator of a training folder instead")
    parser.add_argument("--classifier", choices=("auto", "proxy", "standin"), default="auto")
    parser.add_argument("--standin-steps", type=int, default=1200, help="stand-in training length (a minute or two)")
    parser.add_argument("--standin-cache", type=Path, default=None, help="save/reuse the trained stand-in here")
    parser.add_argument("--per-class", type=int, default=100, help="samples per class (10 classes)")
    parser.add_argument("--psi", type=float, nargs="+", default=[1.0], help="truncation values to measure")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--grid", type=Path, default=None, help="also write a class-labelled sample grid PNG here")
    parser.add_argument("--distill-check", action="store_true",
                        help="also train ConvNet-3 on samples vs real images (10 and 1 per class; minutes per draw)")
    parser.add_argument("--draws", type=int, default=3, help="draws of the distill check")
    parser.add_argument("--eval-epochs", type=int, default=300, help="epochs of each distill-check network")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    G, source = load_generator_under_test(args)
    if args.grid:
        save_grid(G, args.grid, load_dataset("fashion-mnist", "test").info.class_names, per_class=12, seed=args.seed)
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    name, logits_fn, features_fn = classifier_and_features(args.classifier, train, args.standin_steps, args.seed,
                                                      args.standin_cache)
    real_images, real_labels = real_per_class(test, args.per_class)
    real_half, _ = real_per_class(test, args.per_class, skip=args.per_class)  # disjoint: the real-vs-real figure
    real_hit = torch.cat([logits_fn(x).argmax(1) for x in real_images.split(200)]) == real_labels
    real_per_class_acc = [round(real_hit[real_labels == c].float().mean().item(), 3) for c in range(10)]
    result = {"generator": source, "classifier": name, "classifier_real_test_agreement": real_hit.float().mean().item(),
              "classifier_real_per_class": real_per_class_acc,
              "runs": [measure(G, logits_fn, features_fn, real_images, real_labels, args.per_class, args.seed, psi,
                               real_half) for psi in args.psi]}
    if args.distill_check:
        result["distill_check"] = distill_check(G, train, test, args.draws, args.eval_epochs, args.seed)
    print(json.dumps(result, indent=2))
    for run in result["runs"]:
        verdict = "PASS" if run["class_agreement"] >= GATE else "FAIL"
        print(f"psi {run['psi']}: class agreement {run['class_agreement']:.1%} ({verdict}, gate {GATE:.0%}); "
              f"feature diversity {run['feature_diversity']:.3f} vs real {run['feature_diversity_real']:.3f}; "
              f"Frechet {run['frechet_distance']:.3f} (real vs real {run['frechet_distance_real_vs_real']:.3f}); "
              f"precision {run['precision']:.3f}, recall {run['recall']:.3f}; classifier: {name}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
