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

Sampled windows (``groups=``; docs/bounds.md, "Subsampling windows").  The unit of sampling may
be a training window w of n_w targets instead of one target: a uniform target of the sampled
population is drawn and the window holding it is evaluated whole, so window w is drawn with
probability n_w / D_P, and the window mean Zbar_w = (1/n_w) sum_{k in w} Z_k then has
E[Zbar] = (1/D_P) sum_k Z_k exactly, lies in the same [z_lo, z_hi], and the m draws are IID.  So
everything above holds with "draw" in place of "pair" and Zbar in place of Z: the split is a
split of the draws and Hoeffding / Bernstein are applied to the m_cert window means (never to
the m_cert * T tokens as if they were independent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ._validate import finite_array, finite_scalar, positive_int, probability, same_length
from .freedman import _argmin_on_grid, freedman_complexity, freedman_grid, scaled_differences, v

# samples outside the declared bounds by more than this are rejected (not smoothed / wrong V, a)
BOUNDS_TOLERANCE = 1e-9
_CHUNK = 2_000_000  # elements per block when scanning the grid on the selection half
# above this many (token x grid point) evaluations the selection scan is a ternary search over K
# instead of exhaustive: any rule for s_hat is valid (the statement (*) covers every s in K)
_EXHAUSTIVE_WORK = 100_000_000


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
    """Freedman bound about all D tokens certified from m sampled draws (module docstring).

    A draw is one target (``unit == "token"``) or one window of targets (``unit == "window"``).
    bound = freedman_part + correction, where freedman_part = z_mean + (Delta/s_hat) C is the
    Freedman bound at s_hat evaluated on the certification draws, and correction is the smaller of
    the Hoeffding and Bernstein corrections (each at delta_per_method).

    Every mean reported here is the one estimator the certificate uses (``sample_mean``): the
    exact stratum with weight n_exact/D plus, with weight 1 - n_exact/D, the mean over the
    certification draws of each draw's mean (a token draw's mean is its value).  In particular

        bound = empirical_mean + range_term + loss_variation_term + correction,
        range_term = Delta C,  loss_variation_term = Sigma sqrt(C),  correction >= 0,

    with Sigma = Delta sqrt(C)(1 - s_hat)/s_hat + (Delta/sqrt(C)) mean_v/s_hat (Thm 3.1's Sigma
    at s_hat, with mean_v the same stratified estimator of mean v(s_hat A)).  z_variance is the
    sample variance (ddof=1) of the certification draws' means of Z (sampled stratum only), the
    V_n of the Bernstein correction.
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
    unit: str = "token"          # what one draw is: "token" or "window"
    n_draws: int = 0             # m = n_selection + n_certification
    n_sample_tokens: int = 0     # targets in the sampled arrays (= m for unit "token")
    n_certification_tokens: int = 0
    # weight of each sampled target in the certification estimator (0 on selection draws,
    # 1/(n_certification * size of its draw) otherwise; sums to 1)
    token_weights: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def z_upper(self) -> float:
        """Certified upper bound on the full-data mean of Z(s_hat)."""
        return self.z_mean + self.correction

    @property
    def range_term(self) -> float:
        """Delta C: the first term of Thm 3.1's gap Delta C + Sigma sqrt(C)."""
        return self.loss_range * self.complexity

    @property
    def loss_variation_term(self) -> float:
        """Sigma sqrt(C) at s_hat (Thm 3.1, eq. 1) with the certificate's stratified mean_v."""
        return self.sigma * math.sqrt(self.complexity)

    def sample_mean(self, values, exact_values=None) -> float:
        """The certificate's estimator of a full-data mean, applied to another per-target quantity.

        values: aligned with the sampled arrays passed in (same draws, same order); exact_values:
        aligned with the exact stratum (required iff it was given).  Returns
        (n_exact/D) mean(exact_values) + (1 - n_exact/D) * sum_k token_weights[k] values[k], so
        that e.g. R_h, R_q reported next to this bound use the same draws and weights as it does.
        """
        if self.token_weights is None:
            raise ValueError("this result carries no token weights")
        vals = finite_array("values", values)
        if len(vals) != len(self.token_weights):
            raise ValueError(f"values has {len(vals)} entries, the certified sample has "
                             f"{len(self.token_weights)}")
        sampled = float(self.token_weights @ vals)
        if self.n_exact == 0:
            if exact_values is not None and len(exact_values) > 0:
                raise ValueError("exact_values given but the certificate has no exact stratum")
            return sampled
        if exact_values is None:
            raise ValueError(f"exact_values is required: the certificate has an exact stratum "
                             f"of {self.n_exact} targets")
        ev = finite_array("exact_values", exact_values)
        if len(ev) != self.n_exact:
            raise ValueError(f"exact_values has {len(ev)} entries, the exact stratum has "
                             f"{self.n_exact}")
        w = self.n_exact / self.n_tokens
        return w * float(ev.mean()) + (1.0 - w) * sampled


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


def check_groups(groups, n: int, name: str = "groups") -> tuple[np.ndarray, np.ndarray]:
    """Validate per-target draw ids (0..m-1, every id used) for n targets; return (ids, sizes).

    sizes[g] is the number of targets of draw g.  A window drawn twice is two draws, so ids
    label draws, not windows.
    """
    arr = np.asarray(groups)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} entries, the sample has {n} targets")
    if n == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer draw ids, got dtype {arr.dtype}")
    ids = arr.astype(np.int64, copy=False)
    if ids.min() < 0:
        k = int(np.flatnonzero(ids < 0)[0])
        raise ValueError(f"{name}[{k}] = {int(ids[k])} is negative; draw ids are 0..m-1")
    sizes = np.bincount(ids)
    if (sizes == 0).any():
        g = int(np.flatnonzero(sizes == 0)[0])
        raise ValueError(f"{name}: draw id {g} has no targets although id {len(sizes) - 1} is "
                         "used; draw ids must be exactly 0..m-1")
    return ids, sizes


def draw_means(values: np.ndarray, ids: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Mean of `values` over the targets of each draw (draw g: the targets with ids == g)."""
    return np.bincount(ids, weights=values, minlength=len(sizes)) / sizes


def _make_predictor(x, a, starts, sizes, xe, ae, w_exact, complexity, loss_range, x_width,
                    a_min, a_max, n_cert, delta_method):
    """pred(s) for an array of s: the final bound predicted from the selection draws (and the
    exact stratum, which is not random): w_E mean_E Z(s) + (1 - w_E)(mean of the selection draws'
    means of Z(s) + min(Hoeffding, Bernstein) at the certification size) + (Delta/s) C."""
    log1, log2 = math.log(1.0 / delta_method), math.log(2.0 / delta_method)
    n_sel = len(sizes)
    singletons = starts is None

    def pred(s: np.ndarray) -> np.ndarray:
        scale = (loss_range / s)[:, None]
        z = x[None, :] + scale * v(s[:, None] * a[None, :])
        zbar = z if singletons else np.add.reduceat(z, starts, axis=1) / sizes[None, :]
        mean = zbar.mean(axis=1)
        var = zbar.var(axis=1, ddof=1) if n_sel > 1 else np.zeros(len(s))
        v_lo, v_hi = _v_range(s, a_min, a_max)
        width = x_width + loss_range / s * (v_hi - v_lo)
        hoeff = width * math.sqrt(log1 / (2.0 * n_cert))
        bern = np.sqrt(2.0 * var * log2 / n_cert) + 7.0 * width * log2 / (3.0 * (n_cert - 1))
        sampled = mean + np.minimum(hoeff, bern)
        if len(xe):
            ze = (xe[None, :] + scale * v(s[:, None] * ae[None, :])).mean(axis=1)
            sampled = w_exact * ze + (1.0 - w_exact) * sampled
        return sampled + loss_range * complexity / s

    return pred


def _select_s(pred, grid: np.ndarray, n_elems: int) -> float:
    """argmin over K of pred (exhaustive in blocks, or a ternary search when that is too much)."""
    if n_elems * len(grid) > _EXHAUSTIVE_WORK:
        i = _argmin_on_grid(grid, lambda s: float(pred(np.array([s]))[0]), exhaustive=False)
        return float(grid[i])
    best = (math.inf, 0)
    step = max(1, _CHUNK // max(1, n_elems))
    for start in range(0, len(grid), step):
        p = pred(grid[start:start + step])
        i = int(np.argmin(p))
        if p[i] < best[0]:
            best = (float(p[i]), start + i)
    return float(grid[best[1]])


def subsampled_freedman_bound(losses, proxies, loss_range: float, delta: float, n_tokens: int,
                              loss_bounds, proxy_bounds=None, complexity_nats: float = 0.0,
                              grid_size: int = 1000, delta_split: float = 0.1,
                              selection_fraction: float = 0.5, split_seed: int = 0,
                              s_hat: float | None = None, exact_losses=None,
                              exact_proxies=None, groups=None) -> SubsampledBound:
    """Freedman bound (Thm 3.1 / Lemma 3.2) about all n_tokens = D tokens from m sampled draws.

    losses, proxies: X, Y on the sampled targets (smoothed, bounded quantities only);
    loss_range: Delta >= X - Y; loss_bounds: (x_lo, x_hi) containing every X (e.g.
    (0, log(V/alpha))); proxy_bounds: likewise for Y (default loss_bounds).  delta_split: the
    fraction of delta given to the martingale statement (*); the rest certifies the subsample,
    half to Hoeffding and half to Bernstein.  s_hat is chosen on the selection draws (predicted
    final bound over K) unless given; a given s_hat must be a point of K chosen without looking
    at the certification draws.

    groups=None: each target is one draw, uniform with replacement over the sampled population.
    groups=ids (int, one per target): ids[k] = g says target k belongs to draw g in 0..m-1, where
    a draw is a *window* drawn with probability proportional to its number of targets (a uniform
    target of the sampled population, then the window that holds it) and every target of the
    window is passed; a window drawn twice is two draws (its targets passed twice).  The split,
    the selection of s_hat and both inequalities then work on the draws' window means
    (docs/bounds.md, "Subsampling windows").

    Stratified use (calibration windows): exact_losses/exact_proxies hold X, Y on *every* target
    of a stratum fixed before sampling (e.g. the quantizer's calibration windows); the draws are
    then uniform over the other n_tokens - n_exact targets (windows: over the windows outside the
    stratum, by size), and the full-data mean of Z is
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
    if groups is None:
        ids, sizes, unit = np.arange(len(x)), np.ones(len(x), dtype=np.int64), "token"
    else:
        ids, sizes = check_groups(groups, len(x))
        unit = "window"
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

    m = len(sizes)
    sel, cert = split_sample(m, selection_fraction, split_seed)  # indices of draws
    n_cert = len(cert)
    is_sel = np.zeros(m, dtype=bool)
    is_sel[sel] = True
    tok_sel = is_sel[ids]
    grid = freedman_grid(grid_size)
    if s_hat is None:
        if unit == "token":
            sel_tok, starts = np.flatnonzero(tok_sel), None
        else:  # targets of the selection draws, sorted by draw, and where each draw starts
            sel_tok = np.flatnonzero(tok_sel)
            sel_tok = sel_tok[np.argsort(ids[sel_tok], kind="stable")]
            starts = np.concatenate([[0], np.cumsum(sizes[sel])[:-1]])
        pred = _make_predictor(x[sel_tok], a[sel_tok], starts, sizes[sel], xe, ae, weight_exact,
                               complexity, loss_range, x_hi - x_lo, a_min, a_max, n_cert,
                               delta_method)
        s_hat = _select_s(pred, grid, len(sel_tok) + len(xe))
    else:
        s_hat = finite_scalar("s_hat", s_hat)
        if not np.any(np.isclose(grid, s_hat, rtol=0.0, atol=1e-12)):
            raise ValueError(f"s_hat must be a point of the grid K (grid_size={grid_size})")

    z_lo, z_hi = z_range(s_hat, loss_range, (x_lo, x_hi), (y_lo, y_hi))
    width = z_hi - z_lo  # a draw's mean of Z lies in [z_lo, z_hi] too
    tok_cert = ~tok_sel
    cert_pos = np.full(m, -1, dtype=np.int64)
    cert_pos[cert] = np.arange(n_cert)
    cid = cert_pos[ids[tok_cert]]
    vc = v(s_hat * a[tok_cert])
    zbar = draw_means(x[tok_cert] + loss_range / s_hat * vc, cid, sizes[cert])
    z_var = float(zbar.var(ddof=1))
    weights = np.zeros(len(x))
    weights[tok_cert] = 1.0 / (n_cert * sizes[cert][cid])
    weights.setflags(write=False)
    hoeff = hoeffding_correction(n_cert, width, delta_method)
    bern = bernstein_correction(z_var, n_cert, width, delta_method)
    method, corr = ("bernstein", bern) if bern < hoeff else ("hoeffding", hoeff)
    complexity_term = loss_range * complexity / s_hat
    # the certificate's estimator: exact stratum (weight n_exact/D, uncorrected) + draw means
    x_mean, mean_v = float(weights[tok_cert] @ x[tok_cert]), float(weights[tok_cert] @ vc)
    z_mean = float(zbar.mean())
    if len(xe):
        ve = v(s_hat * ae)
        x_mean = weight_exact * float(xe.mean()) + (1.0 - weight_exact) * x_mean
        mean_v = weight_exact * float(ve.mean()) + (1.0 - weight_exact) * mean_v
        z_exact = float((xe + loss_range / s_hat * ve).mean())
        z_mean = weight_exact * z_exact + (1.0 - weight_exact) * z_mean
        hoeff, bern, corr = ((1.0 - weight_exact) * c for c in (hoeff, bern, corr))
    freedman_part = z_mean + complexity_term
    sqrt_c = math.sqrt(complexity)
    sigma = loss_range * sqrt_c * (1.0 - s_hat) / s_hat + loss_range / sqrt_c * mean_v / s_hat
    return SubsampledBound(
        s_hat=s_hat, complexity=complexity, complexity_term=complexity_term,
        empirical_mean=x_mean, mean_v=mean_v, z_mean=z_mean, z_variance=z_var,
        z_low=z_lo, z_high=z_hi, a_min=a_min, a_max=a_max, sigma=sigma,
        freedman_part=freedman_part, hoeffding_correction=hoeff, bernstein_correction=bern,
        method=method, correction=corr, bound=freedman_part + corr, loss_range=loss_range,
        n_selection=len(sel), n_certification=n_cert, n_tokens=n_tokens, grid_size=grid_size,
        complexity_nats=float(complexity_nats), delta=delta, delta_martingale=delta_m,
        delta_subsample=delta_sub, delta_per_method=delta_method, n_exact=len(xe),
        unit=unit, n_draws=m, n_sample_tokens=len(x),
        n_certification_tokens=int(tok_cert.sum()), token_weights=weights,
    )
