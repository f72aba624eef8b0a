"""`evaluate`, `compare` and `buffers` on 2 CPU processes (gloo): the networks of an evaluation and the
experts of a buffer folder are dealt over the processes, and what rank 0 writes is what one process writes
(the same accuracies, in repeat order, the same trajectories bit for bit); rank 1 writes nothing (it is
handed folders of its own, so whatever it wrote would appear there), but its own experts' files; a killed
evaluation or buffer folder resumes on 2 processes. One spawn of 2 workers plays every 2-process scenario,
the `evaluate` command line last (in the workers, with the environment torchrun gives its workers: a real
torchrun launch costs 20 s of start-up here, and tests/test_distributed.py launches one for `distill`), so
the module runs in about 40 s on 2 busy cores.
"""
import contextlib
import io
import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from engine import buffers as buffers_module
from engine import distributed, evaluate, scores, suite
from engine.cli import main
from engine.buffers import MANIFEST, BufferConfig, expert_file, train_buffers
from engine.compare import CompareSpec, parse_arms, run_compare
from engine.data import ImageSet
from engine.data.fashion_mnist import INFO
from engine.evaluate import get_protocol
from engine.suite import EVAL_FILE, PARTIAL_FILE, SuiteSpec, evaluate_run
from run_fixtures import finished_pixel_run, tiny_generator, tiny_proxy

pytestmark = pytest.mark.dist

MODELS = ("convnet", "alexnet")
# Three networks per model: the processes' shares are unequal (2 and 1), as they mostly will be.
SPEC = SuiteSpec(MODELS, get_protocol("glad", 1), repeats=3, score_models=("convnet",), whole_epochs=1)
RESUME = SuiteSpec(MODELS, get_protocol("glad", 1), repeats=3)
EXPERTS = BufferConfig(experts=3, epochs=2, width=8, batch=8)


def grid_spec(root):
    base = dict(data_root=str(root), steps_per_space=1, batch_real=8, distance_real_per_class=5, mean_ws_samples=20,
                preview_every=100)
    return CompareSpec(base, parse_arms(["pixel"]), (0,), SuiteSpec(("convnet",), get_protocol("glad", 1), repeats=2),
                       pixel_steps=2)


def tiny_splits() -> tuple[ImageSet, ImageSet]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (30, 1, 32, 32), generator=gen, dtype=torch.uint8)
    labels = torch.arange(30) % 10
    return ImageSet(INFO, images[:20], labels[:20]), ImageSet(INFO, images[20:], labels[20:], split="test")


def quiet(_):
    pass


def copy_run(run_dir: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in ("synthetic.pt", "run.json"):
        shutil.copy(run_dir / name, dest / name)
    return dest


class Killed(Exception):
    pass


def kill_in_second_model(folder: Path) -> None:
    """One process evaluates the first model, then "dies": the folder holds its partial file."""
    per_model = RESUME.repeats * RESUME.protocol.epochs

    def die(stage, done, total):
        if done > per_model:
            raise Killed
    with pytest.raises(Killed):
        evaluate_run(folder, RESUME, progress=die)


def record_calls(module, name: str, what) -> list:
    """Wrap `module.name` so a worker can tell what it did: `what(*args)` of every call, in order."""
    calls, real = [], getattr(module, name)

    def wrapped(*args, **kwargs):
        calls.append(what(*args))
        return real(*args, **kwargs)
    setattr(module, name, wrapped)
    return calls


@contextlib.contextmanager
def fingerprints():
    """{network: the sum of its trained parameters} of every network trained meanwhile (the synthetic set's
    and the baselines'), keyed by what it is. The fake data is noise, so the accuracies sit near chance and
    many networks share one: equal parameters are what shows the processes trained the very networks."""
    found, real = {}, evaluate.train_network

    def wrapped(images, labels, info, model, protocol, seed, *args, **kwargs):
        net = real(images, labels, info, model, protocol, seed, *args, **kwargs)
        found[f"{model} {protocol.name} dsa={protocol.dsa} seed={seed} images={len(images)}"] = float(
            sum(p.detach().double().sum() for p in net.parameters()))
        return net
    evaluate.train_network = scores.train_network = wrapped
    try:
        yield found
    finally:
        evaluate.train_network = scores.train_network = real


def scenarios(rank, world, root, out, port):
    dist = distributed.init(rank, world, torch.device("cpu"), f"file://{out}/rendezvous")
    mine = lambda name: out / (name if rank == 0 else f"{name}-rank1")
    trained = record_calls(suite, "evaluate_network", lambda images, labels, test, model, protocol, seed, *_:
                           [model, protocol.dsa, seed])
    with fingerprints() as trained_nets:
        evaluate_run(mine("eval"), SPEC, cache=mine("baselines"), dist=dist)
    networks = list(trained)  # the first scenario's (the later ones train networks of the same seeds)
    seen = []
    evaluate_run(mine("resume"), RESUME, dist=dist, progress=lambda stage, done, total: seen.append(done))
    writes = record_calls(buffers_module, "write_manifest", lambda *_: 1)
    experts = record_calls(buffers_module, "train_expert", lambda config, index, *_: index)
    # Buffers: one folder for both (each process writes its own experts' files).
    train_buffers(EXPERTS, out / "buf", data=tiny_splits(), progress=False, log=quiet, dist=dist)
    train_buffers(EXPERTS, out / "buf-resume", data=tiny_splits(), progress=False, log=quiet, dist=dist)
    run_compare(grid_spec(root), mine("grid"), generator=tiny_generator(), classifier=tiny_proxy(), log=quiet,
                dist=dist)
    dist.close()
    code, printed = evaluate_command(rank, world, port, out / "cli")
    record = {"networks": networks, "fingerprints": trained_nets, "resume_progress": seen, "manifest_writes": len(writes), "experts": experts,
              "cli": [code, printed]}
    (out / f"rank{rank}.json").write_text(json.dumps(record))


def evaluate_command(rank, world, port, folder):
    """`python -m engine evaluate` as torchrun starts it in each worker: its environment, env:// rendezvous."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
        code = main(["evaluate", str(folder), "--models", ",".join(MODELS), "--repeats", "3", "--epochs", "1",
                     "--device", "cpu", "--threads", "1"])
    return code, printed.getvalue()


def worker(rank, world, root, out, port):
    torch.set_num_threads(1)
    scenarios(rank, world, Path(root), Path(out), port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run_dir(root, G, proxy, tmp_path_factory):
    """A finished Pixel run (IPC 2) on the fake Fashion-MNIST."""
    return finished_pixel_run(root, G, proxy, tmp_path_factory.mktemp("runs") / "pixel")


@pytest.fixture(scope="module")
def single(root, run_dir, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("single")
    with fingerprints() as trained:
        evaluate_run(copy_run(run_dir, out / "eval"), SPEC, cache=out / "baselines")
    (out / "fingerprints.json").write_text(json.dumps(trained))
    train_buffers(EXPERTS, out / "buf", data=tiny_splits(), progress=False, log=quiet)
    run_compare(grid_spec(root), out / "grid", generator=tiny_generator(), classifier=tiny_proxy(), log=quiet)
    return out


@pytest.fixture(scope="module")
def spread(root, run_dir, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("dist")
    copy_run(run_dir, out / "eval")
    copy_run(run_dir, out / "cli")  # the command's: both workers are given this one folder, as torchrun's are
    kill_in_second_model(copy_run(run_dir, out / "resume"))
    train_buffers(BufferConfig(experts=1, epochs=2, width=8, batch=8), out / "buf-resume", data=tiny_splits(),
                  progress=False, log=quiet)  # expert 0 on one process; 1 and 2 left for the two
    (out / "expert-0-mtime").write_text(str((out / "buf-resume" / expert_file(0)).stat().st_mtime_ns))
    mp.spawn(worker, args=(2, str(root), str(out), free_port()), nprocs=2, join=True)
    return out


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.name.startswith(".lock"))


def networks(ev: dict) -> dict:
    """What an evaluation computed, without its timings and provenance."""
    return {"models": {m: {k: v for k, v in r.items() if k not in ("wall_s", "test_s")} for m, r in ev["models"].items()},
            "no_aug": {m: r["accuracies"] for m, r in ev.get("no_aug", {}).items()},
            "scores": {m: {k: v for k, v in s.items() if k != "baselines"} for m, s in ev.get("scores", {}).items()},
            "cross_arch_mean": ev["cross_arch_mean"], "key": ev["key"], "seed": ev["seed"]}


def test_two_process_evaluation_writes_the_single_process_eval_json(spread, single):
    two, one = read(spread / "eval" / EVAL_FILE), read(single / "eval" / EVAL_FILE)
    for name in MODELS:
        assert two["models"][name]["accuracies"] == one["models"][name]["accuracies"]  # exactly, in repeat order
        assert len(two["models"][name]["accuracies"]) == 3 and two["models"][name]["wall_s"] > 0
    assert networks(two) == networks(one)  # the no-augmentation networks, the baselines and the scores too
    # The very networks: each trained once, by one process, to the single process's parameters.
    ranks = [read(spread / f"rank{r}.json")["fingerprints"] for r in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1]) and len(ranks[0]) > len(ranks[1]) > 0
    assert ranks[0] | ranks[1] == read(single / "fingerprints.json")
    assert len(ranks[0] | ranks[1]) == 3 * 3 + 2 * 3 + 1  # 3 models x 3; random-real, with and without DSA; whole
    assert set(two) == set(one) and files(spread / "eval") == files(single / "eval")
    baselines = [sorted(p.relative_to(d / "baselines") for p in (d / "baselines").rglob("*.json")) for d in (spread, single)]
    assert baselines[0] == baselines[1] and len(baselines[0]) == 2  # random-real and whole-data, cached by rank 0
    for path in baselines[0]:
        a, b = read(spread / "baselines" / path), read(single / "baselines" / path)
        assert a["key"] == b["key"] and a["aug"] == b["aug"] and a.get("no_aug") == b.get("no_aug")


def test_rank_1_writes_nothing_but_its_experts(spread):
    for name in ("eval", "baselines", "resume", "grid"):
        assert not (spread / f"{name}-rank1").exists()
    ranks = [read(spread / f"rank{r}.json") for r in (0, 1)]
    assert ranks[1]["manifest_writes"] == 0 and ranks[0]["manifest_writes"] > 0
    assert ranks[1]["resume_progress"] == []  # the bar is rank 0's alone


def test_the_work_is_dealt_not_repeated(spread):
    """Each network and expert is trained by one process: a model's repeats round-robin (rank 0 takes the
    first and third of three), the missing experts likewise."""
    ranks = [read(spread / f"rank{r}.json") for r in (0, 1)]
    nets = [[tuple(n) for n in r["networks"]] for r in ranks]  # (model, with DSA, seed)
    assert not set(nets[0]) & set(nets[1]) and len(set(nets[0] + nets[1])) == 9  # 3 models x 3, once each
    base = read(spread / "eval" / EVAL_FILE)["seed"] * 1000  # engine.evaluate.network_seeds
    for model, dsa in (("convnet", True), ("alexnet", True), ("convnet", False)):
        assert [s - base for m, d, s in nets[0] if (m, d) == (model, dsa)] == [0, 2]
        assert [s - base for m, d, s in nets[1] if (m, d) == (model, dsa)] == [1]
    assert ranks[0]["experts"] == [0, 2, 1] and ranks[1]["experts"] == [1, 2]  # buf: 0,1,2; buf-resume: 1,2


def test_a_killed_evaluation_resumes_on_two_processes(spread, single):
    per_model = RESUME.repeats * RESUME.protocol.epochs
    seen = read(spread / "rank0.json")["resume_progress"]
    assert seen[0] == per_model and min(seen) == per_model and seen[-1] == 2 * per_model  # convnet not retrained
    resumed, one = read(spread / "resume" / EVAL_FILE), read(single / "eval" / EVAL_FILE)
    assert not (spread / "resume" / PARTIAL_FILE).exists()
    for name in MODELS:
        assert resumed["models"][name]["accuracies"] == one["models"][name]["accuracies"]


def trajectory(folder: Path, index: int) -> torch.Tensor:
    return torch.load(folder / expert_file(index), weights_only=True)["trajectory"]


@pytest.mark.parametrize("folder", ["buf", "buf-resume"])
def test_two_process_experts_equal_one_process_experts(spread, single, folder):
    for i in range(EXPERTS.experts):
        assert torch.equal(trajectory(spread / folder, i), trajectory(single / "buf", i))
    assert read(spread / folder / MANIFEST) == read(single / "buf" / MANIFEST)
    assert files(spread / folder) == files(single / "buf")


def test_a_buffer_folder_resumes_on_two_processes_keeping_its_experts(spread):
    assert (spread / "buf-resume" / expert_file(0)).stat().st_mtime_ns == int((spread / "expert-0-mtime").read_text())


def test_two_process_grid_writes_the_single_process_folder(spread, single):
    assert files(spread / "grid") == files(single / "grid")
    report = read(spread / "grid" / "compare.json")
    assert [c["evaluated"] for c in report["cells"]] == [True]
    two, one = (read(d / "grid" / "pixel-seed0" / EVAL_FILE) for d in (spread, single))
    assert two["seed"] == one["seed"] and len(two["models"]["convnet"]["accuracies"]) == 2
    timings = read(spread / "grid" / "timings.json")["pixel-seed0"]
    assert [t["ended"] for t in timings["distill"] + timings["evaluate"]] == ["finished", "finished"]


def test_evaluate_command_line_under_torchrun(spread, single):
    """The command in torchrun's environment writes the eval.json one process writes (the API's: the same
    networks), and rank 0 alone prints."""
    (code0, printed0), (code1, printed1) = (read(spread / f"rank{r}.json")["cli"] for r in (0, 1))
    assert code0 == code1 == 0 and printed1 == ""
    assert printed0.count("wrote ") == 1 and printed0.count("cross-architecture mean") == 1
    two, one = read(spread / "cli" / EVAL_FILE), read(single / "eval" / EVAL_FILE)
    for name in MODELS:
        assert two["models"][name]["accuracies"] == one["models"][name]["accuracies"]


def test_compare_refuses_what_cannot_be_spread_before_any_work(root, tmp_path, monkeypatch, capsys):
    """A grid whose runs cannot be spread (SRe²L's one batch of Fashion-MNIST's 10 classes) is refused by
    every process alike, in one sentence, before the process group or the grid's folder exists."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    code = main(["compare", "--out", str(tmp_path / "grid"), "--objective", "sre2l", "--data-root", str(root),
                 "--methods", "pixel", "--seeds", "0", "--models", "convnet", "--device", "cpu"])
    assert code == 2 and not (tmp_path / "grid").exists()
    assert capsys.readouterr().err.count("error: --objective sre2l on fashion-mnist: 10 classes in groups of 100") == 1
