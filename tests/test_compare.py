"""`compare`: a two-seed tiny grid whose paired differences are the per-seed differences' mean, resumed after
a kill mid-cell; the statistics by hand; bad input in one sentence."""
import json
import math

import pytest

from engine.cli import main
from engine.compare import (CompareSpec, markdown, paired_difference, parse_arms, report_grid, run_compare, summarize,
                            t975)
from engine.evaluate import get_protocol
from engine.suite import SuiteSpec


class Killed(Exception):
    pass


def test_two_seed_grid_pairs_by_seed_and_resumes(root, G, proxy, tmp_path):
    base = dict(data_root=str(root), steps_per_space=1, batch_real=8, distance_real_per_class=5, mean_ws_samples=20,
                preview_every=100)
    spec = CompareSpec(base, parse_arms(["pixel", "hpd"], ["last"]), (0, 1),
                       SuiteSpec(("convnet", "alexnet"), get_protocol("glad", 1), repeats=1))
    out = tmp_path / "grid"

    def die_in_third_cell(stage, done, total):  # pixel-seed1's distillation, after its first step
        if stage == "pixel-seed1 distill" and done == 1:
            raise Killed
    with pytest.raises(Killed):
        run_compare(spec, out, generator=G, classifier=proxy, progress=die_in_third_cell, log=lambda _: None)
    first = json.loads((out / "compare.json").read_text())  # written after every finished cell
    assert [c["evaluated"] for c in first["cells"]] == [True, True, False, False]

    lines = []
    report = run_compare(spec, out, generator=G, classifier=proxy, log=lines.append)
    assert not any("seed0" in line for line in lines)  # finished cells are skipped
    assert "[3/4] pixel-seed1: distilled" in lines[0] and "(resumed)" in lines[0]
    timings = json.loads((out / "timings.json").read_text())
    assert [(t["start"], t["ended"]) for t in timings["pixel-seed1"]["distill"]] == [("new", "interrupted"),
                                                                           ("unfinished", "finished")]

    cells = {(c["arm"], c["seed"]): c for c in report["cells"]}
    assert all(c["state"] == "finished" and c["evaluated"] for c in cells.values())
    # Pixel gets H-PD's total steps (5 spaces x 1 step on the tiny prior), as GLaD does by default.
    pixel_run = json.loads((out / "pixel-seed0" / "run.json").read_text())
    assert pixel_run["total_steps"] == 5
    # The paired differences are computed from the cells' own eval.json files, seed by seed.
    for metric, key in (("backbone", None), ("cross_arch", "cross_arch_mean")):
        per_seed = {}
        for seed in (0, 1):
            ev = {arm: json.loads((out / f"{arm}-seed{seed}" / "eval.json").read_text()) for arm in ("pixel", "hpd-last")}
            value = (lambda e: e["models"]["convnet"]["mean"]) if key is None else (lambda e: e[key])
            per_seed[seed] = value(ev["hpd-last"]) - value(ev["pixel"])
        pair = next(p for p in report["paired"] if p["label"] == "hpd-last − pixel")[metric]
        assert pair["per_seed"] == pytest.approx(per_seed)
        assert pair["mean"] == pytest.approx((per_seed[0] + per_seed[1]) / 2) and pair["n"] == 2
        half = t975(1) * abs(per_seed[0] - per_seed[1]) / math.sqrt(2) / math.sqrt(2)
        assert pair["ci95"] == pytest.approx([pair["mean"] - half, pair["mean"] + half])
    # Runs at one seed are evaluated by the same networks (paired), other seeds by others.
    seeds = {(a, s): json.loads((out / f"{a}-seed{s}" / "eval.json").read_text())["seed"]
             for a in ("pixel", "hpd-last") for s in (0, 1)}
    assert seeds["pixel", 0] == seeds["hpd-last", 0] != seeds["pixel", 1] == seeds["hpd-last", 1]
    md = (out / "compare.md").read_text()
    assert "| hpd-last − pixel | 2 |" in md and "paired t-test" in md and "pixel-seed1" in md
    assert json.loads((out / "compare.json").read_text())["paired"][0]["label"] == "hpd-last − pixel"

    # A sub-grid (one arm, one model: all evaluated, so nothing runs) rewrites the grid's files in its own
    # terms; --report-only puts the whole grid's back from the cells on disk, running nothing.
    sub = CompareSpec(base, parse_arms(["hpd"], ["last"]), (0, 1), SuiteSpec(("convnet",), get_protocol("glad", 1), repeats=1))
    run_compare(sub, out, generator=G, classifier=proxy, log=lambda _: None)
    assert "| pixel |" not in (out / "compare.md").read_text()
    assert json.loads(json.dumps(report_grid(spec, out, generator=G))) == json.loads(json.dumps(report))
    assert (out / "compare.md").read_text() == md


def test_paired_difference_by_hand():
    a, b = {0: 0.70, 1: 0.74, 2: 0.71}, {0: 0.66, 1: 0.69, 2: 0.70, 3: 0.5}
    d = paired_difference(a, b)
    diffs = [0.04, 0.05, 0.01]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / 2)
    assert d["n"] == 3 and d["mean"] == pytest.approx(mean) and d["sd"] == pytest.approx(sd)
    assert d["ci95"] == pytest.approx([mean - 4.3027 * sd / math.sqrt(3), mean + 4.3027 * sd / math.sqrt(3)])
    one = paired_difference({0: 0.7}, {0: 0.6})
    assert one["mean"] == pytest.approx(0.1) and one["ci95"] is None  # one seed: the difference, no interval
    assert paired_difference({0: 0.7}, {1: 0.6}) is None
    assert summarize({0: 0.5, 1: 0.7})["std"] == pytest.approx(math.sqrt(0.02))


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 29, 30, 31, 45, 100, 1000):
        assert t975(df) == pytest.approx(float(stats.t.ppf(0.975, df)), abs=2e-4)


def test_arms_from_methods_and_selections():
    arms = parse_arms(["pixel", "glad", "hpd"], ["distance", "last"], [1, 3, 5])
    assert [a.label for a in arms] == ["pixel", "glad", "hpd-distance", "hpd-last"]
    assert arms[1].glad_cuts == (1, 3, 5) and arms[1].sweep and not arms[2].sweep
    assert [a.label for a in parse_arms(["glad:distance", "hpd"])] == ["glad-distance", "hpd"]
    with pytest.raises(ValueError, match="unknown method 'mtt'"):
        parse_arms(["mtt"])
    with pytest.raises(ValueError, match="listed twice"):
        parse_arms(["hpd", "hpd"])


def test_markdown_with_one_seed_prints_differences_without_intervals(root, tmp_path):
    base = dict(data_root=str(root), steps_per_space=1, batch_real=8, distance_real_per_class=5, mean_ws_samples=20,
                preview_every=100, no_such_field=1)
    with pytest.raises(ValueError, match="not run settings: no_such_field"):
        CompareSpec(base, parse_arms(["hpd"]), (0,), SuiteSpec(("convnet",), get_protocol("glad", 1)))
    report = {"base": {"objective": "dm", "ipc": 1}, "pixel_steps": None, "seeds": [0],
              "suite": {"score_models": [], "backbone": "convnet", "cross_arch_models": [], "models": ["convnet"],
                        "protocol": {"name": "glad", "epochs": 1}, "repeats": 1},
              "arms": [{"label": "a", "glad_cuts": []}, {"label": "b", "glad_cuts": []}],
              "summary": {k: {"backbone": {"mean": 0.5, "std": 0.0, "n": 1}, "cross_arch": None, "lrs": None, "ars": None,
                              "distill_wall_s": 1.0, "evaluate_network_s": 2.0} for k in ("a", "b")},
              "paired": [{"label": "b − a", "backbone": paired_difference({0: 0.6}, {0: 0.5}), "cross_arch": None}],
              "glad_sweep": {}, "cells": []}
    assert "| b − a | 1 | +10.0 | - |" in markdown(report)


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0,one"], "--seeds takes comma-separated whole numbers"),
    (["--methods", "pixel,mtt"], "unknown method 'mtt'"),
    (["--models", "lenet"], "unknown model 'lenet'"),
    (["--glad-cuts", "1,3"], "add --accuracy-pick"),
    (["--glad-cut", "1", "--glad-cuts", "1,3"], "not both"),
    (["--seeds", "1,1"], "lists a seed twice"),
    (["--ipc", "0"], "--ipc must be at least 1"),
])
def test_bad_compare_input_is_one_sentence(root, tmp_path, capsys, args, message):
    out = tmp_path / "grid"
    assert main(["compare", "--out", str(out), "--data-root", str(root), "--device", "cpu", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
