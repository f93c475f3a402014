"""Prequential (information-transfer) complexity, Sec. 5.2 eq. (5), and the bound it feeds (Sec. 5.3).

    K(h) log 2  <=  sum_{k<=D} [R_{h_{k-1}}(X_k | X_<k) - R_{h_D}(X_k | X_<k)]          (eq. 5)

First sum (prequential code length of the training stream): with checkpoints at tokens seen
0 = t_0 < t_1 < ..., token k in [t_i, t_{i+1}) is coded with h_{t_i} instead of h_{k-1}, i.e. the
left Riemann sum  sum_i (t_{i+1} - t_i) * loss_i,  loss_i = mean loss of h_{t_i} on the training
tokens [t_i, t_{i+1}) it has not yet trained on, integrated only up to the bounded checkpoint's D.
On a decreasing loss curve the older h_{t_i} codes its block worse than h_{k-1} would, so the
left sum over-estimates (conservative for an upper bound); it is itself the length of a coarser
prequential code (the receiver retrains to t_i on decoded tokens).
Second sum: D * (the bounded checkpoint's mean loss on its *own* D training tokens).  A held-out
loss is larger than the training loss, so it would shrink the estimate (anti-conservative).
K(X | h) is only estimated by that second sum (Sec. 5.2, "not a strict lower bound"), so the
result is an *estimate*: certified=False, and so is every bound built on it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._validate import finite_array, non_negative, positive_int, same_length
from .freedman import FreedmanBound, freedman_bound, freedman_complexity
from .subsample import SubsampledBound, subsampled_freedman_bound


@dataclass(frozen=True)
class PrequentialComplexity:
    """Eq. (5) estimate of K(h) log 2 (nats) and K(h) (bits).  Never certified."""

    nats: float
    bits: float
    prequential_nats: float   # left Riemann sum of the loss curve up to D
    final_nats: float         # D * bounded checkpoint's training loss
    n_tokens: int
    n_intervals: int
    certified: bool = False
    note: str = "eq. (5) estimate: K(X|h) is estimated, not bounded; left Riemann sum"

    def complexity(self, delta: float, grid_size: int = 1000) -> float:
        """C = (K(h) log 2 + log(|K|/delta)) / D (Sec. 5.3), e.g. to pick the smoothing alpha."""
        return freedman_complexity(delta, self.n_tokens, grid_size, self.nats)


def prequential_complexity(tokens_seen, next_chunk_losses, n_tokens: int, train_loss: float
                           ) -> PrequentialComplexity:
    """K(h) log 2 estimate from a checkpointed loss curve (Sec. 5.2, eq. 5).

    tokens_seen: t_0 = 0 < t_1 < ... (checkpoints; those at or beyond D are ignored);
    next_chunk_losses[i]: mean NLL (nats) of h_{t_i} on the training tokens [t_i, t_{i+1})
    (for the last checkpoint before D: on [t_i, D)); n_tokens: D of the bounded checkpoint;
    train_loss: the bounded checkpoint's mean NLL on its own D training tokens.
    """
    t = finite_array("tokens_seen", tokens_seen)
    losses = finite_array("next_chunk_losses", next_chunk_losses)
    same_length(tokens_seen=t, next_chunk_losses=losses)
    if t[0] != 0.0:
        raise ValueError(f"tokens_seen must start at 0 (the initial model), got {t[0]!r}")
    if np.any(np.diff(t) <= 0):
        raise ValueError("tokens_seen must be strictly increasing")
    if np.any(losses < 0):
        raise ValueError("next_chunk_losses must be >= 0 (NLL in nats)")
    d = positive_int("n_tokens", n_tokens)
    r_d = non_negative("train_loss", train_loss)
    keep = t < d
    left = t[keep]
    right = np.minimum(np.append(t[1:], math.inf)[keep], d)
    area = float(np.sum((right - left) * losses[keep]))
    final = d * r_d
    nats = area - final
    if nats < 0:
        raise ValueError(
            f"train_loss = {train_loss!r} exceeds the mean prequential loss {area / d!r}: "
            "inconsistent inputs (is train_loss measured on the checkpoint's own training tokens?)"
        )
    return PrequentialComplexity(nats=nats, bits=nats / math.log(2.0), prequential_nats=area,
                                 final_nats=final, n_tokens=d, n_intervals=int(keep.sum()))


@dataclass(frozen=True)
class PrequentialBound:
    """Freedman bound with C from eq. (5), for the smoothed *unquantized* model (Sec. 5.3).

    No quantization-gap term: h itself is bounded.  certified=False because K(h) is an estimate.
    """

    complexity: PrequentialComplexity
    result: Any  # FreedmanBound or SubsampledBound
    bound: float
    certified: bool = False
    note: str = "complexity from the eq. (5) prequential estimate; not a certified bound"


def prequential_bound(losses, proxies, loss_range: float, delta: float,
                      complexity: PrequentialComplexity, grid_size: int = 1000,
                      loss_bounds=None, **subsample_kwargs) -> PrequentialBound:
    """Sec. 5.3: Lemma 3.2 / Thm 3.1 on the smoothed unquantized model with L(h) = K(h) log 2.

    losses, proxies: smoothed losses X and proxies Y of h (smoothed with alpha from
    ``complexity.complexity(delta, grid_size)``); loss_range: Delta.  With loss_bounds the inputs
    are treated as a subsample of the D tokens and go through ``subsampled_freedman_bound``
    (extra keyword arguments are passed on); otherwise their means stand in for the D-token means.
    """
    if not isinstance(complexity, PrequentialComplexity):
        raise ValueError(f"complexity must be a PrequentialComplexity, got {type(complexity)!r}")
    if loss_bounds is None:
        if subsample_kwargs:
            raise ValueError(f"unexpected arguments without loss_bounds: {sorted(subsample_kwargs)}")
        res: FreedmanBound | SubsampledBound = freedman_bound(
            losses, proxies, loss_range, delta, complexity.nats, grid_size, complexity.n_tokens)
    else:
        res = subsampled_freedman_bound(losses, proxies, loss_range, delta, complexity.n_tokens,
                                        loss_bounds, complexity_nats=complexity.nats,
                                        grid_size=grid_size, **subsample_kwargs)
    if hasattr(res, "certified"):
        # K(h) is an eq. (5) estimate, so nothing inside this result certifies anything either
        res = dataclasses.replace(res, certified=False)
    return PrequentialBound(complexity=complexity, result=res, bound=float(res.bound))
