"""Process-wide settings of the genbound processes (CLI, demo, Dagster code location, tests, bench).

``tune_allocator()``: glibc's malloc hands blocks above its mmap threshold back to the kernel
when they are freed, and trims the heap top above its trim threshold; a PyTorch CPU forward
frees and re-allocates its multi-MB temporaries on every call, so each call page-faults them in
again (~16,000 minor faults per demo-size evaluation pass of 16K tokens, measured).  Raising both
thresholds keeps freed blocks in the process for reuse: on this project's 2-core VM a bare
demo-size forward pass went from ~120 to ~93 ms and the window evaluation
(measure/window_losses.py) gained as much (docs/performance.md, "Allocator").  The cost is that
freed memory below 32 MB per block is kept for reuse rather than returned: the process's
resident size stays at its high-water mark.  Blocks above 32 MB (glibc's ceiling for the
threshold) are still mapped and returned as before.

Opt out with ``GENBOUND_MALLOC_TUNING=0``.  A no-op off glibc (macOS, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["tune_allocator", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

M_TRIM_THRESHOLD = -1          # <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20      # glibc's maximum (HEAP_MAX / 2 on 64-bit)
TRIM_THRESHOLD = 1 << 30

_done: bool | None = None


def tune_allocator() -> bool:
    """Set glibc's mmap and trim thresholds for this process (once; later calls return the
    first result).  True when set, False when opted out or not on glibc."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("GENBOUND_MALLOC_TUNING", "1").strip() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    # mallopt returns 1 on success; musl has no mallopt (AttributeError above)
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
