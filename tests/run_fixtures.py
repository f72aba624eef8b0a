"""Small real components for engine tests: a fake Fashion-MNIST folder, a tiny prior and proxy."""
from pathlib import Path

import torch

from engine.classifiers import ProxyClassifier
from engine.classifiers.fashion_mnist import input_spec
from engine.classifiers.small_resnet import SmallResNetConfig, build_small_resnet18
from engine.generators.embedded import EmbeddedConfig, EmbeddedGenerator
from engine.run import RunConfig
from test_data import fake_fmnist


def tiny_generator() -> EmbeddedGenerator:
    return EmbeddedGenerator(EmbeddedConfig(z_dim=8, w_dim=16, widths=(16, 12, 8, 4), init_seed=3)).eval()


def tiny_proxy() -> ProxyClassifier:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_small_resnet18(SmallResNetConfig(in_channels=1, num_classes=10, width=4))
    return ProxyClassifier(net, input_spec(), "layer4", 10)


def fake_root(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    fake_fmnist(folder, n=200)
    return folder


def tiny_config(root: Path, **overrides) -> RunConfig:
    base = dict(data_root=str(root), steps_per_space=3, batch_real=8, distance_real_per_class=5,
                mean_ws_samples=20, preview_every=2)
    return RunConfig(**(base | overrides))


def finished_pixel_run(root: Path, generator, classifier, folder: Path) -> Path:
    """A finished Pixel run (IPC 2, 2 steps, ConvNet-3) on the fake data in `root`: an evaluable folder."""
    from engine.run import Run  # the run machinery only where a test needs a run
    run = Run(tiny_config(root, method="pixel", ipc=2, steps_per_space=2, net="convnet"), folder,
              generator=generator, classifier=classifier)
    while run.step():
        pass
    run.close()
    return folder
