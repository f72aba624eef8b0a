"""A distillation run as an explicit state machine: `prepare()` once, then `step()` until it returns False.

Each step is one optimisation step in the current space. The first step of a space measures the
space's initial latent (a candidate of its own, paper Alg. 1 line 5); the last step of a space fixes
its selection (a clone of the latents at the best step), optionally evaluates it on held-out data,
saves it, checkpoints the run, and advances the selected latent to the next space's first cut.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import asdict
from pathlib import Path

import torch

from .. import objectives
from ..augment import DSAParams
from ..classifiers import load_classifier
from ..data import ImageSet, RealSampler, dataset_info, holdout_split, load_dataset
from ..data.imagenet_subsets import imagenet_indices, subsets
from ..distance import ClassRelevantDistance
from ..evaluate import evaluate_synset, get_protocol
from ..export import write_json
from ..generators import LayeredGenerator, PixelGenerator, load_generator
from ..nets import get_network
from ..provenance import provenance
from ..streams import Streams
from . import gradient
from .checkpoint import load_checkpoint, save_checkpoint
from .config import RunConfig
from .events import ErrorEvent, EventBus, EventKind, SelectedEvent, SpaceEndEvent, StateEvent, StepEvent
from .export import export_space, save_preview, write_space_file
from .spaces import SpaceRecord, plan_spaces


class Run:
    """One run in one folder. Not thread-safe by itself: drive it from one thread (see RunController)."""

    def __init__(self, config: RunConfig, run_dir: str | Path, *, generator: LayeredGenerator | None = None,
                 classifier=None):
        """`generator`/`classifier` replace what the config's specs would load (tests, embedding apps)."""
        self.config = config
        self._given_generator = generator
        self._given_classifier = classifier
        self.run_dir = Path(run_dir)
        self.bus = EventBus(None)
        self.state = "created"
        self.spaces: list[SpaceRecord] = []
        self.space_index = 0
        self.step_in_space = 0
        self.steps_done = 0
        self.selected_space: int | None = None
        self.selection_reason: str | None = None
        self.elapsed_s = 0.0
        self.scheme: str | None = None
        self._prepared = False
        self._current: torch.Tensor | None = None

    # ----------------------------------------------------------------- set-up
    def prepare(self) -> None:
        """Load data, generator, proxy and objective, and initialise the latents (or restore them). Once."""
        if self._prepared:
            return
        cfg, device = self.config, torch.device(self.config.device)
        self.streams = Streams(cfg.seed)
        self.gen = self.streams["real"]
        self.info = dataset_info(cfg.dataset)
        train, self.val = self._splits()
        self.sampler = RealSampler(train, device, self.gen)
        self.G = self._generator(device)
        plan = plan_spaces(len(self.G.layers), cfg.method, cfg.first_cut, cfg.last_cut, cfg.layers_per_space,
                           cfg.glad_cut)
        self.spaces = [SpaceRecord(i, cuts, self.G.layers[cuts[0]].name) for i, cuts in enumerate(plan)]
        self.steps_per_space = self._steps_per_space()
        self.labels = torch.arange(self.info.num_classes, device=device).repeat_interleave(cfg.ipc)
        self.distance = self._distance(device)
        self.objective = self._objective(device)
        self.ws, self.f = self._initial_latents()
        self.scheme = gradient.choose_scheme(cfg.sg_batch, self.G, self.spaces[0].cut, len(self.labels), device)
        # The folder appears only once everything has loaded: bad input leaves nothing behind.
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.bus.log_to(self.run_dir / "events.jsonl")
        self._provenance = provenance(cfg.device)  # once: it runs git, and run.json is rewritten often
        self._prepared = True
        if (self.run_dir / "checkpoint.pt").exists():
            load_checkpoint(self)
        self._write_run_json()

    def _splits(self) -> tuple[ImageSet, ImageSet | None]:
        cfg = self.config
        train = load_dataset(cfg.dataset, "train", cfg.data_root)
        if not cfg.accuracy_pick:
            return train, None
        # Accuracy is measured on images held out of the training data, never on the test split.
        return holdout_split(train, cfg.holdout_per_class, cfg.seed)

    def _generator(self, device: torch.device) -> LayeredGenerator:
        if self.config.method == "pixel":
            info = self.info
            return PixelGenerator(info.channels, info.resolution, info.num_classes, info.mean, info.std).to(device)
        G = self._given_generator or load_generator(self.config.generator_spec, device)
        if (G.resolution, G.channels) != (self.info.resolution, self.info.channels):
            raise ValueError(f"the generator makes {G.channels}x{G.resolution}px images but {self.info.name} "
                             f"is {self.info.channels}x{self.info.resolution}px")
        return G.requires_grad_(False).eval()

    def _steps_per_space(self) -> int:
        cfg = self.config
        if cfg.method != "glad":
            return cfg.steps
        if cfg.glad_steps:
            return cfg.glad_steps
        hpd = plan_spaces(len(self.G.layers), "hpd", cfg.first_cut, cfg.last_cut, cfg.layers_per_space, None)
        return cfg.steps * len(hpd)  # the same total budget as H-PD on this generator

    def _class_indices(self, width: int) -> list[int] | None:
        """Generator/classifier class of each dataset label when they were trained on ImageNet-1k."""
        if width == self.info.num_classes:
            return None
        if self.info.name in subsets():
            return list(imagenet_indices(self.info.name))
        raise ValueError(f"a {width}-class model cannot condition on {self.info.name}'s {self.info.num_classes} classes")

    def _distance(self, device: torch.device) -> ClassRelevantDistance | None:
        cfg = self.config
        if cfg.selection_basis != "distance":
            return None
        proxy = self._given_classifier or load_classifier(cfg.classifier_spec, device)
        idx = self._class_indices(proxy.num_classes)
        if idx is not None:
            proxy = proxy.restricted_to(idx)
        real, labels = self.sampler.sample_all(cfg.distance_real_per_class)
        return ClassRelevantDistance(proxy, self.info.to_generator(real), labels, self.info.num_classes)

    def _objective(self, device: torch.device):
        cfg, info = self.config, self.info
        ctx = objectives.MatchContext(
            real=self.sampler, streams=self.streams, batch_real=cfg.batch_real,
            dsa=DSAParams() if objectives.uses_dsa(cfg.objective) else None,
            new_net=lambda seed: get_network(cfg.net, info.channels, info.num_classes, info.resolution,
                                             seed=seed).to(device))
        overrides = {"outer_loop": cfg.outer_loop, "inner_loop": cfg.inner_loop}
        if cfg.objective == "tesla":
            overrides = {"buffers": cfg.buffers, "tesla": objectives.TeslaParams(
                syn_steps=cfg.syn_steps, expert_epochs=cfg.expert_epochs, max_start_epoch=cfg.max_start_epoch)}
        return objectives.build_objective(cfg.objective, ctx, cfg.ipc, **overrides)

    def _initial_latents(self) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, G = self.config, self.G
        n, device = len(self.labels), self.labels.device
        if cfg.method == "pixel":
            real, _ = self.sampler.sample_all(cfg.ipc)
            pixels = torch.randn(real.shape, generator=self.gen).to(device) if cfg.init_kind == "noise" else real
            ws = pixels.flatten(1).unsqueeze(1)
        else:
            idx = self._class_indices(G.num_classes)
            cls = self.labels if idx is None else torch.tensor(idx, device=device)[self.labels]
            c = torch.nn.functional.one_hot(cls, G.num_classes).float()
            if cfg.init_kind == "avg":
                ws = G.mean_ws(c, n=cfg.mean_ws_samples, generator=self.gen)
            else:
                with torch.no_grad():
                    ws = G.mapping(torch.randn(n, G.z_dim, generator=self.gen).to(device), c)
        with torch.no_grad():
            f = self._clip(G.features(ws, self.spaces[0].cut))
        return ws.detach().clone(), f.detach().clone()

    def _clip(self, f: torch.Tensor) -> torch.Tensor:
        c = self.config.f_clip if self.config.f_clip is not None else self.G.feature_clip
        if c is None:
            return f
        return torch.nan_to_num(f.float(), nan=0.0, posinf=5.0, neginf=-5.0).clamp(-c, c)

    # ------------------------------------------------------------- the loop
    @property
    def finished(self) -> bool:
        return self._prepared and self.space_index >= len(self.spaces)

    @property
    def total_steps(self) -> int:
        return self.steps_per_space * len(self.spaces)

    def step(self) -> bool:
        """One optimisation step; returns False once the run has nothing left to do."""
        if not self._prepared:
            self.prepare()
        if self.finished:
            return False
        start = time.perf_counter()
        space = self.spaces[self.space_index]
        if self.step_in_space == 0:
            self._begin_space(space)
        before = (self.ws.detach().clone(), self.f.detach().clone()) if self._by_loss else None
        loss = self._optimise()
        space.losses[-1] = loss  # the loss belongs to the latent it was computed at, before this update
        if self._by_loss and (self._best_loss is None or loss < self._best_loss):
            self._best_loss = loss
            space.best_step, self.best = self.step_in_space, before
        self.step_in_space += 1
        self.steps_done += 1
        self._current = None  # the latents moved: the cached rendering is stale
        self._record_candidate(space, self.step_in_space)
        self.elapsed_s += time.perf_counter() - start
        self._emit_step(space)
        if self.step_in_space == self.steps_per_space:
            self._end_space(space)
        return not self.finished

    def _begin_space(self, space: SpaceRecord) -> None:
        lr_w, lr_f = self.config.learning_rates(self.G.tuned_lrs, pixels=space.cut == self.G.pixel_cut,
                                                tuned_pixel=self.G.tuned_pixel_lrs)
        space.lr_w, space.lr_f = lr_w, lr_f
        self.ws.requires_grad_(self.config.method != "pixel")
        self.f.requires_grad_(True)
        # A new optimiser per space: its momentum belongs to the space it was built in.
        params = [{"params": [self.f], "lr": lr_f}]
        if self.config.method != "pixel":
            params.append({"params": [self.ws], "lr": lr_w})
        self.opt = torch.optim.SGD(params, momentum=self.config.momentum)
        self.scheme = gradient.choose_scheme(self.config.sg_batch, self.G, space.cut, len(self.labels), self.f.device)
        space.scheme = self.scheme
        space.distances, space.losses = [], []
        self.best, self._best_loss, self._current = None, None, None
        self._record_candidate(space, 0)

    def _render(self, part: slice | None) -> torch.Tensor:
        ws, f = (self.ws, self.f) if part is None else (self.ws[part], self.f[part])
        return self.info.from_generator(self.G.synthesize(ws, f, self.spaces[self.space_index].cut))

    def _render_all(self) -> torch.Tensor:
        with torch.no_grad():
            if self.scheme == "single":
                return self._render(None)
            n, k = len(self.labels), self.config.sg_chunk
            return torch.cat([self._render(slice(i, min(i + k, n))) for i in range(0, n, k)])

    def _current_images(self) -> torch.Tensor:
        """The current latents rendered once per step, shared by the distance and the preview."""
        if self._current is None:
            self._current = self._render_all().detach()
        return self._current

    def _optimise(self) -> float:
        obj = self.objective
        obj.start_iteration()
        total = 0.0
        for update in range(obj.updates_per_iteration):
            self.opt.zero_grad(set_to_none=True)
            loss_and_grad = lambda images: obj.loss_and_grad(images, self.labels)
            if self.scheme == "single":
                total += gradient.single_pass(self._render, loss_and_grad)
            else:
                total += gradient.chunked(self._render, loss_and_grad, len(self.labels), self.config.sg_chunk)
            self.opt.step()
            obj.after_update(self._render_all, self.labels, update)
        return total / obj.updates_per_iteration

    def _record_candidate(self, space: SpaceRecord, step: int) -> None:
        """Measure the current latent and keep a copy of it if it is the best of the space so far."""
        distance = None
        if self.distance is not None:
            distance = self.distance(self.info.to_generator(self._current_images()), self.labels)
        space.distances.append(distance)
        space.losses.append(None)
        basis = self.config.selection_basis
        # With the loss basis a latent's loss is known only after the next update has evaluated it;
        # step() keeps those candidates. The very last latent has no loss and is never picked by it.
        better = basis == "last" or (basis == "distance" and (space.best_distance is None or distance < space.best_distance))
        if better:
            self._keep(space, step, distance)

    def _keep(self, space: SpaceRecord, step: int, distance: float | None) -> None:
        space.best_step, space.best_distance = step, distance
        # Clones, not references: the optimiser updates self.ws and self.f in place.
        self.best = (self.ws.detach().clone(), self.f.detach().clone())

    @property
    def _by_loss(self) -> bool:
        return self.config.selection_basis == "loss"

    def _end_space(self, space: SpaceRecord) -> None:
        ws, f = self.best
        self.ws, self.f = ws.clone(), f.clone()
        self._current = None
        images = self._current_images()
        if self.config.accuracy_pick:
            space.accuracy = self._accuracy(images)
        path = write_space_file(self.run_dir, space.index, ws, f, space.cut, images, self.labels)
        self.bus.emit(SpaceEndEvent(EventKind.SPACE_END, self.bus.next_seq(), time.time(), space.index,
                                    space.cuts, space.best_step, space.best_distance, space.accuracy,
                                    str(path.relative_to(self.run_dir)), images.cpu()))
        self._advance(space)
        self.space_index += 1
        self.step_in_space = 0
        if self.finished:
            self._finish()
        save_checkpoint(self)
        self._write_run_json()

    def _advance(self, space: SpaceRecord) -> None:
        if self.space_index + 1 >= len(self.spaces):
            return
        nxt = self.spaces[self.space_index + 1].cut
        with torch.no_grad():
            f = self.f
            for k in range(space.cut, nxt):
                f = self.G.advance(self.ws, f, k)
            self.f = self._clip(f).detach().clone()

    def _accuracy(self, images: torch.Tensor) -> float:
        cfg = self.config
        result = evaluate_synset(images, self.labels, self.val, cfg.eval_model,
                                 get_protocol(cfg.eval_protocol, cfg.eval_epochs), cfg.eval_repeats,
                                 cfg.seed, self.labels.device)
        return result.mean

    def _finish(self) -> None:
        if self.selection_reason != "user":
            scored = [s for s in self.spaces if s.accuracy is not None]
            if scored:
                best = max(scored, key=lambda s: s.accuracy)
                self._set_selected(best.index, "accuracy")
            else:
                self._set_selected(len(self.spaces) - 1, "last")
        export_space(self, self.selected_space)

    # ------------------------------------------------------------ commands
    def select_layer(self, space: int) -> None:
        """The user's choice of which finished space's images to keep; re-exports if the run is over."""
        done = self.space_index
        if not 0 <= space < done:
            raise ValueError(f"space {space} has not finished yet; finished spaces: 0..{done - 1}" if done
                             else "no space has finished yet")
        self._set_selected(space, "user")
        if self.finished:
            export_space(self, space)
        self._write_run_json()

    def _set_selected(self, space: int, reason: str) -> None:
        self.selected_space, self.selection_reason = space, reason
        self.bus.emit(SelectedEvent(EventKind.SELECTED, self.bus.next_seq(), time.time(), space, reason))

    def emit_state(self, state: str, message: str = "") -> None:
        self.state = state
        self.bus.emit(StateEvent(EventKind.STATE, self.bus.next_seq(), time.time(), state, message))
        if self._prepared:
            self._write_run_json()

    def fail(self, exc: BaseException) -> None:
        self.bus.emit(ErrorEvent(EventKind.ERROR, self.bus.next_seq(), time.time(), str(exc),
                                 "".join(traceback.format_exception(exc))))
        self.emit_state("failed", str(exc))

    # ------------------------------------------------------------ reporting
    def _emit_step(self, space: SpaceRecord) -> None:
        preview, images = None, None
        if self.step_in_space % self.config.preview_every == 0 or self.step_in_space == self.steps_per_space:
            images = self._current_images().cpu()
            preview = save_preview(self.run_dir, space.index, self.step_in_space, images, self.info)
        self.bus.emit(StepEvent(EventKind.STEP, self.bus.next_seq(), time.time(), space.index, space.cut,
                                self.step_in_space, self.steps_done, space.losses[-2], space.distances[-1],
                                space.best_step, space.lr_w, space.lr_f, self.elapsed_s, preview, images))

    def summary(self) -> dict:
        return {
            "config": asdict(self.config),
            "state": self.state,
            "method": self.config.method,
            "generator": self.config.generator_spec,
            "cuts": [{"index": c.index, "name": c.name, "shape": list(c.shape)} for c in self.G.layers],
            "spaces": [s.to_json() for s in self.spaces],
            "steps_per_space": self.steps_per_space,
            "steps_done": self.steps_done,
            "total_steps": self.total_steps,
            "selection_basis": self.config.selection_basis,
            "selected_space": self.selected_space,
            "selection_reason": self.selection_reason,
            "gradient_scheme": self.scheme,
            "holdout_per_class": self.config.holdout_per_class if self.config.accuracy_pick else 0,
            "dataset": {"name": self.info.name, "classes": list(self.info.class_names),
                        "mean": self.info.mean, "std": self.info.std},
            "losses": [x for s in self.spaces for x in s.losses if x is not None],
            "elapsed_s": self.elapsed_s,
            "provenance": self._provenance,
        }

    def _write_run_json(self) -> None:
        write_json(self.run_dir / "run.json", self.summary())
