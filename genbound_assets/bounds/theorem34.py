"""Theorem 3.4 (eq. 4) term by term, and a direct bound from the smoothed quantized model.

Validity of the sum (derivation in docs/bounds.md), with probability >= 1 - delta:

  Lemma 3.2 on sq = smooth(q, alpha):   R_sq <= R_sq_hat + Delta_s C + Sigma sqrt(C),  Delta_s = log(V/alpha)
  Lemma 3.3 token by token:             R_sq_hat + C Delta_s <= R_q_hat + C log V + sqrt(2C)
  identity:                             R_q_hat = R_h_hat + (R_q_hat - R_h_hat)

Sigma is Thm 3.1's, computed on X_k = -log p_sq(x_k | .) and Y_k = H(p_sq(. | .)) (the paper's
Sigma line mixes p_h, R_q and the A.5 variance bound; see docs).  The bounded quantity is R_sq,
the tokenwise population risk of the smoothed quantized model, not of h.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._validate import finite_array, non_negative, positive, positive_int, same_length
from .freedman import FreedmanBound, freedman_bound, freedman_complexity
from .loss_range import tight_loss_range
from .smoothing import (
    _alpha,
    _vocab,
    smoothed_worst_case_loss,
    smoothing_alpha,
    smoothing_cost_bound,
)

__all__ = [
    "Theorem34Terms",
    "DirectBound",
    "Tightening",
    "theorem34_complexity",
    "complexity_from_code_length",
    "theorem34_terms",
    "decomposed_bound",
    "direct_bound",
]

# Relative slack for float rounding when checking that inputs respect their analytic ranges.
_RANGE_TOL = 1e-9


def theorem34_complexity(n_params: int, n_train_tokens: int, bits: float, delta: float,
                         grid_size: int = 1000) -> float:
    """C = (N/D) b log 2 + log(|K|/delta)/D  (Thm 3.4; fixed-length code of N*b bits, App. A.2)."""
    n = positive_int("n_params", n_params)
    b = positive("bits", bits)
    return complexity_from_code_length(n * b, n_train_tokens, delta, grid_size)


def complexity_from_code_length(code_length_bits: float, n_train_tokens: int, delta: float,
                                grid_size: int = 1000) -> float:
    """C = (L_bits log 2 + log(|K|/delta)) / D  (Lemma 3.2; L_bits of a prefix-free code, or of a
    fixed-length code when the length is fixed in advance, App. A.2)."""
    bits = non_negative("code_length_bits", code_length_bits)
    d = positive_int("n_train_tokens", n_train_tokens)
    return freedman_complexity(delta, d, grid_size, bits * math.log(2.0))


@dataclass(frozen=True)
class Theorem34Terms:
    """Eq. (4): bound = empirical_risk + random_guess + loss_variation + smoothing + quantization_gap,
    an upper bound on R_sq (the smoothed quantized model's tokenwise population risk)."""

    empirical_risk: float        # R_h_hat
    random_guess: float          # C log V
    loss_variation: float        # Sigma sqrt(C)
    smoothing: float             # sqrt(2C)
    quantization_gap: float      # R_q_hat - R_h_hat
    complexity: float            # C
    sigma: float
    s_star: float | None         # Thm 3.1 grid point (None when Sigma was supplied)
    alpha: float                 # alpha*(C, V)
    loss_range: float            # Delta_s = log(V/alpha)
    bound: float
    empirical_risk_q: float
    vocab_size: int
    delta: float | None
    grid_size: int | None
    n_train_tokens: int | None
    smoothed_empirical_risk: float | None = None   # R_sq_hat of the sample (None when Sigma supplied)
    freedman: FreedmanBound | None = None

    @property
    def gap(self) -> float:
        """bound - R_h_hat."""
        return self.bound - self.empirical_risk


def theorem34_terms(empirical_risk_h: float, empirical_risk_q: float, sigma: float,
                    complexity: float, vocab_size: int, *, delta: float | None = None,
                    grid_size: int | None = None, n_train_tokens: int | None = None,
                    s_star: float | None = None, smoothed_empirical_risk: float | None = None,
                    freedman: FreedmanBound | None = None) -> Theorem34Terms:
    """Assemble eq. (4) from a given Sigma and C (e.g. the paper's Sec. 3.4 example, or Sigma from a fit).

    The result is a bound only if sigma is Thm 3.1's Sigma for the smoothed quantized model at this C.
    """
    r_h = non_negative("empirical_risk_h", empirical_risk_h)
    r_q = non_negative("empirical_risk_q", empirical_risk_q)
    sig = non_negative("sigma", sigma)
    v = _vocab(vocab_size)
    c = smoothing_alpha_checked_complexity(complexity, v)
    alpha = smoothing_alpha(c, v)
    random_guess = c * math.log(v)
    loss_variation = sig * math.sqrt(c)
    smoothing = smoothing_cost_bound(c, v)
    quant_gap = r_q - r_h
    bound = r_h + random_guess + loss_variation + smoothing + quant_gap
    return Theorem34Terms(
        empirical_risk=r_h, random_guess=random_guess, loss_variation=loss_variation,
        smoothing=smoothing, quantization_gap=quant_gap, complexity=c, sigma=sig, s_star=s_star,
        alpha=alpha, loss_range=smoothed_worst_case_loss(alpha, v), bound=bound,
        empirical_risk_q=r_q, vocab_size=v, delta=delta, grid_size=grid_size,
        n_train_tokens=n_train_tokens, smoothed_empirical_risk=smoothed_empirical_risk,
        freedman=freedman,
    )


def smoothing_alpha_checked_complexity(complexity, vocab_size: int) -> float:
    c = positive("complexity", complexity)
    smoothing_alpha(c, vocab_size)  # raises if C >= V - 1
    return c


def _smoothed_sample(losses, entropies, alpha: float, vocab_size: int):
    """Validate X_k = -log p_sq(x_k) in [0, log(V/alpha)] and Y_k = H(p_sq) in [0, log V]."""
    x = finite_array("smoothed_q_losses", losses)
    y = finite_array("smoothed_q_entropies", entropies)
    same_length(smoothed_q_losses=x, smoothed_q_entropies=y)
    x_max = smoothed_worst_case_loss(alpha, vocab_size)
    if x.min() < -_RANGE_TOL or x.max() > x_max * (1.0 + _RANGE_TOL):
        raise ValueError(
            f"smoothed_q_losses must lie in [0, log(V/alpha) = {x_max:.6g}] (smoothed with alpha = "
            f"{alpha:.6g}?), got [{x.min():.6g}, {x.max():.6g}]"
        )
    log_v = math.log(vocab_size)
    if y.min() < -_RANGE_TOL or y.max() > log_v * (1.0 + _RANGE_TOL):
        raise ValueError(
            f"smoothed_q_entropies must lie in [0, log V = {log_v:.6g}], got [{y.min():.6g}, {y.max():.6g}]"
        )
    return x, y


def decomposed_bound(empirical_risk_h: float, empirical_risk_q: float, smoothed_q_losses,
                     smoothed_q_entropies, *, vocab_size: int, delta: float, n_train_tokens: int,
                     n_params: int | None = None, bits: float | None = None,
                     code_length_bits: float | None = None, grid_size: int = 1000,
                     alpha: float | None = None, exhaustive: bool = False) -> Theorem34Terms:
    """Theorem 3.4 (eq. 4), each term separately.

    C from (n_params, bits) [Thm 3.4] or code_length_bits [Lemma 3.2]; alpha = smoothing_alpha(C, V);
    Sigma = Thm 3.1 on the smoothed quantized model's per-token losses X (-log p_sq of the observed
    token, smoothed with this alpha) and entropies Y = H(p_sq), Delta = log(V/alpha), n = D =
    n_train_tokens.  `alpha`, if given, is checked against alpha*(C, V) (catches losses smoothed
    with a stale alpha).  Means over the given arrays stand in for the D-token means: when they are
    a subsample, the caller must add the subsampling correction.
    """
    if (code_length_bits is None) == (n_params is None and bits is None):
        raise ValueError("give either code_length_bits or both n_params and bits")
    if code_length_bits is None:
        if n_params is None or bits is None:
            raise ValueError("n_params and bits must be given together")
        code_bits = positive_int("n_params", n_params) * positive("bits", bits)
    else:
        code_bits = non_negative("code_length_bits", code_length_bits)
    v = _vocab(vocab_size)
    d = positive_int("n_train_tokens", n_train_tokens)
    code_nats = code_bits * math.log(2.0)
    c = freedman_complexity(delta, d, grid_size, code_nats)
    a = smoothing_alpha(smoothing_alpha_checked_complexity(c, v), v)
    if alpha is not None and abs(_alpha(alpha) - a) > 1e-12 * a:
        raise ValueError(f"alpha = {alpha!r} differs from smoothing_alpha(C, V) = {a!r}")
    x, y = _smoothed_sample(smoothed_q_losses, smoothed_q_entropies, a, v)
    fb = freedman_bound(x, y, smoothed_worst_case_loss(a, v), delta, code_nats, grid_size, d,
                        exhaustive=exhaustive)
    return theorem34_terms(
        empirical_risk_h, empirical_risk_q, fb.sigma, fb.complexity, v, delta=float(delta),
        grid_size=fb.grid_size, n_train_tokens=d, s_star=fb.s_star,
        smoothed_empirical_risk=fb.empirical_mean, freedman=fb,
    )


@dataclass(frozen=True)
class Tightening:
    """Gain of the direct bound over eq. (4): absolute (nats/token) and relative to the bound and gap."""

    absolute: float
    relative_to_bound: float
    relative_to_gap: float


@dataclass(frozen=True)
class DirectBound:
    """R_sq <= R_sq_hat + Delta C + Sigma sqrt(C) (Lemma 3.2 on the smoothed quantized model, no Lemma 3.3 step)."""

    smoothed_empirical_risk: float  # R_sq_hat
    range_term: float               # Delta C
    loss_variation: float           # Sigma sqrt(C)
    bound: float
    complexity: float
    sigma: float
    s_star: float
    alpha: float
    loss_range: float
    loss_range_kind: str            # "tight", "worst_case" or "given"
    vocab_size: int
    delta: float
    freedman: FreedmanBound

    def tightening_vs(self, decomposed: Theorem34Terms) -> Tightening:
        """decomposed.bound - self.bound (> 0: the direct bound is tighter), for the same C and alpha."""
        if not isinstance(decomposed, Theorem34Terms):
            raise ValueError("decomposed must be a Theorem34Terms")
        if (decomposed.vocab_size != self.vocab_size
                or not math.isclose(decomposed.alpha, self.alpha, rel_tol=1e-9)):
            raise ValueError("decomposed must use the same vocab_size and alpha")
        gain = decomposed.bound - self.bound
        return Tightening(absolute=gain, relative_to_bound=gain / decomposed.bound,
                          relative_to_gap=gain / decomposed.gap if decomposed.gap > 0 else math.inf)


def direct_bound(smoothed_q_losses, smoothed_q_entropies, complexity: float, alpha: float,
                 vocab_size: int, delta: float, grid_size: int = 1000,
                 n_train_tokens: int | None = None, loss_range: float | str | None = None, *,
                 grid=None, exhaustive: bool = False) -> DirectBound:
    """Direct bound (beyond the paper): R_sq <= R_sq_hat + Delta C + Sigma sqrt(C) (Lemma 3.2, eq. 2).

    Uses the smoothed quantized model's actual per-token losses instead of eq. (20)'s worst case.
    alpha must be fixed before seeing the data (e.g. smoothing_alpha(C, V)); picking it from the
    data needs a union over the candidates (choices.py).
    complexity: C including log(grid_size/delta)/D (as from theorem34_complexity);
    loss_range: None or "tight" -> tight_loss_range(alpha, V); "worst_case" -> log(V/alpha);
    a number -> that Delta (must bound X - Y).  grid: explicit K in s-units (then |K| = len(grid)
    replaces grid_size inside C).  Reporting min(direct, decomposed) needs either identical t = s/Delta
    grids or delta halved for each (log 2); see docs/bounds.md.
    """
    v = _vocab(vocab_size)
    a = _alpha(alpha)
    c = positive("complexity", complexity)
    d_given = n_train_tokens is not None
    if loss_range is None or loss_range == "tight":
        rng, kind = tight_loss_range(a, v), "tight"
    elif loss_range == "worst_case":
        rng, kind = smoothed_worst_case_loss(a, v), "worst_case"
    elif isinstance(loss_range, str):
        raise ValueError(f"loss_range must be 'tight', 'worst_case' or a number, got {loss_range!r}")
    else:
        rng, kind = positive("loss_range", loss_range), "given"
    x, y = _smoothed_sample(smoothed_q_losses, smoothed_q_entropies, a, v)
    d = positive_int("n_train_tokens", n_train_tokens) if d_given else len(x)
    grid_size = positive_int("grid_size", grid_size)
    # C = (L + log(|K|/delta))/D  =>  L = C D - log(|K|/delta); L < 0 means C lacks the union term.
    base = freedman_complexity(delta, d, grid_size, 0.0)
    if c < base * (1.0 - 1e-12):
        raise ValueError(
            f"complexity = {complexity!r} is below log(grid_size/delta)/n_train_tokens = {base!r}"
        )
    code_nats = max(0.0, (c - base) * d)
    fb = freedman_bound(x, y, rng, delta, code_nats, grid_size, d, exhaustive=exhaustive, grid=grid)
    return DirectBound(
        smoothed_empirical_risk=fb.empirical_mean, range_term=rng * fb.complexity,
        loss_variation=fb.sigma * math.sqrt(fb.complexity), bound=fb.bound,
        complexity=fb.complexity, sigma=fb.sigma, s_star=fb.s_star, alpha=a, loss_range=rng,
        loss_range_kind=kind, vocab_size=v, delta=float(delta), freedman=fb,
    )
