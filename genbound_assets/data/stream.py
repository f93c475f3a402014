"""The training token stream and its token-context pairs (Thm 3.4's X_1..X_D).

Layout (see docs/data.md): documents are concatenated in the exact order training consumed
them, each *opened* by one separator token (GPT-NeoX's <|endoftext|>).  The separator at
doc_starts[j] is context only: it is never a target, and it is the whole context of the
document's first real token, so every target has a non-empty context.  The context of a target
at position p is tokens[max(doc_start(p), p - T) : p]: the up-to-T preceding tokens of the same
document (as in Lotfi et al.'s code), never crossing a document boundary.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

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

    # -- additions (keep the contract above unchanged) -------------------------------------

    @property
    def n_documents(self) -> int:
        return len(self.doc_starts)

    def document(self, j: int) -> np.ndarray:
        """Document j's tokens, without its opening separator."""
        j = int(j)
        if not 0 <= j < len(self.doc_starts):
            raise ValueError(f"document index {j} out of range [0, {len(self.doc_starts)})")
        end = self.doc_starts[j + 1] if j + 1 < len(self.doc_starts) else len(self.tokens)
        return self.tokens[self.doc_starts[j] + 1: end]

    def prefix(self, prefix_len: int) -> TokenStream:
        """The stream a checkpoint consumed: tokens[:prefix_len] with its documents."""
        n = _check_prefix(self, prefix_len)
        return TokenStream(self.tokens[:n], self.doc_starts[self.doc_starts < n], self.separator_id)

    def target_at(self, k) -> np.ndarray:
        """Position of the k-th target (0-based, in stream order), without materializing all
        targets: document j holds targets doc_starts[j]+1 .. doc_starts[j+1]-1."""
        k = np.asarray(k, dtype=np.int64)
        ends = np.append(self.doc_starts[1:], len(self.tokens))
        cum = np.cumsum(ends - self.doc_starts - 1)  # targets in documents 0..j
        if k.size and (k.min() < 0 or k.max() >= (cum[-1] if len(cum) else 0)):
            raise ValueError(f"target index out of range [0, {int(cum[-1])})")
        j = np.searchsorted(cum, k, side="right")
        before = np.where(j > 0, cum[np.maximum(j - 1, 0)], 0)
        return self.doc_starts[j] + 1 + (k - before)

    def content_hash(self) -> str:
        """sha256 over (separator_id, doc_starts, tokens) as int64 little-endian."""
        h = hashlib.sha256(b"genbound-token-stream-v1")
        h.update(np.int64(self.separator_id).astype("<i8").tobytes())
        h.update(np.int64(len(self.doc_starts)).astype("<i8").tobytes())
        h.update(self.doc_starts.astype("<i8").tobytes())
        h.update(self.tokens.astype("<i8").tobytes())
        return h.hexdigest()


def _check_prefix(stream: TokenStream, prefix_len) -> int:
    if isinstance(prefix_len, bool) or not isinstance(prefix_len, int | np.integer):
        raise ValueError(f"prefix_len must be an integer, got {prefix_len!r}")
    n = int(prefix_len)
    if not 1 <= n <= len(stream):
        raise ValueError(f"prefix_len must be in [1, {len(stream)}] (stream length), got {n}")
    return n


# -- building ---------------------------------------------------------------------------------


def build_stream(token_documents: Iterable[np.ndarray], separator_id: int) -> TokenStream:
    """Concatenate documents in order, each opened by ``separator_id``.

    Empty documents are dropped (they would add a separator and no target).  A document that
    itself contains ``separator_id`` is rejected: it would fake a document boundary.
    """
    if isinstance(separator_id, bool) or not isinstance(separator_id, int | np.integer):
        raise ValueError(f"separator_id must be an integer, got {separator_id!r}")
    sep = int(separator_id)
    parts: list[np.ndarray] = []
    starts: list[int] = []
    n = 0
    for j, doc in enumerate(token_documents):
        d = np.asarray(doc)
        if d.ndim != 1:
            raise ValueError(f"document {j} must be a 1-D token array, got shape {d.shape}")
        if d.size == 0:
            continue
        if not np.issubdtype(d.dtype, np.integer):
            raise ValueError(f"document {j} must hold integer token ids, got dtype {d.dtype}")
        if d.min() < 0:
            raise ValueError(f"document {j} holds a negative token id")
        if np.any(d == sep):
            raise ValueError(f"document {j} contains the separator id {sep} inside it")
        starts.append(n)
        parts.append(np.array([sep], dtype=np.int64))
        parts.append(d.astype(np.int64, copy=False))
        n += 1 + d.size
    if not starts:
        raise ValueError("build_stream: no non-empty documents")
    return TokenStream(np.concatenate(parts), np.asarray(starts, dtype=np.int64), sep)


def _backend(tokenizer):
    """A tokenizers.Tokenizer from either it or a transformers fast tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend
    if hasattr(tokenizer, "encode_batch") and hasattr(tokenizer, "token_to_id"):
        return tokenizer
    raise ValueError(
        f"tokenizer must be a tokenizers.Tokenizer or a transformers fast tokenizer, "
        f"got {type(tokenizer).__name__}"
    )


def tokenize_corpus(
    corpus,
    tokenizer,
    separator_token: str = "<|endoftext|>",
    batch_size: int = 256,
) -> TokenStream:
    """Tokenize a CorpusSource's documents (no added BOS/EOS) into a stream, in corpus order."""
    tok = _backend(tokenizer)
    sep = tok.token_to_id(separator_token)
    if sep is None:
        raise ValueError(f"tokenizer has no separator token {separator_token!r}")

    def docs():
        batch: list[str] = []
        for text in corpus.documents():
            batch.append(text)
            if len(batch) == batch_size:
                yield from _encode(tok, batch)
                batch = []
        if batch:
            yield from _encode(tok, batch)

    return build_stream(docs(), sep)


def _encode(tok, texts):
    for enc in tok.encode_batch(texts, add_special_tokens=False):
        yield np.asarray(enc.ids, dtype=np.int64)


# -- persistence ------------------------------------------------------------------------------


def save_stream(stream: TokenStream, path, metadata: dict | None = None) -> str:
    """Write the stream to ``path`` (.npz) with its content hash; returns the hash.

    Tokens are stored as uint16 when every id < 65536 (else int64); ``metadata`` (json-able:
    corpus name/hash, tokenizer, ...) is stored alongside.
    """
    path = Path(path)
    digest = stream.content_hash()
    dtype = np.uint16 if len(stream) and int(stream.tokens.max()) < 65536 else np.int64
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(
        tmp,
        tokens=stream.tokens.astype(dtype),
        doc_starts=stream.doc_starts,
        separator_id=np.int64(stream.separator_id),
        content_hash=np.array(digest),
        metadata=np.array(json.dumps(metadata or {}, sort_keys=True)),
    )
    os.replace(tmp, path)
    return digest


def load_stream(path, expected_hash: str | None = None) -> TokenStream:
    """Read a stream written by :func:`save_stream`; verify its content hash."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"no stream file at {path}")
    with np.load(path, allow_pickle=False) as z:
        missing = {"tokens", "doc_starts", "separator_id", "content_hash"} - set(z.files)
        if missing:
            raise ValueError(f"{path} is not a genbound stream (missing {sorted(missing)})")
        stream = TokenStream(z["tokens"].astype(np.int64), z["doc_starts"], int(z["separator_id"]))
        stored = str(z["content_hash"])
    digest = stream.content_hash()
    if digest != stored:
        raise ValueError(f"{path}: content hash {digest} != stored {stored} (corrupt file)")
    if expected_hash is not None and digest != expected_hash:
        raise ValueError(f"{path}: content hash {digest} != expected {expected_hash}")
    return stream


def stream_metadata(path) -> dict:
    """The metadata dict saved with a stream."""
    with np.load(Path(path), allow_pickle=False) as z:
        return json.loads(str(z["metadata"])) if "metadata" in z.files else {}


# -- consuming in training order --------------------------------------------------------------


def consumed_prefix_len(n_chunks: int, seq_len: int) -> int:
    """prefix_len after training on ``n_chunks`` chunks of :func:`training_chunks`:
    chunk c reads tokens[c*seq_len : (c+1)*seq_len + 1], so the consumed prefix is
    tokens[: n_chunks*seq_len + 1] and D = stream.n_targets(that)."""
    if n_chunks < 0 or seq_len < 1:
        raise ValueError(f"need n_chunks >= 0 and seq_len >= 1, got {n_chunks}, {seq_len}")
    return int(n_chunks) * int(seq_len) + 1  # n_chunks = 0: tokens[:1], the separator, D = 0


def training_chunks(
    stream: TokenStream, seq_len: int, start_chunk: int = 0, stop_chunk: int | None = None
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Consume the stream in order: yields ``(offset, inputs, labels, segment_ids)``.

    ``inputs = tokens[o : o+seq_len]``, ``labels = tokens[o+1 : o+seq_len+1]`` with ``o =
    c*seq_len``, so consecutive chunks overlap by one token and every target is a label exactly
    once.  Labels at document-opening separators are -100 (never targets).  ``segment_ids`` is
    each input token's document index, for a block-diagonal causal mask (contexts that never
    cross a document boundary, as the bound's contexts).  The last, short chunk is dropped.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    n_full = (len(stream) - 1) // seq_len
    stop = n_full if stop_chunk is None else min(int(stop_chunk), n_full)
    is_start = np.zeros(len(stream), dtype=bool)
    is_start[stream.doc_starts] = True
    for c in range(int(start_chunk), stop):
        o = c * seq_len
        inputs = stream.tokens[o: o + seq_len]
        labels = stream.tokens[o + 1: o + seq_len + 1].copy()
        labels[is_start[o + 1: o + seq_len + 1]] = -100
        seg = np.searchsorted(stream.doc_starts, np.arange(o, o + seq_len), side="right") - 1
        yield o, inputs, labels, seg
