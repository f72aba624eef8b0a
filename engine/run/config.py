"""The configuration of one distillation run: a frozen dataclass, validated before any work starts."""
from __future__ import annotations

from dataclasses import dataclass

from .. import objectives
from ..data import dataset_info
from ..evaluate import PROTOCOLS
from ..nets import list_networks

METHODS = ("hpd", "glad", "pixel")
SELECTIONS = ("distance", "loss", "last")
INITS = ("avg", "random", "real", "noise")  # avg/random: GAN latents; real/noise: pixels
SG_BATCH = ("auto", "single", "chunked")

# Learning rates of (W+ latents, f-latents) per objective: paper Tables 19-21 (dd_methods_facts.md 1.4).
LATENT_LR = {"dm": (0.01, 10.0), "dc": (0.001, 1.0), "dsa": (0.001, 1.0), "tesla": (10.0, 1e4)}
# Pixel learning rates of the reference code (DM 1.0, DC/DSA 0.1), and MTT's for pixels (1000).
PIXEL_LR = {"dm": 1.0, "dc": 0.1, "dsa": 0.1, "tesla": 1000.0}
# Steps per optimisation space in the paper: 20 for DM, 100 for TESLA and DSA.
STEPS_PER_SPACE = {"dm": 20, "dc": 100, "dsa": 100, "tesla": 100}
DEFAULT_GENERATOR = {"fashion-mnist": "embedded:fashion-mnist"}
DEFAULT_CLASSIFIER = {"fashion-mnist": "embedded:fashion-mnist"}


@dataclass(frozen=True)
class RunConfig:
    dataset: str = "fashion-mnist"
    data_root: str | None = None
    method: str = "hpd"
    objective: str = "dm"
    generator: str | None = None        # None: the dataset's embedded prior
    classifier: str | None = None       # proxy for the CAM distance; None: the dataset's default
    ipc: int = 1
    steps_per_space: int | None = None  # None: the paper's value for the objective
    layers_per_space: int = 2
    first_cut: int = 0
    last_cut: int | None = None         # None: the pixels
    glad_cut: int | None = None         # GLaD's fixed cut; None: the middle cut
    glad_steps: int | None = None       # None: H-PD's total steps on the same generator
    lr_w: float | None = None
    lr_f: float | None = None           # the f-latents, or the pixels for method pixel
    lr_pixel: float | None = None       # a GAN run's pixel space (its last); None: the Pixel method's rate
    momentum: float = 0.5
    f_clip: float | None = None         # clip f to [-f_clip, f_clip] at init and after each advance;
                                        # None: the generator's own bound (StyleGAN-XL 10, embedded none)
    init: str | None = None             # None: avg for GAN methods, real for pixel
    mean_ws_samples: int = 1000
    selection: str | None = None        # None: distance for hpd, last for glad and pixel
    accuracy_pick: bool = False         # evaluate each space on held-out data and keep the best
    holdout_per_class: int = 100
    eval_model: str = "convnet"
    eval_repeats: int = 1
    eval_epochs: int = 300
    eval_protocol: str = "dc"
    distance_real_per_class: int = 100
    batch_real: int = 256
    net: str = "convnet"                # the matching network of the objective
    outer_loop: int | None = None
    inner_loop: int | None = None
    buffers: str | None = None          # TESLA expert buffer folder
    syn_steps: int = 20                 # TESLA student steps per match (MTT's names and defaults)
    expert_epochs: int = 3
    max_start_epoch: int = 5
    sg_batch: str = "auto"
    sg_chunk: int = 10
    preview_every: int = 5
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        dataset_info(self.dataset)
        _choice("method", self.method, METHODS)
        _choice("objective", self.objective, objectives.OBJECTIVES)
        _choice("selection", self.selection, SELECTIONS, optional=True)
        _choice("init", self.init, INITS, optional=True)
        _choice("sg-batch", self.sg_batch, SG_BATCH)
        _choice("eval model", self.eval_model, list_networks())
        _choice("network", self.net, list_networks())
        _choice("eval protocol", self.eval_protocol, list(PROTOCOLS))
        for name in ("ipc", "layers_per_space", "mean_ws_samples", "batch_real", "eval_repeats", "eval_epochs",
                     "distance_real_per_class", "sg_chunk", "preview_every", "holdout_per_class",
                     "syn_steps", "expert_epochs", "max_start_epoch"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.steps_per_space is not None and self.steps_per_space < 1:
            raise ValueError(f"--steps-per-space must be at least 1, got {self.steps_per_space}")
        if self.first_cut < 0:
            raise ValueError(f"--first-cut must be >= 0, got {self.first_cut}")
        if self.method == "pixel" and self.init in ("avg", "random"):
            raise ValueError("--init avg/random are GAN latents; the pixel method takes real or noise")
        if self.method != "pixel" and self.init in ("real", "noise"):
            raise ValueError("--init real/noise are for the pixel method; GAN methods take avg or random")
        if self.objective == "tesla" and not self.buffers:
            raise ValueError("TESLA needs expert trajectories: pass --buffers DIR (make them with `python -m engine buffers`)")

    @property
    def generator_spec(self) -> str:
        if self.method == "pixel":
            return "pixel"
        spec = self.generator or DEFAULT_GENERATOR.get(self.dataset)
        if spec is None:
            raise ValueError(f"{self.dataset} has no embedded generator; pass --generator /path/to/stylegan-xl.pkl")
        return spec

    @property
    def classifier_spec(self) -> str:
        spec = self.classifier or DEFAULT_CLASSIFIER.get(self.dataset, "torchvision:resnet18")
        return spec

    @property
    def steps(self) -> int:
        return self.steps_per_space or STEPS_PER_SPACE[self.objective]

    @property
    def selection_basis(self) -> str:
        return self.selection or ("distance" if self.method == "hpd" else "last")

    @property
    def init_kind(self) -> str:
        if self.init:
            return self.init
        if self.method == "pixel":
            return "real"
        # Averages of 1000 mapped noises all sit near the class centre: at IPC > 1 a class's images would
        # start (and, under DM, stay) almost identical (RESULTS.md, DM IPC 10), so only IPC 1 averages.
        return "avg" if self.ipc == 1 else "random"

    def learning_rates(self, tuned: dict[str, tuple[float, float]] | None = None, pixels: bool = False,
                       tuned_pixel: dict[str, float] | None = None) -> tuple[float, float]:
        """(lr of the W+ latents, lr of f) for one space: the user's values first, then the generator's
        `tuned` rates per objective, then the paper's (which were tuned on StyleGAN-XL). A space at the
        pixels optimises images, not features, and takes the pixel rate: the user's, the generator's
        `tuned_pixel` one (set at IPC 1, scaled by the IPC), else the Pixel method's."""
        lr_w, lr_f = (tuned or {}).get(self.objective, LATENT_LR[self.objective])
        lr_w = self.lr_w if self.lr_w is not None else lr_w
        if not pixels:
            return lr_w, self.lr_f if self.lr_f is not None else lr_f
        if self.lr_pixel is not None:
            return lr_w, self.lr_pixel
        if self.method == "pixel" and self.lr_f is not None:
            return lr_w, self.lr_f
        tuned_rate = (tuned_pixel or {}).get(self.objective)
        if tuned_rate is None:
            return lr_w, PIXEL_LR[self.objective]
        # Every objective's gradient per image is a mean over the class's (TESLA: the set's) synthetic images,
        # so IPC n moves each image n times less: a rate tuned at IPC 1 is scaled to keep the step per image.
        return lr_w, tuned_rate * self.ipc


def _choice(what: str, value, valid, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; choose one of: {', '.join(valid)}")
