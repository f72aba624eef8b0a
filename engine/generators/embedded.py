"""The embedded prior: a small conditional style-based generator, trained here on Fashion-MNIST.

Architecture (StyleGAN2-like, sized for two CPU cores): a mapping network turns a normalised z and
a normalised class embedding into w; a learned constant 4x4 input runs through modulated 3x3
convolutions with weight demodulation (no noise inputs, so z and the class are the only sources of
variation) in blocks 4 -> 8 -> 16 -> 32, and a ToRGB after every block adds into an upsampled skip
image. The output is tanh of the skip image, so images always lie in [-1, 1], whatever H-PD does to
the features.

The synthesis is a flat list of steps; cut k is the state entering step k. Because of the ToRGB
skips, that state is the feature map with the running skip image appended as its last `channels`
channels (zeros before the first ToRGB); the last cut is the pixels. `features`, `synthesize` and
`advance` all walk the same list, so the layer laws of `base.py` hold exactly.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import Cut, LayeredGenerator

ASSET_DIR = Path(__file__).resolve().parents[2] / "assets"
LRELU_GAIN = math.sqrt(2.0)


@dataclass(frozen=True)
class EmbeddedConfig:
    """Hyper-parameters of the embedded generator (also the kwargs stored in its asset)."""

    z_dim: int = 64
    w_dim: int = 128
    num_classes: int = 10
    channels: int = 1                      # image channels
    mapping_layers: int = 2
    mapping_lr_mul: float = 0.01           # StyleGAN's slow mapping learning rate
    # Feature channels per resolution 4, 8, 16, 32 (the block output widths).
    widths: tuple[int, ...] = (128, 128, 64, 32)
    init_seed: int = 0                     # seeds the weight initialisation only

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(c) for c in self.widths))
        if len(self.widths) != 4 or min(self.widths) < 1:
            raise ValueError(f"widths must be 4 positive channel counts for 4, 8, 16, 32 px, got {self.widths}")
        for name in ("z_dim", "w_dim", "num_classes", "channels", "mapping_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.mapping_lr_mul <= 0:
            raise ValueError(f"mapping_lr_mul must be > 0, got {self.mapping_lr_mul}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d


class EqualLinear(nn.Module):
    """A linear layer with StyleGAN's equalised learning rate (weights scaled at run time)."""

    def __init__(self, in_dim: int, out_dim: int, gen: torch.Generator, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim, generator=gen) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), bias_init / lr_mul))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return F.leaky_relu(y, 0.2) * LRELU_GAIN if self.activate else y


def _normalize_2nd_moment(x: torch.Tensor) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()


class MappingNetwork(nn.Module):
    """(z, one-hot class) -> w: both normalised, concatenated, then an MLP."""

    def __init__(self, cfg: EmbeddedConfig, gen: torch.Generator):
        super().__init__()
        self.embed = EqualLinear(cfg.num_classes, cfg.w_dim, gen)
        dims = [cfg.z_dim + cfg.w_dim] + [cfg.w_dim] * cfg.mapping_layers
        self.net = nn.Sequential(*[EqualLinear(a, b, gen, lr_mul=cfg.mapping_lr_mul, activate=True)
                                   for a, b in zip(dims[:-1], dims[1:])])

    def forward(self, z: torch.Tensor, c_onehot: torch.Tensor) -> torch.Tensor:
        x = torch.cat([_normalize_2nd_moment(z), _normalize_2nd_moment(self.embed(c_onehot))], dim=1)
        return self.net(x)


class ModulatedConv(nn.Module):
    """A style-modulated convolution, optionally upsampling x2 first.

    Modulating the input activations and demodulating the outputs is algebraically the same as
    StyleGAN2's per-sample weights, but runs as one ordinary batched convolution (fast on CPU).
    """

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, gen: torch.Generator, kernel: int = 3,
                 demodulate: bool = True, upsample: bool = False, activate: bool = True):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_ch, gen, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel, generator=gen))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.scale = 1 / math.sqrt(in_ch * kernel * kernel)
        self.demodulate, self.upsample, self.activate = demodulate, upsample, activate
        self.in_ch, self.out_ch = in_ch, out_ch

    def extra_repr(self) -> str:
        return f"{self.in_ch}->{self.out_ch}, k={self.weight.shape[-1]}, up={self.upsample}, demod={self.demodulate}"

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        styles = self.affine(w)
        weight = self.weight * self.scale
        if not self.demodulate:  # ToRGB: StyleGAN2 scales its styles instead of demodulating
            styles = styles * self.scale * math.sqrt(weight.shape[-1] ** 2)
        y = F.conv2d(x * styles[:, :, None, None], weight, padding=weight.shape[-1] // 2)
        if self.demodulate:
            demod = (styles.square() @ weight.square().sum(dim=(2, 3)).T + 1e-8).rsqrt()
            y = y * demod[:, :, None, None]
        y = y + self.bias[None, :, None, None]
        return F.leaky_relu(y, 0.2) * LRELU_GAIN if self.activate else y


@dataclass(frozen=True)
class _Step:
    """One synthesis step: a conv (w index `conv_w`) and, at a block's end, a ToRGB (w index `rgb_w`)."""

    name: str
    conv: str
    conv_w: int
    in_res: int
    rgb: str | None = None
    rgb_w: int | None = None


class EmbeddedGenerator(LayeredGenerator):
    """Conditional style generator with 8 cuts: 7 modulated convolutions, then the pixels."""

    RESOLUTIONS = (4, 8, 16, 32)
    # Found by bench/sweep_lr.py on held-out training images (RESULTS.md): with the paper's StyleGAN-XL
    # rates (DM 0.01/10, DSA 0.001/1, TESLA 10/1e4) every step raised the CAM distance and no space moved
    # off its initial latent. DC takes DSA's rates: the same matching loss, not swept on its own.
    tuned_lrs = {"dm": (0.001, 0.01), "dsa": (0.001, 0.01), "dc": (0.001, 0.01), "tesla": (0.1, 100.0)}
    # bench/sweep_pixel_lr.py: DM's Pixel rate 1.0 overshoots from this prior's images (the loss triples in
    # two steps); 0.1 gave the best held-out accuracy of 1, 0.3, 0.1, 0.03, 0.01. TESLA's 1,000 and 300 cut
    # held-out accuracy from 62.8 to ~48; 100, 30 and 10 leave it within noise: 100 is the largest harmless.
    # DSA keeps the Pixel method's 0.1, unswept (its pixel space gained the most of any space at IPC 1).
    # SRe²L's pixels run its own Adam at its own rate (objectives/sre2l.py), which no generator tunes.
    tuned_pixel_lrs = {"dm": 0.1, "tesla": 100.0}

    def __init__(self, cfg: EmbeddedConfig | None = None):
        super().__init__()
        cfg = cfg or EmbeddedConfig()
        self.cfg = cfg
        gen = torch.Generator().manual_seed(cfg.init_seed)
        self.z_dim, self.w_dim, self.num_classes = cfg.z_dim, cfg.w_dim, cfg.num_classes
        self.channels, self.resolution = cfg.channels, self.RESOLUTIONS[-1]
        self.mapping_net = MappingNetwork(cfg, gen)
        self.const = nn.Parameter(torch.randn(cfg.widths[0], 4, 4, generator=gen))
        self.convs = nn.ModuleDict()
        self.torgbs = nn.ModuleDict()
        self.steps: list[_Step] = []
        self._build_synthesis(cfg, gen)
        self.num_ws = len(self.steps) + 1  # each conv has a w; the last ToRGB has its own
        self.layers = self._build_cuts()

    def _build_synthesis(self, cfg: EmbeddedConfig, gen: torch.Generator) -> None:
        w, ch = cfg.w_dim, cfg.widths
        self.convs["b4_conv1"] = ModulatedConv(ch[0], ch[0], w, gen)
        self.torgbs["b4"] = ModulatedConv(ch[0], cfg.channels, w, gen, kernel=1, demodulate=False, activate=False)
        self.steps.append(_Step("b4.conv1", "b4_conv1", 0, 4, "b4", 1))
        for i, res in enumerate(self.RESOLUTIONS[1:], start=1):
            b, wi = f"b{res}", 2 * i - 1
            self.convs[f"{b}_conv0"] = ModulatedConv(ch[i - 1], ch[i], w, gen, upsample=True)
            self.convs[f"{b}_conv1"] = ModulatedConv(ch[i], ch[i], w, gen)
            self.torgbs[b] = ModulatedConv(ch[i], cfg.channels, w, gen, kernel=1, demodulate=False, activate=False)
            self.steps.append(_Step(f"{b}.conv0", f"{b}_conv0", wi, res // 2))
            self.steps.append(_Step(f"{b}.conv1", f"{b}_conv1", wi + 1, res, b, wi + 2))

    def _build_cuts(self) -> list[Cut]:
        cuts = []
        for k, step in enumerate(self.steps):
            in_ch, res = self.convs[step.conv].in_ch, step.in_res
            cuts.append(Cut(k, f"{step.name} {res}x{res}x{in_ch}", (in_ch + self.channels, res, res)))
        px = (self.channels, self.resolution, self.resolution)
        cuts.append(Cut(len(self.steps), f"pixels {self.resolution}x{self.resolution}x{self.channels}", px))
        return cuts

    def extra_repr(self) -> str:
        return f"cfg={self.cfg}, cuts={len(self.layers)}, num_ws={self.num_ws}"

    # --- the seam -------------------------------------------------------------------------
    def mapping(self, z: torch.Tensor, c_onehot: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        assert z.shape[1:] == (self.z_dim,) and c_onehot.shape == (len(z), self.num_classes), (z.shape, c_onehot.shape)
        w = self.mapping_net(z, c_onehot)
        if truncation_psi != 1.0:
            # Truncate towards the class's w at z = 0, the mode of the noise prior: deterministic,
            # unlike a sampled average in W (mean_ws), and close to it after normalisation.
            centre = self.mapping_net(torch.zeros_like(z), c_onehot)
            w = centre + truncation_psi * (w - centre)
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        assert ws.shape == (len(z), self.num_ws, self.w_dim)
        return ws

    def features(self, ws: torch.Tensor, layer: int) -> torch.Tensor:
        self.check_layer(layer)
        self._check_ws(ws)
        f = self._initial_state(len(ws))
        for k in range(layer):
            f = self._run_step(ws, f, k)
        assert f.shape == (len(ws), *self.layers[layer].shape), (f.shape, self.layers[layer])
        return f

    def synthesize(self, ws: torch.Tensor, f: torch.Tensor, layer: int) -> torch.Tensor:
        self.check_layer(layer)
        self._check_ws(ws)
        assert f.shape == (len(ws), *self.layers[layer].shape), (f.shape, self.layers[layer])
        for k in range(layer, self.pixel_cut):
            f = self._run_step(ws, f, k)
        assert f.shape == (len(ws), self.channels, self.resolution, self.resolution)
        return f

    def advance(self, ws: torch.Tensor, f: torch.Tensor, layer: int) -> torch.Tensor:
        self.check_layer(layer)
        if layer == self.pixel_cut:
            raise ValueError(f"cut {layer} is the pixels; there is no next cut to advance to")
        self._check_ws(ws)
        assert f.shape == (len(ws), *self.layers[layer].shape), (f.shape, self.layers[layer])
        out = self._run_step(ws, f, layer)
        assert out.shape == (len(ws), *self.layers[layer + 1].shape), (out.shape, self.layers[layer + 1])
        return out

    # --- internals ------------------------------------------------------------------------
    def _check_ws(self, ws: torch.Tensor) -> None:
        assert ws.dim() == 3 and ws.shape[1:] == (self.num_ws, self.w_dim), ws.shape

    def _initial_state(self, n: int) -> torch.Tensor:
        skip = self.const.new_zeros(n, self.channels, 4, 4)
        return torch.cat([self.const.unsqueeze(0).expand(n, -1, -1, -1), skip], dim=1)

    def _run_step(self, ws: torch.Tensor, f: torch.Tensor, k: int) -> torch.Tensor:
        """State at cut k -> state at cut k + 1 (the pixels after the last step)."""
        step = self.steps[k]
        x, skip = f[:, :-self.channels], f[:, -self.channels:]
        conv = self.convs[step.conv]
        x = conv(x, ws[:, step.conv_w])
        if conv.upsample:
            skip = F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
        if step.rgb is not None:
            skip = skip + self.torgbs[step.rgb](x, ws[:, step.rgb_w])
        if k == len(self.steps) - 1:
            return torch.tanh(skip)
        return torch.cat([x, skip], dim=1)


# --- the shipped asset --------------------------------------------------------------------
ASSET_FORMAT = "hpd-embedded-prior/1"


@dataclass(frozen=True)
class PriorAsset:
    """A shipped prior file: where it lives, its sha256, and how it was made (see assets/README.md)."""

    file: str
    sha256: str
    dataset: str
    regenerate: str                        # the command that rebuilds the file
    kimg: float                            # training images (thousands) recorded in the file's meta


EMBEDDED_PRIORS = {
    "fashion-mnist": PriorAsset(
        file="fashion_mnist_prior.pt",
        sha256="c1dd651c6760a97715cfca9f9f9c0a9cbbda77c93504a7e67b97b107d125d620",
        dataset="fashion-mnist",
        regenerate=("python -m engine train-prior --dataset fashion-mnist --out checkpoints/prior "
                    "--threads 1 --export assets/fashion_mnist_prior.pt"),
        kimg=91.264,
    ),
}


class PriorAssetError(ValueError):
    """A shipped prior file is missing or does not match its recorded sha256."""


def prior_asset(name: str) -> PriorAsset:
    if name not in EMBEDDED_PRIORS:
        raise ValueError(f"unknown embedded prior {name!r}; valid names: {', '.join(sorted(EMBEDDED_PRIORS))}")
    return EMBEDDED_PRIORS[name]


def load_embedded(name: str, device: torch.device | str = "cpu", asset_dir: Path | None = None) -> EmbeddedGenerator:
    """The shipped EMA generator `name` (e.g. "fashion-mnist"), in eval mode, on `device`."""
    asset = prior_asset(name)
    path = Path(asset_dir or ASSET_DIR) / asset.file
    if not path.is_file():
        raise PriorAssetError(f"the embedded prior file {path} is missing; rebuild it with `{asset.regenerate}`")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    if sha != asset.sha256:
        raise PriorAssetError(f"{path} is corrupt or not the shipped file (sha256 {sha[:12]}..., expected "
                              f"{asset.sha256[:12]}...); restore it from git or rebuild it with `{asset.regenerate}`")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("format") != ASSET_FORMAT:
        raise PriorAssetError(f"{path} has format {blob.get('format')!r}, expected {ASSET_FORMAT!r}")
    G = EmbeddedGenerator(EmbeddedConfig(**blob["config"]))
    G.load_state_dict(blob["state_dict"])
    G.meta = dict(blob.get("meta", {}))
    return G.to(device).eval().requires_grad_(False)
