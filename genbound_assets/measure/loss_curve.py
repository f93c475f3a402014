"""Loss-curve inputs for the prequential complexity (eq. 5):

    K(h) log 2  <=  sum_k [ R_{h_{k-1}}(X_k | X_<k) - R_{h_D}(X_k | X_<k) ].

The first sum is the area under the loss curve where every token is scored by the model that
has *not yet* trained on it.  For a checkpoint that has consumed tokens[:tokens_seen], the
tokens it is about to train on are tokens[tokens_seen : tokens_seen + window) (window = one
optimizer step's tokens for Pythia), so `next_tokens_loss` scores targets there only, with their
usual contexts (which reach back before tokens_seen: that is the X_<k of the conditional).
`held_sample_loss` scores a fixed sample of positions instead (the fallback when the stream of
the next batch is not available, e.g. Pythia's later steps), and says so in `eval_kind`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genbound_assets.data.stream import TokenStream

from .token_losses import token_losses

NEXT_TOKENS = "next_tokens"
HELD_SAMPLE = "held_sample"


@dataclass(frozen=True)
class CheckpointLoss:
    step: int | None
    tokens_seen: int
    eval_kind: str      # NEXT_TOKENS or HELD_SAMPLE
    n_tokens: int       # targets actually scored
    mean_loss: float    # nats per token


def next_token_positions(
    stream: TokenStream,
    tokens_seen: int,
    n_tokens: int,
    window: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Sorted target positions in [tokens_seen, tokens_seen + window) (window defaults to
    n_tokens; clipped at the stream's end); if there are more than n_tokens of them, a uniform
    subsample without replacement drawn with `seed` (deterministic).

    tokens_seen is the trained prefix length (suite.trained_prefix_len(step, B*T) = step*B*T + 1;
    0 for step0, read as 1): every target below it was trained on, and with window = B*T the
    positions are exactly the targets of the next update (suite.step_token_range(step, B*T))."""
    lo, n = int(tokens_seen), int(n_tokens)
    win = n if window is None else int(window)
    if lo < 0 or n < 1 or win < 1:
        raise ValueError("need tokens_seen >= 0, n_tokens >= 1 and window >= 1")
    lo = max(lo, 1)  # position 0 is the first separator; the first update's targets start at 1
    hi = min(lo + win, len(stream))
    if lo >= hi:
        raise ValueError(f"tokens_seen = {lo} leaves no token in a stream of {len(stream)}")
    mask = np.ones(hi - lo, dtype=bool)
    ds = stream.doc_starts
    mask[ds[(ds >= lo) & (ds < hi)] - lo] = False   # separators open documents, not targets
    targets = lo + np.flatnonzero(mask)
    if targets.size == 0:
        raise ValueError(f"no target position in [{lo}, {hi})")
    if targets.size > n:
        pick = np.random.default_rng(seed).choice(targets.size, size=n, replace=False)
        targets = targets[np.sort(pick)]
    return targets


def next_tokens_loss(
    model,
    stream: TokenStream,
    tokens_seen: int,
    n_tokens: int,
    context_length: int,
    *,
    window: int | None = None,
    step: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    device=None,
    dtype=None,
    progress: bool = False,
) -> CheckpointLoss:
    """Mean loss of `model` (trained on tokens[:tokens_seen]) on up to n_tokens targets among
    the next `window` tokens (see next_token_positions).  Costs one forward pass per target whose
    context does not start at a document's separator (targets within context_length of a
    document start share a pass)."""
    pos = next_token_positions(stream, tokens_seen, n_tokens, window, seed)
    res = token_losses(model, stream, pos, context_length, batch_size=batch_size,
                       device=device, dtype=dtype, progress=progress)
    return CheckpointLoss(step, int(tokens_seen), NEXT_TOKENS, len(pos), float(res.loss.mean()))


def held_sample_loss(
    model,
    stream: TokenStream,
    positions,
    context_length: int,
    *,
    tokens_seen: int,
    step: int | None = None,
    batch_size: int = 64,
    device=None,
    dtype=None,
    progress: bool = False,
) -> CheckpointLoss:
    """Mean loss of `model` on a fixed sample of target positions (the same for every
    checkpoint of a run).  Only an estimate of the not-yet-trained loss when the sample lies at
    or after tokens_seen (or outside the training stream); eval_kind records the difference."""
    pos = np.asarray(positions)
    if pos.size == 0:
        raise ValueError("held sample is empty")
    res = token_losses(model, stream, pos, context_length, batch_size=batch_size,
                       device=device, dtype=dtype, progress=progress)
    return CheckpointLoss(step, int(tokens_seen), HELD_SAMPLE, len(pos), float(res.loss.mean()))
