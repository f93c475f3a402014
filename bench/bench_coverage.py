"""Monte-Carlo coverage of Thm 3.1 (Freedman, grid Sigma) at >= 10^4 trials, with a C/20 control.

    .venv/bin/python bench/bench_coverage.py [--trials 10000] [--n 2000] [--deltas 0.1 0.01]

Each trial is one martingale of n steps (the construction of genbound_assets_tests/
test_freedman.py): per step a pair (p_k, q_k) is drawn from a fixed random bank, independently
of the past; the token is x_k ~ p_k; X_k = -log q_k(x_k), Y_k = H(q_k) (so X - Y <= log(m/beta)),
and the true conditional mean is E[X_k | F_{k-1}] = sum_x p_k(x)(-log q_k(x)).  The statement
checked is B = mean_k (E[X_k|F_{k-1}] - X_k) <= gap (Thm 3.1 with L = 0: C = log(|K|/delta)/n).

For each delta: the violation rate of ``freedman_bound`` (|K| = --grid, the paper's 1000), of
the closed form (Thm A.5), and of a negative control, the same Freedman bound with C divided by
20 (n_tokens = 20 n), each with its two-sided 95% Clopper-Pearson interval and the one-sided
binomial p-value of H0 "rate <= delta".  The bound holds if the CP interval's lower end is below
delta (here: the rate is far below); the control must be violated more often than delta.
Prints one JSON line, then a table.
"""

from __future__ import annotations

import argparse
import math
import time

import _common as C
import numpy as np
from scipy.stats import beta, binomtest

from genbound_assets.bounds.closed_form import freedman_closed_form_bound
from genbound_assets.bounds.freedman import freedman_bound


def bank(rng, classes=20, size=4096, beta_mix=0.05, noise=0.3):
    p = rng.dirichlet(np.full(classes, 0.5), size=size)
    q = p * np.exp(noise * rng.standard_normal((size, classes)))
    q = (1 - beta_mix) * q / q.sum(1, keepdims=True) + beta_mix / classes
    nlq = -np.log(q)
    cdf = np.cumsum(p, 1)
    cdf[:, -1] = 1.0
    return {"nlq": nlq, "cond_mean": (p * nlq).sum(1), "entropy": (q * nlq).sum(1), "cdf": cdf,
            "loss_range": math.log(classes / beta_mix)}


def trials_block(rng, b, trials: int, n: int):
    idx = rng.integers(0, len(b["cdf"]), (trials, n))
    u = rng.random((trials, n))
    tok = np.empty((trials, n), dtype=np.int64)
    for i in range(trials):          # row by row: (n, classes) at a time
        tok[i] = (u[i][:, None] > b["cdf"][idx[i]]).sum(-1)
    x = b["nlq"][idx, tok]
    y = b["entropy"][idx]
    true_gap = (b["cond_mean"][idx] - x).mean(1)
    return x, y, true_gap


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    a = 1 - level
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--grid", type=int, default=1000)
    ap.add_argument("--deltas", type=float, nargs="+", default=[0.1, 0.01])
    ap.add_argument("--seed", type=int, default=20250417)
    ap.add_argument("--block", type=int, default=500)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    b = bank(rng)
    counts = {d: {"fb": 0, "cf": 0, "ctrl": 0} for d in args.deltas}
    margins = {d: [] for d in args.deltas}
    t0 = time.perf_counter()
    done = 0
    while done < args.trials:
        m = min(args.block, args.trials - done)
        x, y, true_gap = trials_block(rng, b, m, args.n)
        assert (x - y).max() <= b["loss_range"]
        for i in range(m):
            for d in args.deltas:
                fb = freedman_bound(x[i], y[i], b["loss_range"], d, grid_size=args.grid)
                ctrl = freedman_bound(x[i], y[i], b["loss_range"], d, grid_size=args.grid,
                                      n_tokens=20 * args.n)
                cf = freedman_closed_form_bound(x[i], y[i], b["loss_range"], d)
                counts[d]["fb"] += bool(true_gap[i] > fb.gap)
                counts[d]["ctrl"] += bool(true_gap[i] > ctrl.gap)
                counts[d]["cf"] += bool(true_gap[i] > cf.gap)
                margins[d].append(fb.gap - true_gap[i])
        done += m
    wall = time.perf_counter() - t0
    rows, heads = [], []
    names = {"fb": "Freedman (Thm 3.1)", "cf": "closed form (Thm A.5)", "ctrl": "control: C/20"}
    for d in args.deltas:
        for k, label in names.items():
            v = counts[d][k]
            lo, hi = clopper_pearson(v, args.trials)
            p = binomtest(v, args.trials, d, alternative="greater").pvalue
            rows.append({"delta": d, "statement": label, "violations": v, "trials": args.trials,
                         "rate": v / args.trials, "cp95_lo": lo, "cp95_hi": hi,
                         "p_rate_le_delta": p,
                         "holds": (hi <= d) if k != "ctrl" else None,
                         "control_fails": (lo > d) if k == "ctrl" else None})
        fb = next(r for r in rows if r["delta"] == d and r["statement"] == names["fb"])
        ct = next(r for r in rows if r["delta"] == d and r["statement"] == names["ctrl"])
        heads.append(C.headline(f"Thm 3.1 violation rate at delta = {d:g} ({args.trials:,} trials; 95% CP)",
                                f"{fb['rate']:.4f} [{fb['cp95_lo']:.4f}, {fb['cp95_hi']:.4f}]", "",
                                f"<= {d:g}", fb["cp95_hi"] <= d))
        heads.append(C.headline(f"control C/20 violation rate at delta = {d:g} (must exceed delta)",
                                f"{ct['rate']:.4f} [{ct['cp95_lo']:.4f}, {ct['cp95_hi']:.4f}]", "",
                                f"> {d:g}", ct["cp95_lo"] > d))
    med_margin = {d: float(np.median(margins[d])) for d in args.deltas}
    table = C.fmt_table(["delta", "statement", "violations", "rate", "95% CP", "P(rate<=delta)"],
                        [[r["delta"], r["statement"], r["violations"], r["rate"],
                          f"[{r['cp95_lo']:.4f}, {r['cp95_hi']:.4f}]", r["p_rate_le_delta"]]
                         for r in rows])
    table.append(f"({args.trials:,} trials of n = {args.n:,} steps, |K| = {args.grid}, "
                 f"{wall:.0f} s; median slack gap - B: "
                 + ", ".join(f"{med_margin[d]:.4f} at delta {d:g}" for d in args.deltas) + ")")
    return C.emit({"bench": "coverage", "trials": args.trials, "n": args.n, "grid": args.grid,
                   "seed": args.seed, "rows": rows, "median_slack": med_margin, "wall_s": wall,
                   "headline": heads}, table)


if __name__ == "__main__":
    main()
