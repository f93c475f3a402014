"""Per-token losses and entropies of a causal LM on token-context pairs of a TokenStream.

For each sampled target position p (context tokens[max(doc_start(p), p - T):p], see stream.py)
and the model's next-token distribution p(.|ctx) over the full logit dimension V:

    loss      X   = -log p(x_p | ctx)
    entropy   Y   = H(p(.|ctx)) = -sum_v p(v) log p(v)          (0 log 0 = 0)
and for each smoothing weight alpha (Lemma 3.3, q = (1 - alpha) p + alpha / V):
    smoothed_loss[alpha]     X_s = -log q(x_p)
    smoothed_entropy[alpha]  Y_s = H(q)

Y_s needs the whole distribution, so every alpha must be fixed before the forward pass.  The
order in a bound is: quantize -> code length L(h) -> complexity C -> alpha = bounds.smoothing.smoothing_alpha(C, V)
-> token_losses(..., alphas=(alpha,)).  Equally valid (any alpha chosen independently of the
sample is): evaluate a declared alpha grid once and use the grid point nearest smoothing_alpha(C, V).

Exactness.  Contexts are right-padded to the batch's longest row, so with plain causal attention a
real token never attends to padding and positions 0..len-1 are the ones a lone forward pass would
use: no attention mask or position_ids are needed and each row's prediction is that of the context
alone (up to float rounding of differently shaped matmuls).  Pairs share one forward pass exactly
when their contexts start at the same stream index s: the window tokens[s:p_max] then contains
every such target's full context as a prefix, and the hidden state at offset p - s - 1 predicts
tokens[p].  Only the hidden states of the wanted rows go through the LM head.

Precision.  The logits stay in the model dtype; the log-softmax and every per-token reduction
(X, Y, X_s, Y_s) run in float64, in row chunks (_reduce_logits, _chunk_rows).  The bound
checks Y_s against its exact range [H_min(alpha, V), log V] and X_s against log(V/alpha) to 1e-9
(bounds/subsample.py); a float32 reduction at V = 50,304 misses those by up to ~1e-5
(docs/measurements.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from genbound_assets.data.stream import TokenStream
from genbound_assets.families.models import resolve_device_dtype
from genbound_assets.measure.head_split import split_head
from genbound_assets.measure.model_device import model_device_dtype

# Rows of the LM head evaluated at once: rows * V float64 values stay near this many elements
# (the reduction reuses three such buffers, _Workspace).  On CPU, 8 MB buffers stay in cache
# better than 128 MB ones (bench/bench_token_precision.py); on an accelerator (per-kernel launch
# cost) larger chunks are better.
_HEAD_CHUNK_ELEMS = {"cpu": 1 << 20}
_HEAD_CHUNK_ELEMS_DEFAULT = 1 << 25


def _chunk_rows(device: torch.device, vocab: int) -> int:
    """Rows of logits reduced at once on `device` (at least 1)."""
    return max(1, _HEAD_CHUNK_ELEMS.get(device.type, _HEAD_CHUNK_ELEMS_DEFAULT) // vocab)
_PAD_ID = 0


@dataclass(frozen=True)
class TokenLosses:
    """Per-pair results aligned with `positions` (float64, nats)."""

    positions: np.ndarray
    loss: np.ndarray
    entropy: np.ndarray
    vocab_size: int
    context_length: int
    smoothed_loss: dict[float, np.ndarray] = field(default_factory=dict)
    smoothed_entropy: dict[float, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.positions)


@dataclass(frozen=True)
class WindowPlan:
    """Forward passes for a set of pairs: window w is tokens[start[w]:end[w]] and pair i is read
    from window pair_window[i] at offset pair_offset[i] (= p - start - 1)."""

    start: np.ndarray
    end: np.ndarray
    pair_window: np.ndarray
    pair_offset: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return self.end - self.start


def plan_windows(stream: TokenStream, positions, context_length: int) -> WindowPlan:
    """Group pairs whose contexts start at the same stream index into one window each."""
    pos = np.asarray(positions)
    if pos.ndim != 1:
        raise ValueError("positions must be one-dimensional")
    if pos.size and not np.issubdtype(pos.dtype, np.integer):
        raise ValueError("positions must be integers")
    pos = pos.astype(np.int64, copy=False)
    if int(context_length) < 1:
        raise ValueError("context_length must be >= 1")
    if pos.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return WindowPlan(empty, empty, empty, empty)
    bad = (pos <= 0) | (pos >= len(stream))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"positions[{i}] = {int(pos[i])} is outside the stream's target range [1, {len(stream)})"
        )
    ds = stream.doc_start_of(pos)
    if np.any(ds == pos):
        i = int(np.flatnonzero(ds == pos)[0])
        raise ValueError(
            f"positions[{i}] = {int(pos[i])} is a document-opening separator, not a target"
        )
    cstart = stream.context_starts(pos, int(context_length))
    start, pair_window = np.unique(cstart, return_inverse=True)
    end = np.zeros(len(start), dtype=np.int64)
    np.maximum.at(end, pair_window, pos)
    return WindowPlan(start, end, pair_window.astype(np.int64), pos - cstart - 1)


def _check_vocab(stream: TokenStream, plan: WindowPlan, positions: np.ndarray, vocab: int):
    """Every token a window reads (contexts and targets: tokens[start:end + 1]) must be < V."""
    toks = stream.tokens
    for w in range(len(plan.start)):
        s, e = int(plan.start[w]), int(plan.end[w]) + 1
        seg = toks[s:e]
        if seg.min() < 0 or seg.max() >= vocab:
            off = int(np.flatnonzero((seg < 0) | (seg >= vocab))[0])
            where = s + off
            in_w = np.flatnonzero(plan.pair_window == w)
            hit = in_w[positions[in_w] >= where]
            j = int(hit[0]) if hit.size else int(in_w[0])
            raise ValueError(
                f"token id {int(seg[off])} at stream position {where} is outside the model's "
                f"vocabulary [0, {vocab}) (it is in the context/target of positions[{j}] = "
                f"{int(positions[j])})"
            )


def _split_model(model):
    """(trunk, head): trunk(ids) -> final hidden states, head(h) -> logits, or (None, None) to run
    the model whole ("hidden" rows are then already logits).  The split is measure/head_split.py's,
    verified on the model by a probe forward."""
    split = split_head(model)
    if split is None:
        return None, None
    trunk, head = split

    def run_trunk(ids):
        return trunk(input_ids=ids, use_cache=False).last_hidden_state

    return run_trunk, head


class _Workspace:
    """Reusable float64 (rows, V) buffers for _reduce_logits, so that a chunk's arrays are not
    fresh allocations (on CPU those are mmaps whose page faults cost more than the arithmetic)."""

    def __init__(self, rows: int, vocab: int, device):
        self.bufs = [torch.empty(rows, vocab, dtype=torch.float64, device=device)
                     for _ in range(3)]

    def take(self, rows: int):
        return [b[:rows] for b in self.bufs]


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_j a[i, j] b[i, j] per row, without a (rows, V) temporary."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).reshape(-1)


def _reduce_logits(logits: torch.Tensor, targets: torch.Tensor, alphas: Sequence[float],
                   work: _Workspace | None = None):
    """(X, Y, [X_s per alpha], [Y_s per alpha]) as float64 tensors for rows of logits.

    logits: (rows, V) in any float dtype, upcast here; targets: (rows,) int64.  Everything is
    float64: log p = (l - max l) - log sum exp(l - max l), X = -log p(x), Y = -sum p log p
    (0 log 0 = 0), X_s = -log((1 - a) p(x) + a/V), Y_s = -sum q log q with q = (1 - a) p + a/V.
    work: buffers with at least `rows` rows (allocated here if None).
    """
    rows, vocab = logits.shape
    logp, p, logq = (work or _Workspace(rows, vocab, logits.device)).take(rows)
    logp.copy_(logits)
    logp.sub_(logp.amax(dim=-1, keepdim=True))
    torch.exp(logp, out=p)
    total = p.sum(dim=-1, keepdim=True)
    logp.sub_(total.log())
    p.div_(total)
    lp_x = logp.gather(1, targets[:, None])[:, 0]
    logp.clamp_(min=torch.finfo(torch.float64).min)  # a -inf logit: p = 0 contributes 0
    ent = -_rowdot(p, logp)
    p_x = lp_x.exp()
    q = logp  # log p is not needed any more
    s_loss, s_ent = [], []
    for a in alphas:
        keep, unif = 1.0 - a, a / vocab
        s_loss.append(-torch.log(p_x * keep + unif))
        torch.mul(p, keep, out=q).add_(unif)
        torch.log(q, out=logq)
        s_ent.append(-_rowdot(q, logq))
    return -lp_x, ent, s_loss, s_ent

def token_losses(
    model,
    stream: TokenStream,
    positions,
    context_length: int,
    alphas: Sequence[float] = (),
    batch_size: int = 64,
    device=None,
    dtype=None,
    progress: bool = False,
) -> TokenLosses:
    """Loss X, entropy Y and smoothed X_s, Y_s of `model` on the pairs at `positions`.

    device/dtype: None keeps the model where and as it is; otherwise the model is moved/cast in
    place (like nn.Module.to).  batch_size counts windows (forward rows) per pass.  Raises
    ValueError for positions outside the stream or at a separator, a token id outside [0, V) in
    any context or target (naming the position), or an alpha outside (0, 1).
    """
    pos = np.asarray(positions)
    alpha_list = [float(a) for a in alphas]
    for a in alpha_list:
        if not (0.0 < a < 1.0):
            raise ValueError(f"smoothing alpha must lie in (0, 1), got {a}")
    if int(batch_size) < 1:
        raise ValueError("batch_size must be >= 1")
    plan = plan_windows(stream, pos, context_length)
    pos = pos.astype(np.int64, copy=False)
    vocab = int(model.config.vocab_size)
    _check_vocab(stream, plan, pos, vocab)

    n = len(pos)
    loss = np.empty(n)
    ent = np.empty(n)
    s_loss = {a: np.empty(n) for a in alpha_list}
    s_ent = {a: np.empty(n) for a in alpha_list}
    if n == 0:
        return TokenLosses(pos, loss, ent, vocab, int(context_length), s_loss, s_ent)

    if device is not None or dtype is not None:
        cur_dev, cur_dt = model_device_dtype(model)
        dev, dt = resolve_device_dtype(device if device is not None else cur_dev,
                                       dtype if dtype is not None else cur_dt)
        model.to(device=dev, dtype=dt)
    dev, _ = model_device_dtype(model)
    trunk, head = _split_model(model)

    # Unique (window, offset) rows: exact duplicates are computed once.
    key = plan.pair_window * (int(context_length) + 1) + plan.pair_offset
    ukey, pair_row = np.unique(key, return_inverse=True)
    row_window = ukey // (int(context_length) + 1)
    row_offset = ukey % (int(context_length) + 1)
    row_target = stream.tokens[plan.start[row_window] + row_offset + 1]
    n_rows = len(ukey)
    r_loss, r_ent = np.empty(n_rows), np.empty(n_rows)
    r_sloss = {a: np.empty(n_rows) for a in alpha_list}
    r_sent = {a: np.empty(n_rows) for a in alpha_list}
    # rows sorted by window (np.unique sorts keys), so each window's rows are a contiguous range
    w_first = np.searchsorted(row_window, np.arange(len(plan.start)), side="left")
    w_last = np.searchsorted(row_window, np.arange(len(plan.start)), side="right")

    pairs_per_window = np.bincount(plan.pair_window, minlength=len(plan.start))
    order = np.argsort(-plan.lengths, kind="stable")  # longest first: OOM shows up at once
    chunk = _chunk_rows(dev, vocab)
    work = _Workspace(min(chunk, n), vocab, dev)
    was_training = model.training
    model.eval()
    bar = tqdm(total=n, unit="pair", disable=not progress, desc="token losses")
    try:
        with torch.inference_mode():
            for b0 in range(0, len(order), int(batch_size)):
                wins = order[b0:b0 + int(batch_size)]
                lens = plan.lengths[wins]
                width = int(lens.max())
                ids = np.full((len(wins), width), _PAD_ID, dtype=np.int64)
                rows, flat = [], []
                for i, w in enumerate(wins):
                    s, e = int(plan.start[w]), int(plan.end[w])
                    ids[i, : e - s] = stream.tokens[s:e]
                    r = np.arange(w_first[w], w_last[w])
                    rows.append(r)
                    flat.append(i * width + row_offset[r])
                rows = np.concatenate(rows)
                flat_t = torch.from_numpy(np.concatenate(flat)).to(dev)
                ids_t = torch.from_numpy(ids).to(dev)
                if trunk is not None:
                    hid = trunk(ids_t)
                else:  # whole model: "hidden" rows are already logits
                    hid = model(input_ids=ids_t, use_cache=False).logits
                hid = hid.reshape(-1, hid.shape[-1]).index_select(0, flat_t)
                tgt_t = torch.from_numpy(row_target[rows]).to(dev)
                out = {"loss": [], "ent": [], "sl": [[] for _ in alpha_list],
                       "se": [[] for _ in alpha_list]}
                for c0 in range(0, len(rows), chunk):
                    logits = hid[c0:c0 + chunk]
                    logits = head(logits) if head is not None else logits
                    if logits.shape[-1] != vocab:
                        raise ValueError(
                            f"model logit dimension {logits.shape[-1]} != config.vocab_size {vocab}"
                        )
                    x, y, xs, ys = _reduce_logits(logits, tgt_t[c0:c0 + chunk], alpha_list, work)
                    del logits
                    out["loss"].append(x)
                    out["ent"].append(y)
                    for k in range(len(alpha_list)):
                        out["sl"][k].append(xs[k])
                        out["se"][k].append(ys[k])
                r_loss[rows] = torch.cat(out["loss"]).cpu().numpy()
                r_ent[rows] = torch.cat(out["ent"]).cpu().numpy()
                for k, a in enumerate(alpha_list):
                    r_sloss[a][rows] = torch.cat(out["sl"][k]).cpu().numpy()
                    r_sent[a][rows] = torch.cat(out["se"][k]).cpu().numpy()
                bar.update(int(pairs_per_window[wins].sum()))
    finally:
        bar.close()
        model.train(was_training)

    loss[:] = r_loss[pair_row]
    ent[:] = r_ent[pair_row]
    for a in alpha_list:
        s_loss[a][:] = r_sloss[a][pair_row]
        s_ent[a][:] = r_sent[a][pair_row]
    if np.isnan(loss).any() or np.isnan(ent).any():
        raise FloatingPointError("the model produced NaN log-probabilities (overflow in low "
                                 "precision?); try dtype=torch.float32")
    return TokenLosses(pos, loss, ent, vocab, int(context_length), s_loss, s_ent)
