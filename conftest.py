# Makes `engine` importable when pytest is run from the repository root.


def pytest_addoption(parser):
    parser.addoption("--update-screenshots", action="store_true", default=False,
                     help="copy the browser tests' screenshots into docs/ (tests never rewrite tracked files otherwise)")
