"""From m sampled token-context pairs to a bound about all D training tokens (Sec. 4, App. A).

The Freedman statement (Thm 3.1 / Lemma 3.2, proof of Cor. A.4) is about the full stream:
with probability >= 1 - delta_m over the data, simultaneously for every s in K,

    R_h <= (1/D) sum_{k<=D} Z_k(s) + (Delta/s) C,    Z_k(s) = X_k + (Delta/s) v(s A_k),      (*)

with C = (L(h) + log(|K|/delta_m))/D.  We only see m pairs drawn uniformly *with replacement*
from the D tokens, so given the data the draws are IID and Hoeffding / empirical Bernstein
apply conditionally.  Correcting Sigma at an s chosen on the same draws is invalid (selection
bias), and a union over K with the worst-case range of v(sA) costs more than the gap itself.
Instead (sample splitting):

1. choose s_hat (and any other data-driven option) on the *selection* half only;
2. on the independent *certification* half, upper-bound the full-data mean of Z(s_hat) with a
   single statement.  (*) holds for all s in K at once, so a data-chosen s_hat needs no extra
   union; the two failure events (delta_m, delta_sub) union-bound to delta.

Both Hoeffding and empirical Bernstein (Maurer & Pontil 2009, Thm 4) are computed and the
tighter is used, so each is made at delta_sub / 2.  Only bounded (smoothed) losses qualify.

Range of Z (needed by both inequalities): with X in [x_lo, x_hi] (smoothed loss: [0, log(V/a)])
and Y in [y_lo, y_hi], A = (Y - X)/Delta lies in [A_min, A_max] with
A_min = max(-1, (y_lo - x_hi)/Delta) (A >= -1 is the Thm 3.1 hypothesis) and
A_max = (y_hi - x_lo)/Delta.  v is convex with v(0) = 0 = min v, so on [A_min, A_max] v(sA)
lies in [v_lo, max(v(s A_min), v(s A_max))] with v_lo = 0 when the interval contains 0 (else the
endpoint value nearer 0).  Hence Z in [x_lo + (Delta/s) v_lo, x_hi + (Delta/s) v_hi].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._validate import finite_array, finite_scalar, positive_int, probability, same_length
from .freedman import freedman_complexity, freedman_grid, scaled_differences, v

# samples outside the declared bounds by more than this are rejected (not smoothed / wrong V, a)
BOUNDS_TOLERANCE = 1e-9
_CHUNK = 2_000_000  # elements per block when scanning the grid on the selection half


def hoeffding_correction(n: int, width: float, delta: float) -> float:
    """Hoeffding (the paper's Sec. 4 subsample step): E Z <= mean + R sqrt(log(1/delta)/(2n)),
    n IID draws with range R."""
    n = positive_int("n", n)
    width = finite_scalar("width", width)
    if width < 0:
        raise ValueError(f"width must be >= 0, got {width!r}")
    delta = probability("delta", delta)
    return width * math.sqrt(math.log(1.0 / delta) / (2.0 * n))


def bernstein_correction(sample_variance: float, n: int, width: float, delta: float) -> float:
    """Empirical Bernstein (Maurer & Pontil 2009, Thm 4), rescaled from [0, 1] to range R.

    With probability >= 1 - delta, E Z <= mean + sqrt(2 V_n log(2/delta)/n)
    + 7 R log(2/delta) / (3 (n - 1)), V_n the unbiased sample variance (ddof=1), n >= 2.
    """
    n = positive_int("n", n)
    if n < 2:
        raise ValueError(f"n must be >= 2 for empirical Bernstein, got {n}")
    var = finite_scalar("sample_variance", sample_variance)
    if var < 0:
        raise ValueError(f"sample_variance must be >= 0, got {var!r}")
    width = finite_scalar("width", width)
    if width < 0:
        raise ValueError(f"width must be >= 0, got {width!r}")
    delta = probability("delta", delta)
    log_term = math.log(2.0 / delta)
    return math.sqrt(2.0 * var * log_term / n) + 7.0 * width * log_term / (3.0 * (n - 1))


def _bounds(name: str, bounds) -> tuple[float, float]:
    try:
        lo, hi = bounds
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high), got {bounds!r}") from None
    lo, hi = finite_scalar(f"{name}[0]", lo), finite_scalar(f"{name}[1]", hi)
    if not lo < hi:
        raise ValueError(f"{name} must satisfy low < high, got {bounds!r}")
    return lo, hi


def _v_range(s, a_min: float, a_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Range of v(sA) for A in [a_min, a_max] (v convex, minimum 0 at 0)."""
    s = np.asarray(s, dtype=np.float64)
    v_at_min, v_at_max = v(s * a_min), v(s * a_max)
    hi = np.maximum(v_at_min, v_at_max)
    lo = np.zeros_like(hi) if a_min <= 0.0 <= a_max else np.minimum(v_at_min, v_at_max)
    return lo, hi


def a_range(loss_range: float, loss_bounds, proxy_bounds) -> tuple[float, float]:
    """[A_min, A_max] for Thm 3.1's A = (Y - X)/Delta, X in loss_bounds, Y in proxy_bounds (A >= -1)."""
    x_lo, x_hi = _bounds("loss_bounds", loss_bounds)
    y_lo, y_hi = _bounds("proxy_bounds", proxy_bounds)
    delta_range = finite_scalar("loss_range", loss_range)
    if delta_range <= 0:
        raise ValueError(f"loss_range must be > 0, got {loss_range!r}")
    a_max = (y_hi - x_lo) / delta_range
    if a_max < -1.0:
        raise ValueError("loss_range is smaller than every possible X - Y: A < -1 everywhere")
    return max(-1.0, (y_lo - x_hi) / delta_range), a_max


def z_range(s: float, loss_range: float, loss_bounds, proxy_bounds) -> tuple[float, float]:
    """[z_lo, z_hi] for Z = X + (Delta/s) v(sA), the Lemma A.3 summand (module docstring)."""
    s = finite_scalar("s", s)
    if not 0.0 < s < 1.0:
        raise ValueError(f"s must lie in (0, 1), got {s!r}")
    x_lo, x_hi = _bounds("loss_bounds", loss_bounds)
    a_min, a_max = a_range(loss_range, loss_bounds, proxy_bounds)
    v_lo, v_hi = _v_range(s, a_min, a_max)
    return x_lo + loss_range / s * float(v_lo), x_hi + loss_range / s * float(v_hi)


@dataclass(frozen=True)
class SubsampledBound:
    """Freedman bound about all D tokens certified from m sampled pairs (module docstring).

    bound = freedman_part + correction, where freedman_part = mean_cert Z(s_hat) + (Delta/s_hat) C
    is the Freedman bound at s_hat evaluated on the certification half, and correction is the
    smaller of the Hoeffding and Bernstein corrections (each at delta_per_method).
    """

    s_hat: float
    complexity: float
    complexity_term: float
    empirical_mean: float
    mean_v: float
    z_mean: float
    z_variance: float
    z_low: float
    z_high: float
    a_min: float
    a_max: float
    sigma: float
    freedman_part: float
    hoeffding_correction: float
    bernstein_correction: float
    method: str
    correction: float
    bound: float
    loss_range: float
    n_selection: int
    n_certification: int
    n_tokens: int
    grid_size: int
    complexity_nats: float
    delta: float
    delta_martingale: float
    delta_subsample: float
    delta_per_method: float
    n_exact: int = 0  # targets of an exactly evaluated stratum (calibration windows)
    certified: bool = True

    @property
    def z_upper(self) -> float:
        """Certified upper bound on the full-data mean of Z(s_hat)."""
        return self.z_mean + self.correction


def _check_within(name: str, arr: np.ndarray, lo: float, hi: float) -> None:
    bad = (arr < lo - BOUNDS_TOLERANCE) | (arr > hi + BOUNDS_TOLERANCE)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}[{k}] = {arr[k]!r} lies outside its bounds ({lo}, {hi}); "
                         "only smoothed (bounded) quantities can be subsample-certified")


def split_sample(m: int, selection_fraction: float = 0.5, split_seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Data-independent seeded split of the m Sec. 4 draws into (selection, certification) indices."""
    m = positive_int("m", m)
    frac = probability("selection_fraction", selection_fraction)
    n_sel = int(round(m * frac))
    if n_sel < 1 or m - n_sel < 2:
        raise ValueError(f"need >= 1 selection and >= 2 certification draws; m={m}, "
                         f"selection_fraction={selection_fraction}")
    perm = np.random.default_rng(split_seed).permutation(m)
    return np.sort(perm[:n_sel]), np.sort(perm[n_sel:])


def _select_s(x, a, grid, complexity, loss_range, x_bounds, a_min, a_max, n_cert, delta_method):
    """argmin over K of the predicted certified bound, from the selection half only."""
    best = (math.inf, 0)
    step = max(1, _CHUNK // max(1, len(a)))
    for start in range(0, len(grid), step):
        s = grid[start:start + step]
        z = x[None, :] + (loss_range / s)[:, None] * v(s[:, None] * a[None, :])
        mean = z.mean(axis=1)
        var = z.var(axis=1, ddof=1) if z.shape[1] > 1 else np.zeros(len(s))
        v_lo, v_hi = _v_range(s, a_min, a_max)
        width = (x_bounds[1] - x_bounds[0]) + loss_range / s * (v_hi - v_lo)
        log1, log2 = math.log(1.0 / delta_method), math.log(2.0 / delta_method)
        hoeff = width * math.sqrt(log1 / (2.0 * n_cert))
        bern = np.sqrt(2.0 * var * log2 / n_cert) + 7.0 * width * log2 / (3.0 * (n_cert - 1))
        pred = mean + loss_range * complexity / s + np.minimum(hoeff, bern)
        i = int(np.argmin(pred))
        if pred[i] < best[0]:
            best = (float(pred[i]), start + i)
    return float(grid[best[1]])


def subsampled_freedman_bound(losses, proxies, loss_range: float, delta: float, n_tokens: int,
                              loss_bounds, proxy_bounds=None, complexity_nats: float = 0.0,
                              grid_size: int = 1000, delta_split: float = 0.1,
                              selection_fraction: float = 0.5, split_seed: int = 0,
                              s_hat: float | None = None, exact_losses=None,
                              exact_proxies=None) -> SubsampledBound:
    """Freedman bound (Thm 3.1 / Lemma 3.2) about all n_tokens = D tokens from m sampled pairs.

    losses, proxies: X, Y on m pairs drawn uniformly with replacement from the D training tokens
    (smoothed, bounded quantities only); loss_range: Delta >= X - Y; loss_bounds: (x_lo, x_hi)
    containing every X (e.g. (0, log(V/alpha))); proxy_bounds: likewise for Y (default
    loss_bounds).  delta_split: the fraction of delta given to the martingale statement (*); the
    rest certifies the subsample, half to Hoeffding and half to Bernstein.  s_hat is chosen on
    the selection half (predicted final bound, exhaustive over K) unless given; a given s_hat
    must be a point of K chosen without looking at the certification half.

    Stratified use (calibration windows): exact_losses/exact_proxies hold X, Y on *every* target
    of a stratum fixed before sampling (e.g. the quantizer's calibration windows); the m pairs are
    then uniform over the other n_tokens - n_exact targets, and the full-data mean of Z is
    (sum_exact Z + (D - n_exact) * certified sampled mean) / D.  The exact part needs no correction.
    """
    x_lo, x_hi = _bounds("loss_bounds", loss_bounds)
    proxy_bounds = (x_lo, x_hi) if proxy_bounds is None else proxy_bounds
    y_lo, y_hi = _bounds("proxy_bounds", proxy_bounds)
    x, a, loss_range = scaled_differences(losses, proxies, loss_range)
    y = finite_array("proxies", proxies)
    same_length(losses=x, proxies=y)
    _check_within("losses", x, x_lo, x_hi)
    _check_within("proxies", y, y_lo, y_hi)
    n_tokens = positive_int("n_tokens", n_tokens)
    if (exact_losses is None) != (exact_proxies is None):
        raise ValueError("exact_losses and exact_proxies must be given together")
    if exact_losses is not None and len(exact_losses) > 0:
        xe, ae, _ = scaled_differences(exact_losses, exact_proxies, loss_range)
        _check_within("exact_losses", xe, x_lo, x_hi)
        _check_within("exact_proxies", finite_array("exact_proxies", exact_proxies), y_lo, y_hi)
        if len(xe) >= n_tokens:
            raise ValueError(f"the exact stratum ({len(xe)} targets) must be smaller than n_tokens = {n_tokens}")
    else:
        xe = ae = np.zeros(0)
    weight_exact = len(xe) / n_tokens
    delta = probability("delta", delta)
    split = probability("delta_split", delta_split)
    delta_m, delta_sub = delta * split, delta * (1.0 - split)
    delta_method = delta_sub / 2.0  # Hoeffding and Bernstein both reported, tighter used
    grid_size = positive_int("grid_size", grid_size)
    complexity = freedman_complexity(delta_m, n_tokens, grid_size, complexity_nats)
    a_min, a_max = a_range(loss_range, (x_lo, x_hi), (y_lo, y_hi))

    sel, cert = split_sample(len(x), selection_fraction, split_seed)
    n_cert = len(cert)
    grid = freedman_grid(grid_size)
    if s_hat is None:
        s_hat = _select_s(x[sel], a[sel], grid, complexity, loss_range, (x_lo, x_hi),
                          a_min, a_max, n_cert, delta_method)
    else:
        s_hat = finite_scalar("s_hat", s_hat)
        if not np.any(np.isclose(grid, s_hat, rtol=0.0, atol=1e-12)):
            raise ValueError(f"s_hat must be a point of the grid K (grid_size={grid_size})")

    z_lo, z_hi = z_range(s_hat, loss_range, (x_lo, x_hi), (y_lo, y_hi))
    width = z_hi - z_lo
    vc = v(s_hat * a[cert])
    z = x[cert] + loss_range / s_hat * vc
    z_mean, z_var = float(z.mean()), float(z.var(ddof=1))
    mean_v = float(vc.mean())
    hoeff = hoeffding_correction(n_cert, width, delta_method)
    bern = bernstein_correction(z_var, n_cert, width, delta_method)
    method, corr = ("bernstein", bern) if bern < hoeff else ("hoeffding", hoeff)
    complexity_term = loss_range * complexity / s_hat
    if len(xe):  # exact stratum: its Z mean enters with weight n_exact / D, uncorrected
        z_exact = float((xe + loss_range / s_hat * v(s_hat * ae)).mean())
        z_mean = weight_exact * z_exact + (1.0 - weight_exact) * z_mean
        hoeff, bern, corr = ((1.0 - weight_exact) * c for c in (hoeff, bern, corr))
    freedman_part = z_mean + complexity_term
    sqrt_c = math.sqrt(complexity)
    sigma = loss_range * sqrt_c * (1.0 - s_hat) / s_hat + loss_range / sqrt_c * mean_v / s_hat
    return SubsampledBound(
        s_hat=s_hat, complexity=complexity, complexity_term=complexity_term,
        empirical_mean=float(x[cert].mean()), mean_v=mean_v, z_mean=z_mean, z_variance=z_var,
        z_low=z_lo, z_high=z_hi, a_min=a_min, a_max=a_max, sigma=sigma,
        freedman_part=freedman_part, hoeffding_correction=hoeff, bernstein_correction=bern,
        method=method, correction=corr, bound=freedman_part + corr, loss_range=loss_range,
        n_selection=len(sel), n_certification=n_cert, n_tokens=n_tokens, grid_size=grid_size,
        complexity_nats=float(complexity_nats), delta=delta, delta_martingale=delta_m,
        delta_subsample=delta_sub, delta_per_method=delta_method, n_exact=len(xe),
    )
