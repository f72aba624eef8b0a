"""The SRe²L objective: its BN term by hand and by autograd, its CE term, draws from the "dsa" stream only,
its batches, the teacher it picks, and tiny runs of the three methods through RunConfig and Run."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.classifiers import load_classifier
from engine.classifiers.fashion_mnist import make_asset
from engine.classifiers.small_resnet import SmallResNetConfig
from engine.data import RealSampler, dataset_info, load_dataset
from engine.objectives import MatchContext, get_objective
from engine.objectives.sre2l import (IMAGENET_R_BN, TINY_R_BN, SRe2LParams, apply_augmentation, bn_distance,
                                     bn_layers, bn_statistics, build_sre2l, crop_box, default_params,
                                     draw_augmentation, recover_batches, recover_loss)
from engine.run import Run, RunConfig
from engine.streams import Streams
from run_fixtures import tiny_config, tiny_proxy

torch.set_num_threads(1)


def bn_net(dtype=torch.float64) -> nn.Module:
    """conv -> BN -> ReLU -> conv -> BN -> pool -> linear, with running statistics far from 0/1."""
    gen = torch.Generator().manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 5, 1), nn.BatchNorm2d(5), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
        for bn in (net[1], net[4]):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=gen))
            bn.running_var.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
    return net.to(dtype).eval().requires_grad_(False)


def by_hand(net: nn.Module, x: torch.Tensor, first: float) -> float:
    """The BN term from the layers' inputs, recomputed with numpy: plain L2 norms, the first BN times `first`."""
    def term(bn, a):
        a = a.detach().numpy()
        mean = a.mean(axis=(0, 2, 3))
        var = ((a - mean[None, :, None, None]) ** 2).mean(axis=(0, 2, 3))  # biased
        return (np.linalg.norm(bn.running_var.numpy() - var) + np.linalg.norm(bn.running_mean.numpy() - mean))
    a1 = net[0](x)
    a2 = net[3](net[2](net[1](a1)))
    return first * term(net[1], a1) + term(net[4], a2)


def test_bn_term_matches_a_hand_computation():
    net, x = bn_net(), torch.randn(6, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    layers = bn_layers(net)
    assert layers == [net[1], net[4]]
    with bn_statistics(layers) as stats:
        net(x)
    assert bn_distance(layers, stats, 10.0).item() == pytest.approx(by_hand(net, x, 10.0), rel=1e-12)
    assert bn_distance(layers, stats, 1.0).item() == pytest.approx(by_hand(net, x, 1.0), rel=1e-12)
    # The hooks are gone after the block: a later forward records nothing.
    net(x)
    assert all(not m._forward_hooks for m in layers)


def test_bn_term_gradient_matches_autograd_and_finite_differences():
    net = bn_net()
    x = torch.randn(4, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3), requires_grad=True)
    layers = bn_layers(net)

    def bn_term(images):
        with bn_statistics(layers) as stats:
            net(images)
        return bn_distance(layers, stats, 10.0)

    assert torch.autograd.gradcheck(bn_term, (x,), eps=1e-6, atol=1e-6)
    labels = torch.tensor([0, 1, 2, 0])
    assert torch.autograd.gradcheck(lambda images: recover_loss(net, images, labels, 0.3)[0], (x,), eps=1e-6, atol=1e-6)


def test_ce_term_and_total():
    net = bn_net()
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    labels = torch.tensor([2, 0, 1, 1, 0])
    total, ce, bn = recover_loss(net, x, labels, r_bn=0.25)
    assert ce.item() == pytest.approx(F.cross_entropy(net(x), labels).item(), rel=1e-12)
    assert total.item() == pytest.approx(ce.item() + 0.25 * bn.item(), rel=1e-12)
    assert recover_loss(net, x, labels, r_bn=0.0)[0].item() == pytest.approx(ce.item(), rel=1e-12)


def test_augmentation_draws():
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        top, left, h, w = crop_box(32, 32, (0.08, 1.0), gen)
        assert 0 <= top <= 32 - h and 0 <= left <= 32 - w and 0.06 <= h * w / 32 ** 2 <= 1
    p = default_params("fashion-mnist")
    draws = [draw_augmentation(32, 32, p, gen) for _ in range(40)]
    assert {d.flip for d in draws} == {True, False}
    assert all(-2 <= d.dy <= 2 and -2 <= d.dx <= 2 for d in draws)  # Tiny's [-4, 4] at 64 px, scaled to 32
    imagenet = [draw_augmentation(128, 128, default_params("imagenet-1k"), gen) for _ in range(40)]
    assert all(0 <= d.dy <= 18 for d in imagenet) and max(d.dy for d in imagenet) > 4  # [0, 32] at 224, scaled
    x = torch.arange(2 * 32 * 32, dtype=torch.float32).view(1, 2, 32, 32)
    a = draws[0]
    assert apply_augmentation(x, a).shape == x.shape
    whole = type(a)(0, 0, 32, 32, True, 1, 0)  # no crop: flip, then roll one row down
    assert torch.equal(apply_augmentation(x, whole), torch.roll(x.flip(-1), 1, dims=-2))


def test_defaults_by_dataset():
    assert default_params("imagenet-1k").r_bn == IMAGENET_R_BN == 0.01
    assert default_params("imagenette").r_bn == 0.01  # an ImageNet subset follows the ImageNet recipe
    assert default_params("tiny-imagenet").r_bn == TINY_R_BN == 1.0
    assert default_params("fashion-mnist", r_bn=0.5).r_bn == 0.5
    assert SRe2LParams().first_bn_multiplier == 10 and SRe2LParams().batch_size == 100
    with pytest.raises(ValueError, match="r_bn"):
        SRe2LParams(r_bn=-1.0)


def test_batches_hold_distinct_classes_at_one_index():
    labels = torch.arange(5).repeat_interleave(3)  # class-major, IPC 3
    batches = recover_batches(labels, batch_size=2)
    assert [labels[b].tolist() for b in batches] == [[0, 1], [2, 3], [4], [0, 1], [2, 3], [4], [0, 1], [2, 3], [4]]
    assert [b.tolist() for b in batches[:3]] == [[0, 3], [6, 9], [12]]
    assert sorted(torch.cat(batches).tolist()) == list(range(15))


def context(data, seed: int, teacher=None) -> MatchContext:
    streams = Streams(seed)
    return MatchContext(real=RealSampler(data, "cpu", streams["real"]), new_net=None, streams=streams, dsa=None,
                        teacher=teacher)


@pytest.fixture(scope="module")
def data(root):
    return load_dataset("fashion-mnist", "train", root)


def test_draws_come_from_the_dsa_stream(data):
    syn, labels = torch.randn(20, 1, 32, 32, generator=torch.Generator().manual_seed(5)), torch.arange(10).repeat(2)
    teacher = tiny_proxy()

    def loss(seed):
        obj = build_sre2l(context(data, seed, teacher), ipc=2)
        obj.start_iteration()
        return obj.loss_and_grad(syn, labels)

    torch.manual_seed(123)
    global_state = torch.get_rng_state()
    (a, ga), (b, gb), (c, gc) = loss(0), loss(0), loss(1)
    assert torch.equal(torch.get_rng_state(), global_state)  # the global generator is never drawn from
    assert a == b and torch.equal(ga, gb)
    assert a != c and not torch.equal(ga, gc)
    assert ga.shape == syn.shape and torch.isfinite(ga).all()


def test_gradient_is_the_autograd_gradient_of_the_summed_batches(data):
    """loss_and_grad cuts the set into batches and differentiates one at a time: the result equals the
    gradient of the summed loss, computed in one graph with the same draws."""
    teacher = tiny_proxy()
    syn, labels = torch.randn(20, 1, 32, 32, generator=torch.Generator().manual_seed(6)), torch.arange(10).repeat_interleave(2)
    obj = build_sre2l(context(data, 7, teacher), ipc=2)
    loss, grad = obj.loss_and_grad(syn, labels)
    ctx, p, info = context(data, 7, teacher), obj.params, dataset_info("fashion-mnist")
    leaf = syn.clone().requires_grad_(True)
    total = 0
    for index in recover_batches(labels, p.batch_size):
        draw = draw_augmentation(32, 32, p, ctx.dsa_stream)
        total = total + recover_loss(teacher, info.to_generator(apply_augmentation(leaf[index], draw)), labels[index],
                                     p.r_bn, p.first_bn_multiplier)[0]
    total.backward()
    assert loss == pytest.approx(total.item(), rel=1e-5)
    torch.testing.assert_close(grad, leaf.grad)


def test_the_teacher(data, tmp_path):
    given = tiny_proxy()
    # The context's teacher wins over the spec (a run handed a classifier); otherwise the spec loads.
    assert build_sre2l(context(data, 0, given), 1, teacher="no-such:classifier").teacher is given
    assert build_sre2l(context(data, 0), 1, teacher="embedded:fashion-mnist").teacher.num_classes == 10
    with pytest.raises(ValueError, match="has no BatchNorm2d|has none"):
        build_sre2l(context(data, 0, nn.Sequential(nn.Flatten(), nn.Linear(1024, 10))), 1)
    wide = load_classifier("embedded:fashion-mnist").restricted_to(list(range(5)))
    with pytest.raises(ValueError, match="5 classes but fashion-mnist has 10"):
        build_sre2l(context(data, 0, wide), 1)
    with pytest.raises(ValueError, match="train-classifier --dataset tiny-imagenet"):
        RunConfig(dataset="tiny-imagenet", objective="sre2l")
    assert get_objective("sre2l").options(RunConfig(objective="sre2l")) == {
        "teacher": "embedded:fashion-mnist", "dataset": "fashion-mnist"}


def tiny_teacher_file(folder) -> str:
    """tiny_proxy() exported as train-classifier would, so a run's --classifier can name it."""
    path = folder / "teacher.pt"
    torch.save(make_asset(tiny_proxy().backbone, SmallResNetConfig(1, 10, 4), {"dataset": "fashion-mnist"}), path)
    return f"trained:resnet18={path}"


@pytest.mark.parametrize("method", ["pixel", "glad", "hpd"])
def test_runs_end_to_end(root, G, tmp_path, method):
    spec = tiny_teacher_file(tmp_path)
    config = tiny_config(root, objective="sre2l", method=method, ipc=1, steps_per_space=2, classifier=spec)
    run = Run(config, tmp_path / "run", generator=G)
    while run.step():
        pass
    run.close()
    assert run.finished and (tmp_path / "run" / "synthetic.pt").is_file()
    losses = [loss for s in run.state.spaces for loss in s.losses if loss is not None]
    assert losses and all(np.isfinite(losses))
    teacher = run.ctx.objective.teacher
    assert teacher.meta["dataset"] == "fashion-mnist" and teacher.backbone.conv1.out_channels == 4


def test_an_imagenet_teacher_is_restricted_to_a_subset():
    """torchvision's ResNet-18 (random weights here; the real file is user-supplied) as the teacher of an
    ImageNet subset: logits restricted to the subset's ImageNet classes, the ImageNet recipe's defaults."""
    import torchvision

    from engine.classifiers import ProxyClassifier
    from engine.classifiers.imagenet import input_spec
    from engine.data import ImageSet
    from engine.data.imagenet_subsets import imagenet_indices

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        backbone = torchvision.models.resnet18(weights=None, num_classes=1000)
    teacher = ProxyClassifier(backbone, input_spec(), "layer4", 1000)
    info = dataset_info("imagenette")
    gen = torch.Generator().manual_seed(0)
    data = ImageSet(info, torch.randint(0, 256, (20, 3, 128, 128), dtype=torch.uint8, generator=gen),
                    torch.arange(10).repeat(2))
    obj = build_sre2l(context(data, 0, teacher), 1, dataset="imagenette")
    assert obj.teacher.class_indices == list(imagenet_indices("imagenette")) and obj.params.r_bn == 0.01
    loss, grad = obj.loss_and_grad(data.normalized(torch.arange(10)), torch.arange(10))
    assert np.isfinite(loss) and grad.shape == (10, 3, 128, 128) and grad.abs().sum() > 0


def test_the_classifier_handed_to_a_run_is_its_teacher(root, G, tmp_path):
    """Run(..., classifier=...) (tests, embedding apps) reaches SRe²L as its teacher, as it does the distance."""
    proxy = tiny_proxy()
    run = Run(tiny_config(root, objective="sre2l", method="pixel", steps_per_space=1), tmp_path / "given",
              generator=G, classifier=proxy)
    while run.step():
        pass
    run.close()
    assert run.ctx.objective.teacher is proxy and run.finished
