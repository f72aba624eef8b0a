import io

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from engine import augment, objectives
from engine.buffers import BufferMismatchError, ExpertBuffers, build_student, flatten_params, unflatten_params
from engine.data import ImageSet, RealSampler
from engine.data.fashion_mnist import INFO
from engine.streams import Streams
from engine.objectives.tesla import StudentStep, TeslaParams, plan_steps, tesla_gradients

torch.set_num_threads(1)


def tiny_real(per_class: int = 2) -> ImageSet:
    labels = torch.arange(10).repeat_interleave(per_class)
    images = torch.randint(0, 40, (len(labels), 1, 32, 32), generator=torch.Generator().manual_seed(0),
                           dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        images[i, 0, 2 * c: 2 * c + 10, 4:20] = 220  # a class-specific bright bar
    return ImageSet(INFO, images, labels)


def student(width: int = 8, seed: int = 0):
    return build_student(INFO, width=width, seed=seed)


def hand_made_trajectory(net_seed: int, epochs: int, steps_per_epoch: int = 5, lr: float = 0.05) -> torch.Tensor:
    """An expert trained by full-batch SGD on tiny_real, one snapshot per 'epoch'."""
    net = student(seed=net_seed)
    data = tiny_real()
    x, y = data.normalized(), data.labels
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    snaps = [flatten_params(net)]
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
        snaps.append(flatten_params(net))
    return torch.stack(snaps)


def buffers(experts: int = 1, epochs: int = 3, width: int = 8) -> ExpertBuffers:
    trajs = [hand_made_trajectory(seed, epochs) for seed in range(experts)]
    return ExpertBuffers.from_trajectories(trajs, student(width), "fashion-mnist")


def context(dsa: bool, seed: int = 0, width: int = 8) -> objectives.MatchContext:
    streams = Streams(seed)
    return objectives.MatchContext(real=RealSampler(tiny_real(), "cpu", streams["real"]), streams=streams,
                                   new_net=lambda s: student(width, s),
                                   dsa=augment.DSAParams() if dsa else None)


def reference(net, syn, labels, theta0, target, syn_lr, plan, cut: bool):
    """Plain autograd through the unrolled student. cut=True stops the gradient at each step's starting
    parameters (TESLA's model); cut=False is MTT's full unroll."""
    syn = syn.detach().requires_grad_(True)
    lr = torch.tensor(syn_lr, dtype=syn.dtype, requires_grad=True)
    theta = theta0.clone().requires_grad_(True)
    for step in plan:
        x = syn[step.index]
        x = augment.apply(x, step.draw) if step.draw is not None else x
        start = theta.detach().requires_grad_(True) if cut else theta
        ce = F.cross_entropy(functional_call(net, unflatten_params(start, net), (x,)), labels[step.index])
        (g,) = torch.autograd.grad(ce, start, create_graph=True)
        theta = theta - lr * g
    loss = (theta - target).pow(2).sum() / (theta0 - target).pow(2).sum()
    syn_grad, lr_grad = torch.autograd.grad(loss, (syn, lr))
    return float(loss.detach()), syn_grad, float(lr_grad)


def run_iteration(objective, opt, syn, labels) -> float:
    """What a run does with an objective per iteration, with the synthetic pixels as the parameters."""
    objective.start_iteration()
    opt.zero_grad()
    loss, syn.grad = objective.loss_and_grad(syn.detach(), labels)
    opt.step()
    return loss


def float64_problem(steps: int, dsa: bool, batch: int = 6, plan_seed: int = 2):
    net = student().double()
    traj = hand_made_trajectory(0, 3).double()
    syn = torch.randn(10, 1, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    labels = torch.arange(10)
    plan = plan_steps(10, steps, batch, (32, 32), augment.DSAParams() if dsa else None,
                      torch.Generator().manual_seed(plan_seed))
    return net, syn, labels, traj[0], traj[2], plan


# Plan seeds 7 and 10 draw five DSA ops each and all six together; None: no augmentation.
@pytest.mark.parametrize("plan_seed", [None, 7, 10])
def test_memory_efficient_gradient_equals_autograd_through_the_unroll(plan_seed):
    dsa = plan_seed is not None
    net, syn, labels, theta0, target, plan = float64_problem(steps=6 if dsa else 3, dsa=dsa, plan_seed=plan_seed or 0)
    if dsa:
        assert len({s.draw.op for s in plan}) == 5
    ours = tesla_gradients(net, syn, labels, theta0, target, 0.3, plan)
    loss, syn_grad, lr_grad = reference(net, syn, labels, theta0, target, 0.3, plan, cut=True)
    assert ours.loss == pytest.approx(loss, rel=1e-12)
    assert syn_grad.abs().max() > 0
    torch.testing.assert_close(ours.syn_grad, syn_grad, rtol=1e-9, atol=1e-13)
    assert ours.lr_grad == pytest.approx(lr_grad, rel=1e-9)


def test_one_step_gradient_is_mtts_full_gradient():
    net, syn, labels, theta0, target, plan = float64_problem(steps=1, dsa=True)
    ours = tesla_gradients(net, syn, labels, theta0, target, 0.3, plan)
    loss, syn_grad, lr_grad = reference(net, syn, labels, theta0, target, 0.3, plan, cut=False)
    torch.testing.assert_close(ours.syn_grad, syn_grad, rtol=1e-9, atol=1e-13)
    assert ours.lr_grad == pytest.approx(lr_grad, rel=1e-9)


def test_replay_uses_the_unrolls_augmentation():
    net, syn, labels, theta0, target, plan = float64_problem(steps=2, dsa=True)
    ours = tesla_gradients(net, syn, labels, theta0, target, 0.3, plan)
    redrawn = plan_steps(10, 2, 6, (32, 32), augment.DSAParams(), torch.Generator().manual_seed(99))
    other = [StudentStep(a.index, b.draw) for a, b in zip(plan, redrawn)]
    assert not torch.allclose(ours.syn_grad, tesla_gradients(net, syn, labels, theta0, target, 0.3, other).syn_grad)


def test_loss_is_one_and_gradient_zero_without_student_steps():
    net, syn, labels, theta0, target, plan = float64_problem(steps=2, dsa=True)
    result = tesla_gradients(net, syn, labels, theta0, target, 0.0, plan)
    assert result.loss == pytest.approx(1.0, abs=1e-14)
    assert result.syn_grad.abs().max() == 0
    assert result.lr_grad != 0  # the learning rate still knows which way to go


def test_plan_covers_the_set_in_shuffled_passes():
    plan = plan_steps(10, 5, 4, (32, 32), None, torch.Generator().manual_seed(0))
    sizes = [len(s.index) for s in plan]
    assert sizes == [4, 4, 2, 4, 4]
    assert sorted(torch.cat([s.index for s in plan[:3]]).tolist()) == list(range(10))
    assert all(s.draw is None for s in plan)
    with_dsa = plan_steps(10, 2, 10, (32, 32), augment.DSAParams(), torch.Generator().manual_seed(0))
    assert all(not s.draw.shared for s in with_dsa)  # per-sample (unseeded-style) parameters


def test_tesla_loss_decreases_on_a_tiny_problem():
    ctx = context(dsa=False)
    params = TeslaParams(syn_steps=5, expert_epochs=2, max_start_epoch=1, lr_teacher=0.05)
    objective = objectives.build_objective("tesla", ctx, 1, buffers=buffers(epochs=2), tesla=params)
    syn = torch.randn(10, 1, 32, 32, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    labels = torch.arange(10)
    opt = torch.optim.SGD([syn], lr=100.0, momentum=0.5)
    losses = [run_iteration(objective, opt, syn, labels) for _ in range(8)]
    assert losses[-1] < 0.8 * losses[0], losses


def test_syn_lr_is_learned_only_with_a_learning_rate():
    labels = torch.arange(10)
    syn = torch.randn(10, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    buf = buffers(epochs=2)
    for lr_lr, moves in ((0.0, False), (1e-3, True)):
        params = TeslaParams(syn_steps=2, expert_epochs=2, max_start_epoch=1, lr_lr=lr_lr)
        objective = objectives.TeslaObjective(params, context(dsa=True), buf)
        objective.start_iteration()
        objective.loss_and_grad(syn, labels)
        assert (objective.syn_lr != 0.01) == moves


def run_updates(objective, syn, n):
    opt = torch.optim.SGD([syn], lr=10.0)
    labels = torch.arange(10)
    for _ in range(n):
        run_iteration(objective, opt, syn, labels)
    objective.start_iteration()
    loss, grad = objective.loss_and_grad(syn.detach(), labels)
    return loss, grad, objective.syn_lr


def test_state_dict_round_trip_resumes_exactly():
    buf = buffers(experts=2, epochs=3)
    params = TeslaParams(syn_steps=3, expert_epochs=2, max_start_epoch=2, lr_lr=1e-3)
    syn = torch.randn(10, 1, 32, 32, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    first = objectives.TeslaObjective(params, context(dsa=True), buf)
    run_updates(first, syn, 2)
    saved = io.BytesIO()
    torch.save({"objective": first.state_dict(), "streams": first.ctx.streams.state_dict(), "syn": syn.detach()},
               saved)
    expected = run_updates(first, syn, 1)

    saved.seek(0)
    checkpoint = torch.load(saved, weights_only=True)
    ctx = context(dsa=True)
    ctx.streams.load_state_dict(checkpoint["streams"])
    resumed = objectives.TeslaObjective(params, ctx, buf)
    resumed.load_state_dict(checkpoint["objective"])
    got = run_updates(resumed, checkpoint["syn"].clone().requires_grad_(True), 1)
    assert got[0] == expected[0] and got[2] == expected[2]
    assert torch.equal(got[1], expected[1])

    ctx = context(dsa=True)
    ctx.streams.load_state_dict(checkpoint["streams"])
    fresh = objectives.TeslaObjective(params, ctx, buf)  # same randomness, but syn_lr and momentum lost
    assert run_updates(fresh, checkpoint["syn"].clone().requires_grad_(True), 1)[2] != expected[2]


def test_state_from_other_buffers_is_refused():
    params = TeslaParams(syn_steps=1, expert_epochs=2, max_start_epoch=1)
    a = objectives.TeslaObjective(params, context(dsa=False), buffers(experts=1, epochs=2))
    b = objectives.TeslaObjective(params, context(dsa=False), buffers(experts=2, epochs=2))
    with pytest.raises(ValueError, match="other expert buffers"):
        b.load_state_dict(a.state_dict())


def test_max_start_epoch_must_fit_the_trajectory():
    buf = buffers(epochs=4)  # 5 snapshots: with expert_epochs 3 the start can be 0 or 1
    objectives.TeslaObjective(TeslaParams(expert_epochs=3, max_start_epoch=2), context(dsa=False), buf)
    with pytest.raises(ValueError, match="max_start_epoch 3 is too large.*at most 2"):
        objectives.TeslaObjective(TeslaParams(expert_epochs=3, max_start_epoch=3), context(dsa=False), buf)
    with pytest.raises(ValueError, match="syn_steps"):
        TeslaParams(syn_steps=0)
    with pytest.raises(ValueError, match="batch_syn"):
        TeslaParams(batch_syn=0)


def test_start_iteration_draws_experts_and_start_epochs_from_the_context():
    objective = objectives.TeslaObjective(TeslaParams(expert_epochs=2, max_start_epoch=2), context(dsa=False),
                                          buffers(experts=3, epochs=3))
    picks = set()
    for _ in range(60):
        objective.start_iteration()
        picks.add((objective.expert, objective.start))
    assert picks == {(e, s) for e in range(3) for s in range(2)}
    again = objectives.TeslaObjective(objective.params, context(dsa=False), objective.buffers)
    first = [(again.start_iteration(), again.expert, again.start)[1:] for _ in range(5)]
    again = objectives.TeslaObjective(objective.params, context(dsa=False), objective.buffers)
    assert first == [(again.start_iteration(), again.expert, again.start)[1:] for _ in range(5)]


def test_registry_and_student_checks():
    assert "tesla" in objectives.OBJECTIVES and objectives.uses_dsa("tesla")
    with pytest.raises(ValueError, match="expert trajectories"):
        objectives.build_objective("tesla", context(dsa=True), 1)
    with pytest.raises(BufferMismatchError, match="width 8.*student has"):
        objectives.build_objective("tesla", context(dsa=True, width=16), 1, buffers=buffers(epochs=7))
    objective = objectives.build_objective("tesla", context(dsa=True), 1, buffers=buffers(epochs=7))
    assert objective.updates_per_iteration == 1 and objective.syn_lr == pytest.approx(0.01)
    with pytest.raises(RuntimeError, match="start_iteration"):
        objective.loss_and_grad(torch.zeros(10, 1, 32, 32), torch.arange(10))
