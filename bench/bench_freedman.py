"""Benchmark: Thm 3.1's Sigma by exhaustive grid scan vs the quasiconvex fast search.

    .venv/bin/python bench/bench_freedman.py [--n 1000000] [--grid 1000] [--repeats 1]
    .venv/bin/python bench/bench_freedman.py --ns 10000 100000 1000000 --repeats 3   # scaling

Prints one JSON line, then a small table.  Timings live here, never in tests.  With --ns: the
fast search (what the pipeline runs), the closed form, and the exhaustive scan up to
--brute-max tokens, at each n, with the growth exponent d log t / d log n between sizes (target:
<= 2 s at 10^6 tokens on the 1000-point grid).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

import numpy as np

try:
    import _common as C
except ImportError:       # imported from elsewhere
    C = None

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


def scaling(ns: list[int], grid: int, repeats: int, brute_max: int, seed: int) -> dict:
    rows = []
    for n in ns:
        x, y, rng = _sample(n, seed)
        common = dict(losses=x, proxies=y, loss_range=rng, delta=0.01, grid_size=grid,
                      complexity_nats=0.0)
        t_fast, fast = _time(lambda common=common: freedman_bound(**common), repeats)
        t_cf, _ = _time(lambda x=x, y=y, rng=rng: freedman_closed_form_bound(x, y, rng, 0.01), repeats)
        row = {"n_tokens": n, "fast_s": t_fast, "closed_form_s": t_cf, "brute_s": None,
               "same_s_star": None, "s_star": fast.s_star}
        if n <= brute_max:
            t_b, brute = _time(lambda common=common: freedman_bound(**common, exhaustive=True), 1)
            row.update(brute_s=t_b, same_s_star=brute.s_star == fast.s_star,
                       rel_gap_diff=abs(fast.gap - brute.gap) / brute.gap)
        rows.append(row)
    for a, b in zip(rows, rows[1:], strict=False):
        b["growth_exponent"] = math.log(b["fast_s"] / a["fast_s"]) / math.log(b["n_tokens"] / a["n_tokens"])
    top = rows[-1]
    heads = [C.headline(f"Sigma over the {grid}-point grid, fast search, n = {r['n_tokens']:,}",
                        r["fast_s"], "s", "<= 2 s at 10^6" if r["n_tokens"] == 10**6 else None,
                        (r["fast_s"] <= 2.0) if r["n_tokens"] == 10**6 else None) for r in rows]
    heads.append(C.headline("growth exponent d log t / d log n (largest step)",
                            top.get("growth_exponent"), "", "~1 (linear)"))
    table = C.fmt_table(["n", "fast s", "closed form s", "exhaustive s", "same s*", "growth"],
                        [[r["n_tokens"], r["fast_s"], r["closed_form_s"], r["brute_s"],
                          r["same_s_star"], r.get("growth_exponent")] for r in rows])
    return C.emit({"bench": "freedman", "grid_size": grid, "repeats": repeats, "rows": rows,
                   "headline": heads}, table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--ns", type=int, nargs="+", default=None,
                    help="scaling mode: these token counts (bench/run_all.py uses 1e4 1e5 1e6)")
    ap.add_argument("--brute-max", type=int, default=100_000,
                    help="scaling mode: exhaustive scan only up to this n")
    ap.add_argument("--grid", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.ns:
        scaling(args.ns, args.grid, args.repeats, args.brute_max, args.seed)
        return

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
