"""Distribution matching (DM, Zhao & Bilen 2023): match mean embeddings of a random network per class."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .context import MatchContext, PerIterationObjective, class_pairs
from .registry import ObjectiveSpec, register


# Small chunks keep each activation in cache and reuse freed buffers: 2x faster on CPU than one big batch.
EMBED_CHUNK = 64


@dataclass(frozen=True)
class DMParams:
    batch_real: int = 256


def _embed(net, x: torch.Tensor) -> torch.Tensor:
    return net.embed(x)


def embed_real(net, real: torch.Tensor, autocast, embed=None) -> torch.Tensor:
    """DM's real side: `net`'s embeddings of `real` in chunks, without autograd, inside `autocast` (the run's
    precision: bf16 autocast under --precision bf16, else a null context), returned as float32. `embed`:
    what embeds a chunk (compiled_embed() under --compile); None: `net.embed`."""
    embed = embed or _embed
    with torch.no_grad(), autocast:
        emb = torch.cat([embed(net, chunk) for chunk in real.split(EMBED_CHUNK)])
    return emb.float()  # itself under fp32


def compiled_embed():
    """`_embed` through torch.compile, once per run. The network is an argument, so each iteration's fresh
    network of the same architecture runs the same compiled code (its weights are inputs, not constants);
    static shapes: every chunk has EMBED_CHUNK images but perhaps the last (one more graph)."""
    return torch.compile(_embed, dynamic=False)


def dm_loss(syn: torch.Tensor, labels: torch.Tensor, net, ctx: MatchContext) -> torch.Tensor:
    """Sum over classes of the squared distance between mean real and mean synthetic embeddings."""
    real_parts, syn_parts = [], []
    for _, real_c, syn_c in class_pairs(syn, labels, ctx):
        real_parts.append(real_c)
        syn_parts.append(syn_c)
    # One forward for all classes: the networks normalise per sample, so batching does not mix classes.
    real_emb = embed_real(net, torch.cat(real_parts), ctx.real_autocast(), ctx.embed).split(
        [len(r) for r in real_parts])
    syn_emb = net.embed(torch.cat(syn_parts)).split([len(s) for s in syn_parts])
    return sum(((r.mean(0) - s.mean(0)) ** 2).sum() for r, s in zip(real_emb, syn_emb))


class DMObjective(PerIterationObjective):
    """One update per iteration against a freshly initialised, frozen network."""

    updates_per_iteration = 1

    def __init__(self, params: DMParams, ctx: MatchContext):
        self.params = params
        self.ctx = ctx
        self.net = None

    def start_iteration(self) -> None:
        self.net = self.ctx.new_net(self.ctx.draw_seed())
        self.net.train()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def loss(self, syn: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return dm_loss(syn, labels, self.net, self.ctx)

    def after_update(self, current, labels: torch.Tensor, update: int) -> None:
        pass


def build_dm(ctx: MatchContext, ipc: int, **overrides) -> DMObjective:
    """Other objectives' keyword arguments are accepted and ignored: DM has no loops or buffers."""
    return DMObjective(DMParams(batch_real=ctx.batch_real), ctx)


register(ObjectiveSpec(
    name="dm", label="DM: distribution matching", params=DMParams,
    uses_dsa=True,  # siamese augmentation, as in the DM paper
    latent_lr=(0.01, 10.0),  # (W+, f): paper Tables 19-21 (dd_methods_facts.md 1.4)
    pixel_lr=1.0,  # the reference code's pixel rate
    steps_per_space=20,  # the paper's steps per optimisation space
    class_group=1,  # a sum over classes: any class can be on any process
    build=build_dm, options=lambda config: {}))
