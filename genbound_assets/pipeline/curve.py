"""A checkpoint's loss-curve point: the inputs of the prequential complexity (eq. 5).

    K(h) log 2  <=  sum_k [ R_{h_{k-1}}(X_k | X_<k) - R_{h_D}(X_k | X_<k) ]

* ``next_tokens``: the mean loss of checkpoint ``step`` on the windows the *next* update trains
  on (windows [W, W + B) with W = step · B), i.e. on tokens it has not trained on yet, with the
  training context rule (data/order.py).  At most ``max_windows`` of them (a seeded subset).
* ``held_sample``: the mean loss on a fixed set of windows, the same for every checkpoint of
  the family: the last windows of the training order (after every checkpoint of the local
  suite; for Pythia the final step's batch).  A smooth curve to look at, not an eq. 5 input.
"""

from __future__ import annotations

import math

import numpy as np

from genbound_assets.data.order import WindowOrder
from genbound_assets.measure.window_losses import window_losses

__all__ = ["NEXT_TOKENS", "HELD_SAMPLE", "curve_windows", "held_windows", "checkpoint_loss_rows"]

NEXT_TOKENS = "next_tokens"
HELD_SAMPLE = "held_sample"


def held_windows(order: WindowOrder, n: int) -> np.ndarray:
    """The last ``n`` windows of the order (fixed for the family)."""
    n = min(int(n), order.n_windows)
    return np.arange(order.n_windows - n, order.n_windows, dtype=np.int64)


def curve_windows(order: WindowOrder, step: int, max_windows: int, seed: int = 0) -> np.ndarray:
    """The windows of the update after ``step`` (at most ``max_windows``, a seeded subset)."""
    w0 = order.trained_windows(step)
    nxt = np.arange(w0, min(w0 + order.windows_per_step, order.n_windows), dtype=np.int64)
    if len(nxt) > max_windows:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(step)]))
        nxt = np.sort(rng.choice(nxt, size=int(max_windows), replace=False))
    return nxt


def checkpoint_loss_rows(model, order: WindowOrder, step: int, tokens_seen: int, curve_tokens: int,
                         *, batch_size: int = 32, seed: int = 0) -> list[dict]:
    """Rows of ``checkpoint_losses`` for one checkpoint (next_tokens when the data continues,
    and held_sample)."""
    max_w = max(1, math.ceil(curve_tokens / order.context_length))
    rows = []
    nxt = curve_windows(order, step, max_w, seed)
    if len(nxt):
        r = window_losses(model, order, nxt, batch_size=batch_size, entropy=False)
        rows.append({"step": int(step), "tokens_seen": int(tokens_seen), "eval_kind": NEXT_TOKENS,
                     "n_tokens": len(r), "mean_loss": float(r.loss.mean())})
    held = held_windows(order, max_w)
    r = window_losses(model, order, held, batch_size=batch_size, entropy=False)
    rows.append({"step": int(step), "tokens_seen": int(tokens_seen), "eval_kind": HELD_SAMPLE,
                 "n_tokens": len(r), "mean_loss": float(r.loss.mean())})
    return rows
