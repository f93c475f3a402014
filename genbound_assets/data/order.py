"""The training data as the trainer saw it: an ordered list of windows of T targets.

The bound is about the targets a checkpoint trained on, each *with the context it was trained
with*.  That context rule is fixed here, once, for every mode that evaluates a model on its
training data (every target, sampled windows, sampled single targets) and for the truth test:

    target j of window c is predicted from the window's own inputs 0..j, with the attention
    mask the trainer used (block-diagonal per document for the local suite, plain causal for
    Pythia's 2049-token sequences) and the window's default positions 0..T-1.

A forward pass over window c therefore yields every target of the window at once, exactly as
one training step computed it (docs/bounds.md, "The context rule").

Checkpoint ``step`` has trained on windows ``[0, step * windows_per_step)`` (Pythia: sequences
[1024·k, 1024·(k+1)) at optimizer step k; the local suite: B windows per step); its D is the
number of targets in those windows.

Implementations: :class:`StreamWindows` (the local suite: a TokenStream read as windows of T+1
tokens with stride T), :class:`ArrayWindows` (a plain token array, e.g. a researcher's ``.npy``
/ ``.npz``, read the same way with plain causal attention) and ``data.megatron.MegatronWindows``
(Pythia's preshuffled Pile and runs stored in the same .bin/.idx format).  No torch, no Dagster, no database here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from .corpus import check_int
from .stream import TokenStream

__all__ = ["WindowBatch", "WindowOrder", "StreamWindows", "ArrayWindows", "load_token_array"]

IGNORE = -100   # label of a position that is not a target (a document-opening separator)


@dataclass(frozen=True)
class WindowBatch:
    """Windows ``index`` as model inputs.

    inputs, labels: int64 (n, T); labels[i, j] is the target predicted from inputs[i, :j+1]
    (IGNORE where position j is not a target).  segments: int64 (n, T) document index of each
    input token (block-diagonal attention: token j attends to token i <= j only if they share a
    segment), or None for plain causal attention.
    """

    index: np.ndarray
    inputs: np.ndarray
    labels: np.ndarray
    segments: np.ndarray | None

    def __len__(self) -> int:
        return len(self.index)

    @property
    def n_targets(self) -> np.ndarray:
        return (self.labels != IGNORE).sum(axis=1)


class WindowOrder(ABC):
    """An ordered list of training windows, ``windows_per_step`` consumed per optimizer step."""

    context_length: int      # T: targets (and inputs) per window
    windows_per_step: int    # B

    @property
    @abstractmethod
    def n_windows(self) -> int:
        """Windows available (the trained prefix of any checkpoint must fit in them)."""

    @abstractmethod
    def batch(self, index) -> WindowBatch:
        """The windows at ``index`` (any order, repeats allowed)."""

    @abstractmethod
    def target_counts(self) -> np.ndarray:
        """int64 (n_windows,): targets in each window (T unless a separator is a label)."""

    @abstractmethod
    def content_hash(self) -> str:
        """sha256 identifying the tokens and the window rule (stored with every bound)."""

    # -- shared ---------------------------------------------------------------------------------

    @property
    def tokens_per_step(self) -> int:
        return self.windows_per_step * self.context_length

    def _index(self, index) -> np.ndarray:
        """Window indices as a 1-D int64 array, each checked to lie in [0, n_windows)."""
        idx = np.asarray(index, dtype=np.int64).ravel()
        n = self.n_windows
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"window index out of range [0, {n})")
        return idx

    def trained_windows(self, step: int) -> int:
        """Windows checkpoint ``step`` trained on: ``step * windows_per_step``."""
        step = check_int("step", step, 0)
        w = step * self.windows_per_step
        if w > self.n_windows:
            raise ValueError(
                f"step {step} trained on {w:,} windows but the training data holds only "
                f"{self.n_windows:,} ({self.windows_per_step} per step)")
        return w

    def cumulative_targets(self) -> np.ndarray:
        """int64 (n_windows + 1,): targets in windows [0, c) for c = 0..n_windows."""
        cached = getattr(self, "_cum_targets", None)
        if cached is None:
            cached = np.concatenate([[0], np.cumsum(self.target_counts(), dtype=np.int64)])
            self._cum_targets = cached
        return cached

    def n_targets(self, n_windows: int) -> int:
        """D of a checkpoint that trained on windows [0, n_windows)."""
        n = check_int("n_windows", n_windows, 0, self.n_windows)
        return int(self.cumulative_targets()[n])

    def window_of_target(self, k) -> np.ndarray:
        """Window holding the k-th target (0-based, in training order)."""
        k = np.asarray(k, dtype=np.int64)
        cum = self.cumulative_targets()
        if k.size and (k.min() < 0 or k.max() >= cum[-1]):
            raise ValueError(f"target index out of range [0, {int(cum[-1])})")
        return np.searchsorted(cum, k, side="right") - 1

    def target_offset(self, k) -> np.ndarray:
        """Column j (0..T-1) of the k-th target inside its window."""
        k = np.asarray(k, dtype=np.int64)
        c = self.window_of_target(k)
        rank = k - self.cumulative_targets()[c]          # rank among the window's targets
        windows, inverse = np.unique(c, return_inverse=True)
        is_target = self.batch(windows).labels != IGNORE           # (n_unique, T)
        # column of the r-th target in each row: position where the running count reaches r+1
        running = np.cumsum(is_target, axis=1)
        return np.argmax(running[inverse] > rank[:, None], axis=1).astype(np.int64)


class StreamWindows(WindowOrder):
    """The local suite's order (families/suite.py): window c = tokens[c·T : (c+1)·T + 1],
    inputs its first T tokens, labels its last T, labels at document-opening separators
    ignored, attention block-diagonal per document."""

    def __init__(self, stream: TokenStream, context_length: int, windows_per_step: int):
        if not isinstance(stream, TokenStream):
            raise ValueError(f"stream must be a TokenStream, got {type(stream).__name__}")
        self.stream = stream
        self.context_length = check_int("context_length", context_length, 1)
        self.windows_per_step = check_int("windows_per_step", windows_per_step, 1)
        self._n = (len(stream) - 1) // self.context_length
        is_start = np.zeros(len(stream), dtype=bool)
        is_start[stream.doc_starts] = True
        self._is_start = is_start

    def __repr__(self) -> str:
        return (f"StreamWindows({len(self.stream):,} tokens, T={self.context_length}, "
                f"B={self.windows_per_step})")

    @property
    def n_windows(self) -> int:
        return self._n

    def batch(self, index) -> WindowBatch:
        idx = self._index(index)
        T = self.context_length
        pos = idx[:, None] * T + np.arange(T + 1)[None, :]
        toks = self.stream.tokens[pos]
        labels = toks[:, 1:].copy()
        labels[self._is_start[pos[:, 1:]]] = IGNORE
        seg = np.searchsorted(self.stream.doc_starts, pos[:, :-1], side="right") - 1
        return WindowBatch(idx, toks[:, :-1].copy(), labels, seg)

    def target_counts(self) -> np.ndarray:
        T = self.context_length
        # separators at positions c*T+1 .. (c+1)*T are ignored labels of window c
        starts = self.stream.doc_starts
        starts = starts[(starts >= 1) & (starts <= self._n * T)]
        ignored = np.bincount((starts - 1) // T, minlength=self._n)[: self._n]
        return T - ignored.astype(np.int64)

    def target_position(self, window, column) -> np.ndarray:
        """Stream position of target (window, column): window·T + column + 1."""
        return np.asarray(window, dtype=np.int64) * self.context_length + np.asarray(column) + 1

    def content_hash(self) -> str:
        import hashlib

        h = hashlib.sha256(b"genbound-stream-windows-v1")
        h.update(self.stream.content_hash().encode())
        h.update(np.array([self.context_length, self.windows_per_step], dtype="<i8").tobytes())
        return h.hexdigest()


def load_token_array(path) -> np.ndarray:
    """A 1-D integer token array from ``.npy`` (memory-mapped, not read into memory) or
    ``.npz`` (its ``tokens`` array, or its only array).  ValueError (one line, naming the file
    and the field) for anything else."""
    from pathlib import Path

    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"token file {p} does not exist")
    try:
        if p.suffix == ".npy":
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
            field = "the array"
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                names = list(z.files)
                if "tokens" in names:
                    field = "'tokens'"
                elif len(names) == 1:
                    field = repr(names[0])
                else:
                    raise ValueError(f"{p}: no 'tokens' array (arrays: {', '.join(names) or 'none'})")
                arr = z[field.strip("'")]
        else:
            raise ValueError(f"{p}: token data must be .npy or .npz (or a Megatron .bin/.idx pair)")
    except Exception as e:  # zip / header / pickle errors from numpy
        if isinstance(e, ValueError) and str(e).startswith(f"{p}:"):
            raise
        msg = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(f"{p}: unreadable token array: {type(e).__name__}: {msg}") from None
    if arr.ndim != 1:
        raise ValueError(f"{p}: {field} must be one-dimensional, got shape {tuple(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{p}: {field} must hold integer token ids, got dtype {arr.dtype}")
    if len(arr) < 2:
        raise ValueError(f"{p}: {field} holds {len(arr)} token(s); a window needs at least 2")
    return arr


class ArrayWindows(WindowOrder):
    """A plain token array read in order as windows of T+1 tokens with stride T: window c =
    tokens[c·T : (c+1)·T + 1], inputs its first T tokens, labels its last T (every one a
    target), plain causal attention (``segments`` None: no document masking).

    This is how a causal LM trained on consecutive (T+1)-token slices of one packed stream saw
    its data (Megatron/GPT-NeoX and Pythia do exactly this; a Hugging Face ``Trainer`` fed
    ``input_ids`` of T+1 tokens with ``labels = input_ids`` computes the same T targets).
    ``tokens`` may be a read-only memory map (``load_token_array``); windows are gathered on
    demand.  ``source`` names the file for messages and ``repr``."""

    def __init__(self, tokens: np.ndarray, context_length: int, windows_per_step: int,
                 source: str | None = None):
        arr = tokens if isinstance(tokens, np.ndarray) else np.asarray(tokens)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"tokens must be a 1-D integer array, got shape {arr.shape} dtype {arr.dtype}")
        self.tokens = arr
        self.source = source
        self.context_length = check_int("context_length", context_length, 1)
        self.windows_per_step = check_int("windows_per_step", windows_per_step, 1)
        self._n = max(0, (len(arr) - 1) // self.context_length)
        self._max_id: int | None = None
        self._hash: str | None = None

    @classmethod
    def from_file(cls, path, context_length: int, windows_per_step: int) -> ArrayWindows:
        """``load_token_array(path)`` read as windows (a .npy stays memory-mapped)."""
        return cls(load_token_array(path), context_length, windows_per_step, source=str(path))

    def __repr__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return (f"ArrayWindows({where}{len(self.tokens):,} tokens, T={self.context_length}, "
                f"B={self.windows_per_step})")

    @property
    def n_windows(self) -> int:
        return self._n

    def batch(self, index) -> WindowBatch:
        idx = self._index(index)
        T = self.context_length
        pos = idx[:, None] * T + np.arange(T + 1)[None, :]
        toks = np.asarray(self.tokens[pos.ravel()], dtype=np.int64).reshape(pos.shape)
        if toks.size and toks.min() < 0:
            raise ValueError(f"negative token id {int(toks.min())} in the token array")
        return WindowBatch(idx, toks[:, :-1].copy(), toks[:, 1:].copy(), None)

    def target_counts(self) -> np.ndarray:
        return np.full(self._n, self.context_length, dtype=np.int64)

    def target_position(self, window, column) -> np.ndarray:
        """Array position of target (window, column): window·T + column + 1."""
        return np.asarray(window, dtype=np.int64) * self.context_length + np.asarray(column) + 1

    def _chunks(self, chunk: int = 1 << 24):
        for i in range(0, len(self.tokens), chunk):
            yield np.asarray(self.tokens[i:i + chunk])

    def max_token_id(self) -> int:
        """The largest token id (one pass over the array, cached); ValueError on a negative id."""
        if self._max_id is None:
            lo, hi = 0, 0
            for c in self._chunks():
                lo, hi = min(lo, int(c.min())), max(hi, int(c.max()))
            if lo < 0:
                raise ValueError(f"{self.source or 'token array'}: negative token id {lo}")
            self._max_id = hi
        return self._max_id

    def content_hash(self) -> str:
        """sha256 over the tokens (int64 little-endian, any stored dtype), T and B."""
        if self._hash is None:
            import hashlib

            h = hashlib.sha256(b"genbound-array-windows-v1")
            h.update(np.array([len(self.tokens), self.context_length, self.windows_per_step],
                              dtype="<i8").tobytes())
            for c in self._chunks():
                h.update(c.astype("<i8").tobytes())
            self._hash = h.hexdigest()
        return self._hash
