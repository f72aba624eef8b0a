"""What a run is made of, built once and never changed: data, generator, proxy, objective, plan, streams.

Split as in pytorch-ignite: this frozen context, the RunState that the step moves (state.py), and the
step functions (loop.py). Everything random draws from `streams`, one named stream per consumer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import objectives
from ..augment import DSAParams
from ..classifiers import load_classifier
from ..data import DatasetInfo, ImageSet, RealSampler, dataset_info, holdout_split, load_dataset
from ..data.imagenet_subsets import imagenet_indices, subsets
from ..distance import ClassRelevantDistance
from ..distributed import Distributed, Shard, check_groups, class_shard
from ..generators import LayeredGenerator, PixelGenerator, generator_record, load_generator
from ..nets import get_network
from ..provenance import provenance
from ..streams import Streams
from ..teacher import teacher_record
from .config import RunConfig
from .limits import check_memory
from .methods import Method, get_method


@dataclass(frozen=True)
class SpacePlan:
    index: int
    cuts: tuple[int, ...]      # the generator cuts this space covers; optimisation happens at cuts[0]
    name: str                  # the first cut's name

    @property
    def cut(self) -> int:
        return self.cuts[0]


@dataclass(frozen=True, eq=False)
class RunContext:
    config: RunConfig
    run_dir: Path
    method: Method
    info: DatasetInfo
    val: ImageSet | None                 # held-out training images for the accuracy pick
    sampler: RealSampler
    G: LayeredGenerator
    plan: tuple[SpacePlan, ...]
    steps_per_space: int
    labels: torch.Tensor                 # class-major: 0,0,..,1,1,..
    classes: torch.Tensor                # each image's class in the generator's conditioning
    distance: ClassRelevantDistance | None
    distance_note: str                   # why the distance is not measured ("" when it is)
    objective: object
    streams: Streams
    provenance: dict
    # The run's classifier as its folder records it ({"spec", "sha256"}, engine/teacher.py): what a
    # soft-label evaluation loads as the teacher. Hashed once here, not at every run.json write.
    teacher: dict = field(default_factory=dict)
    # The processes of the run (one without torchrun) and this one's images: `labels` and `classes` above
    # are this process's rows of the whole set, `shard` says which and holds the whole set's.
    dist: Distributed = field(default_factory=Distributed)
    shard: Shard | None = None
    # The generator's weights as run.json records them ({"spec", "sha256"[, "kimg"]}): which prior snapshot
    # or checkpoint file a result came from, hashed once here like the teacher.
    generator_weights: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.labels.device

    @property
    def total_steps(self) -> int:
        return self.steps_per_space * len(self.plan)


def build_context(config: RunConfig, run_dir: Path, generator: LayeredGenerator | None = None,
                  classifier=None, dist: Distributed | None = None) -> RunContext:
    """Load everything the config names; `generator`/`classifier` replace what its specs would load;
    `dist`: the processes the run is spread over (default: this one alone)."""
    dist = dist or Distributed()
    check_distributable(config, dist.world)
    device = torch.device(config.device)
    streams = Streams(config.seed)
    info = dataset_info(config.dataset)
    method = get_method(config.method)
    train, val = _splits(config, streams)
    sampler = RealSampler(train, device, streams["real"])
    G = _generator(config, method, info, generator, device)
    plan = tuple(SpacePlan(i, cuts, G.layers[cuts[0]].name)
                 for i, cuts in enumerate(method.plan(config, len(G.layers))))
    # Before the latents, the distance's real set and the objective take any memory: one sentence, not
    # allocator text, when the device could not hold this run even empty.
    check_memory(config, G, info.num_classes, info.channels, info.resolution, [p.cut for p in plan])
    labels = torch.arange(info.num_classes, device=device).repeat_interleave(config.ipc)
    idx = _class_indices(info, G.num_classes)
    classes = labels if idx is None else torch.tensor(idx, device=device)[labels]
    group = objectives.get_objective(config.objective).class_group
    shard = class_shard(labels, classes, info.num_classes, group or 1, dist)
    distance, note = _distance(config, info, sampler, streams, classifier, device, shard)
    return RunContext(config, Path(run_dir), method, info, val, sampler, G, plan,
                      method.steps_per_space(config, len(G.layers)), shard.take(labels), shard.take(classes),
                      distance, note, _objective(config, info, sampler, streams, device, classifier, shard, dist),
                      streams, provenance(config.device),
                      teacher_record(None if classifier is not None else config.classifier_spec), dist, shard,
                      generator_record(None if generator is not None else config.generator_spec, G))


def check_distributable(config: RunConfig, world: int) -> None:
    """Refuse, before anything loads, an objective whose run cannot be spread over processes yet, or
    more processes than the dataset's classes make shares (SRe²L keeps a batch of classes in one)."""
    if world == 1:
        return
    group = objectives.get_objective(config.objective).class_group
    if group is None:
        ready = [n for n in objectives.objective_names() if objectives.get_objective(n).class_group is not None]
        raise ValueError(f"--objective {config.objective} does not run on several processes yet; under "
                         f"torchrun use --objective {_either(ready)}, or run {config.objective} in one process "
                         "(without torchrun)")
    try:
        check_groups(dataset_info(config.dataset).num_classes, group, world)
    except ValueError as exc:
        raise ValueError(f"--objective {config.objective} on {config.dataset}: {exc}") from None


def _either(names: list[str]) -> str:
    return " or ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} or {names[-1]}"


def _splits(cfg: RunConfig, streams: Streams) -> tuple[ImageSet, ImageSet | None]:
    train = load_dataset(cfg.dataset, "train", cfg.data_root)
    if not cfg.accuracy_pick:
        return train, None
    # Accuracy is measured on images held out of the training data, never on the test split.
    return holdout_split(train, cfg.holdout_per_class, streams.seed_for("holdout"))


def _generator(cfg: RunConfig, method: Method, info: DatasetInfo, given, device) -> LayeredGenerator:
    if not method.uses_gan:
        return PixelGenerator(info.channels, info.resolution, info.num_classes, info.mean, info.std).to(device)
    G = given or load_generator(cfg.generator_spec, device)
    if (G.resolution, G.channels) != (info.resolution, info.channels):
        raise ValueError(f"the generator makes {G.channels}x{G.resolution}px images but {info.name} "
                         f"is {info.channels}x{info.resolution}px")
    return G.requires_grad_(False).eval()


def _class_indices(info: DatasetInfo, width: int) -> list[int] | None:
    """Generator/classifier class of each dataset label when they were trained on ImageNet-1k."""
    if width == info.num_classes:
        return None
    if info.name in subsets():
        return list(imagenet_indices(info.name))
    raise ValueError(f"a {width}-class model cannot condition on {info.name}'s {info.num_classes} classes")


def _distance(cfg: RunConfig, info: DatasetInfo, sampler: RealSampler, streams: Streams, given,
              device, shard: Shard) -> tuple[ClassRelevantDistance | None, str]:
    """The class-relevant distance of every run, when the dataset has a proxy. A proxy that the user
    named, or that the selection needs, must load; the dataset's default may be missing (CIFAR-10 has
    none shipped), and then the run goes on without the distance and says why."""
    if not cfg.distance:
        return None, "the distance is switched off (--no-distance)"
    required = given is not None or cfg.classifier is not None or cfg.selection_basis == "distance"
    try:
        proxy = given or load_classifier(cfg.classifier_spec, device)
    except ValueError as exc:
        if required:
            raise
        return None, f"the class-relevant distance is not measured: {exc}"
    idx = _class_indices(info, proxy.num_classes)
    if idx is not None:
        proxy = proxy.restricted_to(idx)
    # Its own stream: measuring the distance or not leaves every other draw of the run unchanged.
    real, labels = sampler.sample_all(cfg.distance_real_per_class, streams["distance"])
    if not shard.whole:  # each process measures its own classes' terms of the sum (loop sums the parts)
        keep = torch.tensor([shard.holds(int(c)) for c in labels.tolist()], device=labels.device)
        real, labels = real[keep], labels[keep]
    return ClassRelevantDistance(proxy, info.to_generator(real), labels, info.num_classes), ""


def _objective(cfg: RunConfig, info: DatasetInfo, sampler: RealSampler, streams: Streams, device, given,
               shard: Shard, dist: Distributed):
    """`given`: the classifier handed to the run, also the teacher of objectives that need one (SRe²L)."""
    spec = objectives.get_objective(cfg.objective)
    ctx = objectives.MatchContext(
        real=sampler, streams=streams, batch_real=cfg.batch_real, dsa=DSAParams() if spec.uses_dsa else None,
        new_net=lambda seed: get_network(cfg.net, info.channels, info.num_classes, info.resolution,
                                         seed=seed).to(device), teacher=given,
        shard=None if shard.whole else shard, dist=dist, precision=cfg.precision,
        embed=objectives.dm.compiled_embed() if cfg.compile else None)
    return objectives.build_for_run(cfg, ctx)
