import argparse
import json

import pytest
import torch
from torch.func import functional_call

from cli_helpers import engine_cli
from engine.buffers import (MANIFEST, BufferConfig, BufferMismatchError, build_student, expert_file, flatten_params,
                            load_buffers, read_manifest, train_buffers, train_expert, unflatten_params,
                            write_manifest)
from engine.cli import buffers as buffers_cli
from engine.data import ImageSet
from engine.data.fashion_mnist import INFO
from test_data import fake_fmnist

torch.set_num_threads(1)

CLI_OPTIONS = ("--experts", "2", "--epochs", "2", "--width", "8", "--batch", "8", "--seed", "3")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    fake_fmnist(root, n=20)
    return root


def tiny_splits() -> tuple[ImageSet, ImageSet]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (30, 1, 32, 32), generator=gen, dtype=torch.uint8)
    labels = torch.arange(30) % 10
    return ImageSet(INFO, images[:20], labels[:20]), ImageSet(INFO, images[20:], labels[20:], split="test")


def small_config(**changes) -> BufferConfig:
    return BufferConfig(**{"experts": 2, "epochs": 2, "width": 8, "batch": 8, **changes})


def trajectory(folder, index: int) -> torch.Tensor:
    return torch.load(folder / expert_file(index), weights_only=True)["trajectory"]


def test_cli_trains_resumes_one_expert_and_loads(tmp_path, data_root):
    out = tmp_path / "buf"
    res = engine_cli("buffers", "--data-root", str(data_root), *CLI_OPTIONS, "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "expert 2/2" in res.stderr and "epoch" in res.stderr  # the tqdm bar counts experts and epochs
    assert "expert 1: test accuracy" in res.stdout and "(2 trained now)" in res.stdout
    assert sorted(p.name for p in out.iterdir()) == ["expert_0000.pt", "expert_0001.pt", MANIFEST]

    manifest = json.loads((out / MANIFEST).read_text())
    num_params = sum(p.numel() for p in build_student(INFO, width=8).parameters())
    assert {k: manifest[k] for k in ("dataset", "model", "norm", "depth", "width", "epochs", "lr", "batch", "seed",
                                     "experts", "completed", "num_params", "dtype")} == {
        "dataset": "fashion-mnist", "model": "convnet", "norm": "instancenorm", "depth": 3, "width": 8, "epochs": 2,
        "lr": 0.01, "batch": 8, "seed": 3, "experts": 2, "completed": 2, "num_params": num_params, "dtype": "float32"}
    assert len(manifest["test_accuracy"]) == 2 and all(0 <= a <= 1 for a in manifest["test_accuracy"])

    first = [trajectory(out, i) for i in range(2)]
    assert first[0].shape == (3, num_params) and first[0].dtype == torch.float32
    assert not torch.equal(first[0][0], first[0][1])  # training moved the parameters
    assert not torch.equal(first[0][0], first[1][0])  # experts start from different initialisations

    kept = (out / expert_file(0)).stat().st_mtime_ns
    (out / expert_file(1)).unlink()
    res = engine_cli("buffers", "--data-root", str(data_root), *CLI_OPTIONS, "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "1 of 2 experts already" in res.stdout and "(1 trained now)" in res.stdout
    assert (out / expert_file(0)).stat().st_mtime_ns == kept
    assert torch.equal(trajectory(out, 1), first[1])  # retrained alone, bit for bit
    assert json.loads((out / MANIFEST).read_text())["test_accuracy"] == manifest["test_accuracy"]

    buffers = load_buffers(out, build_student(INFO, width=8))
    assert len(buffers) == 2 and buffers.epochs == 2 and buffers.names == ("expert_0000.pt", "expert_0001.pt")
    assert torch.equal(buffers.snapshot(1, 2), first[1][2])
    assert torch.equal(load_buffers(out, in_memory=False).trajectory(0), first[0])
    with pytest.raises(BufferMismatchError, match=r"width 8 \(\d+ parameters.*student has \d+ parameters"):
        load_buffers(out, build_student(INFO, width=16))


def test_cli_refuses_a_folder_trained_with_other_options(tmp_path, capsys):
    train_buffers(small_config(), tmp_path, data=tiny_splits(), progress=False, log=lambda _: None)
    parser = argparse.ArgumentParser()
    buffers_cli.add_arguments(parser)
    # In-process: a subprocess costs seconds of imports, and the refusal comes before any data is read.
    args = parser.parse_args(["--experts", "2", "--epochs", "3", "--width", "8", "--batch", "8", "--out", str(tmp_path)])
    assert buffers_cli.run(args) == 2
    assert "epochs: 2 there, 3 now" in capsys.readouterr().err


def test_an_expert_depends_on_the_seed_and_its_index_only():
    train, test = tiny_splits()
    a = train_expert(small_config(), 1, train, test).trajectory
    assert torch.equal(a, train_expert(small_config(experts=7), 1, train, test).trajectory)
    assert not torch.equal(a, train_expert(small_config(seed=1), 1, train, test).trajectory)
    assert not torch.equal(a, train_expert(small_config(), 0, train, test).trajectory)


def test_interrupted_expert_restarts_from_its_beginning(tmp_path):
    data = tiny_splits()

    def kill(expert: int, epoch: int) -> None:
        if expert == 1 and epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_buffers(small_config(), tmp_path, data=data, progress=False, on_epoch=kill, log=lambda _: None)
    assert read_manifest(tmp_path).finished == [0] and not (tmp_path / expert_file(1)).exists()
    (tmp_path / f".{expert_file(1)}.tmp").write_bytes(b"half a file")  # killed while saving

    summary = train_buffers(small_config(), tmp_path, data=data, progress=False, log=lambda _: None)
    assert summary.trained == [1] and summary.manifest.finished == [0, 1]
    assert not list(tmp_path.glob(".*.tmp"))
    assert torch.equal(trajectory(tmp_path, 1), train_expert(small_config(), 1, *data).trajectory)


def test_expert_saved_before_a_kill_is_not_retrained(tmp_path):
    data = tiny_splits()
    done = train_buffers(small_config(), tmp_path, data=data, progress=False, log=lambda _: None).manifest
    write_manifest(tmp_path, done.with_accuracy(1, None))  # killed between the expert file and the manifest
    again = train_buffers(small_config(), tmp_path, data=data, progress=False, log=lambda _: None)
    assert again.trained == [] and again.manifest.test_accuracy == done.test_accuracy


def test_fewer_experts_asked_keeps_the_others_listed(tmp_path):
    data = tiny_splits()
    train_buffers(small_config(), tmp_path, data=data, progress=False, log=lambda _: None)
    summary = train_buffers(small_config(experts=1), tmp_path, data=data, progress=False, log=lambda _: None)
    assert summary.trained == [] and summary.manifest.finished == [0, 1]


def test_loading_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="no manifest.json.*python -m engine buffers"):
        load_buffers(tmp_path)
    train_buffers(small_config(), tmp_path, data=tiny_splits(), progress=False, log=lambda _: None)
    (tmp_path / expert_file(0)).unlink()
    with pytest.raises(ValueError, match="expert_0000.pt but the file.*missing"):
        load_buffers(tmp_path)


def test_flat_vector_follows_the_parameter_order():
    net = build_student(INFO, width=8, seed=0)
    flat = flatten_params(net)
    params = unflatten_params(flat, net)
    assert list(params) == [name for name, _ in net.named_parameters()]
    assert all(torch.equal(params[name], p) for name, p in net.named_parameters())
    assert list(params)[:3] == ["blocks.0.conv.weight", "blocks.0.conv.bias", "blocks.0.norm.weight"]
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(functional_call(net, params, (x,)), net(x))
    with pytest.raises(ValueError, match="does not hold"):
        unflatten_params(flat[:-1], net)


def test_config_is_validated():
    with pytest.raises(ValueError, match="experts must be at least 1"):
        BufferConfig(experts=0)
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*fashion-mnist"):
        BufferConfig(dataset="mnist")
    with pytest.raises(ValueError, match="lr must be positive"):
        BufferConfig(lr=0)
