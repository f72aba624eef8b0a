"""bench/bench_reference.py's compatibility edits, on a tiny fake reference tree (no reference code here)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "bench_reference", Path(__file__).resolve().parent.parent / "bench" / "bench_reference.py")
bench_reference = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault("bench_reference", bench_reference)  # dataclasses look their module up there
_SPEC.loader.exec_module(bench_reference)


def fake_tree(root: Path, nl: str = "\r\n") -> Path:
    """Just the lines the edits look for, in files named as the reference's, with `nl` line endings."""
    siamese = [f"        {v}[:] = {v}[0]" for v in ("theta", "theta", "randf", "randb", "rands", "randc",
                                                     "translation_x", "translation_y", "offset_x", "offset_y")]
    files = {
        "utils.py": ["import torch", *siamese],
        "networks.py": ["    def forward(self, x):", "        out = self.features(x)",
                        "        out = out.view(out.size(0), -1)", "    def embed(self, x):",
                        "        out = self.features(x)", "        out = out.view(out.size(0), -1)",
                        "        x = x.view(x.size(0), -1)"],
        "main.py": ["import time", "", "            ''' Train synthetic data '''",
                    "            loss_avg /= (num_classes*args.outer_loop)"],
        "main_DM.py": ["import time",
                       "                        _, acc_train, acc_test = evaluate_synset(it_eval, net_eval, "
                       "image_syn_eval, label_syn_eval, testloader, args)",
                       "", "            ''' Train synthetic data '''", "            loss_avg /= (num_classes)"],
    }
    for name, lines in files.items():
        (root / name).write_bytes(nl.join(lines + [""]).encode())
    return root


@pytest.mark.parametrize("nl", ["\r\n", "\n"])
def test_edits_apply_and_keep_line_endings(tmp_path, nl):
    tree = fake_tree(tmp_path, nl)
    done = bench_reference.apply_edits(tree)
    assert len(done) == len(bench_reference.EDITS)
    utils = (tree / "utils.py").read_bytes().decode()
    assert utils.count("[0].clone()") == 10 and "theta[:] = theta[0]" + nl not in utils
    networks = (tree / "networks.py").read_bytes().decode()
    assert networks.count("out = out.reshape(out.size(0), -1)") == 2
    assert "x = x.view(x.size(0), -1)" in networks  # other networks are left alone
    main_dm = (tree / "main_DM.py").read_bytes().decode()
    assert bench_reference.ITER_TAG in main_dm and bench_reference.EVAL_TAG in main_dm
    for name in ("utils.py", "networks.py", "main.py", "main_DM.py"):
        text = (tree / name).read_bytes().decode()
        if nl == "\r\n":
            assert text.count("\n") == text.count("\r\n"), name  # no bare LF was inserted
        else:
            assert "\r" not in text


def test_missing_pattern_fails_loudly_and_writes_nothing(tmp_path):
    tree = fake_tree(tmp_path)
    before = (tree / "utils.py").read_bytes()
    networks = tree / "networks.py"
    networks.write_bytes(networks.read_bytes().replace(b"out = out.view(", b"out = out.flatten(", 1))
    with pytest.raises(bench_reference.EditError, match="convnet-reshape.*expected 2.*found 1"):
        bench_reference.apply_edits(tree)
    assert (tree / "utils.py").read_bytes() == before  # all or nothing


def test_missing_file_fails_loudly(tmp_path):
    tree = fake_tree(tmp_path)
    (tree / "main.py").unlink()
    with pytest.raises(bench_reference.EditError, match="main.py is not in the reference checkout"):
        bench_reference.apply_edits(tree)


def test_iterations_per_case():
    it = bench_reference.parse_iterations(["3", "dsa1=2"])
    assert it["dm1"] == 3 and it["dsa1"] == 2
    with pytest.raises(ValueError):
        bench_reference.parse_iterations(["nope=2"])
    with pytest.raises(ValueError):
        bench_reference.parse_iterations(["0"])
