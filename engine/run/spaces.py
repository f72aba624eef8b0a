"""Which generator cuts a run optimises at, and the record kept for each optimisation space."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class SpaceRecord:
    index: int
    cuts: tuple[int, ...]          # the generator cuts this space covers; optimisation happens at cuts[0]
    name: str
    distances: list[float | None] = field(default_factory=list)   # step 0 = the space's initial latent
    losses: list[float | None] = field(default_factory=list)      # loss evaluated at the latent of that step
    best_step: int | None = None
    best_distance: float | None = None
    accuracy: float | None = None
    scheme: str | None = None      # how the generator gradient ran: "single" pass or "chunked" two-pass
    lr_w: float | None = None      # the learning rates this space ran with
    lr_f: float | None = None

    @property
    def cut(self) -> int:
        return self.cuts[0]

    def to_json(self) -> dict:
        return asdict(self) | {"cuts": list(self.cuts)}

    @classmethod
    def from_json(cls, data: dict) -> "SpaceRecord":
        return cls(**(data | {"cuts": tuple(data["cuts"])}))


def plan_spaces(num_cuts: int, method: str, first_cut: int, last_cut: int | None, layers_per_space: int,
                glad_cut: int | None) -> list[tuple[int, ...]]:
    """Cut groups in optimisation order. H-PD walks from `first_cut` to `last_cut` (default: the pixels)
    in groups of `layers_per_space`, the last group ending at the last cut; GLaD and Pixel use one cut."""
    pixels = num_cuts - 1
    last = pixels if last_cut is None else last_cut
    if not 0 <= first_cut <= last <= pixels:
        raise ValueError(f"the cut range {first_cut}..{last} does not fit this generator's cuts 0..{pixels}")
    if method == "pixel":
        return [(pixels,)]
    if method == "glad":
        cut = default_glad_cut(num_cuts) if glad_cut is None else glad_cut
        if not 0 <= cut <= pixels:
            raise ValueError(f"--glad-cut {cut} does not fit this generator's cuts 0..{pixels}")
        return [(cut,)]
    starts = list(range(first_cut, last + 1, layers_per_space))
    if starts[-1] != last:
        starts.append(last)
    ends = starts[1:] + [last + 1]
    return [tuple(range(a, b)) for a, b in zip(starts, ends)]


def default_glad_cut(num_cuts: int) -> int:
    """The middle cut: GLaD's published layers sit in the middle of StyleGAN-XL's synthesis."""
    return (num_cuts - 1) // 2
