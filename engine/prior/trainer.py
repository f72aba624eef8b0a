"""One GAN training step at a time, with its whole state in a resumable state dict."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from engine.generators.embedded import EmbeddedGenerator

from .config import TrainConfig
from .discriminator import ProjectionDiscriminator
from .ema import ema_beta, update_ema
from .losses import d_adversarial, g_adversarial, mode_seeking, r1_penalty
from .projected import ProjectedDiscriminator


class ClassPairSampler:
    """Real images drawn as same-class pairs, mirroring how the generator batch is built."""

    def __init__(self, images_u8: torch.Tensor, labels: torch.Tensor, num_classes: int):
        self.images = images_u8
        self.order = torch.argsort(labels, stable=True)
        self.counts = torch.bincount(labels, minlength=num_classes)
        self.offsets = torch.cumsum(self.counts, 0) - self.counts
        if (self.counts == 0).any():
            raise ValueError(f"classes {torch.nonzero(self.counts == 0).flatten().tolist()} have no images")

    def sample(self, classes: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        u = torch.rand(len(classes), generator=gen)
        pick = self.offsets[classes] + (u * self.counts[classes]).long().clamp(max=self.counts[classes] - 1)
        return self.images[self.order[pick]].float() / 127.5 - 1  # uint8 -> [-1, 1], the generator range


class PriorTrainer:
    """Owns G, D, the EMA generator, both optimisers and the one random generator of the run."""

    def __init__(self, cfg: TrainConfig, images_u8: torch.Tensor, labels: torch.Tensor, device: torch.device):
        self.cfg, self.device = cfg, device
        gcfg = cfg.generator
        self.G = EmbeddedGenerator(gcfg).to(device)
        self.D = ProjectionDiscriminator(gcfg.channels, gcfg.num_classes, cfg.d_widths, seed=cfg.seed + 1).to(device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=(0.0, cfg.beta2), eps=1e-8)
        # Lazy R1 runs every r1_interval steps; StyleGAN2 rescales D's Adam to keep its dynamics.
        lazy = cfg.r1_interval / (cfg.r1_interval + 1)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d * lazy, betas=(0.0, cfg.beta2 ** lazy), eps=1e-8)
        self.D_proj, self.opt_dp = self._projected(cfg, device)
        self.base_lrs = [[g["lr"] for g in opt.param_groups] for opt in self._optimisers()]
        self.real = ClassPairSampler(images_u8, labels, gcfg.num_classes)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.step_count = 0
        self.images_seen = 0
        self.train_seconds = 0.0

    @staticmethod
    def _projected(cfg: TrainConfig, device: torch.device):
        """The projected discriminator and its optimiser, or (None, None) when it is off. Its heads draw no
        numbers from the run's generator, so a run without it is the run it always was."""
        if cfg.projected_weight == 0:
            return None, None
        from engine.classifiers import load_classifier
        from engine.run.config import DEFAULT_CLASSIFIER

        if cfg.dataset not in DEFAULT_CLASSIFIER:
            raise ValueError(f"no proxy classifier for {cfg.dataset!r} to project onto; projected_weight needs "
                             f"one of: {', '.join(DEFAULT_CLASSIFIER)}")
        proxy = load_classifier(DEFAULT_CLASSIFIER[cfg.dataset], device)
        D = ProjectedDiscriminator(proxy, cfg.generator.num_classes, seed=cfg.seed + 2).to(device)
        return D, torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(0.0, cfg.beta2), eps=1e-8)

    def _d_optimisers(self) -> list[torch.optim.Optimizer]:
        return [self.opt_d] + ([self.opt_dp] if self.opt_dp is not None else [])

    def _optimisers(self) -> list[torch.optim.Optimizer]:
        return [self.opt_g] + self._d_optimisers()

    # --- sampling -------------------------------------------------------------------------
    def _classes(self) -> torch.Tensor:
        half = torch.randint(self.cfg.generator.num_classes, (self.cfg.batch // 2,), generator=self.gen)
        return torch.cat([half, half])

    def _onehot(self, classes: torch.Tensor) -> torch.Tensor:
        return F.one_hot(classes, self.cfg.generator.num_classes).float().to(self.device)

    def _mixed_ws(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """ws from z, with style mixing: past a random cutoff, the ws of a second z of the same class."""
        ws = self.G.mapping(z, c)
        n, num_ws = len(z), self.G.num_ws
        z2 = torch.randn(n, self.G.z_dim, generator=self.gen).to(self.device)
        mix = torch.rand(n, generator=self.gen) < self.cfg.mixing_prob
        cutoff = torch.where(mix, torch.randint(1, num_ws, (n,), generator=self.gen), torch.full((n,), num_ws))
        take_second = (torch.arange(num_ws)[None, :] >= cutoff[:, None]).to(self.device)
        return torch.where(take_second[:, :, None], self.G.mapping(z2, c), ws)

    # --- the step -------------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        self._set_lrs()
        classes = self._classes()
        c = self._onehot(classes)
        labels = classes.to(self.device)
        stats = self._d_step(c, labels)
        stats.update(self._g_step(c, labels))
        self.step_count += 1
        self.images_seen += self.cfg.batch
        beta = ema_beta(self.cfg.batch, self.images_seen, self.cfg.ema_kimg, self.cfg.ema_rampup)
        update_ema(self.G_ema, self.G, beta)
        return stats

    def _set_lrs(self) -> None:
        # From the config, not the optimisers' saved groups: a resumed run follows the schedule it resumes with.
        factor = self.cfg.lr_factor(self.images_seen)
        for opt, bases in zip(self._optimisers(), self.base_lrs):
            for group, base in zip(opt.param_groups, bases):
                group["lr"] = base * factor

    def _d_step(self, c: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        cfg = self.cfg
        real = self.real.sample(labels.cpu(), self.gen).to(self.device)
        z = torch.randn(len(c), self.G.z_dim, generator=self.gen).to(self.device)
        with torch.no_grad():
            fake = self.G(self._mixed_ws(z, c))
        do_r1 = cfg.r1_gamma > 0 and self.step_count % cfg.r1_interval == 0
        real.requires_grad_(do_r1)
        real_logits, real_cls = self.D(real, c)
        fake_logits, _ = self.D(fake, c)
        loss = d_adversarial(real_logits, fake_logits) + cfg.ac_weight * F.cross_entropy(real_cls, labels)
        stats = {"d_loss": loss.item(), "d_real_acc": (real_cls.argmax(1) == labels).float().mean().item()}
        if do_r1:
            r1 = r1_penalty(real_logits, real)
            loss = loss + (cfg.r1_gamma / 2) * r1 * cfg.r1_interval
            stats["r1"] = r1.item()
        if self.D_proj is not None:  # no R1 here: Projected GAN trains its heads without one
            proj = d_adversarial(self.D_proj(real.detach(), c), self.D_proj(fake, c))
            loss = loss + cfg.projected_weight * proj
            stats["dp_loss"] = proj.item()
        for opt in self._d_optimisers():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in self._d_optimisers():
            opt.step()
        return stats

    def _g_step(self, c: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        cfg = self.cfg
        z = torch.randn(len(c), self.G.z_dim, generator=self.gen).to(self.device)
        judges = [d for d in (self.D, self.D_proj) if d is not None]
        for d in judges:  # G's loss must not spend time on the discriminators' weight gradients
            d.requires_grad_(False)
        fake = self.G(self._mixed_ws(z, c))
        fake_logits, fake_cls = self.D(fake, c)
        adv = g_adversarial(fake_logits)
        ac = F.cross_entropy(fake_cls, labels)
        ms = mode_seeking(fake, z, cfg.ms_tau)
        loss = adv + cfg.ac_weight * ac + cfg.ms_weight * ms
        stats = {"g_adv": adv.item(), "g_ac": ac.item(), "ms_ratio": -ms.item()}
        if self.D_proj is not None:
            proj = g_adversarial(self.D_proj(fake, c))
            loss = loss + cfg.projected_weight * proj
            stats["gp_adv"] = proj.item()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        for d in judges:
            d.requires_grad_(True)
        return stats

    # --- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"config": self.cfg.to_dict(), "G": self.G.state_dict(), "D": self.D.state_dict(),
                "G_ema": self.G_ema.state_dict(), "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict(), "rng": self.gen.get_state(),
                "step": self.step_count, "images_seen": self.images_seen, "train_seconds": self.train_seconds,
                **({"D_proj": self.D_proj.state_dict(), "opt_dp": self.opt_dp.state_dict()}
                   if self.D_proj is not None else {})}

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.gen.set_state(state["rng"])
        self.step_count = int(state["step"])
        self.images_seen = int(state["images_seen"])
        self.train_seconds = float(state["train_seconds"])
        if self.D_proj is not None and "D_proj" in state:  # absent: switched on at this resume, fresh heads
            self.D_proj.load_state_dict(state["D_proj"])
            self.opt_dp.load_state_dict(state["opt_dp"])
