"""The process-wide allocator setting (genbound_assets/runtime.py), in fresh processes."""

import os
import subprocess
import sys

# In a fresh process: one 24 MB block through malloc/free (whatever glibc's dynamic thresholds
# were, afterwards its mmap threshold is >= 24 MB, so the trim threshold, twice it, is at most
# 2 x 32 MB + a page), then cycles of three 24 MB blocks, each under the mmap threshold so on
# the heap, freed together: 72 MB at the heap top.  Untuned, that exceeds any trim threshold
# glibc sets itself, so every cycle hands the pages back and faults them in again; tuned (trim at
# 1 GB) they stay.  A forward pass's temporaries follow the same rule, but how often they cross
# the threshold depends on what the process freed before (measured 0-520 faults untuned in one
# CI run, 14,000-17,000 here), so the test exercises the rule itself.
_CODE = """
import ctypes, resource
from genbound_assets.runtime import tune_allocator
ok = tune_allocator()
assert tune_allocator() is ok
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
n = 24 << 20
p = libc.malloc(n); ctypes.memset(p, 1, n); libc.free(p)
def cycle():
    ps = [libc.malloc(n) for _ in range(3)]
    for p in ps:
        ctypes.memset(p, 1, n)
    for p in ps:
        libc.free(p)
cycle()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    cycle()
print(ok, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
"""


def _run(**env) -> tuple[str, int]:
    # glibc's own settings from the environment (MALLOC_*_ variables, GLIBC_TUNABLES) would
    # override the thresholds under test
    e = {k: v for k, v in os.environ.items()
         if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"} | env
    out = subprocess.run([sys.executable, "-c", _CODE], env=e, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1])


def test_allocator_tuning_is_set_once_and_can_be_turned_off():
    """Set on glibc (and once): freed heap blocks are kept for reuse, so repeated 72 MB cycles
    fault no page in again; with GENBOUND_MALLOC_TUNING=0 a no-op, and each cycle faults its
    18,432 pages back in (measured 55,200 over three cycles, 0 tuned)."""
    on, on_faults = _run()
    off, off_faults = _run(GENBOUND_MALLOC_TUNING="0")
    assert (on, off) == ("True", "False")
    assert on_faults < 1000 and off_faults > 3 * 18_432 * 0.9, (on_faults, off_faults)
