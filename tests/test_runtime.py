"""The allocator settings a launcher applies at start-up (engine/runtime.py)."""
import ctypes.util
import platform
import subprocess
import sys

import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" and ctypes.util.find_library("c")


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's mallopt")
def test_glibc_takes_every_setting_and_the_threads_still_allocate():
    """In a fresh process (the settings must come before other threads allocate): glibc accepts all three
    (mallopt returns 0 for a value it refuses, and tune_allocator then returns False), and a multi-threaded
    torch computation still runs and gives the same numbers as without them."""
    code = ("import sys, torch; from engine.runtime import tune_allocator; ok = tune_allocator() if sys.argv[1] == '1' "
            "else True; torch.set_num_threads(2); g = torch.Generator().manual_seed(0); "
            "x = torch.randn(64, 64, 64, 64, generator=g); w = torch.randn(32, 64, 3, 3, generator=g); "
            "y = torch.nn.functional.conv2d(x, w).sum(); print(ok, repr(float(y)))")
    tuned, plain = (subprocess.run([sys.executable, "-c", code, flag], capture_output=True, text=True, check=True)
                    .stdout.split() for flag in ("1", "0"))
    assert tuned[0] == "True"
    assert tuned[1] == plain[1]  # allocator settings never change arithmetic
