"""Empirical Freedman inequality (Finzi et al. 2025, Thm 3.1 / Lemma 3.2 / Cor. A.4).

With probability >= 1 - delta, for every s in the grid K simultaneously,

    (1/n) sum_k (E[X_k | F_{k-1}] - X_k) <= (Delta / s) * (C + mean_k v(s A_k))      (Lemma A.3, t = s/Delta)

where A_k = (Y_k - X_k)/Delta >= -1, v(x) = x - log(1 + x) and
C = (L(h) + log(|K|/delta)) / n.  Writing the right-hand side as Delta*C + Sigma*sqrt(C) gives
the paper's Sigma (eq. 1).  Every s in K is covered by the union bound, so any rule for picking
s (exhaustive or a fast search) yields a valid bound; see docs/bounds.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._validate import finite_array, non_negative, positive, positive_int, probability, same_length

# A_k slightly below -1 from float rounding is tolerated (and clipped to -1); anything further
# means loss_range is not an upper bound on X_k - Y_k and the theorem does not apply.
A_TOLERANCE = 1e-9


def v(x):
    """v(x) = x - log(1 + x) (Lemma A.1), accurate near 0 where the naive form cancels."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    small = np.abs(x) < 1e-3
    xs = x[small]
    out[small] = xs * xs * (0.5 - xs * (1.0 / 3.0 - xs * (0.25 - xs * (0.2 - xs / 6.0))))
    xl = x[~small]
    out[~small] = xl - np.log1p(xl)
    return out


def freedman_grid(grid_size: int = 1000) -> np.ndarray:
    """The paper's K: grid_size equally spaced interior points of (0, 1), i/(grid_size+1)."""
    grid_size = positive_int("grid_size", grid_size)
    return np.arange(1, grid_size + 1, dtype=np.float64) / (grid_size + 1)


def check_grid(grid) -> np.ndarray:
    """Validate an explicit K (the s = t*Delta values of Thm 3.1): strictly increasing, inside (0, 1)."""
    g = finite_array("grid", grid)
    if g[0] <= 0.0 or g[-1] >= 1.0:
        raise ValueError(f"grid must lie inside (0, 1), got [{g[0]!r}, {g[-1]!r}]")
    if np.any(np.diff(g) <= 0.0):
        raise ValueError("grid must be strictly increasing")
    return g


def freedman_complexity(delta: float, n_tokens: int, grid_size: int = 1000,
                        complexity_nats: float = 0.0) -> float:
    """C = (L(h) + log(|K|/delta)) / n  (Thm 3.1 with Lemma 3.2's prefix-code cost L(h) in nats)."""
    delta = probability("delta", delta)
    n = positive_int("n_tokens", n_tokens)
    grid_size = positive_int("grid_size", grid_size)
    complexity_nats = non_negative("complexity_nats", complexity_nats)
    return (complexity_nats + math.log(grid_size / delta)) / n


def scaled_differences(losses, proxies, loss_range: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Validate (X, Y, Delta) and return (X, A, Delta) with A_k = (Y_k - X_k)/Delta (Thm 3.1)."""
    x = finite_array("losses", losses)
    y = finite_array("proxies", proxies)
    same_length(losses=x, proxies=y)
    delta_range = positive("loss_range", loss_range)
    a = (y - x) / delta_range
    worst = float(a.min())
    if worst < -1.0 - A_TOLERANCE:
        k = int(a.argmin())
        raise ValueError(
            f"A_k = (proxies - losses)/loss_range must be >= -1; got {worst:.6g} at index {k} "
            f"(losses[k] - proxies[k] = {x[k] - y[k]:.6g} exceeds loss_range = {delta_range:.6g})"
        )
    return x, np.maximum(a, -1.0), delta_range


def gap_at(s: float, a: np.ndarray, complexity: float, loss_range: float) -> float:
    """(Delta/s)(C + mean v(sA)): the Lemma A.3 bound on the mean gap at one grid point s."""
    return loss_range * (complexity + float(v(s * a).mean())) / s


def _argmin_on_grid(grid: np.ndarray, objective, exhaustive: bool) -> int:
    """Index of the grid minimiser of a quasiconvex objective.

    (C + mean v(sA))/s is exactly quasiconvex in s > 0 (g(s) = C + mean v(sA) is convex and
    positive, so {s : g(s) <= c s} is an interval); its derivative changes sign once, so a
    ternary search finds the grid minimum.  A final exhaustive scan of a small window absorbs
    floating-point ties.  Any returned index is a valid choice (the union bound covers K).
    """
    if exhaustive or len(grid) <= 64:
        values = np.array([objective(s) for s in grid])
        return int(values.argmin())
    lo, hi = 0, len(grid) - 1
    cache: dict[int, float] = {}

    def f(i: int) -> float:
        if i not in cache:
            cache[i] = objective(grid[i])
        return cache[i]

    while hi - lo > 8:
        m1 = lo + (hi - lo) // 3
        m2 = hi - (hi - lo) // 3
        if f(m1) < f(m2):
            hi = m2
        elif f(m1) > f(m2):
            lo = m1
        else:
            lo, hi = m1, m2
    window = range(max(0, lo - 4), min(len(grid), hi + 5))
    return min(window, key=f)


@dataclass(frozen=True)
class FreedmanBound:
    """Result of Theorem 3.1 (with Lemma 3.2's complexity).

    gap = Delta*C + Sigma*sqrt(C) bounds mean_k (E[X_k|F_{k-1}] - X_k); bound = empirical_mean + gap.
    """

    gap: float
    sigma: float
    complexity: float
    s_star: float
    loss_range: float
    empirical_mean: float
    mean_v: float
    n_sample: int
    n_tokens: int
    grid_size: int
    delta: float
    complexity_nats: float

    @property
    def bound(self) -> float:
        return self.empirical_mean + self.gap

    @property
    def t_star(self) -> float:
        """s*/Delta: the Lemma A.3 parameter actually used."""
        return self.s_star / self.loss_range


def freedman_bound(losses, proxies, loss_range: float, delta: float, complexity_nats: float = 0.0,
                   grid_size: int = 1000, n_tokens: int | None = None, *,
                   exhaustive: bool = False, grid=None) -> FreedmanBound:
    """Empirical Freedman bound, Theorem 3.1 (eq. 1) / Lemma 3.2 (eq. 2).

    losses: X_k; proxies: Y_k (F_{k-1}-measurable, e.g. the model's entropy at that context);
    loss_range: Delta with X_k - Y_k <= Delta; complexity_nats: L(h) (Lemma 3.2), 0 for Thm 3.1;
    n_tokens: n = D, the number of tokens the statement is about (default len(losses)); means
    over k are sample means over the given arrays.  The grid is K = {i/(grid_size+1)}, or the
    explicit `grid` (then |K| = len(grid) and grid_size is ignored).  Only t = s/Delta enters the
    bound, so two bounds with different Delta share one union-bound event only if their t-grids
    coincide; otherwise reporting the better of them costs log 2 (docs/bounds.md).
    """
    x, a, loss_range = scaled_differences(losses, proxies, loss_range)
    n = len(x) if n_tokens is None else positive_int("n_tokens", n_tokens)
    if grid is None:
        grid_size = positive_int("grid_size", grid_size)
        grid = freedman_grid(grid_size)
    else:
        grid = check_grid(grid)
        grid_size = len(grid)
    complexity = freedman_complexity(delta, n, grid_size, complexity_nats)
    i = _argmin_on_grid(grid, lambda s: gap_at(s, a, complexity, loss_range), exhaustive)
    s = float(grid[i])
    mean_v = float(v(s * a).mean())
    gap = loss_range * (complexity + mean_v) / s
    sqrt_c = math.sqrt(complexity)
    sigma = loss_range * sqrt_c * (1.0 - s) / s + loss_range / sqrt_c * mean_v / s
    return FreedmanBound(
        gap=gap, sigma=sigma, complexity=complexity, s_star=s, loss_range=loss_range,
        empirical_mean=float(x.mean()), mean_v=mean_v, n_sample=len(x), n_tokens=n,
        grid_size=grid_size, delta=float(delta), complexity_nats=float(complexity_nats),
    )
