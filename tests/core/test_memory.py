"""fnn.memory.keep_freed_memory: glibc's malloc keeps freed blocks for reuse (checked in a
fresh process, since the setting is for good), and its argument checks."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

import fnn

# A fresh process frees and allocates a 4 MB array 50 times and prints the page faults of the
# last 40 rounds; with keep_freed_memory() called first, or not.
PROBE = """
import resource, sys
import numpy as np
import fnn.memory
if sys.argv[1] == "keep":
    assert fnn.memory.keep_freed_memory()
for i in range(50):
    if i == 10:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.ones(1 << 19)  # 4 MB, above glibc's default 128 KB threshold
    b = a * 2  # a freed block, then another one of the same size
    del a, b
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True)
    return int(out.stdout)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="glibc's malloc only")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    kept = _faults("keep")
    assert kept < 100  # 40 rounds of two 4 MB arrays: about 80,000 faults if all were fresh
    assert _faults("default") > kept


@pytest.mark.parametrize("bad", [-1, 1 << 31, 2.5, True, "1"])
def test_bad_thresholds_are_refused_before_any_change(bad):
    for kwargs in ({"mmap_threshold": bad}, {"trim_threshold": bad}):
        with pytest.raises(ValueError, match=r"keep_freed_memory: \w+_threshold must be"):
            fnn.memory.keep_freed_memory(**kwargs)
