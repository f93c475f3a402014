"""The training token stream and its token-context pairs (Thm 3.4's X_1..X_D).

Layout (see docs/data.md): documents are concatenated in the exact order training consumed
them, each *opened* by one separator token (GPT-NeoX's <|endoftext|>).  The separator at
doc_starts[j] is context only: it is never a target, and it is the whole context of the
document's first real token, so every target has a non-empty context.  The context of a target
at position p is tokens[max(doc_start(p), p - T) : p]: the up-to-T preceding tokens of the same
document (as in Lotfi et al.'s code), never crossing a document boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TokenStream:
    tokens: np.ndarray      # int64, shape (n,), the training order
    doc_starts: np.ndarray  # int64, sorted, doc_starts[0] == 0; tokens[doc_starts[j]] == separator_id
    separator_id: int

    def __post_init__(self):
        tokens = np.ascontiguousarray(self.tokens, dtype=np.int64)
        starts = np.ascontiguousarray(self.doc_starts, dtype=np.int64)
        if tokens.ndim != 1 or starts.ndim != 1:
            raise ValueError("tokens and doc_starts must be one-dimensional")
        if len(starts) == 0 or starts[0] != 0:
            raise ValueError("doc_starts must start with 0")
        if np.any(np.diff(starts) <= 0) or starts[-1] >= len(tokens):
            raise ValueError("doc_starts must be strictly increasing and inside the stream")
        if np.any(tokens[starts] != self.separator_id):
            raise ValueError("every document must open with the separator token")
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "doc_starts", starts)

    def __len__(self) -> int:
        return len(self.tokens)

    def doc_start_of(self, positions) -> np.ndarray:
        """Start offset (the separator) of the document holding each position."""
        pos = np.asarray(positions, dtype=np.int64)
        return self.doc_starts[np.searchsorted(self.doc_starts, pos, side="right") - 1]

    def target_positions(self, prefix_len: int | None = None) -> np.ndarray:
        """All target positions (non-separator-openers) among tokens[:prefix_len]."""
        n = len(self.tokens) if prefix_len is None else int(prefix_len)
        mask = np.ones(n, dtype=bool)
        mask[self.doc_starts[self.doc_starts < n]] = False
        return np.flatnonzero(mask)

    def n_targets(self, prefix_len: int | None = None) -> int:
        """D for a checkpoint that consumed tokens[:prefix_len]: the targets it trained on."""
        n = len(self.tokens) if prefix_len is None else int(prefix_len)
        return n - int(np.count_nonzero(self.doc_starts < n))

    def context_starts(self, positions, context_length: int) -> np.ndarray:
        """First context index of each target: max(doc_start(p), p - T)."""
        pos = np.asarray(positions, dtype=np.int64)
        if np.any(pos <= 0) or np.any(pos >= len(self.tokens)):
            raise ValueError("positions must lie inside the stream (and not at 0)")
        starts = self.doc_start_of(pos)
        if np.any(starts == pos):
            raise ValueError("a document-opening separator is not a target position")
        return np.maximum(starts, pos - int(context_length))
