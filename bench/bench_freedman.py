"""Benchmark: Thm 3.1's Sigma by exhaustive grid scan vs the quasiconvex fast search.

    .venv/bin/python bench/bench_freedman.py [--n 1000000] [--grid 1000] [--repeats 1]

Prints one JSON line, then a small table.  Timings live here, never in tests.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

import numpy as np

from genbound_assets.bounds.closed_form import freedman_closed_form_bound
from genbound_assets.bounds.freedman import freedman_bound


def _sample(n: int, seed: int):
    """Smoothed-LM-like per-token losses X and entropies Y over V = 50304 (alpha = 0.1)."""
    rng = np.random.default_rng(seed)
    loss_range = math.log(50304 / 0.1)
    y = rng.gamma(2.0, 1.2, n)
    x = np.clip(y + rng.standard_normal(n) * 1.5, 0.0, None)
    x = np.minimum(x, y + loss_range)
    return x, y, loss_range


def _time(fn, repeats: int):
    best, out = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--grid", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    x, y, rng = _sample(args.n, args.seed)
    common = dict(losses=x, proxies=y, loss_range=rng, delta=0.01, grid_size=args.grid,
                  complexity_nats=0.0)
    t_fast, fast = _time(lambda: freedman_bound(**common), args.repeats)
    t_brute, brute = _time(lambda: freedman_bound(**common, exhaustive=True), args.repeats)
    t_cf, cf = _time(lambda: freedman_closed_form_bound(x, y, rng, 0.01), args.repeats)
    rec = {
        "bench": "freedman_search",
        "n_tokens": args.n,
        "grid_size": args.grid,
        "repeats": args.repeats,
        "fast_s": round(t_fast, 4),
        "brute_s": round(t_brute, 4),
        "speedup": round(t_brute / t_fast, 1),
        "closed_form_s": round(t_cf, 4),
        "fast_gap": fast.gap,
        "brute_gap": brute.gap,
        "same_s_star": fast.s_star == brute.s_star,
        "rel_gap_diff": abs(fast.gap - brute.gap) / brute.gap,
        "closed_form_gap": cf.gap,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    print(json.dumps(rec))
    print(f"{'method':<14}{'seconds':>10}{'gap':>14}{'s*':>10}")
    print(f"{'fast search':<14}{t_fast:>10.3f}{fast.gap:>14.6g}{fast.s_star:>10.4f}")
    print(f"{'exhaustive':<14}{t_brute:>10.3f}{brute.gap:>14.6g}{brute.s_star:>10.4f}")
    print(f"{'closed form':<14}{t_cf:>10.3f}{cf.gap:>14.6g}{'-':>10}")


if __name__ == "__main__":
    main()
