"""Process-wide memory settings for a training program: keep freed memory for reuse.

A training step frees and allocates the same large arrays on every step. glibc's malloc, by
default, hands a freed block of more than 128 KB (a threshold that only grows to the largest
block freed so far) back to the operating system, and trims the top of its heap, so the next
step's arrays are fresh pages that the kernel must fault in and zero again: about 4,000 page
faults per step of the W2 CNN step in float32, which then took 15.2 ms instead of 11.3 ms, and
521,000 page faults over the whole of ``python -m fnn --model cnn`` (5.5 s instead of 4.4 s;
docs/performance.md). :func:`keep_freed_memory` makes malloc keep that memory for reuse.

It changes the whole process, for good (there is no way back), so a library never calls it on
its own: the program's main does, as ``python -m fnn`` does.
"""

from __future__ import annotations

import ctypes
import numbers
from typing import Any

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # the most glibc picks by itself (64-bit); larger blocks: own maps
TRIM_THRESHOLD = 256 << 20


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD,
                      trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Make glibc's malloc serve blocks up to ``mmap_threshold`` bytes from its heap (not from
    maps of their own, unmapped on free) and keep up to ``trim_threshold`` bytes of free memory
    at the top of the heap (``mallopt(M_MMAP_THRESHOLD)``, ``mallopt(M_TRIM_THRESHOLD)``). For
    the rest of the process; the process may hold up to ``trim_threshold`` more memory than it
    uses. Returns True if both were set, False where malloc is not glibc's (macOS, Windows,
    musl): nothing is changed there."""
    for name, value in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                or not 0 <= value < 1 << 31):
            raise ValueError(f"fnn.memory.keep_freed_memory: {name} must be an integer number "
                             f"of bytes in [0, 2**31), got {value!r}")
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(
        mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))


def _mallopt() -> Any:
    """glibc's ``mallopt``, or None."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has mallopt as a stub)
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt
