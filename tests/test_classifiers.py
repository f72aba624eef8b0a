"""Proxy classifiers: the shipped Fashion-MNIST asset, spec loading and its errors, training and resume."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
import torchvision

from engine.classifiers import ClassifierError, ProxyClassifier, list_classifiers, load_classifier
from engine.classifiers import fashion_mnist, imagenet
from engine.classifiers.assets import file_sha256
from engine.classifiers.small_resnet import SmallResNetConfig, build_small_resnet18
from engine.classifiers.training import TrainConfig, load_data, train
from engine.cli import train_classifier
from engine.data import load_dataset

torch.set_num_threads(1)

HELD_OUT = 500  # a fixed slice of the test split, enough to tell ~93% from chance in a second


def _images(n: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _tiny_asset(path: Path, width: int = 4) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(0)
        net = build_small_resnet18(SmallResNetConfig(width=width))
    torch.save(fashion_mnist.make_asset(net, SmallResNetConfig(width=width), {"test_accuracy": 0.1}), path)
    return path


def _cam_output(classifier: ProxyClassifier, images: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = classifier.cam_layer.register_forward_hook(lambda module, inputs, output: seen.append(output))
    try:
        classifier(images)
    finally:
        handle.remove()
    return seen[0]


@pytest.fixture
def hub_dir(tmp_path):
    """Point torch.hub at an empty folder for one test, then restore it."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(previous)


# --- the shipped asset ---------------------------------------------------------------------------

def _shipped() -> ProxyClassifier:
    if not fashion_mnist.ASSET_PATH.is_file() or not fashion_mnist.ASSET_SHA256:
        pytest.skip(f"{fashion_mnist.ASSET_PATH} is not trained and recorded yet ({fashion_mnist.REGENERATE})")
    return load_classifier("embedded:fashion-mnist", "cpu")


def test_shipped_asset_figures_and_real_accuracy():
    proxy = _shipped()
    assert proxy.meta["test_accuracy"] >= 0.92
    assert abs(proxy.meta["test_accuracy"] - proxy.meta["test_accuracy_fp32"]) <= 0.001  # float16 storage is free
    assert proxy.meta["dataset"] == "fashion-mnist" and proxy.meta["epochs"] >= 1
    test = load_dataset("fashion-mnist", "test")
    index = torch.arange(HELD_OUT)
    images = test.info.to_generator(test.normalized(index))  # the generator range, as the engine will feed it
    assert images.min() == -1 and images.max() <= 1
    with torch.no_grad():
        logits = proxy(images)
    assert logits.shape == (HELD_OUT, 10)
    accuracy = (logits.argmax(1) == test.labels[index]).float().mean().item()
    assert accuracy >= proxy.meta["test_accuracy"] - 0.03, f"only {accuracy:.3f} of {HELD_OUT} test images right"


def test_shipped_asset_cam_layer_and_frozen():
    proxy = _shipped()
    assert _cam_output(proxy, _images(3, 1, 32)).shape == (3, 8 * fashion_mnist.ARCH.width, 4, 4)
    assert not any(p.requires_grad for p in proxy.parameters())
    assert file_sha256(fashion_mnist.ASSET_PATH) == fashion_mnist.ASSET_SHA256


# --- the embedded loader on a small stand-in asset ----------------------------------------------------

def test_embedded_loader_logits_cam_layer_and_frozen(tmp_path):
    path = _tiny_asset(tmp_path / "proxy.pt")
    proxy = fashion_mnist.load_embedded("cpu", path, file_sha256(path))
    images = _images(5, 1, 32).requires_grad_(True)
    logits = proxy(images)
    assert logits.shape == (5, 10) and torch.isfinite(logits).all()
    assert _cam_output(proxy, images.detach()).shape == (5, 32, 4, 4)
    assert proxy.cam_layer is proxy.backbone.layer4
    # Frozen: no parameter wants a gradient and train() cannot switch BatchNorm back to batch statistics...
    assert all(not p.requires_grad for p in proxy.parameters())
    proxy.train()
    assert not any(m.training for m in proxy.modules())
    # ...but gradients still reach the input (and so the CAM features), which eq. 6 needs.
    logits[:, 3].sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in proxy.parameters())


def test_embedded_loader_keeps_float16_weights_exactly(tmp_path):
    path = _tiny_asset(tmp_path / "proxy.pt")
    proxy = fashion_mnist.load_embedded("cpu", path, file_sha256(path))
    stored = torch.load(path, weights_only=True)["state_dict"]
    assert stored["conv1.weight"].dtype == torch.float16
    assert torch.equal(proxy.backbone.conv1.weight, stored["conv1.weight"].float())


def test_embedded_asset_missing_corrupt_or_wrong(tmp_path):
    missing = tmp_path / "nothing.pt"
    with pytest.raises(ClassifierError, match="does not exist") as err:
        fashion_mnist.load_embedded("cpu", missing, "0" * 64)
    assert str(missing) in str(err.value) and "train-classifier" in str(err.value)

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a zip archive at all")
    with pytest.raises(ClassifierError, match="corrupt") as err:
        fashion_mnist.load_embedded("cpu", corrupt, "0" * 64)
    assert str(corrupt) in str(err.value) and fashion_mnist.REGENERATE in str(err.value)
    # A file whose hash matches but that torch cannot read still gets one clear sentence.
    with pytest.raises(ClassifierError, match="not a readable weight file") as err:
        fashion_mnist.load_embedded("cpu", corrupt, file_sha256(corrupt))
    assert "train-classifier" in str(err.value)

    wrong = tmp_path / "wrong.pt"
    torch.save({"format": "something else"}, wrong)
    with pytest.raises(ClassifierError, match="is not a hpd-studio/proxy-classifier/1 file"):
        fashion_mnist.load_embedded("cpu", wrong, file_sha256(wrong))


# --- specs ----------------------------------------------------------------------------------------

def test_unknown_spec_lists_valid_specs():
    assert list_classifiers() == ["embedded:fashion-mnist", "torchvision:resnet18", "trained:resnet18"]
    with pytest.raises(ValueError) as err:
        load_classifier("torchvision:resnet50", "cpu")
    for name in list_classifiers():
        assert name in str(err.value)
    with pytest.raises(ValueError, match="takes no"):
        load_classifier("embedded:fashion-mnist=/some/file.pt", "cpu")


def test_torchvision_resnet18_without_file_says_where_to_put_it(hub_dir):
    with pytest.raises(ClassifierError) as err:
        load_classifier("torchvision:resnet18", "cpu")
    message = str(err.value)
    assert str(hub_dir / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "torchvision:resnet18=" in message


def _random_resnet18_file(path: Path) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(0)
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


def test_torchvision_resnet18_from_user_file(tmp_path, hub_dir):
    path = _random_resnet18_file(tmp_path / "my_resnet18.pth")
    proxy = load_classifier(f"torchvision:resnet18={path}", "cpu")
    images = _images(2, 3, 128)
    with torch.no_grad():
        logits = proxy(images)
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()
    assert _cam_output(proxy, images).shape == (2, 512, 7, 7)  # resized to the weights' 224 px
    assert not any(p.requires_grad for p in proxy.parameters())
    # Grey images are repeated to three channels rather than rejected.
    assert proxy(_images(2, 1, 128)).shape == (2, 1000)

    # An ImageNet subset's class c is ImageNet class indices[c]: its true-class logit is that column.
    indices = [207, 1, 999, 430]
    subset = load_classifier(f"torchvision:resnet18={path}", "cpu", class_indices=indices)
    with torch.no_grad():
        assert torch.equal(subset(images), logits[:, indices])
    assert subset.num_classes == 4 and proxy.restricted_to(indices).class_indices == indices
    with pytest.raises(ValueError, match="class_indices"):
        proxy.restricted_to([3, 1000])


def test_torchvision_resnet18_hub_file_is_hash_checked(hub_dir):
    # A file under torchvision's own name must be torchvision's file: a random one fails its sha256 prefix.
    imagenet.hub_path().parent.mkdir(parents=True)
    _random_resnet18_file(imagenet.hub_path())
    with pytest.raises(ClassifierError, match="corrupt or not the expected file") as err:
        load_classifier("torchvision:resnet18", "cpu")
    assert str(imagenet.hub_path()) in str(err.value)


def test_torchvision_resnet18_rejects_other_state_dicts(tmp_path):
    path = tmp_path / "small.pth"
    torch.save(build_small_resnet18(SmallResNetConfig(width=4)).state_dict(), path)
    with pytest.raises(ClassifierError, match="not a torchvision ResNet-18 ImageNet state dict"):
        load_classifier(f"torchvision:resnet18={path}", "cpu")


# --- training ---------------------------------------------------------------------------------------

TINY = TrainConfig(epochs=2, batch_size=64, width=4, train_subset=256, test_subset=100, seed=3)


@pytest.fixture(scope="module")
def tiny_data():
    return load_data(TINY)


def test_training_is_seeded_and_resumes_to_the_same_weights(tmp_path, tiny_data):
    straight = train(TINY, tmp_path / "straight", progress=False, log=lambda line: None, data=tiny_data)

    def kill_after_first_epoch(line: str) -> None:
        if line.startswith("epoch 1/"):
            raise KeyboardInterrupt  # as if killed right after the epoch-1 checkpoint
    with pytest.raises(KeyboardInterrupt):
        train(TINY, tmp_path / "killed", progress=False, log=kill_after_first_epoch, data=tiny_data)
    lines = []
    resumed = train(TINY, tmp_path / "killed", progress=False, log=lines.append, data=tiny_data)
    assert lines[0].startswith("resuming") and "after epoch 1/2" in lines[0]
    assert [h["epoch"] for h in resumed.state.history] == [1, 2]
    for (name, a), b in zip(straight.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs after resume"
    assert resumed.state.history[-1]["test_accuracy"] == straight.state.history[-1]["test_accuracy"]

    with pytest.raises(ValueError, match="different options"):
        train(TrainConfig(**{**TINY.__dict__, "lr": 0.05}), tmp_path / "killed", progress=False, log=print)


def test_train_classifier_command_end_to_end(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    train_classifier.add_arguments(parser)
    out, asset = tmp_path / "run", tmp_path / "proxy.pt"
    argv = ["--out", str(out), "--epochs", "1", "--batch-size", "64", "--width", "4", "--train-subset", "256",
            "--test-subset", "100", "--threads", "1", "--no-progress", "--export", str(asset)]
    assert train_classifier.run(parser.parse_args(argv)) == 0
    printed = capsys.readouterr().out
    assert "epoch 1/1" in printed and file_sha256(asset) in printed
    assert (out / "checkpoint.pt").is_file() and (out / "config.json").is_file()
    proxy = fashion_mnist.load_embedded("cpu", asset, file_sha256(asset))
    assert proxy.meta["epochs"] == 1 and proxy.meta["seed"] == 0 and proxy.meta["threads"] == 1
    assert proxy.meta["test_images"] == 100 and 0 <= proxy.meta["test_accuracy"] <= 1
    # A finished run resumes to "nothing left to do" rather than training again.
    assert train_classifier.run(parser.parse_args(argv)) == 0
    assert "resuming" in capsys.readouterr().out
    assert train_classifier.run(parser.parse_args([*argv, "--lr", "0.3"])) == 2
    assert "different options" in capsys.readouterr().err
