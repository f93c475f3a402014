"""The bound's m token-context pairs, and calibration windows disjoint from them (docs/data.md).

Pairs: Thm 3.4's empirical risk is a mean over a checkpoint's own D_t targets; we estimate it
from m pairs drawn uniformly *with replacement* from those D_t targets.  The randomness is m
seeded uniforms u_i in [0, 1), drawn once per family and stored; checkpoint t's i-th pair is
``target_positions(prefix_t)[floor(u_i * D_t)]``.  Each checkpoint thus gets an exactly uniform
iid sample of its own targets, and the samples are paired across checkpoints (same u_i), which
shrinks the noise of differences along the family.

Calibration: data that shapes the quantized model (GPTQ calibration, Hessian batches) is chosen
as grid-aligned training windows inside the checkpoint's consumed prefix that contain none of the
bound's sampled positions.
"""

from __future__ import annotations

import numpy as np

from genbound_assets.data.corpus import check_int
from genbound_assets.data.stream import TokenStream, _check_prefix

__all__ = ["draw_uniforms", "positions_for", "calibration_windows", "contexts"]


def draw_uniforms(m: int, seed: int) -> np.ndarray:
    """m iid uniforms in [0, 1) (float64) from ``numpy.random.default_rng(seed)``."""
    m, seed = check_int("m", m, 1), check_int("seed", seed, 0)
    return np.random.default_rng(seed).random(m, dtype=np.float64)


def positions_for(u, stream: TokenStream, prefix_len: int | None = None,
                  exclude_windows=None, window_len: int | None = None) -> np.ndarray:
    """Map uniforms to target positions of ``stream.tokens[:prefix_len]``:
    ``target_positions(prefix_len)[floor(u * n_targets(prefix_len))]`` (computed without
    materializing all targets).  Every result is a target (never a separator) < prefix_len.

    ``exclude_windows`` (start offsets of windows ``[s, s + window_len)``, e.g. the quantizer's
    calibration windows chosen *first*, with their own seed) removes those targets: the draws are
    then uniform over the remaining targets, disjoint from calibration and independent of it.
    The excluded stratum is evaluated exactly instead (``excluded_targets``; the bound adds it
    through ``subsampled_freedman_bound(exact_losses=..., exact_proxies=...)``)."""
    u = np.asarray(u, dtype=np.float64)
    if u.ndim != 1 or u.size == 0:
        raise ValueError(f"u must be a non-empty 1-D array, got shape {u.shape}")
    if not np.all((u >= 0.0) & (u < 1.0)):
        raise ValueError("u must lie in [0, 1)")
    n = len(stream) if prefix_len is None else _check_prefix(stream, prefix_len)
    d = stream.n_targets(n)
    if exclude_windows is None:
        if d < 1:
            raise ValueError(f"the prefix of {n} tokens holds no targets")
        k = np.minimum(np.floor(u * d).astype(np.int64), d - 1)
        return stream.target_at(k)
    first_rank, counts = _window_target_ranks(stream, n, exclude_windows, window_len)
    d_kept = d - int(counts.sum())
    if d_kept < 1:
        raise ValueError(f"the prefix of {n} tokens holds no targets outside the excluded windows")
    k = np.minimum(np.floor(u * d_kept).astype(np.int64), d_kept - 1)
    # window j starts at reduced rank first_rank[j] - (targets in windows before j)
    before = np.concatenate([[0], np.cumsum(counts)[:-1]])
    j = np.searchsorted(first_rank - before, k, side="right")
    shift = np.concatenate([[0], np.cumsum(counts)])[j]
    return stream.target_at(k + shift)


def _window_target_ranks(stream: TokenStream, prefix_len: int, starts, window_len):
    """Full-stream ranks of the first target in each window, and each window's target count."""
    w = check_int("window_len (required with exclude_windows)", window_len, 1)
    s = np.unique(np.asarray(starts, dtype=np.int64).ravel())
    if s.size and (s[0] < 0 or s[-1] + w > prefix_len or np.any(np.diff(s) < w)):
        raise ValueError("exclude_windows must be non-overlapping windows inside the prefix")
    first_rank = np.array([stream.n_targets(int(a)) for a in s], dtype=np.int64)
    counts = np.array([stream.n_targets(int(a) + w) for a in s], dtype=np.int64) - first_rank
    return first_rank, counts


def excluded_targets(stream: TokenStream, starts, window_len: int) -> np.ndarray:
    """Every target position inside the windows ``[s, s + window_len)`` (the exact stratum)."""
    w = int(window_len)
    s = np.unique(np.asarray(starts, dtype=np.int64).ravel())
    if s.size == 0:
        return np.zeros(0, dtype=np.int64)
    pos = (s[:, None] + np.arange(w)[None, :]).ravel()
    return pos[np.isin(pos, stream.doc_starts, invert=True) & (pos > 0)]


def calibration_windows(
    stream: TokenStream,
    prefix_len: int,
    n_windows: int,
    window_len: int,
    seed: int,
    exclude_positions=(),
) -> np.ndarray:
    """Start offsets of ``n_windows`` distinct windows ``[s, s + window_len)`` inside
    ``tokens[:prefix_len]`` that contain none of ``exclude_positions``.  Preferred order (valid
    and disjoint): choose the windows first with ``exclude_positions=()``, then draw the bound's
    pairs with ``positions_for(..., exclude_windows=windows)``; excluding already-drawn positions
    instead makes the quantized model depend on the sample (see docs/data.md).  Candidates are the grid ``s = j * window_len`` (non-overlapping, aligned like
    training chunks, may span documents); the admissible ones are sampled without replacement
    with ``numpy.random.default_rng(seed)`` and returned sorted.
    """
    n = _check_prefix(stream, prefix_len)
    n_windows = check_int("n_windows", n_windows, 1)
    w = check_int("window_len", window_len, 1)
    seed = check_int("seed", seed, 0)
    starts = np.arange(0, n - w + 1, w, dtype=np.int64)
    if starts.size == 0:
        raise ValueError(f"window_len {w} exceeds prefix_len {n}")
    ex = np.unique(np.asarray(exclude_positions, dtype=np.int64).ravel())
    if ex.size:
        blocked = np.unique(ex[ex < starts[-1] + w] // w)
        ok = np.ones(starts.size, dtype=bool)
        ok[blocked[blocked < starts.size]] = False
        starts = starts[ok]
    if starts.size < n_windows:
        raise ValueError(
            f"only {starts.size} windows of {w} tokens in the first {n} tokens avoid the "
            f"{ex.size} excluded positions; asked for {n_windows} (use shorter windows or fewer)"
        )
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(starts, size=n_windows, replace=False))


def contexts(stream: TokenStream, positions, T: int) -> list[np.ndarray]:
    """Each pair's context token ids: ``tokens[max(doc_start(p), p - T) : p]``, the up-to-T
    preceding tokens of the same document (it begins with the separator iff it reaches the
    document start)."""
    T = check_int("T (context length)", T, 1)
    pos = np.asarray(positions, dtype=np.int64).ravel()
    cs = stream.context_starts(pos, T)
    return [stream.tokens[a:p] for a, p in zip(cs.tolist(), pos.tolist(), strict=True)]
