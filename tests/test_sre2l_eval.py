"""The `sre2l` evaluation protocol (SRe²L's relabel): the student learns the teacher's soft labels of the crops
it sees; the loss by hand; the crops; the teacher recorded by the run and loaded by the suite (refused in one
sentence when it is missing or changed); the random-real baseline under the protocol and its cache key."""
import json
import math
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engine.classifiers.fashion_mnist import make_asset
from engine.classifiers.small_resnet import SmallResNetConfig
from engine.cli import main
from engine.data import dataset_info, load_dataset
from engine.evaluate import PROTOCOLS, PreparedTest, evaluate_synset, get_protocol, train_network
from engine.relabel import TEMPERATURE, crop_boxes, crop_flip, soft_label_loss
from engine.run import Run
from engine.scores import BaselineCache, random_real_baseline
from engine.suite import SuiteSpec, evaluate_run
from engine.teacher import TeacherError, load_teacher, teacher_record
from run_fixtures import tiny_config, tiny_proxy

torch.set_num_threads(1)
INFO = dataset_info("fashion-mnist")
Q = torch.tensor([0.02, 0.03, 0.05, 0.6, 0.1, 0.05, 0.05, 0.04, 0.03, 0.03])  # the fixed teacher's prediction


class FixedTeacher(torch.nn.Module):
    """Predicts Q whatever it is shown; counts the images it labelled."""

    num_classes = 10

    def __init__(self):
        super().__init__()
        self.seen = 0

    def forward(self, x):
        self.seen += len(x)
        return Q.log().expand(len(x), -1)


def test_loss_is_t_squared_kl_batchmean_by_hand():
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 5, generator=gen) * 30, torch.randn(4, 5, generator=gen) * 30
    p, q = torch.softmax(s / 20, 1), torch.softmax(t / 20, 1)
    by_hand = 400 * sum(float((q[i] * (q[i].log() - p[i].log())).sum()) for i in range(4)) / 4
    assert soft_label_loss(s, t).item() == pytest.approx(by_hand, rel=1e-5)
    assert TEMPERATURE == 20.0 and soft_label_loss(t, t).item() == pytest.approx(0.0, abs=1e-5)


def test_crops_fit_the_image_and_flips_mirror():
    gen = torch.Generator().manual_seed(1)
    boxes = crop_boxes(2000, 32, 32, gen)
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 32).all()
    area = h * w / 1024
    assert area.min() >= 0.05 and area.max() <= 1.0 and area.min() < 0.15  # scale 0.08-1, rounded to pixels
    ramp = torch.arange(32.0).expand(64, 1, 32, 32)  # increases to the right
    torch.manual_seed(0)
    state = torch.get_rng_state()
    out = crop_flip(ramp, torch.Generator().manual_seed(2))
    assert torch.equal(torch.get_rng_state(), state)  # draws from the given generator only
    rising = (out[:, 0, 16, -1] > out[:, 0, 16, 0])
    assert 0.25 < rising.float().mean() < 0.75  # about half of them flipped
    assert out.shape == ramp.shape and out.min() >= 0 and out.max() <= 31


def _train(protocol, teacher=None):
    gen = torch.Generator().manual_seed(0)
    images, labels = torch.randn(20, 1, 32, 32, generator=gen), torch.arange(10).repeat(2)
    net = train_network(images, labels, INFO, "convnet", protocol, 0, "cpu", teacher=teacher).eval()
    with torch.no_grad():
        return net(images), labels


def test_the_student_learns_the_teachers_soft_labels_not_the_hard_ones():
    """A teacher that predicts Q for every crop: the student predicts Q's argmax for every image and its
    tempered distribution ranks the classes as Q does; on hard labels the same network predicts the labels."""
    quick = dict(epochs=30, lr=0.01, ema_decay=None, schedule="step")
    teacher = FixedTeacher()
    soft, labels = _train(replace(PROTOCOLS["sre2l"], **quick), teacher)
    assert teacher.seen == 30 * 20  # it labelled every crop the student trained on
    assert (soft.argmax(1) == 3).all()
    mean = torch.softmax(soft / TEMPERATURE, 1).mean(0)
    assert torch.corrcoef(torch.stack([mean.log(), Q.log()]))[0, 1] > 0.9
    hard, _ = _train(replace(PROTOCOLS["dc"], **quick))
    assert torch.equal(hard.argmax(1), labels)


def test_the_teacher_labels_exactly_the_crops_the_student_sees(monkeypatch):
    seen = {"student": [], "teacher": []}

    class Recorder(torch.nn.Module):
        def __init__(self, key, out):
            super().__init__()
            self.key, self.out = key, out

        def forward(self, x):
            seen[self.key].append(x.detach().clone())
            return self.out(x.flatten(1))

    import engine.evaluate as evaluate
    monkeypatch.setattr(evaluate, "get_network", lambda *a, **k: Recorder("student", torch.nn.Linear(1024, 10)))
    teacher = Recorder("teacher", lambda x: x[:, :10])
    images = torch.randn(6, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    protocol = replace(PROTOCOLS["sre2l"], epochs=3, ema_decay=None, batch_train=4)
    train_network(images, torch.arange(6) % 10, INFO, "convnet", protocol, 0, "cpu", teacher=teacher)
    assert len(seen["student"]) == len(seen["teacher"]) == 3 * 2
    for s, t in zip(seen["student"], seen["teacher"]):  # Fashion-MNIST's normalised space is [-1, 1] already
        torch.testing.assert_close(INFO.to_generator(s), t)
    assert not any(torch.equal(s, images[:len(s)]) for s in seen["student"])  # cropped, not the images as they are


def test_a_soft_label_protocol_without_a_teacher_is_refused(root):
    test = load_dataset("fashion-mnist", "test", root)
    with pytest.raises(ValueError, match="soft labels and was given no teacher"):
        evaluate_synset(torch.zeros(10, 1, 32, 32), torch.arange(10), test, "convnet", get_protocol("sre2l", 1), 1)


def test_hard_label_protocols_keep_their_keys():
    """glad and dc are written as before the soft-label fields existed: earlier eval.json and baselines match."""
    for name in ("glad", "dc"):
        data = PROTOCOLS[name].to_json()
        assert "soft_labels" not in data and "crop_flip" not in data and "temperature" not in data
    assert PROTOCOLS["sre2l"].to_json()["soft_labels"] is True
    assert PROTOCOLS["sre2l"].without_augmentation().crop_flip is False


def teacher_file(folder, seed: int = 0) -> str:
    path = folder / "teacher.pt"
    net = tiny_proxy().backbone
    if seed:
        with torch.no_grad():
            net.fc.bias.add_(seed)
    torch.save(make_asset(net, SmallResNetConfig(1, 10, 4), {"dataset": "fashion-mnist"}), path)
    return f"trained:resnet18={path}"


@pytest.fixture(scope="module")
def sre2l_run(root, G, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sre2l")
    spec = teacher_file(folder)
    run = Run(tiny_config(root, objective="sre2l", method="pixel", ipc=1, steps_per_space=2, classifier=spec),
              folder / "run", generator=G)
    while run.step():
        pass
    run.close()
    return folder / "run", spec


def _copy(run_dir, dest):
    dest.mkdir()
    for name in ("synthetic.pt", "run.json", "export.json"):
        (dest / name).write_bytes((run_dir / name).read_bytes())
    return dest


def test_the_export_records_the_teacher(sre2l_run, root, G, tmp_path):
    run_dir, spec = sre2l_run
    record = teacher_record(spec)
    assert len(record["sha256"]) == 64
    for name in ("run.json", "export.json"):
        assert json.loads((run_dir / name).read_text())["teacher"] == record
    assert record == {"spec": spec, "sha256": record["sha256"]}
    assert teacher_record("embedded:fashion-mnist")["sha256"]  # the shipped asset's recorded sha256
    given = Run(tiny_config(root, method="pixel", steps_per_space=1), tmp_path / "given", generator=G,
                classifier=tiny_proxy())
    given.prepare()
    assert given.summary()["teacher"] == {"spec": None, "sha256": None}
    given.close()
    with pytest.raises(TeacherError, match="in-process.*pass --teacher"):
        load_teacher(given.summary()["teacher"], "fashion-mnist")


def test_the_suite_trains_on_the_runs_teacher(sre2l_run, tmp_path):
    run_dir, spec = sre2l_run
    folder = _copy(run_dir, tmp_path / "run")
    out = evaluate_run(folder, SuiteSpec(("convnet",), get_protocol("sre2l", 2), repeats=1))
    assert out["teacher"] == out["key"]["teacher"] == teacher_record(spec)
    assert out["protocol"]["soft_labels"] and 0 <= out["models"]["convnet"]["mean"] <= 1
    # Another teacher is another evaluation: the key changes.
    other = teacher_file(tmp_path, seed=3)
    again = evaluate_run(folder, SuiteSpec(("convnet",), get_protocol("sre2l", 2), repeats=1, teacher=other))
    assert again["key"]["teacher"]["spec"] == other and again["key"] != out["key"]


def test_a_missing_or_changed_teacher_is_one_sentence_and_exit_2(sre2l_run, tmp_path, capsys):
    run_dir, spec = sre2l_run
    folder = _copy(run_dir, tmp_path / "run")
    path = spec.partition("=")[2]
    saved = open(path, "rb").read()
    try:
        teacher_file(Path(path).parent, seed=5)  # the same path, other weights
        assert main(["evaluate", str(folder), "--model", "convnet", "--protocol", "sre2l", "--epochs", "1",
                     "--repeats", "1"]) == 2
        err = capsys.readouterr().err
        assert "have changed since the run" in err and len(err.strip().splitlines()) == 1
        os.remove(path)
        assert main(["evaluate", str(folder), "--model", "convnet", "--protocol", "sre2l", "--epochs", "1",
                     "--repeats", "1"]) == 2
        err = capsys.readouterr().err
        assert "cannot be loaded" in err and "does not exist" in err and len(err.strip().splitlines()) == 1
        assert not (folder / "eval.json").exists()
    finally:
        open(path, "wb").write(saved)


def test_random_real_baselines_use_the_teachers_soft_labels(root, tmp_path):
    train, test = load_dataset("fashion-mnist", "train", root), load_dataset("fashion-mnist", "test", root)
    prepared, cache = PreparedTest.of(test), BaselineCache(tmp_path)
    protocol = get_protocol("sre2l", 1)
    with pytest.raises(ValueError, match="needs the teacher"):
        random_real_baseline(train, prepared, "convnet", protocol, 1, 1, cache)
    teacher = FixedTeacher()
    record = {"spec": "fixed", "sha256": None}
    result, path = random_real_baseline(train, prepared, "convnet", protocol, 1, 1, cache, teacher=teacher,
                                        teacher_id=record)
    assert teacher.seen == 2 * 10  # the subset (10 images, one epoch) with crops, then without
    assert json.loads(path.read_text())["key"]["teacher"] == record and "sre2l" in path.name
    _, other = random_real_baseline(train, prepared, "convnet", protocol, 1, 1, cache, teacher=teacher,
                                    teacher_id={"spec": "other", "sha256": None})
    _, hard = random_real_baseline(train, prepared, "convnet", get_protocol("dc", 1), 1, 1, cache)
    assert len({path, other, hard}) == 3 and math.isfinite(result["aug"]["mean"])
