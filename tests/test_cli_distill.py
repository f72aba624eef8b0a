import json
import subprocess
import sys

import pytest
import torch

from cli_helpers import ROOT, engine_cli
from test_data import fake_fmnist, write_idx

import numpy as np


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    fake_fmnist(root, n=100)
    return root


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "engine", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("distill", "evaluate", "datasets"):
        assert command in out.stdout
    sub = subprocess.run([sys.executable, "-m", "engine", "evaluate", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert "--repeats" in sub.stdout and "--seed" in sub.stdout and "--device" in sub.stdout


@pytest.mark.parametrize("objective", ["dm", "dsa"])
def test_distill_then_evaluate(tmp_path, data_root, objective):
    out = tmp_path / "run"
    res = engine_cli("distill", "--method", "pixel", "--data-root", str(data_root), "--objective", objective, "--ipc", "2",
                     "--iterations", "3", "--batch-real", "8", "--outer-loop", "2", "--inner-loop", "1",
                     "--out", str(out), "--device", "cpu")
    assert res.returncode == 0, res.stderr
    syn = torch.load(out / "synthetic.pt", weights_only=True)
    assert syn["images"].shape == (20, 1, 32, 32) and syn["images"].dtype == torch.float32
    assert syn["labels"].tolist() == [c for c in range(10) for _ in range(2)]
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["objective"] == objective and run["config"]["seed"] == 0 and len(run["losses"]) == 3
    assert run["provenance"]["torch"] == torch.__version__
    assert sorted(p.name for p in (out / "images" / "T-shirt_top").iterdir()) == ["000.png", "001.png"]
    assert "%" in res.stderr  # the tqdm bar

    ev = engine_cli("evaluate", str(out), "--model", "convnet", "--repeats", "2", "--epochs", "4")
    assert ev.returncode == 0, ev.stderr
    result = json.loads((out / "eval.json").read_text())
    assert result["model"] == "convnet" and len(result["accuracies"]) == 2
    assert all(0 <= a <= 1 for a in result["accuracies"])
    assert result["mean"] == pytest.approx(sum(result["accuracies"]) / 2)


def test_same_seed_same_result(tmp_path, data_root):
    runs = []
    for name in ("a", "b"):
        res = engine_cli("distill", "--method", "pixel", "--data-root", str(data_root), "--iterations", "2", "--batch-real", "8",
                         "--seed", "7", "--out", str(tmp_path / name))
        assert res.returncode == 0, res.stderr
        runs.append(torch.load(tmp_path / name / "synthetic.pt", weights_only=True)["images"])
    assert torch.equal(*runs)


def test_rerun_same_config_is_a_no_op_and_different_config_is_refused(tmp_path, data_root):
    args = ["distill", "--method", "pixel", "--data-root", str(data_root), "--iterations", "1", "--batch-real", "4", "--out", str(tmp_path / "r")]
    assert engine_cli(*args).returncode == 0
    before = (tmp_path / "r" / "synthetic.pt").read_bytes()
    again = engine_cli(*args)
    assert again.returncode == 0 and "already holds this finished run" in again.stdout
    other = engine_cli(*args[:-2], "--seed", "3", "--out", str(tmp_path / "r"))
    assert other.returncode != 0 and "already exists and holds something else" in other.stderr
    assert (tmp_path / "r" / "synthetic.pt").read_bytes() == before


@pytest.mark.parametrize("args, message", [
    (["--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["--objective", "mtt"], "unknown objective 'mtt'"),
    (["--ipc", "0"], "--ipc must be at least 1"),
    (["--net", "lenet"], "unknown network 'lenet'"),
    (["--init", "zeros"], "unknown init 'zeros'"),
])
def test_bad_distill_input(tmp_path, data_root, args, message):
    res = engine_cli("distill", "--method", "pixel", "--data-root", str(data_root), "--out", str(tmp_path / "x"), *args)
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_truncated_idx_leaves_no_output(tmp_path):
    (tmp_path / "d").mkdir()
    fake_fmnist(tmp_path / "d", n=20, compress=False)
    path = tmp_path / "d" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    res = engine_cli("distill", "--method", "pixel", "--data-root", str(tmp_path / "d"), "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "truncated or corrupt" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x").exists()


def test_bad_evaluate_input(tmp_path):
    res = engine_cli("evaluate", str(tmp_path))
    assert res.returncode == 2 and "is not a run folder" in res.stderr
    res = engine_cli("evaluate", str(tmp_path), "--model", "lenet")
    assert res.returncode == 2 and "unknown model 'lenet'" in res.stderr
