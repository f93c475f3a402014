"""Baseline: Lotfi et al. (2024), token-level Azuma-Hoeffding bound with prediction smoothing.

For the smoothed model p_s = (1 - alpha) p + alpha/V the per-token loss
X_k = -log p_s(x_k | x_<k) lies in [-log(1 - alpha + alpha/V), log(V/alpha)], an interval of width

    Delta_azuma = log(V/alpha) + log(1 - alpha + alpha/V) = log(1 + (1 - alpha) V / alpha)

fixed in advance (as their code uses).  Azuma-Hoeffding on the martingale differences
E[X_k | F_{k-1}] - X_k with the weighted union bound over h (prior e^{-L(h)}) gives, w.p. >= 1 - delta_m,

    R_s <= R_s_hat(D tokens) + Delta_azuma sqrt((L(h) + log(1/delta_m)) / (2D)).

alpha is picked from a fixed grid after seeing the data, so L(h) -> L(h) + log |grid|.  R_s_hat over
all D tokens is replaced by the mean over m pairs drawn uniformly with replacement plus a Hoeffding
correction Delta_azuma sqrt(log(|grid|/delta_sub) / (2m)) (the alpha choice is paid here too).

Sampled windows (``groups=``; docs/bounds.md, "Subsampling windows"): when a draw is a training
window drawn with probability proportional to its number of targets and evaluated whole, the
draw's window mean of the smoothed loss is an unbiased, [lo, lo + Delta_azuma]-valued IID sample
of the sampled stratum's mean.  Hoeffding and empirical Bernstein are then applied to the m window
means, for every alpha of the grid, each statement at delta_sub / (2 |grid|), and the smallest
bound over (alpha, method) is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ._validate import finite_array, non_negative, positive_int, probability
from .choices import choice_cost_nats
from .smoothing import smoothed_losses
from .subsample import bernstein_correction, check_groups, draw_means, hoeffding_correction

# Fixed before seeing any data (our choice; Lotfi et al.'s exact grid is not in the paper summary).
DEFAULT_ALPHA_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3)


def azuma_width(alpha: float, vocab_size: int) -> float:
    """Delta_azuma = log(1 + (1 - alpha) V / alpha): the range of the smoothed loss (Lotfi et al.)."""
    a = probability("alpha", alpha)
    v = positive_int("vocab_size", vocab_size)
    if v < 2:
        raise ValueError(f"vocab_size must be >= 2, got {vocab_size!r}")
    return math.log1p((1.0 - a) * v / a)


@dataclass(frozen=True)
class AzumaBound:
    """bound = smoothed_mean + subsample_correction + azuma_term (nats per token), at the best alpha.

    n_sample: the number of draws m (targets, or windows with ``unit == "window"``);
    n_sample_tokens: targets in the sampled arrays; subsample_method: "hoeffding" or "bernstein"
    (windows only: token draws use Hoeffding, as Lotfi et al.).
    """

    alpha: float
    smoothed_mean: float
    subsample_correction: float
    azuma_term: float
    loss_range: float
    complexity_nats: float
    union_cost: float
    bound: float
    n_sample: int
    n_tokens: int
    delta: float
    delta_martingale: float
    delta_subsample: float
    alpha_grid: tuple[float, ...]
    per_alpha: dict[float, float] = field(default_factory=dict)
    certified: bool = True
    subsample_method: str = "hoeffding"
    unit: str = "token"
    n_sample_tokens: int = 0


def azuma_bound(probs_of_target, vocab_size: int, n_tokens: int, delta: float,
                complexity_nats: float = 0.0, alpha_grid=DEFAULT_ALPHA_GRID,
                delta_split: float = 0.1, sampled: bool = True,
                exact_probs_of_target=None, groups=None) -> AzumaBound:
    """Lotfi et al. (2024) token-level Azuma bound, with their subsample step (module docstring).

    probs_of_target: model probability of the observed token on m pairs drawn uniformly with
    replacement from the n_tokens = D training tokens (or all D tokens with sampled=False);
    complexity_nats: L(h).  delta_split: fraction of delta for the Azuma statement, the rest
    for the subsample Hoeffding step (ignored when sampled=False).  exact_probs_of_target: every
    target of a stratum fixed before sampling (calibration windows); the m pairs are then uniform
    over the other D - n_exact targets and the two strata are weighted by their sizes.

    groups: per-target draw ids 0..m-1 when a draw is a whole window drawn with probability
    proportional to its number of targets (as ``subsampled_freedman_bound(groups=...)``).  Then
    the subsample step uses the m window means: Hoeffding and empirical Bernstein for every alpha,
    each at delta_sub / (2 |grid|), the smallest (alpha, method) bound reported.  Needs m >= 2.
    """
    p = finite_array("probs_of_target", probs_of_target)
    if p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("probs_of_target must lie in [0, 1]")
    v = positive_int("vocab_size", vocab_size)
    d = positive_int("n_tokens", n_tokens)
    delta = probability("delta", delta)
    l_h = non_negative("complexity_nats", complexity_nats)
    grid = tuple(float(a) for a in finite_array("alpha_grid", alpha_grid))
    for a in grid:
        probability("alpha_grid entry", a)
    if len(set(grid)) != len(grid):
        raise ValueError("alpha_grid has duplicate values")
    if not isinstance(sampled, bool):
        raise ValueError(f"sampled must be a bool, got {sampled!r}")
    if sampled:
        split = probability("delta_split", delta_split)
        delta_m, delta_sub = delta * split, delta * (1.0 - split)
    else:
        if len(p) != d:
            raise ValueError(f"n_tokens = {d} must equal len(probs_of_target) = {len(p)} "
                             "when sampled=False")
        delta_m, delta_sub = delta, 0.0
    union = choice_cost_nats(len(grid))
    m = len(p)
    pe = None
    if exact_probs_of_target is not None and len(exact_probs_of_target) > 0:
        if not sampled:
            raise ValueError("exact_probs_of_target needs sampled=True")
        pe = finite_array("exact_probs_of_target", exact_probs_of_target)
        if pe.min() < 0.0 or pe.max() > 1.0:
            raise ValueError("exact_probs_of_target must lie in [0, 1]")
        if len(pe) >= d:
            raise ValueError(f"the exact stratum ({len(pe)}) must be smaller than n_tokens = {d}")
    w_exact = 0.0 if pe is None else len(pe) / d
    unit, n_draws = "token", len(p)
    if groups is not None:
        if not sampled:
            raise ValueError("groups needs sampled=True")
        ids, sizes = check_groups(groups, len(p))
        unit, n_draws = "window", len(sizes)
        if n_draws < 2:
            raise ValueError(f"groups: need >= 2 window draws for the subsample step, got {n_draws}")
        delta_method = delta_sub / (2.0 * len(grid))  # union over alpha and {Hoeffding, Bernstein}
    rows = {}
    for a in grid:
        width = azuma_width(a, v)
        losses = smoothed_losses(p, a, v)
        method = "hoeffding"
        if unit == "window":
            means = draw_means(losses, ids, sizes)
            mean = float(means.mean())
            hoeff = hoeffding_correction(n_draws, width, delta_method)
            bern = bernstein_correction(float(means.var(ddof=1)), n_draws, width, delta_method)
            method, corr = ("bernstein", bern) if bern < hoeff else ("hoeffding", hoeff)
        else:
            mean = float(losses.mean())
            corr = (width * math.sqrt((union + math.log(1.0 / delta_sub)) / (2.0 * m))
                    if sampled else 0.0)
        if pe is not None:
            mean = w_exact * float(smoothed_losses(pe, a, v).mean()) + (1.0 - w_exact) * mean
            corr *= 1.0 - w_exact
        term = width * math.sqrt((l_h + union + math.log(1.0 / delta_m)) / (2.0 * d))
        rows[a] = (mean + corr + term, mean, corr, term, width, method)
    best = min(rows, key=lambda a: rows[a][0])
    b, mean, corr, term, width, method = rows[best]
    return AzumaBound(
        alpha=best, smoothed_mean=mean, subsample_correction=corr, azuma_term=term,
        loss_range=width, complexity_nats=l_h, union_cost=union, bound=b, n_sample=n_draws,
        n_tokens=d, delta=delta, delta_martingale=delta_m, delta_subsample=delta_sub,
        alpha_grid=grid, per_alpha={a: r[0] for a, r in rows.items()},
        subsample_method=method, unit=unit, n_sample_tokens=len(p),
    )

