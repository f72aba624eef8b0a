"""run.json names the exact generator weights a result came from (issue 17: a retrained prior must not be
confused with the shipped snapshot)."""
import hashlib
import json
from pathlib import Path

import pytest

from engine.generators import generator_record
from engine.generators.embedded import ASSET_DIR, prior_asset
from engine.run import Run
from run_fixtures import fake_root, tiny_config, tiny_generator, tiny_proxy

PKL = Path(__file__).parent / "fixtures" / "stylegan_xl" / "cifar10_format.pkl"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_embedded_prior_is_recorded_by_the_sha256_its_loader_checks():
    asset = prior_asset("fashion-mnist")
    record = generator_record("embedded:fashion-mnist")
    assert record == {"spec": "embedded:fashion-mnist", "sha256": _sha256(ASSET_DIR / asset.file), "kimg": asset.kimg}


def test_a_checkpoint_file_is_recorded_by_its_own_sha256(tmp_path):
    assert generator_record(str(PKL)) == {"spec": str(PKL), "sha256": _sha256(PKL)}
    changed = tmp_path / "changed.pkl"
    changed.write_bytes(PKL.read_bytes() + b"\0")
    assert generator_record(str(changed))["sha256"] != _sha256(PKL)


@pytest.mark.parametrize("spec", [None, "pixel"])
def test_no_weights_no_sha256(spec):
    assert generator_record(spec) == {"spec": spec, "sha256": None}


def test_run_json_carries_the_record(tmp_path):
    root = fake_root(tmp_path / "data")
    loaded = Run(tiny_config(root, method="glad", steps_per_space=1), tmp_path / "loaded", classifier=tiny_proxy())
    loaded.prepare()
    meta = json.loads((tmp_path / "loaded" / "run.json").read_text())
    loaded.close()
    assert meta["generator_weights"] == generator_record("embedded:fashion-mnist")
    given = Run(tiny_config(root, method="glad", steps_per_space=1), tmp_path / "given", generator=tiny_generator(),
                classifier=tiny_proxy())
    given.prepare()
    assert given.summary()["generator_weights"] == {"spec": None, "sha256": None}  # handed in-process
    given.close()


def test_a_checkpoint_is_hashed_by_the_read_that_loads_it(tmp_path, monkeypatch):
    from engine.generators import loader
    from engine.generators.stylegan_xl import load_stylegan_xl
    trailing = tmp_path / "trailing.pkl"
    trailing.write_bytes(PKL.read_bytes() + b"bytes after the pickle's end")  # the whole file is what is named
    G = load_stylegan_xl(trailing, require_conditional=False)
    assert G.source_sha256 == _sha256(trailing)

    def read_again(path):
        raise AssertionError(f"{path} read a second time")
    monkeypatch.setattr("engine.classifiers.assets.file_sha256", read_again)
    assert loader.generator_record(str(trailing), G) == {"spec": str(trailing), "sha256": _sha256(trailing)}
