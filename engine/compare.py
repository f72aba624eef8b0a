"""Paired multi-seed comparison: every (arm, seed) cell is a run folder, distilled and then evaluated by the
suite (engine/suite.py); the grid's results go to compare.json and compare.md.

An arm is a method with a selection basis (`hpd-distance`, `hpd-last`, `glad`, `pixel`, ...). Runs are
paired by seed (engine/streams.py): at one seed every arm draws the same real batches and initial noise,
and the suite derives its evaluation networks from the run's seed, so they are the same networks too. A
pair of arms is therefore compared by the per-seed difference, averaged over seeds, with a 95% interval
from a paired t-test (mean ± t(0.975, n-1) · sd / sqrt(n)).

Resumable cell by cell: a finished cell (run.json finished with the same config, eval.json of the same
suite) is skipped, a killed one continues from its checkpoint (the engine's resume) and a killed evaluation
from its last finished model. Wall times of every session are kept per cell in timings.json, and compare.json
and compare.md are rewritten after every cell, so a grid can run in the background over several sessions.

GLaD's cut: one fixed cut (the base config's `glad_cut`, else the generator's middle one), or a sweep
(`Arm.glad_cuts`): a GLaD cell per cut and seed, and at each seed the cut with the best held-out accuracy
(the accuracy pick's held-out images, never the test split; needs `accuracy_pick`) is the arm's cell there,
as H-PD's accuracy pick chooses among its spaces per run.

Under torchrun (`dist`) the processes go through the grid together: each cell's distillation is a
class-sharded run (engine/distributed.py; an objective that cannot be spread is refused before any work)
and its evaluation shares the networks (engine/suite.py). Rank 0 alone reads the folders (its view reaches
the others), logs, and writes timings.json, compare.json and compare.md.
"""
from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

from .data import ImageSet, load_dataset
from .distributed import Distributed
from .export import write_json
from .provenance import provenance
from .run import Run, RunConfig
from .run.config import METHODS, SELECTIONS, same_config
from .run.context import check_distributable
from .run.spaces import plan_spaces
from .suite import EVAL_FILE, PARTIAL_FILE, SuiteSpec, eval_seed, evaluate_run

COMPARE_FORMAT = "hpd-studio/compare/1"
TIMINGS_FILE = "timings.json"
# Fields a comparison sets per cell; every other RunConfig field is shared by the whole grid.
CELL_FIELDS = {"method", "selection", "seed", "glad_cut"}

Progress = Callable[[str, int, int], None]

# Two-sided 95% quantiles of Student's t, t(0.975, df), df = 1..30 (beyond: a Cornish-Fisher expansion).
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788,
         2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
         2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


def t975(df: int) -> float:
    """t(0.975, df): the half-width factor of a two-sided 95% t-interval."""
    if df < 1:
        raise ValueError(f"a t-interval needs at least 1 degree of freedom, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def paired_difference(a: dict[int, float], b: dict[int, float]) -> dict | None:
    """a - b over the seeds both have: per-seed differences, their mean, sd (n-1), n, and the 95% paired
    t-interval (None with one seed). None when no seed is shared."""
    seeds = [s for s in a if s in b]
    if not seeds:
        return None
    diffs = {s: a[s] - b[s] for s in seeds}
    values = list(diffs.values())
    mean = statistics.fmean(values)
    n = len(values)
    out = {"seeds": seeds, "per_seed": diffs, "mean": mean, "n": n, "sd": None, "ci95": None, "t": None}
    if n > 1:
        sd = statistics.stdev(values)
        half = t975(n - 1) * sd / math.sqrt(n)
        out |= {"sd": sd, "ci95": [mean - half, mean + half], "t": (mean / (sd / math.sqrt(n))) if sd > 0 else None}
    return out


def summarize(values: dict[int, float]) -> dict | None:
    """Mean and sample std (n-1) over seeds."""
    if not values:
        return None
    v = list(values.values())
    return {"per_seed": values, "mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0,
            "n": len(v)}


# ------------------------------------------------------------------------------------------ the grid
@dataclass(frozen=True)
class Arm:
    method: str
    selection: str | None = None        # None: the method's default basis
    glad_cuts: tuple[int, ...] = ()     # GLaD: sweep these cuts, pick per seed by held-out accuracy

    @property
    def label(self) -> str:
        return self.method + (f"-{self.selection}" if self.selection else "")

    @property
    def sweep(self) -> bool:
        return len(self.glad_cuts) > 1


def parse_arms(methods: list[str], selections: list[str] | None = None,
               glad_cuts: list[int] | None = None) -> tuple[Arm, ...]:
    """`methods` as given to --methods (a token `method:basis` fixes that arm's basis); `selections`
    gives H-PD one arm per basis; `glad_cuts` makes GLaD a sweep over those cuts."""
    arms: list[Arm] = []
    for token in methods:
        method, _, basis = token.partition(":")
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose among: {', '.join(METHODS)}")
        bases = [basis] if basis else (selections if method == "hpd" and selections else [None])
        for b in bases:
            if b is not None and b not in SELECTIONS:
                raise ValueError(f"unknown selection {b!r}; choose among: {', '.join(SELECTIONS)}")
            cuts = tuple(glad_cuts) if method == "glad" and glad_cuts else ()
            arm = Arm(method, b, cuts)
            if any(a.label == arm.label for a in arms):
                raise ValueError(f"the arm {arm.label} is listed twice")
            arms.append(arm)
    if not arms:
        raise ValueError("--methods needs at least one method")
    return tuple(arms)


@dataclass(frozen=True)
class Cell:
    arm: Arm
    seed: int
    cut: int | None          # a GLaD sweep's cut (None: not a sweep cell)
    config: RunConfig
    folder: Path

    @property
    def name(self) -> str:
        return self.folder.name


@dataclass(frozen=True)
class CompareSpec:
    base: dict                          # RunConfig fields shared by every cell (none of CELL_FIELDS but glad_cut)
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...]
    suite: SuiteSpec
    pixel_steps: int | None = None      # None: H-PD's total steps on the generator (equal budgets)

    def __post_init__(self):
        if not self.seeds:
            raise ValueError("--seeds needs at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds lists a seed twice: {list(self.seeds)}")
        bad = sorted(set(self.base) & (CELL_FIELDS - {"glad_cut"}))
        if bad:
            raise ValueError(f"the comparison sets {', '.join(bad)} per cell; give them with --methods, --selections "
                             "and --seeds")
        unknown = sorted(set(self.base) - {f.name for f in fields(RunConfig)})
        if unknown:
            raise ValueError(f"not run settings: {', '.join(unknown)}")
        if any(a.sweep for a in self.arms) and not self.base.get("accuracy_pick"):
            raise ValueError("--glad-cuts picks GLaD's cut by held-out accuracy: add --accuracy-pick (every cell then "
                             "holds out the same images, so all arms train on the same data)")
        if self.pixel_steps is not None and self.pixel_steps < 1:
            raise ValueError(f"--pixel-steps must be at least 1, got {self.pixel_steps}")


def hpd_total_steps(base: RunConfig, num_cuts: int) -> int:
    """H-PD's total steps on a generator with `num_cuts` cuts: what GLaD gets by default, and Pixel here."""
    return base.steps * len(plan_spaces(num_cuts, "hpd", base.first_cut, base.last_cut, base.layers_per_space, None))


def plan_cells(spec: CompareSpec, out: Path, num_cuts: int | None) -> list[Cell]:
    """Every cell in execution order (seed-major, so paired results arrive seed by seed), configs validated."""
    cells = []
    for seed in spec.seeds:
        for arm in spec.arms:
            values = dict(spec.base) | {"method": arm.method, "selection": arm.selection, "seed": seed}
            if arm.method == "pixel":  # Pixel's one space gets H-PD's total, as GLaD's does by default
                values["steps_per_space"] = spec.pixel_steps or hpd_total_steps(RunConfig(**spec.base), num_cuts)
            cuts = arm.glad_cuts if arm.sweep else (None,)
            for cut in cuts:
                if cut is not None:
                    values["glad_cut"] = cut
                elif len(arm.glad_cuts) == 1:
                    values["glad_cut"] = arm.glad_cuts[0]
                suffix = f"-cut{cut}" if cut is not None else ""
                cells.append(Cell(arm, seed, cut, RunConfig(**values), out / f"{arm.label}{suffix}-seed{seed}"))
    return cells


# ------------------------------------------------------------------------------------------ one cell
def folder_state(folder: Path, config: RunConfig) -> str:
    """"new" (absent or empty), "finished" or "unfinished" for a folder of this very run; ValueError when
    the folder holds something else."""
    if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        return "new"
    meta = folder / "run.json"
    try:
        saved = json.loads(meta.read_text()) if meta.is_file() else None
    except json.JSONDecodeError:
        saved = None
    if saved is None:
        if (folder / "checkpoint.pt").exists() or (folder / "synthetic.pt").exists():
            raise ValueError(f"{folder} holds a run without a readable run.json; delete the folder to run its cell again")
        return "new"  # killed before its first run.json: nothing to keep
    if not same_config(saved.get("config"), config):
        raise ValueError(f"{folder} holds a different run (other settings); use another --out or delete that folder")
    return "finished" if saved.get("state") == "finished" else "unfinished"


def distill_cell(cell: Cell, generator=None, classifier=None, progress: Progress | None = None,
                 dist: Distributed | None = None) -> str:
    """Run the cell's distillation to its end (resuming it if a previous session was killed); returns the
    folder's state before: "new", "unfinished" or "finished" (then nothing ran). `dist`: the processes
    the run is spread over (rank 0 alone reports progress)."""
    dist = dist or Distributed()
    progress = progress if dist.writes else None
    state = dist.from_first(lambda: folder_state(cell.folder, cell.config))
    if state == "finished":
        return state
    run = Run(cell.config, cell.folder, generator=generator, classifier=classifier, dist=dist)
    try:
        run.prepare()
        run.emit_state("running")
        total = run.ctx.total_steps
        try:
            while run.step():
                if progress:
                    progress(f"{cell.name} distill", run.state.steps_done, total)
        except Exception as exc:  # recorded in the folder as the studio and `distill` do, then raised
            run.fail(exc)
            raise
        if progress:
            progress(f"{cell.name} distill", run.state.steps_done, total)
        run.emit_state("finished")
    finally:
        run.close()
    return state


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def evaluated(cell: Cell, suite: SuiteSpec) -> dict | None:
    """The cell's eval.json when it holds this suite's evaluation of every model (and scores if asked)."""
    data = _read_json(cell.folder / EVAL_FILE)
    if not data or data.get("protocol") != suite.protocol.to_json() or data.get("repeats") != suite.repeats:
        return None
    if data.get("seed") != eval_seed(suite, cell.seed)[0] or set(suite.models) - set(data.get("models", {})):
        return None
    if set(suite.score_models) - set(data.get("scores", {})):
        return None
    return data


def heldout_accuracy(cell: Cell) -> float | None:
    run = _read_json(cell.folder / "run.json")
    if not run or run.get("state") != "finished" or not run.get("spaces"):
        return None
    return run["spaces"][0].get("accuracy")


# ------------------------------------------------------------------------------------------ the grid run
def run_compare(spec: CompareSpec, out: str | Path, *, device: str = "cpu", cache: str | Path | None = None,
                generator=None, classifier=None, progress: Progress | None = None,
                log: Callable[[str], None] = print, test: ImageSet | None = None,
                dist: Distributed | None = None) -> dict:
    """Distil and evaluate every cell of the grid (skipping finished ones); returns compare.json's content.
    `generator`/`classifier` replace what the configs' specs would load (tests); `dist`: the processes
    that share every cell's work (default: this one alone; rank 0 alone logs and writes)."""
    dist = dist or Distributed()
    if not dist.writes:
        progress, log = None, (lambda _: None)
    out = Path(out)
    base = RunConfig(**spec.base)
    num_cuts = None
    if any(a.method == "pixel" for a in spec.arms) and spec.pixel_steps is None:
        num_cuts = _num_cuts(base, generator)
    cells = plan_cells(spec, out, num_cuts)
    for cell in cells:  # what cannot be spread is refused by every process alike, before any work
        check_distributable(cell.config, dist.world)
    timings = dist.from_first(lambda: _open_grid(out, cells))
    cache = Path(cache) if cache else out / "baselines"
    if test is None:
        test = load_dataset(base.dataset, "test", base.data_root)
    by_seed: dict[int, list[Cell]] = {}
    for cell in cells:
        by_seed.setdefault(cell.seed, []).append(cell)
    done = 0
    for seed in spec.seeds:
        for arm in spec.arms:
            arm_cells = [c for c in by_seed[seed] if c.arm == arm]
            for cell in arm_cells:
                done += 1
                t0, before = time.perf_counter(), dist.from_first(lambda: folder_state(cell.folder, cell.config))
                if before == "finished":
                    continue
                ended = "interrupted"  # an exception or Ctrl-C; a killed process records nothing
                try:
                    distill_cell(cell, generator, classifier, progress, dist)
                    ended = "finished"
                finally:
                    wall = time.perf_counter() - t0
                    _add_timing(timings, cell, "distill", wall, before, ended)
                    if dist.writes:
                        write_json(out / TIMINGS_FILE, timings)
                log(f"[{done}/{len(cells)}] {cell.name}: distilled in {wall:.0f} s"
                    + (" (resumed)" if before == "unfinished" else ""))
            chosen = dist.from_first(lambda: pick_cell(arm_cells)) if arm.sweep else arm_cells[0]
            if arm.sweep and dist.writes:
                log(f"{arm.label} seed {seed}: cut {chosen.cut} has the best held-out accuracy "
                    f"({', '.join(f'cut {c.cut} {_pct(heldout_accuracy(c))}' for c in arm_cells)})")
            if dist.from_first(lambda: evaluated(chosen, spec.suite)) is None:
                t0, ended = time.perf_counter(), "interrupted"
                start = "partial" if dist.writes and (chosen.folder / PARTIAL_FILE).exists() else "new"
                try:
                    result = evaluate_run(chosen.folder, spec.suite, device=device, cache=cache, test=test,
                                          progress=(lambda st, d, t, n=chosen.name: progress(f"{n} {st}", d, t))
                                          if progress else None, dist=dist)
                    ended = "finished"
                finally:
                    wall = time.perf_counter() - t0
                    _add_timing(timings, chosen, "evaluate", wall, start, ended)
                    if dist.writes:
                        write_json(out / TIMINGS_FILE, timings)
                back = result["models"].get(result["backbone"])
                log(f"{chosen.name}: evaluated in {wall:.0f} s; backbone {_pct(back['mean'] if back else None)}, "
                    f"cross-arch {_pct(result['cross_arch_mean'])}")
            if dist.writes:
                report = build_report(spec, out, cells, timings)
                write_json(out / "compare.json", report)
                (out / "compare.md").write_text(markdown(report))
    return dist.from_first(lambda: build_report(spec, out, cells, timings))


def report_grid(spec: CompareSpec, out: str | Path, generator=None) -> dict:
    """compare.json and compare.md written from the cells already in `out`, distilling and evaluating nothing:
    a grid's figures so far (while its cells run in another process, or after a sub-grid of it ran with
    fewer arms or models, which rewrites both files in its own terms). Returns compare.json's content.
    `generator` replaces the one the configs name (tests)."""
    out = Path(out)
    if not out.is_dir():
        raise ValueError(f"{out} is not a folder; give the --out of a grid that has run")
    base = RunConfig(**spec.base)
    num_cuts = _num_cuts(base, generator) if any(a.method == "pixel" for a in spec.arms) and spec.pixel_steps is None else None
    cells = plan_cells(spec, out, num_cuts)
    for cell in cells:  # a folder of other settings is refused, as a run of the grid would refuse it
        folder_state(cell.folder, cell.config)
    report = build_report(spec, out, cells, _read_json(out / TIMINGS_FILE) or {})
    write_json(out / "compare.json", report)
    (out / "compare.md").write_text(markdown(report))
    return report


def _open_grid(out: Path, cells: list[Cell]) -> dict:
    """The grid's folder made ready, a folder of another run refused before any work; the timings so far."""
    for cell in cells:
        folder_state(cell.folder, cell.config)
    out.mkdir(parents=True, exist_ok=True)
    return _read_json(out / TIMINGS_FILE) or {}


def _num_cuts(base: RunConfig, generator) -> int:
    """The generator's number of cuts (what H-PD's plan, hence Pixel's equal budget, depends on)."""
    if generator is not None:
        return len(generator.layers)
    from .generators import load_generator
    try:
        spec = base.generator_spec  # base has no method: H-PD's generator
    except ValueError as exc:
        raise ValueError(f"Pixel's steps default to H-PD's total on the generator ({exc}); give --generator, "
                         "or --pixel-steps N") from None
    return len(load_generator(spec, "cpu").layers)


def pick_cell(cells: list[Cell]) -> Cell:
    """The sweep cell with the best held-out accuracy (ties: the first cut listed)."""
    scored = [(heldout_accuracy(c), c) for c in cells]
    if any(a is None for a, _ in scored):
        missing = [c.name for a, c in scored if a is None]
        raise ValueError(f"{', '.join(missing)} have no held-out accuracy; the sweep needs --accuracy-pick")
    return max(scored, key=lambda ac: ac[0])[1]


def _add_timing(timings: dict, cell: Cell, phase: str, wall: float, start: str, ended: str) -> None:
    entry = timings.setdefault(cell.name, {})
    entry.setdefault(phase, []).append({"wall_s": wall, "start": start, "ended": ended,
                                        "at": time.strftime("%Y-%m-%d %H:%M:%S")})


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


# ------------------------------------------------------------------------------------------ the report
METRICS = ("backbone", "cross_arch", "lrs", "ars")


def cell_record(cell: Cell, suite: SuiteSpec, timings: dict) -> dict:
    run = _read_json(cell.folder / "run.json") or {}
    ev = evaluated(cell, suite)
    rec = {"arm": cell.arm.label, "seed": cell.seed, "cut": cell.cut, "folder": cell.name,
           "state": run.get("state", "absent"), "selected_space": run.get("selected_space"),
           "heldout_accuracy": [s.get("accuracy") for s in run.get("spaces", [])],
           "distill_step_s": run.get("elapsed_s"),
           "distill_wall_s": sum(t["wall_s"] for t in timings.get(cell.name, {}).get("distill", [])),
           "evaluate_wall_s": sum(t["wall_s"] for t in timings.get(cell.name, {}).get("evaluate", [])),
           "sessions": timings.get(cell.name, {}), "evaluated": ev is not None}
    if ev is not None:
        back = ev["models"].get(ev["backbone"])
        rec |= {"backbone_model": ev["backbone"], "backbone": back["mean"] if back else None,
                "cross_arch": ev["cross_arch_mean"], "cross_arch_models": ev["cross_arch_models"],
                "models": {m: r["mean"] for m, r in ev["models"].items()},
                "evaluate_network_s": ev.get("suite_wall_s"),
                "evaluate_test_s": sum(r.get("test_s", 0.0) for r in ev["models"].values())}
        scores = ev.get("scores", {}).get(ev["backbone"])
        if scores:
            rec["lrs"] = scores["lrs"]["mean"]
            if "ars" in scores:
                rec["ars"] = scores["ars"]["mean"]
    return rec


def build_report(spec: CompareSpec, out: Path, cells: list[Cell], timings: dict) -> dict:
    records = [cell_record(c, spec.suite, timings) for c in cells]
    # An arm's cell at a seed: the evaluated one (a sweep's picked cut; its other cuts only distil).
    arm_cells: dict[str, dict[int, dict]] = {a.label: {} for a in spec.arms}
    for rec in records:
        if rec["evaluated"]:
            arm_cells[rec["arm"]][rec["seed"]] = rec
    summary = {}
    for arm in spec.arms:
        per = arm_cells[arm.label]
        summary[arm.label] = {m: summarize({s: r[m] for s, r in per.items() if r.get(m) is not None}) for m in METRICS}
        # Distillation cost per seed: every cell of the arm at that seed (a sweep's every cut), finished ones.
        cost = {}
        for rec in records:
            if rec["arm"] == arm.label and rec["state"] == "finished":
                c = cost.setdefault(rec["seed"], [0.0, 0.0])
                c[0] += rec["distill_wall_s"] or 0.0
                c[1] += rec["distill_step_s"] or 0.0
        summary[arm.label]["distill_wall_s"] = _mean([c[0] for c in cost.values()])
        summary[arm.label]["distill_step_s"] = _mean([c[1] for c in cost.values()])
        summary[arm.label]["evaluate_network_s"] = _mean([r.get("evaluate_network_s") for r in per.values()])
    paired = []
    labels = [a.label for a in spec.arms]
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            entry = {"a": b, "b": a, "label": f"{b} − {a}"}
            for m in METRICS:
                va = {s: r[m] for s, r in arm_cells[b].items() if r.get(m) is not None}
                vb = {s: r[m] for s, r in arm_cells[a].items() if r.get(m) is not None}
                entry[m] = paired_difference(va, vb)
            paired.append(entry)
    glad = {}
    for arm in spec.arms:
        if arm.sweep:
            glad[arm.label] = {str(seed): {"heldout": {str(r["cut"]): (r["heldout_accuracy"] or [None])[0]
                                                        for r in records if r["arm"] == arm.label and r["seed"] == seed},
                                           "picked": arm_cells[arm.label].get(seed, {}).get("cut")}
                               for seed in spec.seeds}
    first = records[0] if records else {}
    return {
        "format": COMPARE_FORMAT,
        "out": str(out),
        "base": spec.base, "arms": [asdict(a) | {"label": a.label} for a in spec.arms], "seeds": list(spec.seeds),
        "pixel_steps": spec.pixel_steps,
        "suite": {"models": list(spec.suite.models), "protocol": spec.suite.protocol.to_json(),
                  "repeats": spec.suite.repeats, "score_models": list(spec.suite.score_models),
                  "whole_epochs": spec.suite.whole_epochs, "whole_repeats": spec.suite.whole_repeats,
                  "backbone": first.get("backbone_model"), "cross_arch_models": first.get("cross_arch_models")},
        "cells": records, "summary": summary, "paired": paired, "glad_sweep": glad,
        "test": "paired t-test over seeds: mean of the per-seed differences ± t(0.975, n-1)·sd/√n (sd with n-1)",
        "provenance": provenance(spec.base.get("device", "cpu")),
    }


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _acc(s: dict | None) -> str:
    if not s:
        return "-"
    return f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}" if s["n"] > 1 else f"{100 * s['mean']:.1f}"


def _score(s: dict | None) -> str:
    if not s:
        return "-"
    return f"{s['mean']:.3f} ± {s['std']:.3f}" if s["n"] > 1 else f"{s['mean']:.3f}"


def _diff(d: dict | None, scale: float = 100.0, digits: int = 1) -> str:
    if not d:
        return "-"
    text = f"{scale * d['mean']:+.{digits}f}"
    if d["ci95"] is not None:
        lo, hi = d["ci95"]
        text += f" [{scale * lo:+.{digits}f}, {scale * hi:+.{digits}f}]"
    return text


def _secs(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def markdown(report: dict) -> str:
    """compare.md: per-arm results over seeds, paired differences with intervals, and every cell."""
    base, suite = report["base"], report["suite"]
    scores = bool(suite["score_models"])
    backbone = suite["backbone"] or base.get("net", "convnet")
    cross = ", ".join(suite["cross_arch_models"] or [m for m in suite["models"] if m != backbone]) or "none"
    proto = suite["protocol"]
    shown = {k: v for k, v in base.items() if k not in ("device",)}
    lines = [f"# Paired comparison: {base.get('objective', 'dm')} IPC {base.get('ipc', 1)} on "
             f"{base.get('dataset', 'fashion-mnist')}, seeds {', '.join(map(str, report['seeds']))}", "",
             f"Run settings shared by every cell: `{json.dumps(shown, sort_keys=True)}`"
             + (f"; Pixel steps {report['pixel_steps']}" if report["pixel_steps"] else "") + ". "
             f"Evaluation: `{proto['name']}` protocol, {proto['epochs']} epoch(s), {suite['repeats']} network(s) per model "
             f"on the real test split; backbone {backbone}; cross-arch mean = the mean over {cross} (paper Table 5).",
             "", "**Per arm** (mean ± sample std over seeds, n-1; accuracies in %)" + (
                 "; LRS/ARS: DD-Ranking's scores on the backbone, in [0, 1]" if scores else "") + ".", ""]
    head = ["arm", "seeds", f"{backbone} (backbone)", "cross-arch mean"] + (["LRS", "ARS"] if scores else []) + \
           ["distillation wall s per seed", "evaluation s per cell"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in report["arms"]:
        s = report["summary"][arm["label"]]
        n = s["backbone"]["n"] if s["backbone"] else 0
        name = arm["label"]
        if len(arm["glad_cuts"]) > 1:
            name += f" (best of cuts {', '.join(map(str, arm['glad_cuts']))} by held-out accuracy, per seed)"
        row = [name, str(n), _acc(s["backbone"]), _acc(s["cross_arch"])]
        if scores:
            row += [_score(s["lrs"]), _score(s["ars"])]
        row += [_secs(s["distill_wall_s"]), _secs(s["evaluate_network_s"])]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "**Paired differences** (row = later arm − earlier arm, per seed: same seed means the same real "
                  "batches, initial noise and evaluation networks). Mean over seeds with a 95% confidence interval "
                  "from a two-sided paired t-test over seeds (mean ± t(0.975, n-1)·sd/√n); with one seed, the "
                  "difference alone. Accuracies in points" + ("; LRS in score units" if scores else "") + ".", ""]
    head = ["difference", "seeds", "backbone", "cross-arch mean"] + (["LRS"] if scores else [])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in report["paired"]:
        n = p["backbone"]["n"] if p["backbone"] else 0
        row = [p["label"], str(n), _diff(p["backbone"]), _diff(p["cross_arch"])]
        if scores:
            row.append(_diff(p["lrs"], 1.0, 3))
        lines.append("| " + " | ".join(row) + " |")
    for label, per_seed in report["glad_sweep"].items():
        lines += ["", f"**{label}: cut by held-out accuracy** (per seed, %; the picked cut is the arm's cell)", "",
                  "| seed | held-out accuracy per cut | picked |", "|---|---|---|"]
        for seed, entry in per_seed.items():
            held = ", ".join(f"cut {c}: {_pct(a)}" for c, a in entry["heldout"].items())
            lines.append(f"| {seed} | {held} | {entry['picked'] if entry['picked'] is not None else '-'} |")
    models = suite["models"]
    lines += ["", "**Cells** (accuracies in %; distillation: wall seconds over all sessions, steps' own seconds in "
                  "run.json; evaluation: seconds of network training and test passes)", ""]
    head = ["cell", "state", "selected space"] + models + ["cross-arch"] + (["LRS"] if scores else []) + \
           ["distill wall s", "distill step s", "evaluation s", "of which test s"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["cells"]:
        row = [r["folder"], r["state"], str(r["selected_space"]) if r["selected_space"] is not None else "-"]
        row += [_pct(r.get("models", {}).get(m)).rstrip("%") for m in models]
        row.append(_pct(r.get("cross_arch")).rstrip("%"))
        if scores:
            row.append("-" if r.get("lrs") is None else f"{r['lrs']:.3f}")
        row += [_secs(r["distill_wall_s"] or None), _secs(r["distill_step_s"]), _secs(r.get("evaluate_network_s")),
                _secs(r.get("evaluate_test_s"))]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["Arm", "COMPARE_FORMAT", "Cell", "CompareSpec", "build_report", "distill_cell", "folder_state",
           "hpd_total_steps", "markdown", "paired_difference", "parse_arms", "pick_cell", "plan_cells",
           "run_compare", "summarize", "t975"]
