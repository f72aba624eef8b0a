"""The frozen, validated configuration of one prior training run."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from engine.generators.embedded import EmbeddedConfig


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "fashion-mnist"
    kimg: float = 200.0                    # training length in thousands of real images shown to D
    batch: int = 64                        # even: the generator batch is made of same-class pairs
    seed: int = 0
    lr_g: float = 2.5e-3
    lr_d: float = 2.5e-3
    beta2: float = 0.99                    # Adam betas are (0, beta2), as in StyleGAN2
    r1_gamma: float = 0.1
    r1_interval: int = 16                  # lazy R1: every this many D steps, scaled up to match
    ema_kimg: float = 10.0                 # half-life of the generator EMA, in thousands of images
    ema_rampup: float = 0.05               # early on the half-life is at most this fraction of images seen
    mixing_prob: float = 0.9               # style mixing: keeps each w index meaningful on its own
    ac_weight: float = 0.5                 # auxiliary class loss: pushes class fidelity
    ms_weight: float = 1.0                 # mode seeking: fights "z ignored" within a class
    ms_tau: float = 0.25                   # cap on the rewarded image/z distance ratio
    d_widths: tuple[int, ...] = (32, 64, 128, 128)
    ckpt_kimg: float = 4.0                 # checkpoint (and sample grid) period
    # Over the last anneal_kimg of the run both learning rates fall to zero on a half cosine (0: constant
    # rates). Tried against the Fréchet distance's plateau (658.7 -> 700 kimg, BENCHMARKS.md): no better.
    anneal_kimg: float = 0.0
    # Weight of a second, projected discriminator on the frozen proxy's features (projected.py; 0: off, as
    # every run before it). May be switched on when resuming: its heads then start fresh.
    projected_weight: float = 0.0
    generator: EmbeddedConfig = field(default_factory=EmbeddedConfig)

    def __post_init__(self):
        object.__setattr__(self, "d_widths", tuple(int(c) for c in self.d_widths))
        if isinstance(self.generator, dict):
            object.__setattr__(self, "generator", EmbeddedConfig(**self.generator))
        if self.batch < 2 or self.batch % 2:
            raise ValueError(f"batch must be an even number >= 2, got {self.batch}")
        if self.kimg <= 0 or self.ckpt_kimg <= 0 or self.ema_kimg <= 0:
            raise ValueError("kimg, ckpt_kimg and ema_kimg must be > 0")
        if not 0 <= self.anneal_kimg <= self.kimg:
            raise ValueError(f"anneal_kimg must be between 0 and kimg ({self.kimg}), got {self.anneal_kimg}")
        if self.r1_interval < 1:
            raise ValueError(f"r1_interval must be >= 1, got {self.r1_interval}")
        if not 0 <= self.mixing_prob <= 1:
            raise ValueError(f"mixing_prob must be in [0, 1], got {self.mixing_prob}")
        if min(self.lr_g, self.lr_d) <= 0 or not 0 <= self.beta2 < 1:
            raise ValueError("learning rates must be > 0 and beta2 in [0, 1)")
        if min(self.r1_gamma, self.ac_weight, self.ms_weight, self.ms_tau, self.projected_weight) < 0:
            raise ValueError("r1_gamma, ac_weight, ms_weight, ms_tau and projected_weight must be >= 0")
        if len(self.d_widths) != 4:
            raise ValueError(f"d_widths must give 4 widths for 32, 16, 8, 4 px, got {self.d_widths}")

    @property
    def total_images(self) -> int:
        return int(round(self.kimg * 1000))

    def lr_factor(self, images_seen: int) -> float:
        """The learning rates' multiplier at `images_seen`: 1, then a half cosine to 0 over the last anneal_kimg."""
        start = self.total_images - int(round(self.anneal_kimg * 1000))
        if self.anneal_kimg == 0 or images_seen < start:
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (images_seen - start) / (self.total_images - start))))

    def to_dict(self) -> dict:
        d = asdict(self)
        for name in ("anneal_kimg", "projected_weight"):
            if d[name] == 0:  # off, as before the field existed: earlier states resume unchanged
                d.pop(name)
        d["d_widths"] = list(self.d_widths)
        d["generator"] = self.generator.to_dict()
        return d
