"""The objectives a run can use, by name: one ObjectiveSpec per objective, registered by its own module.

A new objective is one module that ends with `register(ObjectiveSpec(...))` and one import in
engine/objectives/__init__.py; RunConfig (its validation, steps and learning rates) and the `distill`
command line (the --objective help) read everything else from here.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:  # engine.run imports this package; a runtime import back would be circular
    from ..run.config import RunConfig
    from .context import MatchContext


@dataclass(frozen=True)
class PixelAdam:
    """Adam on the pixels, as SRe²L's recover optimises them: a cosine learning rate from the space's rate
    to 0 over its steps with no warm-up, lr_t = (1 + cos(pi t / T)) / 2 * lr, and after every step each
    pixel clamped to the range that is [0, 1] in pixel space. `rate(dataset)` is the default rate when the
    user gives none (Adam's steps do not grow with the gradient, so no generator-tuned or IPC-scaled rate
    applies); None: the spec's pixel_lr."""

    betas: tuple[float, float] = (0.5, 0.9)
    eps: float = 1e-8
    rate: Callable[[str], float] | None = None

    def __post_init__(self) -> None:
        if not (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas)) or not self.eps > 0:
            raise ValueError(f"Adam needs two betas in [0, 1) and eps > 0, got betas {self.betas}, eps {self.eps}")


@dataclass(frozen=True)
class ObjectiveSpec:
    """Everything the rest of the engine needs to know about one objective.

    `build(ctx, ipc, **overrides)` makes the objective over a MatchContext; `options(config)` gives the
    keyword arguments a run passes to `build`, taken from its RunConfig (it may raise ValueError, with
    the fix, for a config the objective cannot run: RunConfig calls it during validation).
    """

    name: str                              # what --objective takes
    label: str                             # for people, e.g. "DM: distribution matching"
    params: type                           # the objective's parameter dataclass
    uses_dsa: bool                         # whether the run gives the context DSA parameters
    latent_lr: tuple[float, float]         # default rates of (W+ latents, f-latents)
    pixel_lr: float                        # default rate of pixels (the Pixel method, a GAN run's last space)
    steps_per_space: int                   # default steps per optimisation space
    build: Callable[..., object]
    options: Callable[[RunConfig], dict]
    # How pixels are optimised (the Pixel method, a GAN run's last space); None: the engine's SGD with the
    # run's momentum, as every latent space. Latent spaces always use SGD.
    pixel_optimizer: PixelAdam | None = None
    # How many consecutive classes the loss couples, so a run on several processes (torchrun) keeps them in
    # one: 1 when the loss is a sum of per-class terms (DM, DC/DSA) or of per-image terms (TESLA), SRe²L's
    # BatchNorm batch of classes. What the classes share beyond that (DC/DSA's trained network, TESLA's
    # student) the objective sums over processes itself (MatchContext.dist). None: not sharded yet.
    class_group: int | None = None

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip().lower() or " " in self.name:
            raise ValueError(f"an objective's name must be a lower-case word (it is a --objective value), got {self.name!r}")
        if len(self.latent_lr) != 2 or min(self.latent_lr) <= 0 or self.pixel_lr <= 0:
            raise ValueError(f"objective {self.name!r}: latent_lr must be two positive rates and pixel_lr positive")
        if self.steps_per_space < 1:
            raise ValueError(f"objective {self.name!r}: steps_per_space must be at least 1, got {self.steps_per_space}")
        if self.class_group is not None and self.class_group < 1:
            raise ValueError(f"objective {self.name!r}: class_group must be at least 1, got {self.class_group}")


_REGISTRY: dict[str, ObjectiveSpec] = {}


def register(spec: ObjectiveSpec) -> ObjectiveSpec:
    """Add `spec`; a name can be registered once (unregister it first to replace it)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"objective {spec.name!r} is already registered ({_REGISTRY[spec.name].label}); "
                         "give the new objective another name")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> ObjectiveSpec:
    """Remove and return a registered objective (for tests that register their own)."""
    get_objective(name)
    return _REGISTRY.pop(name)


@contextmanager
def registered(spec: ObjectiveSpec) -> Iterator[ObjectiveSpec]:
    """`spec` registered inside the block only."""
    register(spec)
    try:
        yield spec
    finally:
        _REGISTRY.pop(spec.name, None)


def get_objective(name: str) -> ObjectiveSpec:
    spec = _REGISTRY.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"unknown objective {name!r}; choose one of: {', '.join(objective_names())}")
    return spec


def objective_names() -> tuple[str, ...]:
    """The registered names, in registration order (the built-ins: dm, dc, dsa, tesla, sre2l)."""
    return tuple(_REGISTRY)


def build_for_run(config: RunConfig, ctx: MatchContext):
    """The objective of a run: its spec's builder with the options taken from the run's config."""
    spec = get_objective(config.objective)
    return spec.build(ctx, config.ipc, **spec.options(config))
