"""The configuration of one distillation run: a frozen dataclass, validated before any work starts."""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import Field, asdict, dataclass, field, fields

from ..data import dataset_info
from ..evaluate import PRECISIONS, PROTOCOLS
from ..nets import list_networks
from ..objectives import get_objective, objective_names
from ..streams import MAX_SEED
from .limits import check_ceilings, check_device_name

METHODS = ("hpd", "glad", "pixel")
SELECTIONS = ("distance", "loss", "last")
INITS = ("avg", "random", "real", "noise")  # avg/random: GAN latents; real/noise: pixels
SG_BATCH = ("auto", "single", "chunked")

DEFAULT_GENERATOR = {"fashion-mnist": "embedded:fashion-mnist"}
DEFAULT_CLASSIFIER = {"fashion-mnist": "embedded:fashion-mnist"}


@dataclass(frozen=True)
class RunConfig:
    """One run's settings. Every field is a `distill` flag (`ipc` -> --ipc); its metadata["help"] is the
    flag's help, a string or, where it lists the registered objectives, a function giving one."""

    dataset: str = field(default="fashion-mnist", metadata={
        "help": "dataset name (python -m engine datasets lists them)"})
    data_root: str | None = field(default=None, metadata={
        "help": "folder holding the dataset files (default: the dataset's usual place)"})
    method: str = field(default="hpd", metadata={
        "help": "hpd (layer by layer), glad (one fixed cut) or pixel (no GAN)"})
    objective: str = field(default="dm", metadata={"help": lambda: _objective_help()})
    generator: str | None = field(default=None, metadata={  # None: the dataset's embedded prior
        "help": "embedded:fashion-mnist or a StyleGAN-XL .pkl path (default: the dataset's embedded prior)"})
    classifier: str | None = field(default=None, metadata={  # proxy for the CAM distance; None: the dataset's
        "help": "proxy classifier for the CAM distance (default: the dataset's; torchvision:resnet18[=path])"})
    ipc: int = field(default=1, metadata={"help": "synthetic images per class"})
    steps_per_space: int | None = field(default=None, metadata={  # None: the objective's value
        "help": lambda: "optimisation steps per space (default: the objective's, "
                        + _per_objective(lambda s: str(s.steps_per_space)) + ")"})
    layers_per_space: int = field(default=2, metadata={"help": "generator cuts per optimisation space (paper: 2)"})
    first_cut: int = field(default=0, metadata={"help": "first generator cut H-PD optimises at"})
    last_cut: int | None = field(default=None, metadata={"help": "last cut (default: the pixels)"})
    glad_cut: int | None = field(default=None, metadata={"help": "GLaD's fixed cut (default: the middle one)"})
    glad_steps: int | None = field(default=None, metadata={
        "help": "GLaD's steps (default: H-PD's total on the same generator)"})
    lr_w: float | None = field(default=None, metadata={
        "help": "learning rate of the W+ latents (default: the generator's tuned rate, else the paper's)"})
    lr_f: float | None = field(default=None, metadata={
        "help": "learning rate of the f-latents, or of the pixels for --method pixel"})
    lr_pixel: float | None = field(default=None, metadata={  # a GAN run's pixel space (its last)
        "help": lambda: "learning rate of a GAN run's pixel space (default: the generator's tuned IPC 1 rate "
                        "times the IPC, embedded DM 0.1, TESLA 100; else the Pixel method's, "
                        + _per_objective(lambda s: f"{s.pixel_lr:g}")
                        + "; SRe²L's pixels run Adam, 0.25 on ImageNet-1K and its subsets)"})
    momentum: float = field(default=0.5, metadata={"help": "SGD momentum of the latents"})
    f_clip: float | None = field(default=None, metadata={
        "help": "clip f to [-f_clip, f_clip] at init and after each advance (default: the generator's own: "
                "StyleGAN-XL 10, embedded none)"})
    init: str | None = field(default=None, metadata={
        "help": "avg (average-noise latents) or random for GAN methods (default: avg at IPC 1, random above: "
                "averaged latents make a class's images near-copies); real (default) or noise for pixel"})
    mean_ws_samples: int = field(default=1000, metadata={
        "help": "noises averaged per image by the average-noise initialisation"})
    selection: str | None = field(default=None, metadata={
        "help": "distance (class-relevant CAM distance), loss or last (default: distance for hpd, else last)"})
    accuracy_pick: bool = field(default=False, metadata={
        "help": "evaluate every space on held-out training images and keep the best"})
    holdout_per_class: int = field(default=100, metadata={
        "help": "training images per class held out for --accuracy-pick"})
    eval_model: str = field(default="convnet", metadata={"help": "network of the per-space evaluation"})
    eval_repeats: int = field(default=1, metadata={"help": "networks per per-space evaluation"})
    eval_epochs: int = field(default=300, metadata={"help": "epochs of the per-space evaluation"})
    eval_protocol: str = field(default="dc", metadata={"help": "protocol of the per-space evaluation (glad or dc)"})
    distance_real_per_class: int = field(default=100, metadata={
        "help": "real images per class for the distance's real side"})
    distance: bool = field(default=True, metadata={
        "help": "measure the class-relevant distance after every step on every run (the selection basis only "
                "decides which step each space keeps); --no-distance switches it off for speed"})
    batch_real: int = field(default=256, metadata={"help": "real images per class per matching step"})
    net: str = field(default="convnet", metadata={"help": "matching network of the objective"})
    outer_loop: int | None = field(default=None, metadata={"help": "DC/DSA updates per step (default by IPC: 1 or 10)"})
    inner_loop: int | None = field(default=None, metadata={
        "help": "DC/DSA network epochs between updates (default by IPC: 1 or 50)"})
    buffers: str | None = field(default=None, metadata={
        "help": "expert trajectory folder for TESLA (python -m engine buffers)"})
    syn_steps: int = field(default=20, metadata={  # MTT's names and defaults
        "help": "TESLA: student steps on the synthetic images per match"})
    expert_epochs: int = field(default=3, metadata={
        "help": "TESLA: expert epochs the student steps are matched against"})
    max_start_epoch: int = field(default=5, metadata={
        "help": "TESLA: start epochs are drawn from [0, max_start_epoch); needs trajectories of at least "
                "max_start_epoch + expert_epochs - 1 epochs"})
    sg_batch: str = field(default="auto", metadata={
        "help": "generator gradient: auto (by a memory estimate), single (one pass) or chunked (two passes)"})
    sg_chunk: int = field(default=10, metadata={"help": "images per chunk of the chunked scheme"})
    precision: str = field(default="fp32", metadata={
        "help": "fp32 or bf16: bf16 runs the matching network's forward on the real images under bf16 autocast "
                "(DM's real-side embeddings, DC/DSA's real-batch gradients); the synthetic side and its gradient, "
                "TESLA and SRe²L stay float32"})
    compile: bool = field(default=False, metadata={
        "help": "compile DM's real-side embedding network with torch.compile (inductor; needs a C++ compiler): "
                "the first step pays the compilation (~15-35 s on a 2-core CPU, a few seconds once inductor's "
                "cache under /tmp has it), later ones run the fused code; rounding differs from eager"})
    preview_every: int = field(default=5, metadata={"help": "render preview images every N steps"})
    seed: int = field(default=0, metadata={"help": f"random seed, 0 to {MAX_SEED} (same seed and device, same result)"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or cuda:N"})

    def __post_init__(self):
        _check_types(self)
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"--seed must be between 0 and {MAX_SEED}, got {self.seed}")
        dataset_info(self.dataset)
        _choice("method", self.method, METHODS)
        spec = get_objective(self.objective)
        _choice("selection", self.selection, SELECTIONS, optional=True)
        _choice("init", self.init, INITS, optional=True)
        _choice("sg-batch", self.sg_batch, SG_BATCH)
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.compile and self.objective != "dm":
            raise ValueError(f"--compile speeds up DM's real side only; drop it for --objective {self.objective}")
        _choice("eval model", self.eval_model, list_networks())
        _choice("network", self.net, list_networks())
        # The per-space accuracy pick has no teacher to hand to a soft-label protocol (`evaluate` does).
        _choice("eval protocol", self.eval_protocol, [p for p in PROTOCOLS if not PROTOCOLS[p].soft_labels])
        for name in ("ipc", "layers_per_space", "mean_ws_samples", "batch_real", "eval_repeats", "eval_epochs",
                     "distance_real_per_class", "sg_chunk", "preview_every", "holdout_per_class",
                     "syn_steps", "expert_epochs", "max_start_epoch"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.steps_per_space is not None and self.steps_per_space < 1:
            raise ValueError(f"--steps-per-space must be at least 1, got {self.steps_per_space}")
        if self.glad_steps is not None and self.glad_steps < 1:
            raise ValueError(f"--glad-steps must be at least 1, got {self.glad_steps}")
        check_ceilings(self)
        check_device_name(self.device)  # that it exists on this machine is checked where runs start
        if self.first_cut < 0:
            raise ValueError(f"--first-cut must be >= 0, got {self.first_cut}")
        if self.method == "pixel" and self.init in ("avg", "random"):
            raise ValueError("--init avg/random are GAN latents; the pixel method takes real or noise")
        if self.method != "pixel" and self.init in ("real", "noise"):
            raise ValueError("--init real/noise are for the pixel method; GAN methods take avg or random")
        if not self.distance and self.selection_basis == "distance":
            if self.selection is None:  # H-PD's default basis
                raise ValueError("--method hpd selects by the class-relevant distance unless told otherwise; drop "
                                 "--no-distance or choose --selection loss or last")
            raise ValueError("--selection distance needs the class-relevant distance; drop --no-distance or "
                             "choose --selection loss or last")
        spec.options(self)  # what the objective needs from the config (TESLA: --buffers), refused here

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
        return self.steps_per_space or get_objective(self.objective).steps_per_space

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
        `tuned_pixel` one (set at IPC 1, scaled by the IPC), else the Pixel method's (the objective's
        `pixel_lr`; the paper's latent rates are its `latent_lr`). An objective whose pixels run Adam
        (`pixel_optimizer`) takes the user's rate, else its own, never the generator's."""
        spec = get_objective(self.objective)
        lr_w, lr_f = (tuned or {}).get(self.objective, spec.latent_lr)
        lr_w = self.lr_w if self.lr_w is not None else lr_w
        if not pixels:
            return lr_w, self.lr_f if self.lr_f is not None else lr_f
        if self.lr_pixel is not None:
            return lr_w, self.lr_pixel
        if self.method == "pixel" and self.lr_f is not None:
            return lr_w, self.lr_f
        adam = spec.pixel_optimizer
        if adam is not None:  # Adam's step size does not follow the gradient's: no tuned rate, no IPC factor
            rate = adam.rate(self.dataset) if adam.rate else spec.pixel_lr
            if self.method == "pixel":
                return lr_w, rate
            # The rate is per unit of the normalised space the Pixel method's pixels live in; a GAN's pixel
            # space is [-1, 1], where the same step in pixel terms is 2 x std as large.
            std = dataset_info(self.dataset).std
            return lr_w, rate * 2 * sum(std) / len(std)
        tuned_rate = (tuned_pixel or {}).get(self.objective)
        if tuned_rate is None:
            return lr_w, spec.pixel_lr
        # Every objective's gradient per image is a mean over the class's (TESLA: the set's) synthetic images,
        # so IPC n moves each image n times less: a rate tuned at IPC 1 is scaled to keep the step per image.
        return lr_w, tuned_rate * self.ipc


def config_identity(values: dict | None) -> dict | None:
    """A config as run.json records it (a dict), reduced to what makes two runs the same run: what resume,
    `distill` on a finished folder and compare's cells check. A run.json written before --precision existed
    has no such key and was float32, so precision fp32 is left out on both sides: such a run still counts
    as this config's; likewise compile off (the flag came later still)."""
    if values is None:
        return None
    values = json.loads(json.dumps(values))
    if values.get("precision", "fp32") == "fp32":
        values.pop("precision", None)
    if not values.get("compile", False):
        values.pop("compile", None)
    return values


def same_config(saved: dict | None, config: "RunConfig") -> bool:
    """True if `saved` (run.json's "config") is `config`'s run."""
    return saved is not None and config_identity(saved) == config_identity(asdict(config))


def _choice(what: str, value, valid, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; choose one of: {', '.join(valid)}")


def field_help(f: Field) -> str:
    """A RunConfig field's one-line help ("" if it has none)."""
    text = f.metadata.get("help", "")
    return text() if callable(text) else text


def _objective_help() -> str:
    specs = [get_objective(name) for name in objective_names()]
    return f"one of: {', '.join(s.name for s in specs)} ({'; '.join(s.label for s in specs)})"


def _per_objective(value) -> str:
    """`value(spec)` for every registered objective: "dm 20, dc 100, ..."."""
    return ", ".join(f"{name} {value(get_objective(name))}" for name in objective_names())


def _kind(f: Field) -> str:
    """The field's base type as written in the annotation: bool, int, float or str."""
    return str(f.type).split("|")[0].strip()


def _check_types(config: RunConfig) -> None:
    """Refuse values of the wrong type before anything compares them (JSON and Python callers can send any)."""
    for f in fields(config):
        value, flag, kind = getattr(config, f.name), "--" + f.name.replace("_", "-"), _kind(f)
        if value is None:
            if "None" in str(f.type):
                continue
            raise ValueError(f"{flag} needs a value, got None")
        if kind == "bool" and not isinstance(value, bool):
            raise ValueError(f"{flag} must be True or False, got {value!r}")
        if kind == "int" and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            raise ValueError(f"{flag} must be a whole number, got {value!r}")
        if kind == "float":
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"{flag} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{flag} must be a finite number, got {value!r}")
