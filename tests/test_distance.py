"""The class-relevant features (paper eq. 6) differentiate only the proxy's head above its CAM layer; they
must equal the definition, computed here the long way: the whole network differentiated down to the input."""
import torch

from engine.classifiers import load_classifier
from engine.distance import class_relevant_features
from run_fixtures import tiny_proxy


def by_definition(proxy, images, labels):
    """A * ReLU(dlogit_y/dA), with A captured by a hook and the gradient from a full backward."""
    acts = []

    def keep(module, inputs, output):  # returns None: the output goes on unchanged
        output.retain_grad()
        acts.append(output)

    handle = proxy.cam_layer.register_forward_hook(keep)
    try:
        logits = proxy(images.detach().clone().requires_grad_(True))
        logits.gather(1, labels.view(-1, 1)).sum().backward()
    finally:
        handle.remove()
    return acts[0].detach() * acts[0].grad.clamp(min=0)


def _images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 32, 32, generator=g) * 2 - 1, torch.randint(0, 10, (n,), generator=g)


def test_equal_to_the_definition_on_the_shipped_proxy_and_a_tiny_one():
    for proxy in (load_classifier("embedded:fashion-mnist", "cpu"), tiny_proxy()):
        x, y = _images(12)
        expected = by_definition(proxy, x, y)
        got = class_relevant_features(proxy, x, y, batch=5)  # several batches, a ragged last one
        assert got.shape == expected.shape and expected.abs().sum() > 0
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_leaves_no_hook_and_no_parameter_gradient():
    proxy = tiny_proxy()
    x, y = _images(4, seed=1)
    class_relevant_features(proxy, x, y)
    assert not proxy.cam_layer._forward_hooks
    assert all(p.grad is None for p in proxy.parameters())
    with torch.no_grad():  # a caller's no_grad (a preview under no_grad) does not switch the gradient off
        again = class_relevant_features(proxy, x, y)
    torch.testing.assert_close(again, class_relevant_features(proxy, x, y))


def test_cam_heatmaps_are_layercam_of_the_same_features():
    """The page's CAM (grad-cam's LayerCAM, its backward stopped at the CAM layer) is the channel sum of
    the definition's features, ReLU'd and min-max scaled per image at the input's size as grad-cam does."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    from engine.cam import cam_heatmaps
    for proxy in (load_classifier("embedded:fashion-mnist", "cpu"), tiny_proxy()):
        x, y = _images(6, seed=2)
        cam = by_definition(proxy, x, y).sum(1).clamp(min=0).numpy()
        expected = scale_cam_image(scale_cam_image(cam, (32, 32)))
        got = cam_heatmaps(proxy, x, y)
        assert got.shape == (6, 32, 32) and got.max() > 0.99
        torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(expected), rtol=0, atol=1e-5)
        assert not proxy.cam_layer._forward_hooks and all(p.grad is None for p in proxy.parameters())
