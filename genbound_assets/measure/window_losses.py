"""Per-target losses and entropies of a causal LM on whole training windows (data/order.py).

One forward pass over window c yields every target of the window, each predicted from the
window's own inputs 0..j with the trainer's attention mask (block-diagonal per document when
the order has segments, plain causal otherwise) and default positions: the context rule of
docs/bounds.md, identical for every evaluation mode.  For each target x with model distribution
p over the full logit dimension V:

    loss     X = -log p(x)          entropy  Y = H(p)
    and for each smoothing weight alpha (Lemma 3.3, q = (1 - alpha) p + alpha / V):
    smoothed_loss[alpha] = -log q(x)    smoothed_entropy[alpha] = H(q)

Logits come out in the model's dtype and are reduced in float32 (float64 when the model runs in
float64), chunked over rows so that the buffers stay in cache.  Two rules make the rounding of
that reduction harmless to the certificates (derivation: docs/bounds.md, "Rounding of the
reduction"):

* X is an upper bound of the exact loss of the logits: X = log(Z (1 + eta)) - (l_x - max l), with
  Z the sum of the float32 exponentials (float32 partial sums of 8, then float64) and
  eta = 2^-19 above the rounding error's bound, so X >= -log softmax(l)_x and exceeds it by at
  most 3.5e-6 nats.  A loss that is too
  high only loosens a bound; the smoothed loss follows X monotonically, so it stays <= log(V/alpha).
* Y is a proxy, which Thm 3.1 needs only to be predictable and >= H_min: the float32 entropy
  is clamped into [H_min(alpha), log V] ([0, log V] unsmoothed), so the loss range
  Delta = log(V/alpha) - H_min is exact whatever the rounding.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from genbound_assets.bounds.loss_range import smoothed_min_entropy
from genbound_assets.data.order import IGNORE, WindowBatch, WindowOrder

__all__ = ["WindowLosses", "window_losses", "attention_mask"]

_CHUNK_ELEMS = 1 << 20        # logits reduced at once on a CPU (rows * V): 4 MB float32 buffers
_CHUNK_ELEMS_ACCEL = 1 << 25  # on an accelerator: fewer, larger kernels
ETA = 2.0 ** -19              # Z is inflated by (1 + ETA): X never below the exact loss
SUM_BLOCK = 8                 # float32 terms per partial sum of Z


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


_TRIL: dict[int, torch.Tensor] = {}


def attention_mask(segments: np.ndarray, dtype: torch.dtype,
                   out: torch.Tensor | None = None) -> torch.Tensor | None:
    """Additive (n, 1, T, T) mask: causal within a segment; None when every row is one segment
    (then the model's own causal mask is the same thing).  The trainer's rule (families/suite.py).
    ``out``: a (>= n, T, T) tensor of ``dtype`` to write into (reused across batches)."""
    if segments is None or np.all(segments == segments[:, :1]):
        return None
    T = segments.shape[1]
    if T not in _TRIL:
        _TRIL[T] = torch.ones((T, T), dtype=torch.bool).tril_()
    seg = torch.from_numpy(np.ascontiguousarray(segments))
    allowed = torch.eq(seg[:, :, None], seg[:, None, :]).logical_and_(_TRIL[T])
    if out is not None:
        out = out[:len(segments)]
    m = torch.where(allowed, torch.zeros((), dtype=dtype), torch.tensor(torch.finfo(dtype).min, dtype=dtype),
                    out=out)
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
    then None): the certificates use X of h and h_q and X, Y of the smoothed h_q only.
    ``progress(done, total)`` is called after each batch.  Raises ValueError for a token id
    outside the model's vocabulary and FloatingPointError for non-finite logits.
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
    keys = _keys(len(alpha_list), entropy)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("column", *keys)}
    counts_u = np.zeros(len(uniq), dtype=np.int64)      # targets per unique window
    buffers: dict[str, torch.Tensor] = {}               # scratch space reused across batches
    T = order.context_length
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
                mask_out = None if batch.segments is None else _buffer(   # no mask: no buffer
                    buffers, "mask", len(batch), T * T, dt, torch.device("cpu")).view(-1, T, T)
                mask = attention_mask(batch.segments, dt, mask_out)
                logits = model(input_ids=ids, attention_mask=None if mask is None else mask.to(dev),
                               use_cache=False).logits
                if logits.shape[-1] != vocab:
                    raise ValueError(f"model logit dimension {logits.shape[-1]} != config.vocab_size {vocab}")
                # every position is reduced (no copy of the logits); non-targets are dropped after
                keep = batch.labels != IGNORE
                tgt = torch.from_numpy(np.where(keep, batch.labels, 0).reshape(-1)).to(dev)
                out = _reduce(logits.reshape(-1, vocab), tgt, alpha_list, entropy, buffers,
                              overwrite=True)
                flat_keep = keep.reshape(-1)
                for k in keys:
                    parts[k].append(out[k][flat_keep])
                parts["column"].append(np.nonzero(keep)[1].astype(np.int16))
                counts_u[b0:b0 + len(batch)] = keep.sum(axis=1)
                if progress is not None:
                    progress(min(b0 + int(batch_size), len(uniq)), len(uniq))
    finally:
        model.train(was_training)

    full = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in parts.items()}
    counts = counts_u[inverse]
    if not np.array_equal(inverse, np.arange(len(uniq))):     # repeats or unsorted windows
        starts_u = np.cumsum(counts_u) - counts_u
        take = np.arange(int(counts.sum())) + np.repeat(starts_u[inverse] - (np.cumsum(counts) - counts),
                                                         counts)
        full = {k: v[take] for k, v in full.items()}
    res = WindowLosses(
        window=np.repeat(idx, counts), column=full["column"].astype(np.int16), loss=full["loss"],
        entropy=full["entropy"] if entropy else None, vocab_size=vocab,
        smoothed_loss={a: full[f"sl{k}"] for k, a in enumerate(alpha_list)},
        smoothed_entropy={a: full[f"se{k}"] for k, a in enumerate(alpha_list)},
        wall_s=time.perf_counter() - t0)
    if not all(np.isfinite(full[k]).all() for k in keys):
        raise FloatingPointError("the model produced non-finite log-probabilities")
    return res


def _keys(n_alphas: int, entropy: bool) -> list[str]:
    return ["loss"] + (["entropy"] if entropy else []) + \
        [f"sl{i}" for i in range(n_alphas)] + [f"se{i}" for i in range(n_alphas)]


def _buffer(buffers: dict[str, torch.Tensor], name: str, rows: int, vocab: int, dtype, device):
    """A (rows, vocab) scratch tensor, kept in ``buffers`` between calls: fresh multi-MB tensors
    per batch cost more in page faults than the arithmetic done in them."""
    b = buffers.get(name)
    if b is None or b.shape[0] < rows or b.shape[1] != vocab or b.dtype != dtype or b.device != device:
        b = buffers[name] = torch.empty((rows, vocab), dtype=dtype, device=device)
    return b


def _row_sums(e: torch.Tensor, s_buf: torch.Tensor | None) -> torch.Tensor:
    """float64 row sums of the non-negative (k, V) ``e``: float32 partial sums of SUM_BLOCK
    strided terms (a vectorised outer reduction), then float64 over the V/SUM_BLOCK partials and
    the remainder.  Relative error <= (SUM_BLOCK - 1) 2^-24 + V 2^-53."""
    if e.dtype == torch.float64:
        return e.sum(-1)
    k, vocab = e.shape
    w = vocab // SUM_BLOCK
    if w == 0:
        return e.double().sum(-1)
    part = s_buf[:k, :w].copy_(e[:, :SUM_BLOCK * w].view(k, SUM_BLOCK, w).sum(1))
    z = part.sum(-1)
    if SUM_BLOCK * w < vocab:
        z += e[:, SUM_BLOCK * w:].double().sum(-1)
    return z


def _reduce(logits: torch.Tensor, target: torch.Tensor, alphas: Sequence[float],
            entropy: bool = True, buffers: dict[str, torch.Tensor] | None = None,
            overwrite: bool = False) -> dict[str, np.ndarray]:
    """Per row of logits (float64 outputs): X = -log p(x), the entropy H(p) if asked, and for
    each alpha X_s = -log q(x) and Y_s = H(q), q = (1 - alpha) p + alpha/V.

    Work in float32 (float64 for float64 logits) in reused row chunks; the rules that make the
    rounding safe are in the module docstring.  ``overwrite`` lets it use ``logits`` as scratch
    space (window_losses' own forward output, not used after).  A non-finite logit makes the row's X non-finite
    (the caller checks the outputs)."""
    n, vocab = logits.shape
    wd = torch.float64 if logits.dtype == torch.float64 else torch.float32
    dev = logits.device
    rows = max(1, (_CHUNK_ELEMS if dev.type == "cpu" else _CHUNK_ELEMS_ACCEL) // vocab)
    m = min(rows, n)
    log_v = math.log(vocab)
    log_1eta = math.log1p(ETA)
    keeps = [1.0 - a for a in alphas]
    unifs = [a / vocab for a in alphas]
    h_mins = [smoothed_min_entropy(a, vocab) for a in alphas]
    bufs = {} if buffers is None else buffers
    # Z's sum: float32 partial sums of SUM_BLOCK terms (error <= (SUM_BLOCK - 1) u32 relative,
    # whatever the order), then float64 over the partials in a reused buffer
    width = vocab // SUM_BLOCK
    s_buf = _buffer(bufs, "s", m, width, torch.float64, dev) if wd != torch.float64 else None
    d_buf = _buffer(bufs, "d", m, vocab, wd, dev) if entropy else None
    q_buf = _buffer(bufs, "q", m, vocab, wd, dev) if alphas else None
    lq_buf = _buffer(bufs, "lq", m, vocab, wd, dev) if alphas else None
    out = {k: np.empty(n) for k in _keys(len(alphas), entropy)}
    for c0 in range(0, n, rows):
        c1 = min(n, c0 + rows)
        k = c1 - c0
        lg = logits[c0:c1]
        mx = lg.amax(-1, keepdim=True)
        dx = lg.gather(1, target[c0:c1, None])[:, 0].double() - mx[:, 0].double()   # exact
        if lg.dtype != wd:
            # d = l - max l  (<= 0), in float32 (float64 for float64 logits)
            e = _buffer(bufs, "e", m, vocab, wd, dev)[:k].copy_(lg).sub_(mx)
        elif overwrite and lg.is_contiguous():
            e = lg.sub_(mx)
        else:
            e = torch.sub(lg, mx, out=_buffer(bufs, "e", m, vocab, wd, dev)[:k])
        if entropy:
            d_buf[:k].copy_(e)
        e.exp_()
        z = _row_sums(e, s_buf)                               # float64, >= 1 (max term 1)
        log_z = torch.log(z)
        x = (log_z + log_1eta) - dx                           # X >= the exact loss
        out["loss"][c0:c1] = x.cpu().numpy()
        if entropy:   # H(p) = log Z - sum p d
            h = log_z - d_buf[:k].mul_(e).sum(-1).double() / z
            out["entropy"][c0:c1] = h.clamp_(0.0, log_v).cpu().numpy()
        if alphas:
            px = torch.exp(-x)
            inv_z = (1.0 / z).to(wd)[:, None]
        for i, (kp, u, h_min) in enumerate(zip(keeps, unifs, h_mins, strict=True)):
            q, qlq = q_buf[:k], lq_buf[:k]
            torch.mul(e, inv_z * kp, out=q).add_(u)           # q = (1 - alpha) p + alpha/V
            ys = -torch.log(q, out=qlq).mul_(q).sum(-1)        # in place: no temporaries
            out[f"sl{i}"][c0:c1] = (-torch.log(kp * px + u)).cpu().numpy()
            out[f"se{i}"][c0:c1] = ys.double().clamp_(h_min, log_v).cpu().numpy()
    return out
