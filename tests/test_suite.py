"""The evaluation suite: eval.json for several models, resume after a kill between models, bad input, and
the DD-Ranking export layout read back the way DD-Ranking's scripts read it."""
import json

import pytest
import torch

from cli_helpers import engine_cli
from engine.cli import main
from engine.data import dataset_info
from engine.evaluate import get_protocol
from engine.export import write_set
from engine.run.export import export_files
from engine.streams import Streams
from engine.suite import EVAL_STREAM, PARTIAL_FILE, SuiteSpec, cross_arch, evaluate_run, resolve_models
from run_fixtures import finished_pixel_run

TWO = ("convnet", "alexnet")


@pytest.fixture(scope="module")
def run_dir(root, G, proxy, tmp_path_factory):
    """A finished Pixel run (IPC 2) on the fake Fashion-MNIST (conftest's root, G, proxy)."""
    return finished_pixel_run(root, G, proxy, tmp_path_factory.mktemp("runs") / "pixel")


def _copy_run(run_dir, dest):
    dest.mkdir()
    for name in ("synthetic.pt", "run.json"):
        (dest / name).write_bytes((run_dir / name).read_bytes())
    return dest


def test_cli_writes_eval_json_for_two_models(run_dir, tmp_path):
    folder = _copy_run(run_dir, tmp_path / "run")
    res = engine_cli("evaluate", str(folder), "--models", "convnet,alexnet", "--repeats", "2", "--epochs", "1",
                     "--threads", "1", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    ev = json.loads((folder / "eval.json").read_text())
    assert list(ev["models"]) == list(TWO) and ev["backbone"] == "convnet"
    for name in TWO:
        m = ev["models"][name]
        assert len(m["accuracies"]) == 2 and all(0 <= a <= 1 for a in m["accuracies"])
        assert m["mean"] == pytest.approx(sum(m["accuracies"]) / 2) and m["std"] >= 0 and len(m["seeds"]) == 2
        assert 0 <= m["test_s"] <= m["wall_s"]
    assert ev["cross_arch_models"] == ["alexnet"] and ev["cross_arch_mean"] == ev["models"]["alexnet"]["mean"]
    assert ev["protocol"]["name"] == "glad" and ev["protocol"]["epochs"] == 1 and ev["repeats"] == 2
    # The evaluation networks come from the run's seed, so runs at one seed are scored by the same networks.
    assert ev["seed"] == Streams(0).seed_for(EVAL_STREAM) and ev["run"]["method"] == "pixel"
    assert ev["provenance"]["torch"] == torch.__version__ and not (folder / PARTIAL_FILE).exists()
    assert "cross-architecture mean (alexnet)" in res.stdout and "evaluate" in res.stderr  # the one tqdm bar
    assert "model" not in ev  # the one-model keys only appear for a one-model evaluation


class Killed(Exception):
    pass


def test_resume_after_a_kill_between_models(run_dir, tmp_path):
    spec = SuiteSpec(TWO, get_protocol("glad", 1), repeats=2)
    whole = evaluate_run(_copy_run(run_dir, tmp_path / "whole"), spec)

    folder = _copy_run(run_dir, tmp_path / "killed")
    per_model = spec.repeats * spec.protocol.epochs

    def die_in_second_model(stage, done, total):
        if done > per_model:  # the first model is finished and saved; the process "dies" in the second
            raise Killed
    with pytest.raises(Killed):
        evaluate_run(folder, spec, progress=die_in_second_model)
    partial = json.loads((folder / PARTIAL_FILE).read_text())
    assert list(partial["models"]) == ["convnet"] and not (folder / "eval.json").exists()

    seen = []
    resumed = evaluate_run(folder, spec, progress=lambda stage, done, total: seen.append(done))
    assert seen[0] == per_model and min(seen) == per_model  # the first model was not trained again
    assert not (folder / PARTIAL_FILE).exists()
    for name in TWO:
        assert resumed["models"][name]["accuracies"] == whole["models"][name]["accuracies"]
    # A finished evaluation of the same set counts as done: repeating it trains nothing.
    again = []
    evaluate_run(folder, spec, progress=lambda stage, done, total: again.append(done))
    assert again == [2 * per_model]


@pytest.mark.parametrize("args, message", [
    (["--models", "convnet,lenet"], "unknown model 'lenet'"),
    (["--model", "convnet", "--models", "vit"], "not both"),
    (["--models", ","], "needs at least one"),
])
def test_bad_model_input_is_one_sentence(run_dir, tmp_path, capsys, args, message):
    folder = _copy_run(run_dir, tmp_path / "run")
    assert main(["evaluate", str(folder), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (folder / "eval.json").exists()


def test_a_folder_without_synthetic_pt_is_refused(run_dir, tmp_path, capsys):
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "run.json").write_text((run_dir / "run.json").read_text())
    assert main(["evaluate", str(folder), "--models", "convnet"]) == 2
    err = capsys.readouterr().err
    assert "is not a run folder" in err and "synthetic.pt" in err and len(err.strip().splitlines()) == 1


def test_models_must_support_the_resolution():
    assert resolve_models(None, 32) == ("convnet", "alexnet", "vgg11", "resnet18", "vit")
    assert resolve_models(["alexnet", "convnet", "alexnet"], 128) == ("alexnet", "convnet")
    with pytest.raises(ValueError, match="model vit cannot evaluate 48 px images"):
        resolve_models(["vit"], 48)
    with pytest.raises(ValueError, match="no registered network supports 48 px"):
        resolve_models(None, 48)


def test_cross_arch_mean_leaves_out_the_backbone():
    models = {"convnet": {"mean": 0.9}, "alexnet": {"mean": 0.5}, "vit": {"mean": 0.3}}
    assert cross_arch(models, "convnet") == (pytest.approx(0.4), ["alexnet", "vit"])
    assert cross_arch({"convnet": {"mean": 0.9}}, "convnet") == (None, [])


def test_dd_ranking_layout_round_trips(run_dir, tmp_path):
    """Read as DD-Ranking's scripts do: torch.load(images.pt) is the image tensor, hard labels are built
    class-major (np.ones(ipc) * c for each class), and torch.load(lr.pt) is syn_lr."""
    syn = torch.load(run_dir / "synthetic.pt", weights_only=True)
    images = torch.load(run_dir / "images.pt", map_location="cpu")
    labels = torch.load(run_dir / "labels.pt", map_location="cpu")
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    assert images.shape == (20, 1, 32, 32) and labels.shape == (20,)
    ipc, classes = 2, 10
    dd_hard_labels = torch.tensor([c for c in range(classes) for _ in range(ipc)], dtype=torch.long)
    assert torch.equal(labels, dd_hard_labels) and torch.equal(images, syn["images"])
    assert not (run_dir / "lr.pt").exists()  # Pixel DM learns no rate

    # Labels in another order are written class-major (a stable sort), images moved with them.
    info = dataset_info("fashion-mnist")
    shuffled = torch.tensor([1, 0, 1, 0]), torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 32, 32)
    out = tmp_path / "set"
    out.mkdir()
    write_set(out, shuffled[1], shuffled[0], info, lr=0.0123)
    assert torch.load(out / "labels.pt").tolist() == [0, 0, 1, 1]
    assert torch.load(out / "images.pt")[:, 0, 0, 0].tolist() == [1.0, 3.0, 0.0, 2.0]
    lr = torch.load(out / "lr.pt", map_location="cpu")
    assert torch.is_tensor(lr) and lr.dtype == torch.float32 and lr.item() == pytest.approx(0.0123)


def test_export_writes_lr_pt_only_for_a_learned_rate(run_dir, tmp_path):
    folder = _copy_run(run_dir, tmp_path / "run")
    saved = torch.load(run_dir / "spaces" / "space_00.pt", weights_only=True)
    info = dataset_info("fashion-mnist")
    export_files(folder, saved | {"syn_lr": 0.02}, info, {})
    assert torch.load(folder / "lr.pt").item() == pytest.approx(0.02)
    assert torch.load(folder / "synthetic.pt", weights_only=True)["syn_lr"] == pytest.approx(0.02)
    export_files(folder, saved, info, {})  # another space, no learned rate: no stale lr.pt
    assert not (folder / "lr.pt").exists() and (folder / "images.pt").exists()


def test_test_precision_is_validated_recorded_and_honoured(run_dir, tmp_path):
    from engine.evaluate import accuracy, train_network
    from engine.nets import get_network
    with pytest.raises(ValueError, match="--test-precision must be one of fp32, bf16"):
        get_protocol("glad", 1, "fp16")
    assert "test_precision" not in get_protocol("glad", 1).to_json()  # fp32: the key of earlier results
    assert get_protocol("glad", 1, "bf16").to_json()["test_precision"] == "bf16"
    # Honoured: the same network tested both ways agrees closely, and a bf16 pass really ran in bf16.
    info = dataset_info("fashion-mnist")
    net = get_network("convnet", 1, 10, 32, seed=0).eval()
    x, y = torch.randn(64, 1, 32, 32), torch.randint(0, 10, (64,))
    seen = []
    hook = net.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    a32, a16 = accuracy(net, x, y, 32, "fp32"), accuracy(net, x, y, 32, "bf16")
    hook.remove()
    assert seen == [torch.float32] * 2 + [torch.bfloat16] * 2
    assert abs(a32 - a16) <= 2 / 64
    # Recorded: eval.json's protocol says bf16, and an fp32 evaluation of the same set is a different result.
    _assert_cli_records_bf16(_copy_run(run_dir, tmp_path / "p"), "test_precision")


def _assert_cli_records_bf16(folder, field):
    """`evaluate --FLAG bf16` writes the field into eval.json's protocol and its key; a bad value exits 2."""
    flag = "--" + field.replace("_", "-")
    res = engine_cli("evaluate", str(folder), "--model", "convnet", "--repeats", "1", "--epochs", "1",
                     flag, "bf16", "--threads", "1")
    assert res.returncode == 0, res.stderr
    ev = json.loads((folder / "eval.json").read_text())
    assert ev["protocol"][field] == "bf16" and ev["key"]["protocol"][field] == "bf16"
    bad = engine_cli("evaluate", str(folder), "--model", "convnet", flag, "half")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_train_precision_is_validated_recorded_and_honoured(run_dir, tmp_path):
    from engine.evaluate import train_network
    from engine.nets import get_network
    with pytest.raises(ValueError, match="--train-precision must be one of fp32, bf16"):
        get_protocol("dc", 1, train_precision="fp16")
    assert "train_precision" not in get_protocol("dc", 1).to_json()  # fp32: the key of earlier results
    assert get_protocol("dc", 1, train_precision="bf16").to_json()["train_precision"] == "bf16"
    # Honoured: under bf16 the training forward runs in bf16 while the weights stay float32; under fp32
    # it is float32 throughout and the network is the one a protocol without the field trains.
    info = dataset_info("fashion-mnist")
    x, y = torch.randn(20, 1, 32, 32), torch.arange(10).repeat(2)
    trained = {}
    for precision in ("fp32", "bf16"):
        seen = []
        original = get_network("convnet", 1, 10, 32, seed=0)
        hook = torch.nn.modules.module.register_module_forward_hook(
            lambda m, i, o: seen.append(o.dtype) if m.__class__.__name__ == "Linear" else None)
        try:
            net = train_network(x, y, info, "convnet", get_protocol("dc", 2, train_precision=precision), 0, "cpu")
        finally:
            hook.remove()
        assert set(seen) == {torch.bfloat16 if precision == "bf16" else torch.float32}
        assert all(p.dtype == torch.float32 for p in net.parameters())
        assert not torch.equal(next(net.parameters()), next(original.parameters()))  # it trained
        trained[precision] = net
    plain = train_network(x, y, info, "convnet", get_protocol("dc", 2), 0, "cpu")
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), trained["fp32"].parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(plain.parameters(), trained["bf16"].parameters()))
    # Recorded: eval.json's protocol and cache key say bf16; a bad value is refused with exit 2.
    _assert_cli_records_bf16(_copy_run(run_dir, tmp_path / "t"), "train_precision")
