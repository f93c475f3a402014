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
float64), chunked over rows so that the buffers stay in cache.  On a CPU at V <= 2,048 (the demo
suite), for a model whose forward is head(trunk(...)) (measure/head_split.py), the trunk runs
once per batch and the head on 2 MB chunks of the target rows, each reduced while it is in
cache: the same logits as the model's own forward, never written out whole (docs/performance.md,
section 1).  Two rules make
the rounding of the reduction harmless to the certificates (derivation: docs/bounds.md,
"Rounding of the reduction"):

* X is an upper bound of the exact loss of the logits: X = log(Z (1 + eta)) - (l_x - max l), with
  Z the sum of the float32 exponentials (float32 partial sums of 8, then float64) and
  eta = 2^-19 above the rounding error's bound, so X >= -log softmax(l)_x and exceeds it by at
  most 3.5e-6 nats.  A loss that is too
  high only loosens a bound; the smoothed loss follows X monotonically, so it stays <= log(V/alpha).
* Y is a proxy, which Thm 3.1 needs only to be predictable and >= H_min: the float32 entropy
  is clamped into [H_min(alpha), log V] ([0, log V] unsmoothed), so the loss range
  Delta = log(V/alpha) - H_min is exact whatever the rounding.  It is computed as
  H(q) = -log c - c sum w log w (q = c w, c = (1 - alpha)/Z, w = e + alpha Z/((1 - alpha) V)),
  one add and one log per entry (no error bound is needed for a proxy).

On a CPU the exp of Z and the proxy's log are numpy's or torch's SIMD kernels, whichever is
faster on the CPU at hand (EXP_KERNEL, _log: fixed by CPU flags).  Both exps have a relative error
inside the derivation's 2^-22 over every float32 (at most 2.1264e-7; measured exhaustively by
scripts/check_exp.py).
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
from genbound_assets.measure.head_split import split_head
from genbound_assets.measure.model_device import model_device_dtype

__all__ = ["WindowLosses", "window_losses", "attention_mask"]

_CHUNK_ELEMS = 1 << 19        # logits reduced at once on a CPU (rows * V): 2 MB float32 buffers
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
_TRIL_ADD: dict[tuple[int, torch.dtype], torch.Tensor] = {}


def attention_mask(segments: np.ndarray, dtype: torch.dtype,
                   out: torch.Tensor | None = None, state: dict | None = None) -> torch.Tensor | None:
    """Additive (n, 1, T, T) mask: causal within a segment; None when every row is one segment
    (then the model's own causal mask is the same thing).  The trainer's rule (families/suite.py).
    ``out``: a (>= n, T, T) tensor of ``dtype`` to write into (reused across batches);
    ``state``: a dict kept with ``out`` between calls, so that the next mask only rewrites the
    blocks that differ (_block_mask)."""
    if segments is None or np.all(segments == segments[:, :1]):
        return None
    n, T = segments.shape
    if out is not None:
        out = out[:n]
    if np.all(segments[:, 1:] >= segments[:, :-1]):
        return _block_mask(segments, dtype, out, state)[:, None]
    if state is not None:
        state.clear()                  # ``out`` no longer holds a block mask
    if T not in _TRIL:
        _TRIL[T] = torch.ones((T, T), dtype=torch.bool).tril_()
    seg = torch.from_numpy(np.ascontiguousarray(segments))
    allowed = torch.eq(seg[:, :, None], seg[:, None, :]).logical_and_(_TRIL[T])
    m = torch.where(allowed, torch.zeros((), dtype=dtype), torch.tensor(torch.finfo(dtype).min, dtype=dtype),
                    out=out)
    return m[:, None]


def _blocks(segments: np.ndarray) -> list[tuple[int, int, int]]:
    """(row, a, c) for each later segment [a, c) of each row: rows a..c-1 of that window's mask
    must not see columns < a."""
    T = segments.shape[1]
    rows, cols = np.nonzero(segments[:, 1:] != segments[:, :-1])
    starts = cols + 1
    ends = np.full(len(starts), T)
    same_row = np.flatnonzero(rows[1:] == rows[:-1])
    ends[same_row] = starts[same_row + 1]
    return list(zip(rows.tolist(), starts.tolist(), ends.tolist(), strict=True))


def _block_mask(segments: np.ndarray, dtype: torch.dtype, out: torch.Tensor | None,
                state: dict | None = None) -> torch.Tensor:
    """attention_mask for rows whose segments never decrease (documents in stream order): the
    causal mask with, for each later segment [a, c) of a row, rows a..c-1 blocked from columns
    < a.  With ``state`` from the previous call on the same ``out``, only the previous blocks are
    cleared and the new ones filled (a few % of the n T^2 entries); else one causal copy first."""
    n, T = segments.shape
    key = (T, dtype)
    if key not in _TRIL_ADD:
        _TRIL_ADD[key] = torch.full((T, T), torch.finfo(dtype).min, dtype=dtype).triu_(1)
    m = out if out is not None else torch.empty((n, T, T), dtype=dtype)
    blocks = _blocks(segments)
    ident = (m.data_ptr(), T, dtype)
    if state is not None and out is not None and state.get("ident") == ident:
        done = min(n, state["rows"])   # rows 0..done-1 hold the causal mask + the old blocks
        for r, a, c in state["blocks"]:
            if r < done:
                m[r, a:c, :a] = 0.0
        if done < n:
            m[done:].copy_(_TRIL_ADD[key].expand(n - done, T, T))
    else:
        m.copy_(_TRIL_ADD[key].expand(n, T, T))
    blocked = float(torch.finfo(dtype).min)
    for r, a, c in blocks:
        m[r, a:c, :a] = blocked
    if state is not None and out is not None:   # rows 0..n-1 now hold the causal mask + blocks
        # holding ``m`` keeps its memory alive, so a new buffer cannot reuse the address
        state.update(ident=ident, rows=n, blocks=blocks, held=m)
    return m


_MIN_HEAD_ROWS = 256          # below this many rows per chunk (V > 2,048) the head runs once


def _split_head(model, vocab: int):
    """(trunk, head) on a CPU when the model's forward is head(trunk(...)) (measure/head_split.py,
    checked by a probe forward) and a chunk holds at least _MIN_HEAD_ROWS rows; else None: the
    model's own forward runs (on an accelerator, where its logits are post-processed after the
    head, or where a chunk of a few rows would make the head's matmul re-read its weight per
    chunk)."""
    dev = model_device_dtype(model)[0]
    if dev.type != "cpu" or _chunk_rows(vocab, dev) < _MIN_HEAD_ROWS:
        return None
    return split_head(model)


def _chunk_rows(vocab: int, device: torch.device) -> int:
    return max(1, (_CHUNK_ELEMS if device.type == "cpu" else _CHUNK_ELEMS_ACCEL) // vocab)


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
    dev, dt = model_device_dtype(model)
    split = _split_head(model, vocab)
    keys = _keys(len(alpha_list), entropy)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("column", *keys)}
    counts_u = np.zeros(len(uniq), dtype=np.int64)      # targets per unique window
    buffers: dict[str, torch.Tensor] = {}               # scratch space reused across batches
    mask_state: dict = {}                               # what the "mask" buffer holds
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
                mask = attention_mask(batch.segments, dt, mask_out, mask_state)
                mask = None if mask is None else mask.to(dev)
                keep = batch.labels != IGNORE
                rows = np.flatnonzero(keep)                      # target positions, row-major
                # only the target rows are reduced when the head runs on rows and many positions
                # are not targets; else every position is (no copy), non-targets dropped after
                targets_only = split is not None and 10 * len(rows) < 9 * keep.size
                picked = None if targets_only else rows
                tgt = torch.from_numpy(batch.labels.reshape(-1)[rows] if targets_only
                                       else np.where(keep, batch.labels, 0).reshape(-1)).to(dev)
                if split is not None:   # the head runs chunk by chunk
                    trunk, head = split
                    hidden = trunk(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
                    hidden = hidden.reshape(-1, hidden.shape[-1])
                    if targets_only:
                        hidden = hidden.index_select(0, torch.from_numpy(rows).to(dev))
                    logits = _HeadRows(hidden, head, vocab)
                else:
                    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                    if logits.shape[-1] != vocab:
                        raise ValueError(f"model logit dimension {logits.shape[-1]} != config.vocab_size {vocab}")
                    logits = logits.reshape(-1, vocab)
                out = _reduce(logits, tgt, alpha_list, entropy, buffers, overwrite=True)
                for k in keys:
                    parts[k].append(out[k] if picked is None else out[k][picked])
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


class _HeadRows:
    """The logits of ``hidden`` rows under ``head``, computed a chunk at a time (``chunk``) so
    that each chunk is reduced while it is still in cache; the same numbers as ``head(hidden)``."""

    def __init__(self, hidden: torch.Tensor, head: torch.nn.Module, vocab: int):
        self.hidden, self.head, self.vocab = hidden, head, vocab
        self.shape = (hidden.shape[0], vocab)
        w = getattr(head, "weight", None)
        plain = isinstance(head, torch.nn.Linear) and head.bias is None and w.dtype == hidden.dtype
        self.dtype = hidden.dtype
        self.device = hidden.device
        self._wt = w.t() if plain else None

    def chunk(self, c0: int, c1: int, buffers: dict[str, torch.Tensor]) -> torch.Tensor:
        h = self.hidden[c0:c1]
        if self._wt is None:
            lg = self.head(h)
        else:   # torch.mm into a reused buffer: F.linear's arithmetic, no fresh allocation
            lg = torch.mm(h, self._wt, out=_buffer(buffers, "head", _chunk_rows(self.vocab, self.device),
                                                   self.vocab, self.dtype, self.device)[:c1 - c0])
        if lg.shape[-1] != self.vocab:
            raise ValueError(f"model logit dimension {lg.shape[-1]} != config.vocab_size {self.vocab}")
        return lg


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
    part = torch.sum(e[:, :SUM_BLOCK * w].view(k, SUM_BLOCK, w), 1, out=s_buf[:k, :w])   # float32
    z = part.sum(-1, dtype=torch.float64)
    if SUM_BLOCK * w < vocab:
        z += e[:, SUM_BLOCK * w:].double().sum(-1)
    return z


def _reduce(logits, target: torch.Tensor, alphas: Sequence[float],
            entropy: bool = True, buffers: dict[str, torch.Tensor] | None = None,
            overwrite: bool = False) -> dict[str, np.ndarray]:
    """Per row of logits (float64 outputs): X = -log p(x), the entropy H(p) if asked, and for
    each alpha X_s = -log q(x) and Y_s = H(q), q = (1 - alpha) p + alpha/V.

    ``logits``: an (n, V) tensor, or a _HeadRows that computes them a chunk at a time.  The
    V-wide passes run in float32 (float64 for float64 logits) on reused row chunks and leave
    per-row float64 sums; the per-row arithmetic then runs once on all n rows.  The rules that
    make the rounding safe are in the module docstring.  ``overwrite`` lets it use a logits
    tensor as scratch space (window_losses' own forward output, not used after).  A non-finite
    logit makes the row's X non-finite (the caller checks the outputs)."""
    n, vocab = logits.shape
    wd = torch.float64 if logits.dtype == torch.float64 else torch.float32
    dev = logits.device
    rows = _chunk_rows(vocab, dev)
    rows = -(-n // max(1, -(-n // rows)))        # equal chunks: no short tail chunk
    m = min(rows, n)
    f64 = dict(dtype=torch.float64, device=dev)
    keeps = [1.0 - a for a in alphas]
    unifs = [a / vocab for a in alphas]
    bufs = {} if buffers is None else buffers
    # Z's sum: float32 partial sums of SUM_BLOCK terms (error <= (SUM_BLOCK - 1) u32 relative,
    # whatever the order), then float64 over the partials in a reused buffer
    width = vocab // SUM_BLOCK
    s_buf = _buffer(bufs, "s", m, width, torch.float32, dev) if wd != torch.float64 else None
    d_buf = _buffer(bufs, "d", m, vocab, wd, dev) if entropy else None
    q_buf = _buffer(bufs, "q", m, vocab, wd, dev) if len(alphas) > 1 else None
    lq_buf = _buffer(bufs, "lq", m, vocab, wd, dev) if alphas else None
    # per-row results of the V-wide passes (float64, all n rows)
    dx = torch.empty(n, **f64)                    # l_x - max l, exact
    z = torch.empty(n, **f64)                     # sum exp(l - max l), >= 1
    pd = torch.empty(n, **f64) if entropy else None          # sum e d
    wlw = [torch.empty(n, **f64) for _ in alphas]           # sum w log w per alpha
    log_to_nats = _log_to_nats()                            # wlw's log base -> nats
    for c0 in range(0, n, rows):
        c1 = min(n, c0 + rows)
        k = c1 - c0
        if isinstance(logits, _HeadRows):
            lg, own = logits.chunk(c0, c1, bufs), True
        else:
            lg, own = logits[c0:c1], overwrite
        mx = lg.amax(-1, keepdim=True)
        torch.sub(lg.gather(1, target[c0:c1, None])[:, 0].double(), mx[:, 0].double(), out=dx[c0:c1])
        if lg.dtype != wd:
            # d = l - max l  (<= 0), in float32 (float64 for float64 logits)
            e = _buffer(bufs, "e", m, vocab, wd, dev)[:k].copy_(lg).sub_(mx)
        elif own and lg.is_contiguous():
            e = lg.sub_(mx)
        else:
            e = torch.sub(lg, mx, out=_buffer(bufs, "e", m, vocab, wd, dev)[:k])
        if entropy:
            d_buf[:k].copy_(e)
        _exp_(e)
        zc = z[c0:c1]
        zc.copy_(_row_sums(e, s_buf))
        if entropy:
            pd[c0:c1] = _rowdot(e, d_buf[:k])            # d_buf is scratch after this
        for i, (kp, u) in enumerate(zip(keeps, unifs, strict=True)):
            # H(q) = -log c - c sum w log w, with q = c w, c = (1 - alpha)/Z and
            # w = e + alpha Z/((1 - alpha) V); the last alpha overwrites e (not needed after it)
            beta = (zc * (u / kp)).to(wd)[:, None]
            w = e.add_(beta) if i == len(alphas) - 1 else torch.add(e, beta, out=q_buf[:k])
            wlw[i][c0:c1] = _rowdot(w, _log(w, lq_buf[:k]))        # sum w log w (x log_to_nats: nats)
    log_z = torch.log(z)
    x = (log_z + math.log1p(ETA)).sub_(dx)        # X >= the exact loss
    log_v = math.log(vocab)
    out = {"loss": x}
    if entropy:   # H(p) = log Z - sum p d
        out["entropy"] = (log_z - pd / z).clamp_(0.0, log_v)
    if alphas:
        px = torch.exp(-x)
    for i, (a, kp, u) in enumerate(zip(alphas, keeps, unifs, strict=True)):
        c = kp / z
        out[f"sl{i}"] = torch.log(px * kp + u).neg_()
        out[f"se{i}"] = (-torch.log(c) - (c * log_to_nats) * wlw[i]).clamp_(smoothed_min_entropy(a, vocab), log_v)
    return {k: v.cpu().numpy() for k, v in out.items()}


_EINSUM_MAX_V = 2_048         # numpy's einsum accumulates serially: fine for short rows only


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row sums of a * b in float64; ``b`` is scratch after the call.  For entropies, which
    need no error bound, only accuracy enough for a good proxy: numpy's einsum (one pass, no
    product array) on a CPU for rows of at most _EINSUM_MAX_V entries, else in place in ``b``
    with torch's blocked float32 sum (numpy's serial accumulation misses the proxies' 1e-4
    tolerance at V = 50,304: 2-7e-4)."""
    if (a.shape[-1] <= _EINSUM_MAX_V and a.device.type == "cpu" and a.dtype == torch.float32
            and a.is_contiguous() and b.is_contiguous()):
        return torch.from_numpy(np.einsum("ij,ij->i", a.numpy(), b.numpy())).double()
    return b.mul_(a).sum(-1).double()


def _numpy_has(feature: str) -> bool:
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:                                   # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__
    return bool(__cpu_features__.get(feature))


# Z's exp on a CPU, whichever SIMD kernel is faster there (1 torch thread, 2 MB chunks): numpy's
# on CPUs with AVX512F (~2x torch's), torch's (SLEEF) on AVX2-only CPUs (1.08 against numpy's 1.34
# ns per entry).  Fixed per machine by CPU flags.  Both are inside the 2^-22 exp allowance of
# docs/bounds.md, "Rounding of the reduction", measured over every float32 argument
# (scripts/check_exp.py): numpy's largest relative error is 2.1264e-7 (its AVX2 and AVX512F
# kernels alike; without SIMD numpy calls libm's expf, <= 1 ulp), torch's 6.32e-8 (AVX2).
EXP_KERNEL = "numpy" if _numpy_has("AVX512F") else "torch"


def _exp_(x: torch.Tensor, kernel: str | None = None) -> torch.Tensor:
    """exp in place, with ``kernel`` ("numpy" or "torch"; default EXP_KERNEL) for a contiguous
    float32 tensor on a CPU; torch's exp elsewhere (CUDA's expf, <= 2 ulp)."""
    if ((kernel or EXP_KERNEL) == "numpy" and x.device.type == "cpu" and x.dtype == torch.float32
            and x.is_contiguous()):
        a = x.numpy()
        np.exp(a, out=a)
        return x
    return x.exp_()


# The entropy proxy's logarithm, whichever kernel is fastest on the CPU at hand (measured, 1 torch
# thread, 2 MB chunks): numpy's float32 log2 is SIMD (SVML) only on AVX512_SKX, where it is ~4x
# torch's log; on an AVX2-only CPU it is libm's scalar log2f, 4.4 ns per entry against torch's
# SIMD log at 1.35 ns.  The choice is fixed per machine (CPU flags, not timings), so repeated runs
# give the same proxies; either log is within a few ulp, and a proxy needs no error bound.
_NUMPY_SVML_LOG2 = _numpy_has("AVX512_SKX")


def _log_to_nats() -> float:
    """The factor from _log's base to nats: ln 2 for numpy's log2, 1 for torch's log."""
    return math.log(2.0) if _NUMPY_SVML_LOG2 else 1.0


def kernels() -> dict[str, str]:
    """The CPU kernels this machine's reduction uses (for labelling measurements)."""
    return {"exp": EXP_KERNEL, "proxy_log": "numpy log2" if _NUMPY_SVML_LOG2 else "torch log"}


def _log(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Elementwise logarithm into ``out``, in base 2 (numpy's SVML log2) or e (torch's log):
    multiply by _log_to_nats() for nats.  It serves only the entropy proxy, which needs no error
    bound (module docstring)."""
    if (_NUMPY_SVML_LOG2 and x.device.type == "cpu" and x.dtype == torch.float32
            and x.is_contiguous() and out.is_contiguous()):
        with np.errstate(invalid="ignore", divide="ignore"):   # NaN rows: the caller raises
            np.log2(x.numpy(), out=out.numpy())
        return out
    return (torch.log2 if _NUMPY_SVML_LOG2 else torch.log)(x, out=out)
