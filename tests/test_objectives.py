import pytest
import torch

from engine import augment, objectives
from engine.streams import Streams
from engine.data import ImageSet, RealSampler
from engine.data.fashion_mnist import INFO
from engine.nets import get_network


def tiny_real(n_per_class: int = 8) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(n_per_class)
    # Class c is a bright square at a class-specific place, so the classes are separable.
    images = torch.randint(0, 40, (len(labels), 1, 32, 32), generator=g, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        images[i, 0, 2 * c: 2 * c + 10, 4:20] = 220
    return ImageSet(INFO, images, labels)


def context(dsa: bool, same_net: bool = True) -> objectives.MatchContext:
    streams = Streams(0)
    sampler = RealSampler(tiny_real(), "cpu", streams["real"])
    new_net = lambda seed: get_network("convnet", 1, 10, 32, seed=0 if same_net else seed, width=16)
    return objectives.MatchContext(real=sampler, new_net=new_net, streams=streams,
                                   dsa=augment.DSAParams() if dsa else None, batch_real=8)


@pytest.mark.parametrize("name", ["dm", "dc", "dsa"])
def test_objective_loss_decreases(name):
    torch.set_num_threads(1)
    ctx = context(dsa=False)  # a fixed net and no augmentation: the loss is a deterministic function of syn
    objective = objectives.build_objective(name, ctx, ipc=1)
    syn = torch.randn(10, 1, 32, 32, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    labels = torch.arange(10)
    opt = torch.optim.SGD([syn], lr=1.0 if name == "dm" else 0.1, momentum=0.5)
    losses = []
    for _ in range(15):
        objective.start_iteration()
        loss = objective.loss(syn, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses


def test_dm_loss_zero_when_synthetic_equals_class_means():
    ctx = context(dsa=False)
    ctx.batch_real = 8  # the whole class: the real mean is exact
    net = ctx.new_net(0)
    syn = torch.stack([ctx.real.sample(c, 8) for c in range(10)])  # [10, 8, 1, 32, 32]
    labels = torch.arange(10).repeat_interleave(8)
    loss = objectives.dm_loss(syn.flatten(0, 1), labels, net, ctx)
    assert float(loss.detach()) < 1e-8


def test_siamese_augmentation_shares_parameters_inside_objectives():
    ctx = context(dsa=True)
    real = ctx.real.sample(2, 8)
    a, b = augment.siamese_pair(real, real[:3].clone(), ctx.dsa, torch.Generator().manual_seed(5))
    assert torch.equal(a[:3], b)


def test_gradient_distance():
    g = [torch.randn(4, 3, 3, 3), torch.randn(4), torch.randn(10, 8)]
    assert float(objectives.gradient_distance(g, g)) < 1e-5
    h = [-t for t in g]
    # 4 + 10 output units, each at cosine -1; the bias (1-D) is ignored
    assert float(objectives.gradient_distance(g, h)) == pytest.approx(2 * 14, rel=1e-4)


def test_dc_inner_loop_trains_between_updates_only():
    ctx = context(dsa=False, same_net=False)
    objective = objectives.build_objective("dc", ctx, ipc=10)
    assert (objective.params.outer_loop, objective.params.inner_loop) == (10, 50)
    objective = objectives.build_objective("dc", ctx, ipc=1, outer_loop=2, inner_loop=1)
    objective.start_iteration()
    before = [p.clone() for p in objective.net.parameters()]
    syn, labels = torch.randn(10, 1, 32, 32), torch.arange(10)
    objective.after_update(lambda: syn, labels, update=1)  # the last update: the net is not trained
    assert all(torch.equal(a, b) for a, b in zip(before, objective.net.parameters()))
    objective.after_update(lambda: syn, labels, update=0)
    assert not all(torch.equal(a, b) for a, b in zip(before, objective.net.parameters()))


def test_unknown_objective():
    with pytest.raises(ValueError, match="unknown objective 'mtt'.*dm, dc, dsa"):
        objectives.check_objective("mtt")
