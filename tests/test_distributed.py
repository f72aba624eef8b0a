"""Class-sharded runs on 2 CPU processes (gloo) equal single-process runs of the same seed (DM, SRe²L, and
DSA and TESLA, whose network and student gradients are summed over the processes); rank 0 alone writes; a
run killed after a space resumes on 1 or 2 processes to the same result; what cannot be spread refuses
under torchrun. One spawn of 2 workers plays every 2-process scenario, and one torchrun launch checks the
command line, so the module runs in well under 2 minutes on 2 cores (80 s measured on busy ones).
"""
import json
import os
import shutil
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from cli_helpers import ROOT, engine_cli
from engine import augment, distributed
from engine.augment import DSAParams
from engine.buffers import BufferConfig, ExpertBuffers, flatten_params, train_buffers
from engine.data import RealSampler, load_dataset
from engine.nets import get_network
from engine.objectives import MatchContext
from engine.streams import Streams
from engine.objectives import get_objective, registered
from engine.objectives.sre2l import SRe2LObjective, default_params, load_teacher
from engine.objectives.tesla import TeslaParams
from engine.run import Run
from engine.run.context import check_distributable
from run_fixtures import fake_root, tiny_config, tiny_generator, tiny_proxy

pytestmark = pytest.mark.dist

# SRe²L recovers 100 classes per BatchNorm batch; the fixture has 10, so a variant with batches of 5 gives
# two groups to share (the sharding rule is the same, only the group is smaller).
SRE2L5 = "sre2l5"


def sre2l5_spec():
    def build(ctx, ipc, teacher=None, dataset=None, **_):
        params = replace(default_params(dataset or ctx.real.info.name), batch_size=5)
        return SRe2LObjective(params, ctx, load_teacher(ctx, teacher, dataset))
    return replace(get_objective("sre2l"), name=SRE2L5, build=build, class_group=5)


# Two spaces of two steps, short of the pixels: a DM run amplifies a last-bit difference in its first step
# (the generator's kernels round differently for another batch size) about 1e4-fold within a few steps, in
# one process too (1e-7 on the initial latents moves the images of the default 5-space run by 0.3). So runs
# are compared by their largest and their mean difference (measured: 7e-3 and 7e-5 for DM, where the
# images move 5e-2 on average; 2e-7 for SRe²L); the exact check, step by step, is
# test_objective_shards_equal_the_whole.
SHORT = dict(ipc=2, last_cut=2, steps_per_space=2)


# DSA and TESLA runs are more chaotic still: one process's images move by max 0.2-0.45, mean 0.03-0.05 (DSA)
# and max 0.13-0.18, mean 7e-3 (TESLA) when its initial features move by 1e-7 (measured, 3 draws), and
# 2 processes' runs differ from one process's by as much (measured 0.28 and 0.05; 0.13 and 7e-3), while
# the images move 0.3 (DSA) and 0.85 (TESLA) on average. So their bounds are that spread, a check against
# gross errors only; what each step computes is checked tightly below (test_shared_network_steps_equal_
# the_whole). Each run's first loss, from equal latents, is checked to 1e-3: the generator's last-bit
# rounding for another batch size moves it by 1e-4 (one process's response to 1e-7 on the features:
# 9e-5 for DSA, 2.2e-4 for TESLA), a loss counted twice or a class missed by far more.
BOUNDS = {"dm": (2e-2, 5e-4), "sre2l": (2e-2, 5e-4), "dsa": (0.6, 0.1), "tesla": (0.3, 0.02)}


def assert_close(a, b, name="dm"):
    assert a.shape == b.shape
    largest, mean = BOUNDS[name]
    torch.testing.assert_close(a, b, rtol=0, atol=largest)
    assert float((a - b).abs().mean()) < mean


def dm_config(root):
    return tiny_config(root, objective="dm", **SHORT)


def sre2l_config(root):
    return tiny_config(root, objective=SRE2L5, **SHORT)


# Two updates per step with one epoch of network training between them: the training is what the processes
# share (its gradient is summed), the rest is DM-like per class. DSA rather than DC: the same code, plus the
# per-sample augmentation each process must take its rows of.
def dsa_config(root):
    return tiny_config(root, objective="dsa", outer_loop=2, inner_loop=1, **SHORT)


def tesla_config(root, buffers):
    return tiny_config(root, objective="tesla", buffers=str(buffers), syn_steps=3, expert_epochs=1,
                       max_start_epoch=2, **SHORT)


def configs(root, buffers):
    """The runs compared, by folder name."""
    return {"dm": dm_config(root), "sre2l": sre2l_config(root), "dsa": dsa_config(root),
            "tesla": tesla_config(root, buffers)}


def new_run(config, folder, dist=None):
    return Run(config, folder, generator=tiny_generator(), classifier=tiny_proxy(), dist=dist)


def finish(run):
    while run.step():
        pass
    run.close()
    return run


def kill_after_first_space(run):
    """Stop one step into the second space, as a kill would: the folder holds space 0's checkpoint."""
    while run.state.space_index < 1:
        run.step()
    run.step()
    run.close()


def scenarios(rank, world, root, buffers, out):
    """Every 2-process scenario, in one process group. Rank 1 is handed a folder of its own: whatever it
    wrote would appear there (the real command gives both the same folder)."""
    dist = distributed.init(rank, world, torch.device("cpu"), f"file://{out}/rendezvous")
    folder = lambda name: out / (name if rank == 0 else f"{name}-rank1")
    with registered(sre2l5_spec()):
        for name, config in configs(root, buffers).items():
            finish(new_run(config, folder(name), dist))
        kill_after_first_space(new_run(dm_config(root), folder("killed"), dist))
        if rank == 0:
            shutil.copytree(out / "killed", out / "killed-for-1")
        torch.distributed.barrier()
        finish(new_run(dm_config(root), folder("killed"), dist))
    data = load_dataset("fashion-mnist", "train", root)
    for name in STEP_OBJECTIVES:
        shard = distributed.class_shard(STEP_LABELS, STEP_LABELS, 10, 1, dist)
        objective = step_objective(name, data, shard, dist)
        steps = play_steps(objective, shard.take(step_images()), shard.take(STEP_LABELS))
        torch.save(steps, out / f"steps-{name}-{rank}.pt")
    dist.close()


def worker(rank, world, root, buffers, out):
    torch.set_num_threads(1)
    scenarios(rank, world, Path(root), Path(buffers), Path(out))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return fake_root(tmp_path_factory.mktemp("fm"))


@pytest.fixture(scope="module")
def buffers(root, tmp_path_factory):
    """One real expert of the run's matching network (ConvNet-3, width 128), two epochs on the fake data."""
    out = tmp_path_factory.mktemp("buffers")
    train_buffers(BufferConfig(experts=1, epochs=2, batch=64, data_root=str(root)), out, progress=False,
                  log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def sharded(root, buffers, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    mp.spawn(worker, args=(2, str(root), str(buffers), str(out)), nprocs=2, join=True)
    return out


@pytest.fixture(scope="module")
def single(root, buffers, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    with registered(sre2l5_spec()):
        for name, config in configs(root, buffers).items():
            finish(new_run(config, out / name))
    return out


def images(folder):
    return torch.load(folder / "synthetic.pt", weights_only=True)["images"]


def files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.name.startswith(".lock"))


def first_loss(folder):
    steps = (json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines())
    return next(e["loss"] for e in steps if e["kind"] == "step")


@pytest.mark.parametrize("name", ["dm", "sre2l", "dsa", "tesla"])
def test_class_sharded_run_equals_one_process(sharded, single, name):
    a, b = images(sharded / name), images(single / name)
    assert a.shape == b.shape == (20, 1, 32, 32)
    assert_close(a, b, name)
    assert first_loss(sharded / name) == pytest.approx(first_loss(single / name), rel=1e-3)
    saved = [torch.load(d / name / "checkpoint.pt", weights_only=True) for d in (sharded, single)]
    assert_close(saved[0]["state"]["ws"], saved[1]["state"]["ws"], name)
    if name == "tesla":  # learned on every process from the whole set's student: it moves 0.01 -> 0.0082,
        # and as chaotically as the images (the processes' rate differs by 3e-6, measured)
        assert saved[0]["objective"]["syn_lr"] == pytest.approx(saved[1]["objective"]["syn_lr"], rel=1e-3)
    steps = [torch.load(d / name / "spaces" / "space_00.pt", weights_only=True)["labels"] for d in (sharded, single)]
    assert torch.equal(*steps)


@pytest.mark.parametrize("name", ["dm", "sre2l", "dsa", "tesla"])
def test_rank_0_alone_writes_a_single_process_folder(sharded, single, name):
    assert not (sharded / f"{name}-rank1").exists()
    assert files(sharded / name) == files(single / name)
    events = [len((d / name / "events.jsonl").read_text().splitlines()) for d in (sharded, single)]
    assert events[0] == events[1]


def test_killed_run_resumes_on_one_and_on_two_processes(sharded, single, root):
    resumed_on_2 = images(sharded / "killed")
    finish(new_run(dm_config(root), sharded / "killed-for-1"))
    assert torch.equal(resumed_on_2, images(sharded / "dm"))  # 2 processes again: the very same computation
    assert_close(images(sharded / "killed-for-1"), resumed_on_2)
    assert_close(resumed_on_2, images(single / "dm"))


def match_context(data, shard=None, dist=None, dsa=True):
    streams = Streams(0)
    new_net = lambda seed: get_network("convnet", 1, 10, 32, seed=seed, width=16)
    return MatchContext(real=RealSampler(data, "cpu", streams["real"]), new_net=new_net, streams=streams,
                        dsa=DSAParams() if dsa else None, batch_real=8, teacher=tiny_proxy(), shard=shard,
                        dist=dist or distributed.Distributed())


# The step check: DC (no augmentation: the runs above cover DSA's) and TESLA with minibatches of 3 images,
# which the processes hold all, part or none of.
STEP_OBJECTIVES = ("dc", "tesla")
STEP_LABELS = torch.arange(10).repeat_interleave(2)


def step_images():
    return torch.randn(20, 1, 32, 32, generator=torch.Generator().manual_seed(1))


def made_up_buffers():
    """A straight-line trajectory of the width-16 student: TESLA's step needs its shape, not its quality."""
    net = get_network("convnet", 1, 10, 32, seed=5, width=16)
    start = flatten_params(net)
    drift = torch.randn(start.shape, generator=torch.Generator().manual_seed(3))
    return ExpertBuffers.from_trajectories([torch.stack([start + 0.05 * k * drift for k in range(3)])], net,
                                           "fashion-mnist")


def step_objective(name, data, shard=None, dist=None):
    ctx = match_context(data, shard, dist, dsa=name != "dc")
    if name == "tesla":
        params = TeslaParams(syn_steps=4, expert_epochs=1, max_start_epoch=2, batch_syn=3)
        return get_objective(name).build(ctx, 2, buffers=made_up_buffers(), tesla=params)
    return get_objective(name).build(ctx, 2, outer_loop=2, inner_loop=1)


def play_steps(objective, syn, labels):
    """Per update of two iterations: the loss, the image gradient, and what the processes hold alike (DC's
    network after its training, TESLA's learned rate)."""
    steps = []
    for _ in range(2):
        objective.start_iteration()
        for update in range(objective.updates_per_iteration):
            loss, grad = objective.loss_and_grad(syn, labels)
            objective.after_update(lambda: syn, labels, update)
            tesla = hasattr(objective, "syn_lr")
            shared = torch.tensor([objective.syn_lr]) if tesla else flatten_params(objective.net)
            steps.append({"loss": loss, "grad": grad, "shared": shared})
    return steps


@pytest.mark.parametrize("name", ["dm", SRE2L5])
def test_objective_shards_equal_the_whole(root, name):
    """Step by step, each rank's loss and image gradient are the single process's terms of its classes
    (sum and rows), and every rank's streams stay where the single process's are."""
    data = load_dataset("fashion-mnist", "train", root)
    labels = torch.arange(10).repeat_interleave(2)
    syn = torch.randn(20, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with registered(sre2l5_spec()):
        build = lambda ctx: get_objective(name).build(ctx, 2, dataset="fashion-mnist")
        ranks = [types.SimpleNamespace(active=True, world=2, rank=r) for r in (0, 1)]
        shards = [distributed.class_shard(labels, labels, 10, get_objective(name).class_group, d) for d in ranks]
        whole_ctx, ctxs = match_context(data), [match_context(data, sh) for sh in shards]
        whole, parts = build(whole_ctx), [build(c) for c in ctxs]
    for _ in range(3):
        whole.start_iteration()
        loss, grad = whole.loss_and_grad(syn, labels)
        total = 0.0
        for objective, shard in zip(parts, shards):
            objective.start_iteration()
            part_loss, part_grad = objective.loss_and_grad(shard.take(syn), shard.take(labels))
            torch.testing.assert_close(part_grad, shard.take(grad), rtol=1e-5, atol=1e-7)
            total += part_loss
        assert total == pytest.approx(loss, rel=1e-6)
    for ctx in ctxs:
        for key in ("real", "dsa", "nets"):
            assert torch.equal(ctx.streams[key].get_state(), whole_ctx.streams[key].get_state())


@pytest.mark.parametrize("name", STEP_OBJECTIVES)
def test_shared_network_steps_equal_the_whole(sharded, root, name):
    """With real collectives, step by step: each process's image gradient is its rows of the one-process
    gradient, the losses sum to the one-process loss, and what the processes share (DC's trained network,
    TESLA's rate, learned from the student's summed gradients) is the one process's on both. Tolerances,
    relative to the largest entry: a network gradient summed over processes differs from one process's in
    the last bits (measured: 1.5e-8 on DC's trained network), which DC's cosine distances carry to 6e-7 of
    the next update's image gradient; TESLA's replayed image gradients differ by 5e-7."""
    whole = play_steps(step_objective(name, load_dataset("fashion-mnist", "train", root)), step_images(),
                       STEP_LABELS)
    ranks = [types.SimpleNamespace(active=True, world=2, rank=r) for r in (0, 1)]
    shards = [distributed.class_shard(STEP_LABELS, STEP_LABELS, 10, 1, d) for d in ranks]
    parts = [torch.load(sharded / f"steps-{name}-{r}.pt", weights_only=True) for r in (0, 1)]
    assert len(whole) == len(parts[0]) == len(parts[1]) == (4 if name == "dc" else 2)
    for step, *mine in zip(whole, *parts):
        assert sum(m["loss"] for m in mine) == pytest.approx(step["loss"], rel=1e-6)
        for m, shard in zip(mine, shards):
            scale = float(step["grad"].abs().max())
            torch.testing.assert_close(m["grad"], shard.take(step["grad"]), rtol=1e-5, atol=1e-5 * scale)
            torch.testing.assert_close(m["shared"], step["shared"], rtol=1e-6, atol=1e-7)


def test_without_torchrun_nothing_is_distributed(root):
    assert not distributed.launched({}) and distributed.world_size({}) == 1
    one = distributed.from_env(torch.device("cpu"), {})
    assert not one.active and one.writes and not torch.distributed.is_initialized()
    labels = torch.arange(10).repeat_interleave(2)
    shard = distributed.class_shard(labels, labels, 10, 1, one)
    assert shard.whole and shard.take(labels) is labels  # the very tensors: no copy, no reordering
    assert one.gather_rows(labels, shard) is labels and one.sum(1.5) == 1.5 and one.share("x") == "x"
    assert one.sum_tensor(labels) is labels


def test_a_minibatch_split_over_processes_keeps_each_images_augmentation():
    labels = torch.arange(10).repeat_interleave(2)
    shard = distributed.class_shard(labels, labels, 10, 1, types.SimpleNamespace(active=True, world=2, rank=1))
    batch = torch.randperm(20, generator=torch.Generator().manual_seed(0))[:7]
    at, pos = shard.find(batch)
    assert torch.equal(shard.rows[pos], batch[at]) and all(shard.holds(int(c)) == (i in at) for i, c in
                                                           enumerate(labels[batch].tolist()))
    x, gen = torch.randn(20, 1, 32, 32, generator=torch.Generator().manual_seed(1)), torch.Generator().manual_seed(2)
    for op in DSAParams().tokens:
        draw = augment.sample(DSAParams(strategy=op), len(batch), 32, 32, gen, siamese=False)
        assert torch.equal(augment.apply(shard.take(x)[pos], draw.rows(at)), augment.apply(x[batch], draw)[at])


def test_shards_split_whole_groups_round_robin():
    labels = torch.arange(10).repeat_interleave(2)
    shards = [distributed.class_shard(labels, labels, 10, 5, types.SimpleNamespace(active=True, world=2, rank=r))
              for r in (0, 1)]
    assert [sorted(s.held) for s in shards] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert torch.equal(torch.cat([s.rows for s in shards]), torch.arange(20))
    with pytest.raises(ValueError, match="too few for 3 processes; run with --nproc-per-node 2 or fewer"):
        distributed.class_shard(labels, labels, 10, 5, types.SimpleNamespace(active=True, world=3, rank=0))


def test_unsharded_objectives_refuse_several_processes():
    solo = types.SimpleNamespace(objective="solo", dataset="fashion-mnist")
    with registered(replace(get_objective("dm"), name="solo", class_group=None)):
        with pytest.raises(ValueError) as err:
            check_distributable(solo, 2)
        check_distributable(solo, 1)  # one process: as ever
    message = str(err.value)
    assert message.count(". ") == 0 and message.startswith("--objective solo does not run on several processes yet")
    assert "use --objective dm, dc, dsa, tesla or sre2l," in message
    for name in ("dm", "dc", "dsa", "tesla"):
        check_distributable(types.SimpleNamespace(objective=name, dataset="fashion-mnist"), 10)


def test_more_processes_than_shares_are_refused_before_anything_loads():
    with pytest.raises(ValueError) as err:
        check_distributable(types.SimpleNamespace(objective="sre2l", dataset="fashion-mnist"), 2)
    assert str(err.value) == ("--objective sre2l on fashion-mnist: 10 classes in groups of 100 make 1 share(s), "
                              "too few for 2 processes; run with --nproc-per-node 1 or fewer")
    with pytest.raises(ValueError, match="too few for 11 processes"):
        check_distributable(types.SimpleNamespace(objective="dm", dataset="fashion-mnist"), 11)


def torchrun(*args, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    exe = Path(sys.executable).parent / "torchrun"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]
    return subprocess.run([*cmd, "--standalone", "--nproc-per-node", "2", "-m", "engine", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_torchrun_command_line(root, tmp_path):
    """The real command: a DM run on 2 processes writes one folder equal to a 1-process run's, and SRe²L
    on Fashion-MNIST (one batch of classes) is refused in one sentence with exit status 2 before anything
    is written."""
    common = ["distill", "--method", "pixel", "--data-root", str(root), "--iterations", "2", "--batch-real", "8",
              "--ipc", "2", "--device", "cpu"]
    two = torchrun(*common, "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("selected space") == 1
    one = engine_cli(*common, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    assert_close(images(tmp_path / "two"), images(tmp_path / "one"))
    assert files(tmp_path / "two") == files(tmp_path / "one")

    refused = torchrun(*common, "--objective", "sre2l", "--out", str(tmp_path / "sre2l"))
    assert refused.returncode != 0 and not (tmp_path / "sre2l").exists()
    assert refused.stderr.count("error: --objective sre2l on fashion-mnist: 10 classes in groups of 100") == 1
    assert "exitcode  : 2" in refused.stderr  # our exit status; torchrun itself reports the failure with 1
