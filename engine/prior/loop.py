"""The training loop: resume if a checkpoint exists, step, checkpoint with a sample grid, export."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .checkpoint import load_checkpoint, load_state_file, save_checkpoint, save_state_file
from .config import TrainConfig
from .export import export_generator
from .grid import save_grid
from .trainer import PriorTrainer

# Keys that may change between a run and its resumption: they do not change what the steps already
# taken computed (the anneal window lies at the end of the run, which kimg moves too).
RESUMABLE_CHANGES = {"kimg", "ckpt_kimg", "anneal_kimg", "projected_weight"}


@dataclass(frozen=True)
class TrainResult:
    steps: int
    images_seen: int
    train_seconds: float
    resumed_from_step: int
    checkpoint: Path
    export_sha256: str | None


def train_prior(cfg: TrainConfig, images_u8: torch.Tensor, labels: torch.Tensor, class_names: tuple[str, ...],
                out_dir: Path, device: torch.device, export: Path | None = None, progress: bool = True,
                log: Callable[[str], None] = print, state_file: Path | None = None) -> TrainResult:
    """Train (or continue) in `out_dir`. `state_file`: a second copy of the training state, written at
    every checkpoint, meant to be committed, so that a run whose folder is lost with its machine
    continues elsewhere from it; the newer of the two (by images seen) is resumed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = PriorTrainer(cfg, images_u8, labels, device)
    start = _resume(trainer, cfg, out_dir, log, state_file)
    (out_dir / "training_options.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    every = max(1, round(cfg.ckpt_kimg * 1000 / cfg.batch))
    bar = tqdm(total=cfg.total_images, initial=trainer.images_seen, unit="img", disable=not progress,
               mininterval=5, dynamic_ncols=True)
    tick = time.perf_counter()
    tick_images = trainer.images_seen
    ckpt = out_dir / "checkpoint.pt"
    while trainer.images_seen < cfg.total_images:
        t0 = time.perf_counter()
        stats = trainer.step()
        trainer.train_seconds += time.perf_counter() - t0
        bar.update(cfg.batch)
        if trainer.step_count % every == 0 or trainer.images_seen >= cfg.total_images:
            ckpt = _checkpoint(trainer, out_dir, class_names, state_file)
            rate = (time.perf_counter() - tick) / max(trainer.images_seen - tick_images, 1) * 1000
            _log_progress(log, out_dir, trainer, stats, rate)
            tick, tick_images = time.perf_counter(), trainer.images_seen
    bar.close()
    if trainer.step_count == start:  # nothing left to train: still leave a checkpoint and grid behind
        ckpt = _checkpoint(trainer, out_dir, class_names, state_file)
    sha = _export(trainer, cfg, export, log) if export else None
    return TrainResult(trainer.step_count, trainer.images_seen, trainer.train_seconds, start, ckpt, sha)


def _resume(trainer: PriorTrainer, cfg: TrainConfig, out_dir: Path, log: Callable[[str], None],
            state_file: Path | None) -> int:
    candidates = [(load_checkpoint(out_dir), out_dir / "checkpoint.pt")]
    if state_file is not None and Path(state_file).is_file():
        candidates.append((load_state_file(state_file), Path(state_file)))
    candidates = [(s, p) for s, p in candidates if s is not None]
    if not candidates:
        return 0
    state, source = max(candidates, key=lambda c: c[0]["images_seen"])
    old, new = state["config"], cfg.to_dict()
    changed = sorted(k for k in new if k not in RESUMABLE_CHANGES and old.get(k) != new[k])
    if changed:
        raise ValueError(f"{source} was trained with different settings ({', '.join(changed)}); "
                         "use the same settings to resume, or a new --out folder")
    trainer.load_state_dict(state)
    log(f"resumed from {source} at step {trainer.step_count} "
        f"({trainer.images_seen / 1000:.1f} kimg, {trainer.train_seconds / 60:.1f} min trained)")
    return trainer.step_count


def _checkpoint(trainer: PriorTrainer, out_dir: Path, class_names: tuple[str, ...], state_file: Path | None) -> Path:
    state = trainer.state_dict()
    path = save_checkpoint(state, out_dir)
    if state_file is not None:
        save_state_file(state, state_file)
    save_grid(trainer.G_ema, out_dir / f"samples_{trainer.images_seen // 1000:06d}kimg.png", class_names)
    return path


def _log_progress(log: Callable[[str], None], out_dir: Path, trainer: PriorTrainer, stats: dict, sec_per_kimg: float) -> None:
    record = {"step": trainer.step_count, "kimg": trainer.images_seen / 1000,
              "train_min": trainer.train_seconds / 60, "sec_per_kimg": sec_per_kimg, **stats}
    with open(out_dir / "stats.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    log(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))


def _export(trainer: PriorTrainer, cfg: TrainConfig, path: Path, log: Callable[[str], None]) -> str:
    meta = {"dataset": cfg.dataset, "kimg": trainer.images_seen / 1000, "steps": trainer.step_count,
            "seed": cfg.seed, "train_seconds": round(trainer.train_seconds, 1), "threads": torch.get_num_threads()}
    sha = export_generator(trainer.G_ema, path, meta)
    log(f"exported the EMA generator to {path} (sha256 {sha})")
    return sha
