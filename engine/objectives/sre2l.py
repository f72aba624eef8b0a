"""SRe²L's recover loss (Yin, Xing & Shen, NeurIPS 2023): a frozen BatchNorm teacher's cross-entropy on
augmented synthetic images plus how far each BN layer's batch statistics are from its running ones.

For one batch x of synthetic images with labels y, with A a random augmentation (one random resized crop
at full size, a horizontal flip and a circular roll, drawn once for the whole batch):

    L(x) = CE(T(A(x)), y) + r_bn * sum_l m_l (||mu_l - mean_l(A(x))||_2 + ||sigma2_l - var_l(A(x))||_2)

where T is the teacher, mean_l/var_l are the per-channel mean and biased variance over (N, H, W) of the
input of the teacher's l-th BatchNorm2d, mu_l/sigma2_l its running statistics, and m_l = 10 for the
first BN layer and 1 for the others. The norms are plain, not squared. Facts and sources: SRe²L's recover
code (VILA-Lab/SRe2L `recover/utils.py:92-101`, `data_synthesis.py:27-88`, `recover_tiny.py:49-72`),
summarised in shared/notes/sre2l_facts.md section 1.

Batches as in SRe²L: the images with the same index inside their class form one group (SRe²L recovers
image ipc_id of every class together), cut into batches of `batch_size` distinct classes; each batch has
its own BN statistics and its own augmentation draw, and the loss is the sum over batches, so each
image's gradient is exactly the one SRe²L's batch would give it. Draws come from the run's "dsa" stream
(ctx.dsa_stream), one per batch, never from the global generator.

The teacher reads images in the generators' [-1, 1] range (a ProxyClassifier normalises them its own
way); the objective sees the dataset's normalised space, so it converts with info.to_generator first.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..data.imagenet_subsets import imagenet_indices, subsets
from .context import MatchContext
from .registry import ObjectiveSpec, PixelAdam, register

# SRe²L's defaults, by the recipe the dataset follows (sre2l_facts.md section 1; the recover scripts):
IMAGENET_R_BN = 0.01     # recover/recover.sh (the code's own default, 0.05, is not what the paper ran)
TINY_R_BN = 1.0          # recover_tiny.sh
FIRST_BN_MULTIPLIER = 10.0  # first_bn_multiplier, never changed by the scripts
BATCH_SIZE = 100         # classes recovered together, both scripts
CROP_SCALE = (0.08, 1.0)  # RandomResizedCrop's default scale; ratio (3/4, 4/3)
# The roll, as a fraction of the image side: [0, 32] px at 224 on ImageNet-1K (data_synthesis.py),
# [-4, 4] px at 64 on Tiny (recover_tiny.py).
IMAGENET_ROLL = (0.0, 32 / 224)
TINY_ROLL = (-4 / 64, 4 / 64)
IMAGENET_STYLE = ("imagenet-1k",)  # and the ImageNet subsets (recipe())
# The recover optimiser: Adam on the pixels, a cosine rate to 0, pixels clamped to [0, 1] after each step.
ADAM_BETAS = (0.5, 0.9)
ADAM_EPS = 1e-8
IMAGENET_PIXEL_LR = 0.25  # recover/recover.sh
TINY_PIXEL_LR = 0.1       # recover_tiny.sh


@dataclass(frozen=True)
class SRe2LParams:
    r_bn: float = TINY_R_BN
    first_bn_multiplier: float = FIRST_BN_MULTIPLIER
    batch_size: int = BATCH_SIZE
    crop_scale: tuple[float, float] = CROP_SCALE
    flip: bool = True
    roll: tuple[float, float] = TINY_ROLL  # (low, high) offsets as fractions of the side, both inclusive

    def __post_init__(self) -> None:
        if not (math.isfinite(self.r_bn) and self.r_bn >= 0):
            raise ValueError(f"r_bn must be a finite number >= 0, got {self.r_bn}")
        if not self.first_bn_multiplier >= 0:
            raise ValueError(f"first_bn_multiplier must be >= 0, got {self.first_bn_multiplier}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if not -1 < self.roll[0] <= self.roll[1] < 1:
            raise ValueError(f"roll must be (low, high) fractions of the side in (-1, 1), got {self.roll}")


# ----------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class CropFlipRoll:
    """One draw for a whole batch: crop box (top, left, height, width), flip, roll (dy, dx) in pixels."""

    top: int
    left: int
    height: int
    width: int
    flip: bool
    dy: int
    dx: int


def _uniform(low: float, high: float, gen: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen, dtype=torch.float64))


def _randint(low: int, high: int, gen: torch.Generator) -> int:
    """An integer in [low, high] (both inclusive)."""
    return int(torch.randint(low, high + 1, (1,), generator=gen))


def crop_box(h: int, w: int, scale: tuple[float, float], gen: torch.Generator,
             ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision RandomResizedCrop.get_params, drawing from `gen`: (top, left, height, width)."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(scale[0], scale[1], gen)
        aspect = math.exp(_uniform(log_ratio[0], log_ratio[1], gen))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return _randint(0, h - ch, gen), _randint(0, w - cw, gen), ch, cw
    in_ratio = w / h  # fallback: the largest centred crop of an allowed aspect ratio
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def draw_augmentation(h: int, w: int, params: SRe2LParams, gen: torch.Generator) -> CropFlipRoll:
    top, left, ch, cw = crop_box(h, w, params.crop_scale, gen)
    flip = params.flip and bool(torch.rand((), generator=gen) < 0.5)
    dy = _randint(round(params.roll[0] * h), round(params.roll[1] * h), gen)
    dx = _randint(round(params.roll[0] * w), round(params.roll[1] * w), gen)
    return CropFlipRoll(top, left, ch, cw, flip, dy, dx)


def apply_augmentation(x: torch.Tensor, a: CropFlipRoll) -> torch.Tensor:
    """Crop, resize back to the full size (bilinear), flip, roll; differentiable in x."""
    h, w = x.shape[-2:]
    x = x[..., a.top:a.top + a.height, a.left:a.left + a.width]
    if (a.height, a.width) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    if a.flip:
        x = x.flip(-1)
    if a.dy or a.dx:
        x = torch.roll(x, shifts=(a.dy, a.dx), dims=(-2, -1))
    return x


# ----------------------------------------------------------------------------- the loss


def bn_layers(teacher: nn.Module) -> list[nn.BatchNorm2d]:
    """The teacher's BatchNorm2d layers in module order (SRe²L hooks them the same way)."""
    return [m for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)]


@contextmanager
def bn_statistics(layers: list[nn.BatchNorm2d]) -> Iterator[dict[int, tuple[torch.Tensor, torch.Tensor]]]:
    """Inside the block, forwards record each layer's input (mean, biased variance) per channel over
    (N, H, W), by layer position; a layer called twice keeps its last call (as SRe²L's hook does)."""
    stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(i: int):
        def record(module, inputs, output):
            x = inputs[0]
            stats[i] = (x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False))
        return record

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        yield stats
    finally:
        for handle in handles:
            handle.remove()


def bn_distance(layers: list[nn.BatchNorm2d], stats: dict[int, tuple[torch.Tensor, torch.Tensor]],
                first_multiplier: float = FIRST_BN_MULTIPLIER) -> torch.Tensor:
    """sum_l m_l (||running_mean_l - mean_l||_2 + ||running_var_l - var_l||_2), m_0 = first_multiplier."""
    missing = [i for i in range(len(layers)) if i not in stats]
    if missing:
        raise RuntimeError(f"BatchNorm layer(s) {missing} of the teacher were not run by its forward")
    total = None
    for i, layer in enumerate(layers):
        mean, var = stats[i]
        term = (torch.linalg.vector_norm(layer.running_var.to(var.dtype) - var)
                + torch.linalg.vector_norm(layer.running_mean.to(mean.dtype) - mean))
        term = term * (first_multiplier if i == 0 else 1.0)
        total = term if total is None else total + term
    return total


def recover_loss(teacher: nn.Module, images_pm1: torch.Tensor, labels: torch.Tensor, r_bn: float,
                 first_multiplier: float = FIRST_BN_MULTIPLIER,
                 layers: list[nn.BatchNorm2d] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, CE, BN distance) of one batch already augmented, in the teacher's input range."""
    layers = bn_layers(teacher) if layers is None else layers
    with bn_statistics(layers) as stats:
        logits = teacher(images_pm1)
    ce = F.cross_entropy(logits, labels)
    bn = bn_distance(layers, stats, first_multiplier)
    return ce + r_bn * bn, ce, bn


def recover_batches(labels: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Indices of SRe²L's batches: images grouped by their index inside their class (image k of every
    class together, classes in order), each group cut into chunks of `batch_size`."""
    labels = labels.cpu()
    rank = torch.empty_like(labels)
    seen: dict[int, int] = {}
    for i, c in enumerate(labels.tolist()):
        rank[i] = seen.get(c, 0)
        seen[c] = rank[i].item() + 1
    batches = []
    for k in range(int(rank.max()) + 1 if len(labels) else 0):
        group = torch.nonzero(rank == k).flatten()
        group = group[torch.argsort(labels[group], stable=True)]
        batches.extend(group.split(batch_size))
    return batches


class SRe2LObjective:
    """One update per iteration; the teacher is frozen and nothing else changes, so nothing to checkpoint
    but the streams (the run keeps those)."""

    updates_per_iteration = 1

    def __init__(self, params: SRe2LParams, ctx: MatchContext, teacher: nn.Module):
        self.params = params
        self.ctx = ctx
        self.teacher = teacher.eval().requires_grad_(False)
        self.layers = bn_layers(teacher)
        if not self.layers:
            raise ValueError("SRe²L needs a teacher with BatchNorm2d layers (their running statistics are half "
                             "its loss); this classifier has none")
        self.last_terms: dict[str, float] = {}

    def start_iteration(self) -> None:
        pass

    def loss_and_grad(self, syn: torch.Tensor, labels: torch.Tensor) -> tuple[float, torch.Tensor]:
        """The summed loss of all batches and its gradient, one batch's graph at a time."""
        info, p = self.ctx.real.info, self.params
        grad = torch.zeros_like(syn)
        total = ce_sum = bn_sum = 0.0
        shard = self.ctx.shard
        # On several processes the batches are the whole set's; every batch draws its augmentation, held
        # here or not, so each batch's draw is the one it gets in a single process.
        for index in recover_batches(labels if shard is None else shard.labels, p.batch_size):
            draw = draw_augmentation(syn.shape[-2], syn.shape[-1], p, self.ctx.dsa_stream)
            index = index.to(syn.device) if shard is None else shard.local(index.to(syn.device))
            if index is None:
                continue
            leaf = syn[index].detach().requires_grad_(True)
            images = info.to_generator(apply_augmentation(leaf, draw))
            loss, ce, bn = recover_loss(self.teacher, images, labels[index], p.r_bn, p.first_bn_multiplier, self.layers)
            (g,) = torch.autograd.grad(loss, leaf)
            grad[index] = g
            total, ce_sum, bn_sum = total + loss.item(), ce_sum + ce.item(), bn_sum + bn.item()
        self.last_terms = {"ce": ce_sum, "bn": bn_sum}
        return total, grad

    def after_update(self, current, labels: torch.Tensor, update: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


# ----------------------------------------------------------------------------- registration


def recipe(dataset: str) -> str:
    """"imagenet" (ImageNet-1K and its subsets: ImageNet-sized images, an ImageNet teacher) or "tiny"
    (Tiny-ImageNet, and the small datasets, whose recipe SRe²L's small-dataset code shares)."""
    return "imagenet" if dataset in IMAGENET_STYLE or dataset in subsets() else "tiny"


def default_params(dataset: str, **overrides) -> SRe2LParams:
    if recipe(dataset) == "imagenet":
        base = dict(r_bn=IMAGENET_R_BN, roll=IMAGENET_ROLL)
    else:
        base = dict(r_bn=TINY_R_BN, roll=TINY_ROLL)
    return SRe2LParams(**(base | {k: v for k, v in overrides.items() if v is not None}))


def sre2l_options(config) -> dict:
    """The teacher's spec and the dataset's defaults. A Tiny-ImageNet run has no usable default teacher
    (the dataset's default classifier is the 1000-class ImageNet ResNet-18), so it must name one."""
    if config.dataset == "tiny-imagenet" and config.classifier is None:
        raise ValueError("SRe²L on tiny-imagenet needs its teacher: train a ResNet-18 with `python -m engine "
                         "train-classifier --dataset tiny-imagenet --data-root DIR --out DIR --export teacher.pt` "
                         "and pass --classifier trained:resnet18=teacher.pt")
    options = {"teacher": config.classifier_spec, "dataset": config.dataset}
    r_bn = getattr(config, "r_bn", None)  # not a RunConfig field yet: the dataset's default
    if r_bn is not None:
        options["r_bn"] = r_bn
    return options


def load_teacher(ctx: MatchContext, spec: str | None, dataset: str) -> nn.Module:
    """The context's teacher when the run was given one, else the classifier `spec` names; its logits
    restricted to the dataset's classes when it is an ImageNet classifier and the dataset a subset."""
    teacher = ctx.teacher
    if teacher is None:
        if spec is None:
            raise ValueError("SRe²L needs a teacher: pass --classifier")
        from ..classifiers import load_classifier  # heavy (torchvision); only SRe²L runs need it
        teacher = load_classifier(spec, ctx.device)
    width = getattr(teacher, "num_classes", None)
    if width is not None and width != ctx.num_classes:
        if dataset in subsets() and hasattr(teacher, "restricted_to"):
            teacher = teacher.restricted_to(imagenet_indices(dataset))
        else:
            raise ValueError(f"the SRe²L teacher has {width} classes but {dataset} has {ctx.num_classes}; "
                             "pass --classifier with a teacher trained on this dataset")
    return teacher.to(ctx.device)


def build_sre2l(ctx: MatchContext, ipc: int, teacher: str | None = None, dataset: str | None = None,
                r_bn: float | None = None, **overrides) -> SRe2LObjective:
    """Other objectives' keyword arguments are accepted and ignored."""
    dataset = dataset or ctx.real.info.name
    params = default_params(dataset, r_bn=r_bn)
    return SRe2LObjective(params, ctx, load_teacher(ctx, teacher, dataset))


def pixel_rate(dataset: str) -> float:
    """SRe²L's Adam rate on pixels in normalised space: 0.25 (recover.sh), 0.1 on Tiny (recover_tiny.sh)."""
    return IMAGENET_PIXEL_LR if recipe(dataset) == "imagenet" else TINY_PIXEL_LR


register(ObjectiveSpec(
    name="sre2l", label="SRe²L: BatchNorm-statistics recovery from a frozen teacher", params=SRe2LParams,
    uses_dsa=False,  # its own crop/flip/roll, drawn from the "dsa" stream; no DSA parameters
    # Latent spaces run the engine's SGD; these (W+, f) rates are ours, chosen by the loss on the embedded
    # default at IPC 1: 0.01/1 lowered it most of 0.001-0.1 x 0.01-10 over 30 GLaD steps.
    latent_lr=(0.01, 1.0), pixel_lr=TINY_PIXEL_LR,
    # Pixels run SRe²L's own optimiser (sre2l_facts.md section 1; data_synthesis.py:46-53, utils.py:24-70).
    pixel_optimizer=PixelAdam(betas=ADAM_BETAS, eps=ADAM_EPS, rate=pixel_rate),
    steps_per_space=100,  # DC's count, not tuned; SRe²L runs 4,000 Adam iterations (1,000 in its code default)
    class_group=BATCH_SIZE,  # one BatchNorm batch's classes share their statistics: kept in one process
    build=build_sre2l, options=sre2l_options))
