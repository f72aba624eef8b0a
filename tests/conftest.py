"""Engine fixtures shared by the test modules: a fake Fashion-MNIST folder, the tiny prior and proxy."""
import pytest

from run_fixtures import fake_root, tiny_generator, tiny_proxy


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return fake_root(tmp_path_factory.mktemp("fm"))


@pytest.fixture(scope="module")
def G():
    return tiny_generator()


@pytest.fixture(scope="module")
def proxy():
    return tiny_proxy()
