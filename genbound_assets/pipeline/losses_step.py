"""Step (b): the bound's data -> per-target X, Y of h, of h_q and of the smoothed h_q.

Evaluated on the design of pipeline/design.py with the context rule of data/order.py:

* ``h`` (float checkpoint): loss on every design target (R̂_h, the quantization gap);
* ``q`` (the chosen configuration): loss, and smoothed loss/entropy at its α (fixed by the code
  length before this step: the certificates' X, Y);
* ``ref`` (the paper-recipe configuration) on the reference pairs only: h's loss, h_q's loss and
  the smoothed loss/entropy at the nominal α.

Each distinct window is run through each model once, whatever the number of draws hitting it.
No Dagster, no database: the result is arrays (storage/records.py writes them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from genbound_assets.data.order import WindowOrder
from genbound_assets.measure.window_losses import WindowLosses, window_losses

from .design import Design

__all__ = ["TokenLossSet", "evaluate_design", "ARRAY_DTYPES"]

# name -> dtype of every per-target array a TokenLossSet holds (storage keeps exactly these)
ARRAY_DTYPES: dict[str, str] = {
    "window": "<i8", "column": "<i2", "draw": "<i4",
    "h_loss": "<f8", "q_loss": "<f8", "q_sq_loss": "<f8", "q_sq_entropy": "<f8",
    "ref_window": "<i8", "ref_column": "<i2", "ref_h_loss": "<f8", "ref_q_loss": "<f8",
    "ref_sq_loss": "<f8", "ref_sq_entropy": "<f8",
}


@dataclass
class TokenLossSet:
    """Per-target arrays of one checkpoint's certificate data (float64 nats).

    Design targets (``window``, ``column``, ``draw``, ``h_loss``, ``q_loss``, ``q_sq_loss``,
    ``q_sq_entropy``): in the ``windows`` design every target of every draw, then the exact
    stratum with draw = -1; in the ``exact`` design every trained target once (draw = -1).
    Reference pairs (``ref_*``): one target per pair.
    """

    design: str
    n_train_tokens: int              # D
    n_draws: int                     # m (0: exact)
    alpha: float
    alpha_ref: float | None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    vocab_size: int = 0
    wall_s: float = 0.0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    @property
    def sampled(self) -> np.ndarray:
        return self.arrays["draw"] >= 0

    @property
    def exact(self) -> np.ndarray:
        return self.arrays["draw"] < 0

    @property
    def n_exact(self) -> int:
        return int(self.exact.sum())

    def check(self) -> None:
        """Every array present, aligned, finite (raises ValueError naming the array)."""
        n = len(self.arrays.get("window", ()))
        m = len(self.arrays.get("ref_window", ()))
        for name in ARRAY_DTYPES:
            if name not in self.arrays:
                raise ValueError(f"token loss set lacks array {name!r}")
            want = m if name.startswith("ref_") else n
            if len(self.arrays[name]) != want:
                raise ValueError(f"token loss array {name!r} has {len(self.arrays[name])} rows, "
                                 f"expected {want}")
            if name.startswith("ref_") and self.alpha_ref is None:
                continue   # no reference configuration: those arrays are NaN by design
            if self.arrays[name].dtype.kind == "f" and not np.isfinite(self.arrays[name]).all():
                raise ValueError(f"token loss array {name!r} holds non-finite values")


def _lookup(res: WindowLosses) -> dict[int, slice]:
    """window -> slice of res's arrays (res computed on unique, sorted windows)."""
    w = res.window
    if len(w) == 0:
        return {}
    edges = np.flatnonzero(np.diff(w)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(w)]])
    return {int(w[a]): slice(int(a), int(b)) for a, b in zip(starts, ends, strict=True)}


def _gather(res: WindowLosses, where: dict[int, slice], windows: np.ndarray, key) -> np.ndarray:
    arr = key(res)
    return np.concatenate([arr[where[int(c)]] for c in windows]) if len(windows) else np.zeros(0)


def _pick(res: WindowLosses, where: dict[int, slice], windows: np.ndarray, columns: np.ndarray,
          key) -> np.ndarray:
    arr = key(res)
    out = np.empty(len(windows))
    for i, (c, j) in enumerate(zip(windows, columns, strict=True)):
        sl = where[int(c)]
        hit = np.flatnonzero(res.column[sl] == j)
        if hit.size != 1:
            raise ValueError(f"window {c} has no target at column {j}")
        out[i] = arr[sl][hit[0]]
    return out


def evaluate_design(h: torch.nn.Module, q: torch.nn.Module, alpha: float, order: WindowOrder,
                    design: Design, *, q_ref: torch.nn.Module | None = None,
                    alpha_ref: float | None = None, batch_size: int = 32,
                    progress: Callable[[str, int, int], None] | None = None) -> TokenLossSet:
    """Run h, h_q (and the reference h_q) over the design (module docstring)."""
    import time

    t0 = time.perf_counter()
    body = np.concatenate([design.windows, design.exact_windows]).astype(np.int64)
    ref_w = design.reference_windows.astype(np.int64)
    same_ref = q_ref is q
    need_h = np.unique(np.concatenate([body, ref_w]))
    need_q = np.unique(np.concatenate([body, ref_w])) if same_ref else np.unique(body)

    def run(name, model, windows, alphas):
        cb = None if progress is None else (lambda done, total: progress(name, done, total))
        # the certificates use X of h and h_q, and X, Y of the smoothed h_q: no unsmoothed Y
        return window_losses(model, order, windows, alphas, batch_size=batch_size, entropy=False,
                             progress=cb)

    rh = run("h", h, need_h, ())
    q_alphas = (alpha, alpha_ref) if same_ref and alpha_ref is not None else (alpha,)
    rq = run("h_q", q, need_q, q_alphas)
    wh, wq = _lookup(rh), _lookup(rq)

    # design targets, in draw order, then the exact stratum
    counts = np.array([wh[int(c)].stop - wh[int(c)].start for c in body], dtype=np.int64)
    n_sampled = len(design.windows) if design.kind == "windows" else 0
    draw_ids = np.full(len(body), -1, dtype=np.int32)
    draw_ids[:n_sampled] = np.arange(n_sampled, dtype=np.int32)
    draw = np.repeat(draw_ids, counts)
    arrays = {
        "window": np.repeat(body, counts), "draw": draw,
        "column": _gather(rh, wh, body, lambda r: r.column).astype(np.int16),
        "h_loss": _gather(rh, wh, body, lambda r: r.loss),
        "q_loss": _gather(rq, wq, body, lambda r: r.loss),
        "q_sq_loss": _gather(rq, wq, body, lambda r: r.smoothed_loss[alpha]),
        "q_sq_entropy": _gather(rq, wq, body, lambda r: r.smoothed_entropy[alpha]),
    }
    # reference pairs
    ref_c = design.reference_columns.astype(np.int64)
    arrays["ref_window"], arrays["ref_column"] = ref_w, ref_c.astype(np.int16)
    arrays["ref_h_loss"] = _pick(rh, wh, ref_w, ref_c, lambda r: r.loss)
    if q_ref is None or alpha_ref is None:
        for k in ("ref_q_loss", "ref_sq_loss", "ref_sq_entropy"):
            arrays[k] = np.full(len(ref_w), np.nan)
    else:
        if same_ref:
            rr, wr = rq, wq
        else:
            rr = run("h_q (reference)", q_ref, np.unique(ref_w), (alpha_ref,))
            wr = _lookup(rr)
        arrays["ref_q_loss"] = _pick(rr, wr, ref_w, ref_c, lambda r: r.loss)
        arrays["ref_sq_loss"] = _pick(rr, wr, ref_w, ref_c, lambda r: r.smoothed_loss[alpha_ref])
        arrays["ref_sq_entropy"] = _pick(rr, wr, ref_w, ref_c, lambda r: r.smoothed_entropy[alpha_ref])
    return TokenLossSet(design.kind, design.n_train_tokens, design.draws, float(alpha),
                        None if alpha_ref is None else float(alpha_ref), arrays,
                        int(h.config.vocab_size), time.perf_counter() - t0)
