"""Tiny-ImageNet and ImageNet-1K read from tiny fake folders in their real layouts, refused when broken;
the lazily loaded set's bounded cache; RealSampler over it; a Tiny teacher trained, exported and used."""
import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.classifiers import load_classifier
from engine.classifiers.fashion_mnist import make_asset
from engine.classifiers.small_resnet import SmallResNetConfig, build_small_resnet18
from engine.cli import train_classifier
from engine.data import DatasetError, ImageSet, LazyImageSet, RealSampler, dataset_info, holdout_split, load_dataset
from engine.data.imagenet_subsets import subsets
from engine.data.lazy import DecodedCache
from engine.objectives.sre2l import recover_batches
from engine.run import Run, RunConfig

torch.set_num_threads(1)

TINY_MEAN, TINY_STD = (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)


def jpeg(path: Path, colour, size=(64, 64)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, tuple(int(c) for c in colour)).save(path, quality=95)


def tiny_wnids() -> list[str]:
    # 200 wnid-shaped names, written to wnids.txt out of order: the labels must follow the sorted order.
    return [f"n{9_000_000 + 37 * ((i * 73) % 200):08d}" for i in range(200)]


def fake_tiny(base: Path, per_class: int = 2) -> Path:
    """tiny-imagenet-200/ with `per_class` training images per class and 200 val images. Image colour:
    red = label, green = 40 + 60 * k (train image k) or 220 (val)."""
    folder = base / "tiny-imagenet-200"
    wnids = tiny_wnids()
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    label = {w: i for i, w in enumerate(sorted(wnids))}
    for w in wnids:
        for k in range(per_class):
            jpeg(folder / "train" / w / "images" / f"{w}_{k}.JPEG", (label[w], 40 + 60 * k, 0))
        (folder / "train" / w / f"{w}_boxes.txt").write_text("")
    lines = []
    for i, w in enumerate(reversed(wnids)):  # one val image per class, annotations in file order
        name = f"val_{i}.JPEG"
        jpeg(folder / "val" / "images" / name, (label[w], 220, 0))
        lines.append(f"{name}\t{w}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return fake_tiny(tmp_path_factory.mktemp("tiny"))


def colours(data, index) -> np.ndarray:
    """Mean (red, green) of each image: the fake folders' labels written in colour."""
    return data.take(torch.as_tensor(index)).float().mean(dim=(2, 3))[:, :2].numpy()


def test_tiny_imagenet_train_split(tiny_root):
    data = load_dataset("tiny-imagenet", "train", tiny_root.parent)  # the folder above tiny-imagenet-200/
    assert isinstance(data, LazyImageSet) and len(data) == 400 and data.source == str(tiny_root)
    assert data.class_ids == tuple(sorted(tiny_wnids())) and data.info == dataset_info("tiny-imagenet")
    assert data.labels.tolist() == [c for c in range(200) for _ in range(2)]  # sorted wnid order, files sorted
    assert (data.info.channels, data.info.resolution, data.info.num_classes) == (3, 64, 200)
    assert data.info.mean == TINY_MEAN and data.info.std == TINY_STD
    images = data.take([0, 1, 399])
    assert images.shape == (3, 3, 64, 64) and images.dtype == torch.uint8
    np.testing.assert_allclose(colours(data, [0, 1, 399]), [[0, 40], [0, 100], [199, 100]], atol=3)
    expected = (data.take([5]).float() / 255 - torch.tensor(TINY_MEAN).view(1, 3, 1, 1)) / torch.tensor(TINY_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(data.normalized([5]), expected)
    # The folder itself works as --data-root too.
    assert load_dataset("tiny-imagenet", "train", tiny_root).files == data.files


def test_tiny_imagenet_test_split_is_val(tiny_root):
    test = load_dataset("tiny-imagenet", "test", tiny_root)
    assert len(test) == 200 and test.split == "test"
    label = {w: i for i, w in enumerate(sorted(tiny_wnids()))}
    by_name = {f"val_{i}.JPEG": label[w] for i, w in enumerate(reversed(tiny_wnids()))}
    assert [by_name[Path(f).name] for f in test.files] == test.labels.tolist()
    np.testing.assert_allclose(colours(test, range(0, 200, 37))[:, 0], test.labels[::37].numpy(), atol=3)
    assert torch.bincount(test.labels).tolist() == [1] * 200


def broken_copy(tiny_root: Path, tmp_path: Path) -> Path:
    """A copy of the fake folder's small files (images are linked), to break one thing in."""
    copy = tmp_path / "tiny-imagenet-200"
    copy.mkdir()
    for src in tiny_root.rglob("*"):
        dst = copy / src.relative_to(tiny_root)
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
        elif src.suffix == ".JPEG":
            dst.symlink_to(src)
        else:
            dst.write_bytes(src.read_bytes())
    return copy


def refused(split: str, root: Path, match: str) -> str:
    with pytest.raises(DatasetError, match=match) as err:
        data = load_dataset("tiny-imagenet", split, root)
        data.take(None)  # a corrupt image is refused when it is read
    message = str(err.value)
    assert "\n" not in message and message.endswith(".")
    return message


def test_tiny_imagenet_refuses_broken_folders(tiny_root, tmp_path):
    message = refused("train", tmp_path / "nowhere", "wnids.txt is in neither")
    assert "tiny-imagenet-200.zip" in message and "--data-root" in message
    copy = broken_copy(tiny_root, tmp_path)
    (copy / "wnids.txt").write_text("\n".join(tiny_wnids()[:199]))
    refused("train", copy, "lists 199 distinct wnids")
    (copy / "wnids.txt").write_text("\n".join(tiny_wnids()))
    notes = copy / "val" / "val_annotations.txt"
    text = notes.read_text()
    notes.write_text(text.replace(tiny_wnids()[-1], "n12345678", 1))
    refused("test", copy, r"line 1 labels val_0.JPEG with n12345678, which is not in wnids.txt")
    notes.write_text(text.replace("val_3.JPEG", "val_9999.JPEG"))
    refused("test", copy, "names val_9999.JPEG, which is not in")
    notes.unlink()
    refused("test", copy, "val_annotations.txt is missing")
    load_dataset("tiny-imagenet", "train", copy)  # the train split does not need the annotations
    victim = copy / "train" / tiny_wnids()[5] / "images" / f"{tiny_wnids()[5]}_1.JPEG"
    victim.unlink()
    victim.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    refused("train", copy, f"{victim} is not a readable image .*remove or replace it")


def test_the_cache_never_holds_more_than_its_limit(tiny_root):
    full = load_dataset("tiny-imagenet", "train", tiny_root)
    data = LazyImageSet(full.info, full.files, full.labels, full.decode, DecodedCache(5), "train")
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        data.take(torch.randint(len(data), (4,), generator=gen))
        assert len(data.cache) <= 5
    assert data.cache.misses > 5 and len(data.cache) == 5
    data.take([1, 1, 1])
    hits = data.cache.hits
    data.take([1])
    assert data.cache.hits == hits + 1  # the most recent image is cached
    part = data.subset(torch.arange(10, 20), split="val")
    assert part.cache is data.cache and part.labels.tolist() == full.labels[10:20].tolist()
    part.take(None)
    assert len(data.cache) <= 5
    with pytest.raises(ValueError, match="at least 1"):
        DecodedCache(0)
    assert full.cache.max_images == 512 * 2**20 // (3 * 64 * 64)  # the default budget at 64 px


def test_sampler_and_holdout_over_a_lazy_set(tiny_root):
    lazy = load_dataset("tiny-imagenet", "train", tiny_root)
    eager = ImageSet(lazy.info, lazy.take(None), lazy.labels)
    a = RealSampler(lazy, "cpu", torch.Generator().manual_seed(3))
    b = RealSampler(eager, "cpu", torch.Generator().manual_seed(3))
    assert torch.equal(a.sample(7, 3), b.sample(7, 3))
    xa, ya = a.sample_all(1)
    xb, yb = b.sample_all(1)
    assert torch.equal(xa, xb) and torch.equal(ya, yb) and ya.tolist() == list(range(200))
    train, val = holdout_split(lazy, 1, seed=0)
    assert isinstance(val, LazyImageSet) and len(val) == 200 and len(train) == 200 and val.split == "val"
    assert not set(train.files) & set(val.files)


# ----------------------------------------------------------------------------- ImageNet-1K


def imagenet_wnids() -> list[str]:
    """1000 wnid-shaped names in sorted order, with the subsets' real wnids at their ImageNet index."""
    known = {c["imagenet_index"]: int(c["wnid"][1:]) for classes in subsets().values() for c in classes}
    anchors = sorted(known.items()) + [(1000, 99_999_999)]
    numbers, prev = [], (-1, 0)
    for index, number in anchors:
        gap = index - prev[0]
        numbers += [prev[1] + (number - prev[1]) * k // gap for k in range(1, gap)]
        if index < 1000:
            numbers.append(number)
        prev = (index, number)
    assert len(numbers) == 1000 and numbers == sorted(set(numbers))
    return [f"n{n:08d}" for n in numbers]


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory) -> Path:
    """train/ and val/ with one 80x60 image per class (red = label % 256, green = label // 256), and a
    cyan 20-pixel band at the left that the centre crop must cut off."""
    root, wnids = tmp_path_factory.mktemp("imagenet"), imagenet_wnids()
    for split in ("train", "val"):
        for label, w in enumerate(wnids):
            path = root / split / w / f"{w}_0.JPEG"
            path.parent.mkdir(parents=True)
            if label in (0, 999):
                img = np.zeros((60, 80, 3), np.uint8)
                img[:] = (label % 256, label // 256, 0)
                img[:, :8] = (0, 255, 255)
                Image.fromarray(img).save(path, quality=95)
            else:  # the same bytes for the others: most of the time goes into encoding
                path.write_bytes((root / split / wnids[0] / f"{wnids[0]}_0.JPEG").read_bytes())
    return root


def test_imagenet1k_layout(imagenet_root):
    info = dataset_info("imagenet-1k")
    assert (info.num_classes, info.resolution, info.class_names[0]) == (1000, 128, "tench")
    assert dataset_info("imagenet-1k", 64).resolution == 64
    with pytest.raises(ValueError, match="64, 128, 256 px, not 32"):
        dataset_info("imagenet-1k", 32)
    data = load_dataset("imagenet-1k", "train", imagenet_root, resolution=64)
    assert isinstance(data, LazyImageSet) and len(data) == 1000 and data.labels.tolist() == list(range(1000))
    assert data.class_ids == tuple(imagenet_wnids()) and data.class_ids[0] == "n01440764"
    images = data.take([0, 999])
    assert images.shape == (2, 3, 64, 64)
    # 80x60 -> 85x64 (shorter side to 64), centre 64x64: the 8-pixel band (now ~11) is cut off.
    np.testing.assert_allclose(images.float().mean(dim=(2, 3))[:, :2].numpy(), [[0, 0], [231, 3]], atol=3)
    test = load_dataset("imagenet-1k", "test", imagenet_root, resolution=64)
    assert test.source.endswith("val") and len(test) == 1000
    assert test.info == dataset_info("imagenet-1k", 64)


def test_imagenet1k_refuses_broken_trees(imagenet_root, tmp_path):
    def refused(root, match):
        with pytest.raises(DatasetError, match=match) as err:
            load_dataset("imagenet-1k", "train", root, resolution=64)
        assert "\n" not in str(err.value) and str(err.value).endswith(".")

    refused(tmp_path / "none", "does not exist; put each class's images in <data-root>/train/<wnid>/")
    wnids = imagenet_wnids()
    for w in wnids[1:]:
        (tmp_path / "train" / w).mkdir(parents=True)
    refused(tmp_path, "has 999 wnid class folders, not ImageNet-1K's 1000")
    (tmp_path / "train" / "n00000001").mkdir()  # 1000 folders, but tench is missing
    refused(tmp_path, r"n01440764 \(ImageNet class 0\) is missing")
    (tmp_path / "train" / "n00000001").rmdir()
    (tmp_path / "train" / wnids[0]).mkdir()
    refused(tmp_path, f"{wnids[0]} holds no .JPEG/.jpg/.png images")


# ----------------------------------------------------------------------------- a Tiny teacher


def test_a_tiny_teacher_trains_and_exports(tiny_root, tmp_path):
    parser = argparse.ArgumentParser()
    train_classifier.add_arguments(parser)
    asset = tmp_path / "teacher.pt"
    # Width 16: narrower channels-last ResNets crash CPU backward at 64 px in this torch (widths 4 and 8).
    argv = ["--dataset", "tiny-imagenet", "--data-root", str(tiny_root), "--out", str(tmp_path / "train"),
            "--epochs", "1", "--batch-size", "100", "--width", "16", "--train-subset", "100", "--test-subset", "20",
            "--threads", "1", "--no-progress", "--export", str(asset)]
    assert train_classifier.run(parser.parse_args(argv)) == 0
    config = json.loads((tmp_path / "train" / "config.json").read_text())
    assert config["dataset"] == "tiny-imagenet" and config["lr"] == 0.2 and config["weight_decay"] == 1e-4
    assert config["epochs"] == 1 and config["width"] == 16  # given values beat the dataset's defaults
    teacher = load_classifier(f"trained:resnet18={asset}")
    assert teacher.num_classes == 200 and teacher.inputs.mean == TINY_MEAN and teacher.meta["dataset"] == "tiny-imagenet"
    assert teacher.backbone.conv1.kernel_size == (3, 3) and teacher.backbone.conv1.in_channels == 3
    assert 0 <= teacher.meta["test_accuracy"] <= 1 and teacher.meta["test_images"] == 20


def test_sre2l_runs_on_tiny_imagenet_with_a_trained_teacher(tiny_root, tmp_path):
    """A 200-class teacher in train-classifier's export format (narrow, for speed), by the Pixel method
    (no generator needed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_small_resnet18(SmallResNetConfig(3, 200, 4))
    torch.save(make_asset(net, SmallResNetConfig(3, 200, 4), {"dataset": "tiny-imagenet"}), tmp_path / "teacher.pt")
    config = RunConfig(dataset="tiny-imagenet", data_root=str(tiny_root), method="pixel", objective="sre2l",
                       classifier=f"trained:resnet18={tmp_path / 'teacher.pt'}", steps_per_space=2, batch_real=1,
                       distance=False, selection="last", preview_every=5)
    run = Run(config, tmp_path / "run")
    while run.step():
        pass
    run.close()
    assert run.finished and run.ctx.objective.params.r_bn == 1.0
    assert [len(b) for b in recover_batches(run.ctx.labels, 100)] == [100, 100]  # SRe²L's two Tiny batches
    saved = torch.load(tmp_path / "run" / "synthetic.pt", weights_only=True)
    assert saved["images"].shape == (200, 3, 64, 64) and saved["labels"].tolist() == list(range(200))
