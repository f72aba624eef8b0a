"""DD-Ranking's LRS and ARS: hand-computed values, the [0, 1] range at the extremes, and cached baselines."""
import itertools
import json
import math

import pytest
import torch

from engine.evaluate import get_protocol
from engine.scores import ars, lrs, robust_map, score_rounds
from engine.suite import SuiteSpec, evaluate_run

E, E1 = math.e, math.exp(-1)


def by_hand(x):
    return (math.exp(x) - E1) / (E - E1)


def test_lrs_matches_a_hand_computation():
    # syn 0.60, whole data 0.90, random real 0.40: HLR 0.30, IOR 0.20, alpha = 0.5*0.20 - 0.5*0.30 = -0.05
    assert lrs(0.60, 0.90, 0.40) == pytest.approx((math.exp(-0.05) - E1) / (E - E1))
    assert lrs(0.60, 0.90, 0.40) == pytest.approx((0.951229 - 0.367879) / 2.350402, abs=1e-5)  # 0.24819
    # w = 0.8 weighs IOR: alpha = 0.8*0.20 - 0.2*0.30 = 0.10
    assert lrs(0.60, 0.90, 0.40, w=0.8) == pytest.approx(by_hand(0.10))


def test_ars_matches_a_hand_computation():
    # beta = 0.5*(0.70-0.50) + 0.5*(0.55-0.45) = 0.15
    assert ars(0.70, 0.50, 0.55, 0.45) == pytest.approx(by_hand(0.15))
    assert ars(0.70, 0.50, 0.55, 0.45, gamma=1.0) == pytest.approx(by_hand(0.20))


def test_the_map_and_its_fixed_points():
    assert robust_map(-1.0) == pytest.approx(0.0) and robust_map(1.0) == pytest.approx(1.0)
    assert robust_map(0.0) == pytest.approx((1 - E1) / (E - E1))
    assert robust_map(math.log(math.cosh(1.0))) == pytest.approx(0.5)


def test_scores_lie_in_0_1_at_the_extremes():
    chance = 0.1
    # A synthetic set as good as the whole data: HLR 0, IOR = whole - random.
    as_good = lrs(0.92, 0.92, 0.55)
    assert as_good == pytest.approx(by_hand(0.5 * (0.92 - 0.55)))
    # One no better than chance (and no better than random real images): the lowest scores of the three.
    chance_set = lrs(chance, 0.92, 0.55)
    assert 0 <= chance_set < lrs(0.55, 0.92, 0.55) < as_good <= 1
    assert 0 <= ars(chance, 0.55, chance, 0.50) < ars(0.92, 0.55, 0.90, 0.50) <= 1
    # Every corner of the accuracy cube stays in [0, 1]; the bounds are reached at the corners.
    corners = [lrs(s, w, r) for s, w, r in itertools.product((0.0, 1.0), repeat=3)]
    assert all(0.0 <= v <= 1.0 for v in corners) and min(corners) == pytest.approx(0.0)
    a_corners = [ars(*c) for c in itertools.product((0.0, 1.0), repeat=4)]
    assert all(0.0 <= v <= 1.0 for v in a_corners)
    assert min(a_corners) == pytest.approx(0.0) and max(a_corners) == pytest.approx(1.0)


@pytest.mark.parametrize("args", [(60.0, 90.0, 40.0), (0.6, 1.2, 0.4), (-0.1, 0.9, 0.4)])
def test_percentages_are_refused(args):
    with pytest.raises(ValueError, match="fraction in \\[0, 1\\]"):
        lrs(*args)


def test_rounds_pair_the_kth_networks():
    out = score_rounds([0.6, 0.7], [0.5, 0.6], [0.4, 0.5], [0.3, 0.3], [0.9, 0.8])
    whole = 0.85
    assert out["rounds"] == 2
    assert out["lrs"]["values"] == pytest.approx([lrs(0.6, whole, 0.4), lrs(0.7, whole, 0.5)])
    assert out["ars"]["values"] == pytest.approx([ars(0.6, 0.4, 0.5, 0.3), ars(0.7, 0.5, 0.6, 0.3)])
    assert out["hlr"]["mean"] == pytest.approx(whole - 0.65) and out["ior"]["mean"] == pytest.approx(0.2)
    assert out["lrs"]["std"] == pytest.approx(abs(out["lrs"]["values"][0] - out["lrs"]["values"][1]) / 2)
    with pytest.raises(ValueError, match="one accuracy of each kind"):
        score_rounds([0.6, 0.7], None, [0.4], None, [0.9])


def test_evaluate_scores_use_cached_baselines(root, tmp_path):
    """evaluate --scores: LRS/ARS in [0, 1] on the backbone, baselines computed once and reused."""
    run = tmp_path / "runs" / "set"
    run.mkdir(parents=True)
    images = torch.randn(10, 1, 32, 32)
    torch.save({"images": images, "labels": torch.arange(10)}, run / "synthetic.pt")
    run_json = {"config": {"dataset": "fashion-mnist", "data_root": str(root), "ipc": 1, "seed": 3, "net": "convnet",
                           "method": "pixel", "objective": "dm"}, "selection_basis": "last"}
    (run / "run.json").write_text(json.dumps(run_json))
    spec = SuiteSpec(("convnet",), get_protocol("dc", 1), repeats=2, score_models=("convnet",), whole_epochs=1)
    ev = evaluate_run(run, spec)
    s = ev["scores"]["convnet"]
    assert 0 <= s["lrs"]["mean"] <= 1 and 0 <= s["ars"]["mean"] <= 1 and len(s["lrs"]["values"]) == 2
    assert s["inputs"]["syn"] == ev["models"]["convnet"]["mean"]
    assert s["lrs"]["values"][0] == pytest.approx(lrs(ev["models"]["convnet"]["accuracies"][0], s["inputs"]["whole"],
                                                       json.loads(open(s["baselines"]["random_real"]).read())
                                                       ["aug"]["values"][0]))
    cache = tmp_path / "runs" / "baselines" / "fashion-mnist" / "convnet"  # beside the run folder by default
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and files[0].startswith("random-real-ipc1-dc-e1") and files[1].startswith("whole-data-dc-e1")
    saved = json.loads((cache / files[0]).read_text())
    assert saved["key"]["ipc"] == 1 and saved["provenance"]["torch"] == torch.__version__
    assert len(saved["subsets"]) == 2 and len(saved["subsets"][0]) == 10  # one image per class, per round
    stamps = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    # Another synthetic set of the same dataset, model, protocol and IPC reuses both baselines.
    torch.save({"images": images + 1, "labels": torch.arange(10)}, run / "synthetic.pt")
    again = evaluate_run(run, spec)
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps
    assert again["scores"]["convnet"]["inputs"]["whole"] == s["inputs"]["whole"]
