"""The step: functions that move a RunState using its RunContext, and report through `emit`.

Each step is one optimisation step in the current space. The first step of a space measures the
space's initial latent (a candidate of its own, paper Alg. 1 line 5); the last step of a space fixes
its selection (a clone of the latents at the best step), optionally evaluates it on held-out data,
saves it, and advances the selected latent to the next space's first cut. The distance is measured at
every step of every run (when the run has one); the selection basis only decides which step is kept.

On several processes (ctx.dist) each holds its classes' latents (ctx.shard): losses and distances are
sums over classes, so each process computes its part and they are summed; the images are gathered to
rank 0 for previews and space files, which rank 0 alone writes.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from ..evaluate import evaluate_synset, get_protocol
from ..objectives import get_objective
from . import gradient
from .context import RunContext
from .events import Event, SpaceEndEvent, SpaceStartEvent, StepEvent
from .export import save_preview, write_space_file
from .optimizer import space_optimizer
from .state import RunState

Emit = Callable[[Event], Event]
# Previews every `preview_every` steps, and at least this often in seconds: on a generator whose steps
# take a minute the page would otherwise show nothing new for minutes.
PREVIEW_EVERY_S = 10.0


def initial_latents(ctx: RunContext) -> tuple[torch.Tensor, torch.Tensor]:
    # Every process draws the whole set's latents and keeps its rows: a class starts where it starts in
    # one process, and the "latents" stream ends in the same state everywhere.
    shard = ctx.shard
    classes = ctx.classes if shard is None else shard.classes
    ws = ctx.method.init(ctx.config, ctx.G, classes, ctx.sampler, ctx.streams)
    ws = ws if shard is None else shard.take(ws)
    with torch.no_grad():
        f = clip(ctx, ctx.G.features(ws, ctx.plan[0].cut))
    return ws.detach().clone(), f.detach().clone()


def clip(ctx: RunContext, f: torch.Tensor) -> torch.Tensor:
    c = ctx.config.f_clip if ctx.config.f_clip is not None else ctx.G.feature_clip
    if c is None:
        return f
    return torch.nan_to_num(f.float(), nan=0.0, posinf=5.0, neginf=-5.0).clamp(-c, c)


def step(ctx: RunContext, st: RunState, emit: Emit) -> bool:
    """One optimisation step; returns False once the run has nothing left to do."""
    if st.finished:
        return False
    start = time.perf_counter()
    space = st.spaces[st.space_index]
    if st.step_in_space == 0:
        begin_space(ctx, st, emit)
    by_loss = ctx.config.selection_basis == "loss"
    before = (st.ws.detach().clone(), st.f.detach().clone()) if by_loss else None
    loss = _optimise(ctx, st)
    space.losses[-1] = loss  # the loss belongs to the latent it was computed at, before this update
    if by_loss and (st.best_loss is None or loss < st.best_loss):
        st.best_loss = loss
        space.best_step, st.best = st.step_in_space, before
    st.step_in_space += 1
    st.steps_done += 1
    st.rendered = None  # the latents moved: the cached rendering is stale
    _record_candidate(ctx, st, st.step_in_space)
    st.elapsed_s += time.perf_counter() - start
    _emit_step(ctx, st, emit)
    if st.step_in_space == ctx.steps_per_space:
        end_space(ctx, st, emit)
    return not st.finished


def begin_space(ctx: RunContext, st: RunState, emit: Emit) -> None:
    space = st.spaces[st.space_index]
    cfg, G = ctx.config, ctx.G
    lr_w, lr_f = cfg.learning_rates(G.tuned_lrs, pixels=space.cut == G.pixel_cut, tuned_pixel=G.tuned_pixel_lrs)
    space.lr_w, space.lr_f = lr_w, lr_f
    trains_ws = ctx.method.trains_ws
    st.ws.requires_grad_(trains_ws)
    st.f.requires_grad_(True)
    # A new optimiser per space: its momentum belongs to the space it was built in.
    params = [{"params": [st.f], "lr": lr_f}] + ([{"params": [st.ws], "lr": lr_w}] if trains_ws else [])
    pixels = space.cut == G.pixel_cut
    st.opt = space_optimizer(params, cfg.momentum, ctx.steps_per_space, st.f if pixels else None,
                             get_objective(cfg.objective).pixel_optimizer, G.pixel_bounds() if pixels else None)
    st.scheme = space.scheme = gradient.choose_scheme(cfg.sg_batch, G, space.cut, len(ctx.labels), st.f.device)
    space.distances, space.losses = [], []
    st.best, st.best_loss, st.rendered = None, None, None
    distance = _record_candidate(ctx, st, 0)
    images, preview = _preview(ctx, st, space.index, 0)
    st.last_preview = time.monotonic()
    emit(SpaceStartEvent(space.index, space.cut, lr_w, lr_f, st.scheme, distance, preview, images))


def _render(ctx: RunContext, st: RunState, part: slice | None) -> torch.Tensor:
    ws, f = (st.ws, st.f) if part is None else (st.ws[part], st.f[part])
    return ctx.info.from_generator(ctx.G.synthesize(ws, f, st.spaces[st.space_index].cut))


def _render_all(ctx: RunContext, st: RunState) -> torch.Tensor:
    with torch.no_grad():
        if st.scheme == "single":
            return _render(ctx, st, None)
        n, k = len(ctx.labels), ctx.config.sg_chunk
        return torch.cat([_render(ctx, st, slice(i, min(i + k, n))) for i in range(0, n, k)])


def current_images(ctx: RunContext, st: RunState) -> torch.Tensor:
    """The current latents rendered once per step, shared by the distance and the preview."""
    if st.rendered is None:
        st.rendered = _render_all(ctx, st).detach()
    return st.rendered


def _whole(ctx: RunContext, t: torch.Tensor) -> torch.Tensor | None:
    """The whole set's rows of a per-process tensor on rank 0 (None on the others); `t` in one process."""
    return t if ctx.shard is None else ctx.dist.gather_rows(t, ctx.shard)


def _preview(ctx: RunContext, st: RunState, space: int, step: int) -> tuple[torch.Tensor | None, str | None]:
    """(the whole set's current images on the CPU, the preview's path), written by rank 0 alone."""
    images = _whole(ctx, current_images(ctx, st))
    if not ctx.dist.writes:
        return None, None
    images = images.cpu()
    return images, save_preview(ctx.run_dir, space, step, images, ctx.info)


def _optimise(ctx: RunContext, st: RunState) -> float:
    obj, labels = ctx.objective, ctx.labels
    render = lambda part: _render(ctx, st, part)
    obj.start_iteration()
    total = 0.0
    for update in range(obj.updates_per_iteration):
        st.opt.zero_grad()
        loss_and_grad = lambda images: obj.loss_and_grad(images, labels)
        if st.scheme == "single":
            total += gradient.single_pass(render, loss_and_grad)
        else:
            total += gradient.chunked(render, loss_and_grad, len(labels), ctx.config.sg_chunk)
        st.opt.step(st.step_in_space)
        obj.after_update(lambda: _render_all(ctx, st), labels, update)
    return ctx.dist.sum(total / obj.updates_per_iteration)  # each process's classes' part of the loss


def _record_candidate(ctx: RunContext, st: RunState, step_index: int) -> float | None:
    """Measure the current latent and keep a copy of it if it is the best of the space so far."""
    space = st.spaces[st.space_index]
    distance = None
    if ctx.distance is not None:
        distance = ctx.distance(ctx.info.to_generator(current_images(ctx, st)), ctx.labels)
        distance = ctx.dist.sum(distance)  # a sum over classes: every process keeps the same step
    space.distances.append(distance)
    space.losses.append(None)
    basis = ctx.config.selection_basis
    # With the loss basis a latent's loss is known only after the next update has evaluated it;
    # step() keeps those candidates. The very last latent has no loss and is never picked by it.
    if basis == "last" or (basis == "distance" and (space.best_distance is None or distance < space.best_distance)):
        space.best_step, space.best_distance = step_index, distance
        # Clones, not references: the optimiser updates ws and f in place.
        st.best = (st.ws.detach().clone(), st.f.detach().clone())
    return distance


def end_space(ctx: RunContext, st: RunState, emit: Emit) -> None:
    space = st.spaces[st.space_index]
    ws, f = st.best
    st.ws, st.f = ws.clone(), f.clone()
    st.rendered = None
    images, ws, f = (_whole(ctx, t) for t in (current_images(ctx, st), ws, f))
    space.best_distance = space.distances[space.best_step]  # the kept latent's, whatever the basis
    if ctx.config.accuracy_pick:  # rank 0 holds the whole set: it evaluates, every process learns the score
        space.accuracy = ctx.dist.share(_accuracy(ctx, images) if ctx.dist.writes else None)
    if ctx.dist.writes:
        labels = ctx.labels if ctx.shard is None else ctx.shard.labels
        path = write_space_file(ctx.run_dir, space.index, ws, f, space.cut, images, labels,
                                getattr(ctx.objective, "syn_lr", None))
        emit(SpaceEndEvent(space.index, space.cuts, space.best_step, space.best_distance, space.accuracy,
                           str(path.relative_to(ctx.run_dir)), images.cpu()))
    _advance(ctx, st)
    st.space_index += 1
    st.step_in_space = 0


def _advance(ctx: RunContext, st: RunState) -> None:
    if st.space_index + 1 >= len(st.spaces):
        return
    nxt = st.spaces[st.space_index + 1].cut
    with torch.no_grad():
        f = st.f
        for k in range(st.spaces[st.space_index].cut, nxt):
            f = ctx.G.advance(st.ws, f, k)
        st.f = clip(ctx, f).detach().clone()


def _accuracy(ctx: RunContext, images: torch.Tensor) -> float:
    cfg = ctx.config
    # One seed for every space: each space's set is scored by the same evaluation networks (paired).
    result = evaluate_synset(images, ctx.labels, ctx.val, cfg.eval_model,
                             get_protocol(cfg.eval_protocol, cfg.eval_epochs), cfg.eval_repeats,
                             ctx.streams.seed_for("eval"), ctx.device)
    return result.mean


def _emit_step(ctx: RunContext, st: RunState, emit: Emit) -> None:
    space = st.spaces[st.space_index]
    preview, images = None, None
    due = st.step_in_space % ctx.config.preview_every == 0 or st.step_in_space == ctx.steps_per_space
    # Clocks differ between processes and the preview gathers the images (a collective): they agree first.
    if ctx.dist.any(due or time.monotonic() - st.last_preview >= PREVIEW_EVERY_S):
        st.last_preview = time.monotonic()
        images, preview = _preview(ctx, st, space.index, st.step_in_space)
    emit(StepEvent(space.index, space.cut, st.step_in_space, st.steps_done, space.losses[-2], space.distances[-1],
                   space.best_step, space.lr_w, space.lr_f, st.elapsed_s, preview, images))
