"""Per-target losses and entropies of a causal LM on whole training windows (data/order.py).

One forward pass over window c yields every target of the window, each predicted from the
window's own inputs 0..j with the trainer's attention mask (block-diagonal per document when
the order has segments, plain causal otherwise) and default positions: the context rule of
docs/bounds.md, identical for every evaluation mode.  For each target x with model distribution
p over the full logit dimension V:

    loss     X = -log p(x)          entropy  Y = H(p)
    and for each smoothing weight alpha (Lemma 3.3, q = (1 - alpha) p + alpha / V):
    smoothed_loss[alpha] = -log q(x)    smoothed_entropy[alpha] = H(q)

Logits come out in the model's dtype; log-softmax, entropies and smoothing are computed in
float64 (so near-one-hot and near-uniform predictions at V = 50,304 stay inside the exact ranges
[H_min(alpha), log V] that the certificates check), chunked over rows to bound memory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from genbound_assets.data.order import IGNORE, WindowBatch, WindowOrder

__all__ = ["WindowLosses", "window_losses", "attention_mask"]

_HEAD_CHUNK_ELEMS = 1 << 24      # float64 logits held at once (rows * V)


@dataclass(frozen=True)
class WindowLosses:
    """Per-target arrays in (window order given, column) order; float64 nats."""

    window: np.ndarray            # int64: window index of each target
    column: np.ndarray            # int16: column j of the target inside its window
    loss: np.ndarray
    entropy: np.ndarray | None       # None when not asked for
    vocab_size: int
    smoothed_loss: dict[float, np.ndarray] = field(default_factory=dict)
    smoothed_entropy: dict[float, np.ndarray] = field(default_factory=dict)
    wall_s: float = 0.0

    def __len__(self) -> int:
        return len(self.window)


def attention_mask(segments: np.ndarray, dtype: torch.dtype) -> torch.Tensor | None:
    """Additive (n, 1, T, T) mask: causal within a segment; None when every row is one segment
    (then the model's own causal mask is the same thing).  The trainer's rule (families/suite.py)."""
    if segments is None or np.all(segments == segments[:, :1]):
        return None
    T = segments.shape[1]
    allowed = (segments[:, :, None] == segments[:, None, :]) & np.tril(np.ones((T, T), dtype=bool))[None]
    m = torch.zeros(allowed.shape, dtype=dtype)
    m[torch.from_numpy(~allowed)] = torch.finfo(dtype).min
    return m[:, None]


def _device_dtype(model) -> tuple[torch.device, torch.dtype]:
    p = next(p for p in model.parameters() if p.is_floating_point())
    return p.device, p.dtype


def window_losses(model, order: WindowOrder, windows: Sequence[int] | np.ndarray,
                  alphas: Sequence[float] = (), *, batch_size: int = 32, entropy: bool = True,
                  progress: Callable[[int, int], None] | None = None) -> WindowLosses:
    """X, Y (and smoothed X, Y at each alpha) of ``model`` on every target of ``windows``.

    ``windows`` may repeat a window (a sampled design with replacement); each occurrence is
    returned (computed once).  ``entropy=False`` skips the unsmoothed entropy Y (``entropy`` is
    then None): the certificates use X of h and h_q and X, Y of the smoothed h_q only.  ``progress(done, total)`` is called after each batch.
    Raises ValueError for a token id outside the model's vocabulary and FloatingPointError for
    non-finite logits.
    """
    t0 = time.perf_counter()
    idx = np.asarray(windows, dtype=np.int64).ravel()
    alpha_list = [float(a) for a in alphas]
    for a in alpha_list:
        if not (0.0 < a < 1.0):
            raise ValueError(f"smoothing alpha must lie in (0, 1), got {a}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    vocab = int(model.config.vocab_size)
    uniq, inverse = np.unique(idx, return_inverse=True)
    dev, dt = _device_dtype(model)

    per_window: list[dict[str, np.ndarray]] = [None] * len(uniq)  # type: ignore[list-item]
    log_keep = [math.log1p(-a) for a in alpha_list]
    log_unif = [math.log(a / vocab) for a in alpha_list]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for b0 in range(0, len(uniq), int(batch_size)):
                batch: WindowBatch = order.batch(uniq[b0:b0 + int(batch_size)])
                top = int(max(batch.inputs.max(), batch.labels.max())) if len(batch) else 0
                if top >= vocab:
                    raise ValueError(f"token id {top} in windows {batch.index[:3].tolist()}... is "
                                     f"outside the model's vocabulary [0, {vocab})")
                ids = torch.from_numpy(batch.inputs).to(dev)
                mask = attention_mask(batch.segments, dt)
                logits = model(input_ids=ids, attention_mask=None if mask is None else mask.to(dev),
                               use_cache=False).logits
                if logits.shape[-1] != vocab:
                    raise ValueError(f"model logit dimension {logits.shape[-1]} != config.vocab_size {vocab}")
                rows, cols = np.nonzero(batch.labels != IGNORE)
                flat = torch.from_numpy(rows * batch.labels.shape[1] + cols).to(dev)
                lg = logits.reshape(-1, vocab).index_select(0, flat)
                tgt = torch.from_numpy(batch.labels[rows, cols]).to(dev)
                out = _reduce(lg, tgt, log_keep, log_unif, entropy)
                for i in range(len(batch)):
                    sel = rows == i
                    per_window[b0 + i] = {"column": cols[sel].astype(np.int16),
                                          **{k: v[sel] for k, v in out.items()}}
                if progress is not None:
                    progress(min(b0 + int(batch_size), len(uniq)), len(uniq))
    finally:
        model.train(was_training)

    counts = np.array([len(per_window[inverse[i]]["column"]) for i in range(len(idx))], dtype=np.int64)
    window = np.repeat(idx, counts)
    parts = [per_window[j] for j in inverse]

    def cat(key):
        return np.concatenate([p[key] for p in parts]) if parts else np.zeros(0)

    res = WindowLosses(
        window=window, column=cat("column").astype(np.int16), loss=cat("loss"),
        entropy=cat("entropy") if entropy else None, vocab_size=vocab,
        smoothed_loss={a: cat(f"sl{k}") for k, a in enumerate(alpha_list)},
        smoothed_entropy={a: cat(f"se{k}") for k, a in enumerate(alpha_list)},
        wall_s=time.perf_counter() - t0)
    checked = [res.loss] + ([res.entropy] if entropy else []) + list(res.smoothed_loss.values()) \
        + list(res.smoothed_entropy.values())
    if not all(np.isfinite(a).all() for a in checked):
        raise FloatingPointError("the model produced non-finite log-probabilities")
    return res


def _reduce(logits: torch.Tensor, target: torch.Tensor, log_keep, log_unif,
            entropy: bool = True) -> dict[str, np.ndarray]:
    """float64 loss (and entropy, and smoothed loss/entropy per alpha) for each row of logits.

    Rows are processed in chunks of ~2^20 float64 elements whose buffers are reused (they stay
    in cache; fresh arrays per chunk cost ~4x in page faults); q = (1 - a) p + a/V is formed
    directly.  Without ``entropy`` and alphas only log-sum-exp and the target's logit are needed.
    A non-finite logit makes some output non-finite: the caller checks the outputs."""
    n, vocab = logits.shape
    rows = max(1, (1 << 20) // vocab)
    m = min(rows, n)
    dev = logits.device
    keeps = [math.exp(k) for k in log_keep]
    unifs = [math.exp(u) for u in log_unif]
    full = entropy or bool(keeps)
    lp_buf = torch.empty((m, vocab), dtype=torch.float64, device=dev)
    p_buf = torch.empty((m, vocab), dtype=torch.float64, device=dev) if full else None
    q_buf = torch.empty((m, vocab), dtype=torch.float64, device=dev) if keeps else None
    lq_buf = torch.empty((m, vocab), dtype=torch.float64, device=dev) if keeps else None
    keys = ["loss"] + (["entropy"] if entropy else []) + \
        [f"sl{i}" for i in range(len(keeps))] + [f"se{i}" for i in range(len(keeps))]
    out = {k: np.empty(n) for k in keys}
    for c0 in range(0, n, rows):
        c1 = min(n, c0 + rows)
        k = c1 - c0
        lp = lp_buf[:k]
        lp.copy_(logits[c0:c1])
        lp -= lp.amax(-1, keepdim=True)
        if not full:   # X = logsumexp(l) - l_x only
            lpx = lp.gather(1, target[c0:c1, None])[:, 0] - torch.logsumexp(lp, -1)
            out["loss"][c0:c1] = (-lpx).cpu().numpy()
            continue
        p = p_buf[:k]
        torch.exp(lp, out=p)
        z = p.sum(-1, keepdim=True)
        lp -= torch.log(z)
        p /= z
        lpx = lp.gather(1, target[c0:c1, None])[:, 0]
        out["loss"][c0:c1] = (-lpx).cpu().numpy()
        if entropy:
            out["entropy"][c0:c1] = (-torch.linalg.vecdot(p, lp)).cpu().numpy()
        for i, (kp, u) in enumerate(zip(keeps, unifs, strict=True)):
            q, lq = q_buf[:k], lq_buf[:k]
            torch.mul(p, kp, out=q).add_(u)
            torch.log(q, out=lq)
            out[f"sl{i}"][c0:c1] = (-torch.log(kp * lpx.exp() + u)).cpu().numpy()
            out[f"se{i}"][c0:c1] = (-torch.linalg.vecdot(q, lq)).cpu().numpy()
    return out
