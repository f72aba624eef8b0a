# Makes `engine` importable when pytest is run from the repository root.


def pytest_addoption(parser):
    parser.addoption("--update-screenshots", action="store_true", default=False,
                     help="copy the browser tests' screenshots into docs/ (tests never rewrite tracked files otherwise)")


def pytest_configure(config):
    config.addinivalue_line("markers", "dist: runs several processes (gloo on CPU); `-m 'not dist'` skips them")
