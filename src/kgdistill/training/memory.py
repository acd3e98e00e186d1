"""Keep freed memory inside the process so that big per-step temporaries do not fault in fresh pages.

glibc returns large blocks (``mmap``) to the kernel on free; a training step that allocates
``batch × negatives × dim`` temporaries then pays for zeroed pages every step, about half the wall time on this kind
of machine (see the project's performance notes). ``M_MMAP_MAX = 0`` and a large ``M_TRIM_THRESHOLD`` make glibc
serve them from its heap and keep it. No-op on other C libraries.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

_done = False


def retain_freed_memory() -> bool:
    """Ask glibc to keep freed memory; returns True when the settings were applied (once per process)."""
    global _done  # a process-wide C library setting: applying it twice is harmless, the flag only saves calls
    if _done:
        return True
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1 and libc.mallopt(M_MMAP_MAX, 0) == 1
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok
