"""Shared bench helpers: the machine description, a matmul peak, side-by-side timing, results.

Every bench prints one JSON line (``"bench": <name>``) and a table; ``bench/run_all.py`` (``make
bench``) runs them, stores each JSON record under ``bench/results/<name>.json`` and regenerates
the tables of docs/performance.md.  Timings live here, never in tests.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

LOAD_AT_START = [round(x, 2) for x in os.getloadavg()]    # when the bench process started
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:          # run as `python bench/x.py` from any directory
    sys.path.insert(0, str(REPO))

from genbound_assets.runtime import tune_allocator  # noqa: E402  (after the path fix above)

# the allocator setting of every genbound process (genbound_assets/runtime.py), so a bench
# times what the pipeline runs; GENBOUND_MALLOC_TUNING=0 times glibc's defaults instead
ALLOCATOR_TUNED = tune_allocator()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def blas_info() -> dict:
    """torch's BLAS (from its build config) and numpy's (from its build dependencies)."""
    out = {}
    try:
        import re

        import torch

        cfg = torch.__config__.show()
        for k in ("BLAS_INFO", "LAPACK_INFO"):
            m = re.search(rf"\b{k}=([^,\s]+)", cfg)
            if m:
                out[f"torch_{k.lower()}"] = m.group(1)
        m = re.search(r"Intel\(R\) MKL-DNN v([\d.]+)|oneDNN v([\d.]+)", cfg)
        if m:
            out["torch_onednn"] = m.group(1) or m.group(2)
        out["torch_mkldnn"] = bool(torch.backends.mkldnn.is_available())
    except Exception:                                    # noqa: BLE001 - description only
        pass
    try:
        import numpy as np

        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        out["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:                                    # noqa: BLE001
        pass
    return out


def machine_info() -> dict:
    """What the numbers were measured on (stored with every result)."""
    import numpy as np

    info = {
        "cpu": cpu_model(), "arch": platform.machine(), "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_gib": mem_total_gib(), "python": platform.python_version(), "numpy": np.__version__,
        "loadavg_start": LOAD_AT_START, "malloc_tuned": ALLOCATOR_TUNED, "simd": simd_level(),
        "hostname_kind": "shared CI/dev box" if os.cpu_count() and os.cpu_count() <= 2 else None,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    info.update(blas_info())
    return info


def simd_level() -> str | None:
    """The widest x86 SIMD level numpy detects ("AVX512_SKX", "AVX512F", "AVX2", ...): exp and
    log throughput, which several benches depend on, differs 3-10x between these (docs/performance.md)."""
    from genbound_assets.measure.window_losses import _numpy_has  # what picks its kernels

    for level in ("AVX512_SPR", "AVX512_ICL", "AVX512_SKX", "AVX512F", "AVX2", "AVX", "ASIMD"):
        if _numpy_has(level):
            return level
    return None


def one_thread() -> None:
    """One torch thread (the brief's rule on the shared 2-core box; also what ratios assume)."""
    import torch

    torch.set_num_threads(1)


def matmul_peak(dtype=None, size: int = 1024, reps: int = 8, rounds: int = 3,
                device: str = "cpu") -> float:
    """Best FLOP/s of a size^3 torch matmul (same threads and dtype as the measured code)."""
    import torch

    dtype = dtype or torch.float32
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    best = math.inf
    for _ in range(rounds):
        torch.matmul(a, b)
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / reps)
    return 2.0 * size**3 / best


def side_by_side(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                 sync: Callable[[], None] | None = None) -> dict:
    """Round-robin timing (A, B, A, B, ...) so load drift on a shared box hits every candidate
    alike; the order rotates each repeat (B, A, ...), so no candidate always runs right after the
    same one (a candidate that leaves the heap fragmented slows whichever runs next).  ``sync`` runs after each call inside the timing (e.g. torch.cuda.synchronize).
    Returns {name: {"median": s, "min": s, "cpu_median": s, "all": [...], "cpu_all": [...]}}
    (``all``/``cpu_all``: per repeat, so ``paired_ratio`` can pair the candidates' repeats)."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for k in names[r % len(names):] + names[:r % len(names)]:
            fn = fns[k]
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return {k: {"median": statistics.median(wall[k]), "min": min(wall[k]),
                "cpu_median": statistics.median(cpu[k]), "all": [round(x, 6) for x in wall[k]],
                "cpu_all": [round(x, 6) for x in cpu[k]]}
            for k in fns}


def paired_ratio(t: dict, num: str, den: str, key: str = "cpu_all") -> float:
    """Median over repeats of t[num][r] / t[den][r] from ``side_by_side``: each repeat's two
    timings ran in the same round, so load drift between rounds cancels in the ratio."""
    return statistics.median(a / b for a, b in zip(t[num][key], t[den][key], strict=True))


def train_briefly(model, stream, context: int, steps: int, lr: float, seed: int) -> float:
    """A few AdamW steps of next-token training on random ``context``-token slices of the 1-D
    token tensor ``stream`` (16 per step), so a bench quantizes a model with structure; returns
    the last training loss and leaves the model in eval mode."""
    import torch

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    model.train()
    loss = float("nan")
    for _ in range(steps):
        idx = torch.randint(0, len(stream) - context - 1, (16,), generator=g)
        x = torch.stack([stream[i:i + context] for i in idx])
        out = model(input_ids=x, labels=x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        loss = float(out.loss.detach())
    model.eval()
    return loss


def headline(what: str, value: float, unit: str = "", target: str | None = None,
             met: bool | None = None) -> dict:
    """One line of the performance table."""
    return {"what": what, "value": value, "unit": unit, "target": target, "met": met}


def emit(record: dict, table_lines: list[str]) -> dict:
    """Print the JSON line (with the machine description) and the table."""
    record = {**record, "machine": record.get("machine") or machine_info()}
    record["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(record, default=_default))
    for line in table_lines:
        print(line)
    sys.stdout.flush()
    return record


def _default(x):
    try:
        import numpy as np

        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:
        pass
    return str(x)


def fmt_table(cols: list[str], rows: list[list]) -> list[str]:
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c)
              for i, c in enumerate(cols)]
    out = ["  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))]
    out += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return out


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v == 0 or 1e-3 <= abs(v) < 1e6:
            return f"{v:.4g}"
        return f"{v:.3e}"
    return str(v)


class EmbeddedPostgres:
    """A throwaway embedded PostgreSQL (pgserver) for one bench, stopped and deleted on exit;
    or an external one when ``url`` is given (its genbound tables are written to)."""

    def __init__(self, url: str | None = None):
        self.url, self.root = url, None

    def __enter__(self) -> str:
        if self.url:
            from genbound_assets import storage

            return storage.validate_url(self.url, source="--url")
        import tempfile

        from genbound_assets import storage

        # not under a 0700 pytest dir: pgserver runs PostgreSQL as its own user when we are root
        self.root = Path(tempfile.mkdtemp(prefix="genbound-bench-pg-"))
        self.url = storage.start_embedded(self.root)
        return self.url

    def __exit__(self, *exc) -> None:
        if self.root is None:
            return
        import shutil

        from genbound_assets import storage

        storage.stop_embedded(self.root, mode="immediate")
        shutil.rmtree(self.root, ignore_errors=True)
