"""Network zoo: shapes, gradients, variants per resolution, seeding and the ConvNet contract."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.nets import VIT_CIFAR, ConvNet, evaluation_lr, get_network, list_networks
from engine.nets.vit import Attention

torch.set_num_threads(1)

CASES = [(1, 32, 4), (3, 32, 4), (3, 128, 2)]  # (channels, resolution, batch)


def _images(n: int, channels: int, resolution: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, channels, resolution, resolution, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("channels,resolution,batch", CASES)
@pytest.mark.parametrize("name", list_networks())
def test_forward_shape_and_finite_grads(name, channels, resolution, batch):
    net = get_network(name, channels, 7, resolution, seed=0)
    labels = torch.arange(batch) % 7
    logits = net(_images(batch, channels, resolution))
    assert logits.shape == (batch, 7)
    nn.functional.cross_entropy(logits, labels).backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"


def test_registry_names_and_unknown_name():
    assert list_networks() == ["convnet", "alexnet", "vgg11", "resnet18", "vit"]
    with pytest.raises(ValueError) as err:
        get_network("resnet50", 3, 10, 32)
    for name in list_networks():
        assert name in str(err.value)
    with pytest.raises(ValueError, match="convnet"):
        evaluation_lr("nope")


def test_evaluation_lrs_follow_the_glad_protocol():
    lrs = {name: evaluation_lr(name) for name in list_networks()}
    assert lrs == {"convnet": 1e-3, "alexnet": 1e-3, "vgg11": 1e-4, "resnet18": 1e-3, "vit": 1e-3}


@pytest.mark.parametrize("kwargs", [dict(channels=0), dict(num_classes=0), dict(resolution=48), dict(resolution=16)])
def test_invalid_specs_raise(kwargs):
    args = dict(channels=3, num_classes=10, resolution=32) | kwargs
    with pytest.raises(ValueError):
        get_network("convnet", **args)


def test_wrong_input_shape_names_the_expected_shape():
    net = get_network("convnet", 3, 10, 32, seed=0)
    with pytest.raises(ValueError, match=r"\[N, 3, 32, 32\]"):
        net(torch.zeros(1, 1, 32, 32))


def test_unknown_norm_lists_valid_norms():
    with pytest.raises(ValueError, match="instancenorm"):
        get_network("convnet", 3, 10, 32, norm="layernorm")


def test_seed_reproducible_and_global_rng_untouched():
    before = torch.get_rng_state()
    a = get_network("convnet", 3, 10, 32, seed=5).state_dict()
    b = get_network("convnet", 3, 10, 32, seed=5).state_dict()
    c = get_network("convnet", 3, 10, 32, seed=6).state_dict()
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["blocks.0.conv.weight"], c["blocks.0.conv.weight"])
    get_network("convnet", 3, 10, 32)  # unseeded construction does draw from the global RNG
    assert not torch.equal(torch.get_rng_state(), before)


def test_seed_is_keyword_only():
    with pytest.raises(TypeError):
        get_network("convnet", 3, 10, 32, 0)


def test_seed_reproducible_for_every_network():
    for name in list_networks():
        a = get_network(name, 1, 3, 32, seed=1).state_dict()
        b = get_network(name, 1, 3, 32, seed=1).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.parametrize("resolution,depth", [(32, 3), (64, 4), (128, 5), (256, 6)])
def test_convnet_default_depth_ends_at_4x4(resolution, depth):
    net = ConvNet(3, 10, resolution)
    assert net.depth == depth
    assert net.embed_dim == 2048


@pytest.mark.parametrize("resolution,depth", [(32, 3), (128, 5)])
def test_convnet_embed_and_feature_maps(resolution, depth):
    net = get_network("convnet", 3, 10, resolution, depth=depth, seed=0)
    x = _images(2, 3, resolution)
    emb = net.embed(x)
    assert emb.shape == (2, 2048)
    torch.testing.assert_close(net.classifier(emb), net(x))
    maps = net.feature_maps(x)
    assert [tuple(m.shape) for m in maps] == [(2, 128, resolution >> i, resolution >> i) for i in range(depth)]
    assert all((m >= 0).all() for m in maps)  # post-ReLU
    torch.testing.assert_close(nn.functional.avg_pool2d(maps[-1], 2).flatten(1), emb)


def test_convnet_parameter_order():
    net = ConvNet(3, 10, 32, depth=3)
    names = [n for n, _ in net.named_parameters()]
    expected = []
    for i in range(3):
        expected += [f"blocks.{i}.conv.weight", f"blocks.{i}.conv.bias", f"blocks.{i}.norm.weight", f"blocks.{i}.norm.bias"]
    assert names == expected + ["classifier.weight", "classifier.bias"]
    assert [p.shape for p in net.parameters()][:4] == [(128, 3, 3, 3), (128,), (128,), (128,)]


def test_instancenorm_is_groupnorm_per_channel():
    for name in ("convnet", "vgg11", "resnet18"):
        norms = [m for m in get_network(name, 3, 10, 32, seed=0).modules() if isinstance(m, nn.GroupNorm)]
        assert norms, name
        assert all(m.num_groups == m.num_channels and m.affine for m in norms), name


def test_convnet_samples_independent_in_train_mode():
    net = get_network("convnet", 3, 10, 32, seed=0).train()
    x = _images(4, 3, 32)
    torch.testing.assert_close(net(x[:1]), net(x)[:1])


def test_batchnorm_convnet_mixes_samples_in_train_mode():
    # Counter-check for the test above: the comparison does detect cross-sample coupling.
    net = get_network("convnet", 3, 10, 32, norm="batchnorm", seed=0).train()
    x = _images(4, 3, 32)
    assert not torch.allclose(net(x[:2])[:1], net(x)[:1], atol=1e-4)


def test_alexnet_has_no_normalisation_and_sized_classifier():
    for resolution, features in [(32, 192 * 4 * 4), (128, 192 * 16 * 16)]:
        net = get_network("alexnet", 3, 10, resolution, seed=0)
        assert net.classifier.in_features == features
        assert not any(isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)) for m in net.modules())


def test_vgg11_variants():
    cifar, imagenet = get_network("vgg11", 3, 10, 32, seed=0), get_network("vgg11", 3, 10, 128, seed=0)
    assert cifar.classifier.in_features == 512 and isinstance(cifar.pool, nn.Identity)
    assert imagenet.classifier.in_features == 512 * 49 and isinstance(imagenet.pool, nn.AdaptiveMaxPool2d)
    assert sum(isinstance(m, nn.Conv2d) for m in cifar.modules()) == 8


def test_resnet18_variants():
    cifar, imagenet = get_network("resnet18", 3, 10, 32, seed=0), get_network("resnet18", 3, 10, 128, seed=0)
    assert isinstance(cifar.pool, nn.AvgPool2d) and isinstance(imagenet.pool, nn.AdaptiveAvgPool2d)
    stem_conv = cifar.stem[0]
    assert stem_conv.kernel_size == (3, 3) and stem_conv.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in cifar.modules())
    convs = [m for m in cifar.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 16 + 3  # stem, 8 blocks x 2, three projection shortcuts


def test_vit_variants():
    cifar, imagenet = get_network("vit", 3, 10, 32, seed=0), get_network("vit", 3, 10, 128, seed=0)
    assert (cifar.config.patch_size, len(cifar.blocks), cifar.num_patches) == (4, 6, 64)
    assert (imagenet.config.patch_size, len(imagenet.blocks), imagenet.num_patches) == (16, 10, 64)
    assert sum(isinstance(m, nn.LayerNorm) for m in cifar.modules()) == 2 * 6 + 1
    assert not any(isinstance(m, nn.LayerNorm) for m in imagenet.modules())
    assert imagenet.patch_embed.in_features == 768


def test_vit_patches_are_row_major_tiles():
    net = get_network("vit", 1, 10, 32, seed=0)
    x = torch.arange(32 * 32, dtype=torch.float32).reshape(1, 1, 32, 32)
    patches = net.patches(x)
    torch.testing.assert_close(patches[0, 1], x[0, 0, 0:4, 4:8].reshape(-1))
    torch.testing.assert_close(patches[0, 8], x[0, 0, 4:8, 0:4].reshape(-1))


def test_vit_attention_matches_plain_softmax_reference():
    attn = Attention(VIT_CIFAR).eval()
    x = torch.randn(2, 5, VIT_CIFAR.dim, generator=torch.Generator().manual_seed(3))
    heads, dim_head = VIT_CIFAR.heads, VIT_CIFAR.dim_head
    q, k, v = (t.reshape(2, 5, heads, dim_head).transpose(1, 2) for t in attn.to_qkv(x).chunk(3, dim=-1))
    weights = torch.softmax(q @ k.transpose(-1, -2) / dim_head**0.5, dim=-1)
    expected = attn.to_out((weights @ v).transpose(1, 2).reshape(2, 5, heads * dim_head))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)


def test_vit_dropout_only_in_train_mode():
    net = get_network("vit", 3, 10, 32, seed=0)
    x = _images(2, 3, 32)
    net.eval()
    torch.testing.assert_close(net(x), net(x))
    net.train()
    assert not torch.allclose(net(x), net(x))


def test_convnet_without_norm_has_only_convs_and_classifier():
    net = get_network("convnet", 1, 10, 32, norm="none", seed=0)
    assert [n for n, _ in net.named_parameters()] == [
        "blocks.0.conv.weight", "blocks.0.conv.bias", "blocks.1.conv.weight", "blocks.1.conv.bias",
        "blocks.2.conv.weight", "blocks.2.conv.bias", "classifier.weight", "classifier.bias",
    ]
    assert net(_images(2, 1, 32)).shape == (2, 10)


def test_seeded_construction_is_thread_safe():
    """Two runs on two threads (the studio's compare) must each get their seed's weights."""
    import threading
    expected = {s: get_network("convnet", 1, 10, 32, seed=s, width=16).state_dict() for s in range(6)}
    got, errors = {}, []

    def build(seed):
        for _ in range(20):
            sd = get_network("convnet", 1, 10, 32, seed=seed, width=16).state_dict()
            if any(not torch.equal(sd[k], expected[seed][k]) for k in sd):
                errors.append(seed)
        got[seed] = True

    threads = [threading.Thread(target=build, args=(s,)) for s in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and len(got) == 6
