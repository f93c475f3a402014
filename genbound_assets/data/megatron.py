"""Megatron / GPT-NeoX ``MMapIndexedDataset`` files and Pythia's training order over them.

**The format** (``<prefix>.bin`` + ``<prefix>.idx``), as written by ``MMapIndexedDataset.Index.
writer`` in EleutherAI/gpt-neox ``megatron/data/indexed_dataset.py`` (the code that tokenized
Pythia's Pile) and read by EleutherAI/pythia ``utils/mmap_dataset.py``.  All integers little-endian:

    .idx   offset  field
           0       magic        9 bytes  b"MMIDIDX\\x00\\x00"
           9       version      u64      1
           17      dtype code   u8       token dtype of the .bin (table below)
           18      n_sequences  u64      N
           26      n_doc_idx    u64      M (length of doc_idx: documents + 1)
           34      sizes        N × int32   tokens in sequence i
           34+4N   pointers     N × int64   byte offset of sequence i in the .bin
           34+12N  doc_idx      M × int64   sequence index where each document starts (then N)
    .bin   the tokens of every sequence, dtype as coded, at its pointer.

dtype codes (``dtypes`` in gpt-neox megatron/data/indexed_dataset.py; pythia utils/mmap_dataset.py;
Megatron-LM ``DType``): 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 8 uint16 -- Pythia's Pile
uses code 8 (its 50k vocabulary fits 16 bits).  Codes 6 and 7 are float types whose meaning
differs between those sources (float32/float64 in gpt-neox today and in pythia, float64/double
in older gpt-neox, float64/float32 in Megatron-LM); token ids are never floats, so they are
refused, as is any other code.

**Pythia's order** (EleutherAI/pythia README "Exploring the Dataset" and
``utils/batch_viewer.py``, which reads ``dataset[start·1024 : (end+1)·1024]``): the preshuffled
Pile (``EleutherAI/pile-{standard,deduped}-pythia-preshuffled``, 21 shards unsharded by
``utils/unshard_memmap.py`` into ``document.bin`` + ``document.idx``) stores the training
sequences in the order the GPT-NeoX dataloader served them, each of 2049 tokens; optimizer step
k consumed sequences ``[1024·k, 1024·(k+1))``.  Documents are concatenated with an EOD token
between them, so a sequence starts and ends anywhere inside a document.  GPT-NeoX trains each
sequence as inputs = its first 2048 tokens, labels = its last 2048 (``megatron/training.py``
``_get_batch``), with a plain lower-triangular attention mask, positions 0..2047 and a loss mask
of ones (``megatron/utils.py get_ltor_masks_and_position_ids``; ``eod_mask_loss`` defaults to
False and no Pythia config sets it): every one of the 2048 labels is a target, EOD included,
and attention crosses document boundaries.

Hence :class:`MegatronWindows`: window c = sequence c, segments = None (plain causal), T = 2048
targets per window, B = 1024 windows per step.  **The context rule this implies for the bound**
(data/order.py): target j of window c is sequence c's token j+1, predicted from sequence c's
tokens 0..j -- the preceding tokens of its 2049-token training sequence, across document
boundaries, exactly as Pythia trained it; a target's context is never longer than j+1 tokens and
never reaches into the previous sequence even when that sequence holds the same document.
Checkpoint ``step<t>`` trained on steps [0, t): windows ``[0, 1024·t)``, D = 2048·1024·t =
tokens_seen = 2,097,152·t.  Sequence length and sequences per step are parameters, for other
runs stored in this format.

Everything is memory-mapped (``np.memmap``; no copy of either file).  Bad files get a one-line
``ValueError`` naming the file and the field.  :func:`write_mmap_dataset` writes the format
from the table above (tests, and users converting their own runs).  No torch, no Dagster.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .corpus import cache_root, check_int
from .order import WindowBatch, WindowOrder

__all__ = [
    "MMAP_INDEX_MAGIC",
    "MEGATRON_DTYPE_CODES",
    "MMapIndexedDataset",
    "write_mmap_dataset",
    "MegatronWindows",
    "PYTHIA_SEQUENCE_LENGTH",
    "PYTHIA_SEQUENCES_PER_STEP",
]

MMAP_INDEX_MAGIC = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
_HEADER = struct.Struct("<9sQBQQ")          # magic, version, dtype code, n_sequences, n_doc_idx
HEADER_BYTES = _HEADER.size                 # 34
# Integer token dtypes by Megatron code (see the module docstring for the sources).
MEGATRON_DTYPE_CODES: dict[int, np.dtype] = {
    1: np.dtype(np.uint8), 2: np.dtype(np.int8), 3: np.dtype(np.int16), 4: np.dtype(np.int32),
    5: np.dtype(np.int64), 8: np.dtype(np.uint16),
}
_FLOAT_CODES = (6, 7)
PYTHIA_SEQUENCE_LENGTH = 2048       # targets per training sequence (2049 tokens stored)
PYTHIA_SEQUENCES_PER_STEP = 1024    # global batch: 2,097,152 tokens per step
_CHUNK = 1 << 24                    # elements per chunk when scanning the index


def _prefix(path) -> Path:
    p = Path(path).expanduser()
    return p.with_suffix("") if p.suffix in (".bin", ".idx") else p


def _map(path: Path) -> np.ndarray:
    """Read-only uint8 memory map of a whole file (an empty array for an empty file)."""
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r")


class MMapIndexedDataset:
    """A Megatron ``<prefix>.bin`` / ``<prefix>.idx`` pair, memory-mapped and checked.

    ``sizes`` (int32), ``pointers`` (int64 byte offsets) and ``doc_idx`` (int64) are views into
    the mapped .idx; ``sequence(i)`` is a view into the mapped .bin.  Checks at open: magic,
    version, dtype code, the index length implied by the header, sizes >= 0, every pointer
    aligned to the dtype and every sequence inside the .bin, doc_idx non-decreasing within
    [0, n_sequences].
    """

    def __init__(self, prefix):
        self.prefix = _prefix(prefix)
        self.idx_path = self.prefix.with_name(self.prefix.name + ".idx")
        self.bin_path = self.prefix.with_name(self.prefix.name + ".bin")
        for p in (self.idx_path, self.bin_path):
            if not p.is_file():
                raise ValueError(f"Megatron dataset {self.prefix}: {p} does not exist")
        self._read_index()
        self._bin = _map(self.bin_path)
        self.bin_bytes = int(self._bin.size)
        self._check_pointers()
        n_el = self.bin_bytes // self.dtype.itemsize
        self.tokens = self._bin[: n_el * self.dtype.itemsize].view(self.dtype)   # flat, no copy

    # -- reading and checking -------------------------------------------------------------------

    def _read_index(self) -> None:
        f = self.idx_path
        raw = _map(f)
        size = int(raw.size)
        if size < HEADER_BYTES:
            raise ValueError(f"{f}: truncated index header: {size} bytes, the header needs "
                             f"{HEADER_BYTES}")
        magic, version, code, n, m = _HEADER.unpack(bytes(raw[:HEADER_BYTES]))
        if magic != MMAP_INDEX_MAGIC:
            raise ValueError(f"{f}: magic is {magic!r}, expected {MMAP_INDEX_MAGIC!r} (not a "
                             f"Megatron MMapIndexedDataset index)")
        if version != INDEX_VERSION:
            raise ValueError(f"{f}: version is {version}, only version {INDEX_VERSION} is known")
        if code in _FLOAT_CODES:
            raise ValueError(f"{f}: dtype code {code} is a float type; token ids must be integers "
                             f"(codes {sorted(MEGATRON_DTYPE_CODES)})")
        if code not in MEGATRON_DTYPE_CODES:
            raise ValueError(f"{f}: dtype code {code} is not a Megatron integer dtype code "
                             f"{sorted(MEGATRON_DTYPE_CODES)}")
        need = HEADER_BYTES + 12 * n + 8 * m
        if size < need:
            raise ValueError(f"{f}: truncated index: n_sequences={n:,} and n_doc_idx={m:,} need "
                             f"{need:,} bytes, the file has {size:,}")
        if size > need:
            raise ValueError(f"{f}: {size - need:,} bytes after doc_idx (n_sequences={n:,}, "
                             f"n_doc_idx={m:,} account for {need:,}); not a version-1 index")
        self.version, self.dtype_code, self.dtype = version, code, MEGATRON_DTYPE_CODES[code]
        o = HEADER_BYTES
        self.sizes = np.frombuffer(raw, dtype="<i4", count=n, offset=o)
        self.pointers = np.frombuffer(raw, dtype="<i8", count=n, offset=o + 4 * n)
        self.doc_idx = np.frombuffer(raw, dtype="<i8", count=m, offset=o + 12 * n)
        self._idx = raw
        for lo in range(0, n, _CHUNK):
            s = self.sizes[lo: lo + _CHUNK]
            bad = np.flatnonzero(s < 0)
            if bad.size:
                i = lo + int(bad[0])
                raise ValueError(f"{f}: sizes[{i}] = {int(self.sizes[i])} is negative")
        d = self.doc_idx
        for lo in range(0, m, _CHUNK):
            c = d[lo: lo + _CHUNK]
            bad = np.flatnonzero((c < 0) | (c > n))
            if bad.size:
                i = lo + int(bad[0])
                raise ValueError(f"{f}: doc_idx[{i}] = {int(d[i])} is outside [0, n_sequences={n:,}]")
            c = d[max(lo - 1, 0): lo + _CHUNK]          # overlap one entry with the last chunk
            bad = np.flatnonzero(np.diff(c) < 0)
            if bad.size:
                i = max(lo - 1, 0) + int(bad[0]) + 1
                raise ValueError(f"{f}: doc_idx[{i}] = {int(d[i])} < doc_idx[{i - 1}] = "
                                 f"{int(d[i - 1])}; doc_idx must be non-decreasing")

    def _check_pointers(self) -> None:
        item, n = self.dtype.itemsize, len(self.sizes)
        for lo in range(0, n, _CHUNK):
            p = self.pointers[lo: lo + _CHUNK]
            end = p + self.sizes[lo: lo + _CHUNK].astype(np.int64) * item
            bad = np.flatnonzero((p < 0) | (p % item != 0) | (end > self.bin_bytes))
            if bad.size:
                i = lo + int(bad[0])
                pi, si = int(self.pointers[i]), int(self.sizes[i])
                if pi < 0 or pi % item:
                    raise ValueError(f"{self.idx_path}: pointers[{i}] = {pi} is not a byte offset "
                                     f"of a {self.dtype.name} token (negative or not a multiple "
                                     f"of {item})")
                raise ValueError(
                    f"{self.idx_path}: pointers[{i}] = {pi:,} + sizes[{i}] = {si:,} tokens × "
                    f"{item} bytes ends at byte {pi + si * item:,}, past the end of "
                    f"{self.bin_path} ({self.bin_bytes:,} bytes)")

    # -- access ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.sizes)

    def __repr__(self) -> str:
        return (f"MMapIndexedDataset({str(self.prefix)!r}: {len(self):,} sequences, "
                f"{self.dtype.name}, {self.bin_bytes:,} bytes)")

    @property
    def n_docs(self) -> int:
        """Documents in doc_idx (its length minus the closing entry)."""
        return max(len(self.doc_idx) - 1, 0)

    def _check_index(self, index) -> np.ndarray:
        idx = np.asarray(index, dtype=np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            bad = int(idx[(idx < 0) | (idx >= len(self))][0])
            raise ValueError(f"{self.prefix}: sequence {bad} is out of range [0, {len(self):,})")
        return idx

    def sequence(self, i: int) -> np.ndarray:
        """Sequence i's tokens: a read-only view into the .bin."""
        i = int(self._check_index([i])[0])
        start = int(self.pointers[i]) // self.dtype.itemsize
        return self.tokens[start: start + int(self.sizes[i])]

    def gather(self, index, length: int) -> np.ndarray:
        """int64 (len(index), length): the first ``length`` tokens of each sequence in ``index``
        (each must hold at least ``length``)."""
        idx = self._check_index(index)
        short = idx[self.sizes[idx] < length]
        if short.size:
            i = int(short[0])
            raise ValueError(f"{self.prefix}: sequence {i} has {int(self.sizes[i])} tokens, "
                             f"fewer than {length}")
        start = self.pointers[idx] // self.dtype.itemsize
        return self.tokens[start[:, None] + np.arange(length)[None, :]].astype(np.int64)

    # -- identity -------------------------------------------------------------------------------

    def file_sha256(self) -> dict[str, str]:
        """{"idx": sha256, "bin": sha256} of the two files.

        Hashing Pythia's 600 GB .bin reads it once (tens of minutes), so each digest is cached
        in ``$GENBOUND_CACHE_DIR/megatron-sha256/<sha256 of the resolved path>.json`` keyed by
        the file's (size, mtime_ns, inode); any change to those re-hashes the file."""
        out = {}
        for key, path in (("idx", self.idx_path), ("bin", self.bin_path)):
            out[key] = _cached_sha256(path)
        return out


def _cached_sha256(path: Path) -> str:
    from .corpus import sha256_file

    path = path.resolve()
    st = path.stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
    cache = cache_root() / "megatron-sha256" / (hashlib.sha256(str(path).encode()).hexdigest() + ".json")
    try:
        doc = json.loads(cache.read_text())
        if doc.get("path") == str(path) and doc.get("stamp") == stamp and isinstance(doc.get("sha256"), str):
            return doc["sha256"]
    except (OSError, ValueError):
        pass
    digest = sha256_file(path, chunk=1 << 24)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".sha256.", dir=cache.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump({"path": str(path), "stamp": stamp, "sha256": digest}, fh)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return digest


def write_mmap_dataset(prefix, sequences: Iterable, dtype=np.uint16, doc_idx=None) -> Path:
    """Write ``<prefix>.bin`` and ``<prefix>.idx`` in the version-1 MMapIndexedDataset format.

    sequences: 1-D integer arrays, in order (sequence i is item i of the index).  dtype: one of
    Megatron's integer token dtypes (uint16 = code 8 for vocabularies below 65,536).  doc_idx:
    sequence indices where documents start, closed by len(sequences) (default: every sequence
    its own document, ``0..N``).  Values that do not fit ``dtype`` are refused.  The .bin is
    written first and the .idx last, each via a temporary file and ``os.replace``, so a complete
    .idx always describes a complete .bin.  Returns the prefix.
    """
    prefix = _prefix(prefix)
    dt = np.dtype(dtype)
    codes = {np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype(np.int16): 3,
             np.dtype(np.int32): 4, np.dtype(np.int64): 5, np.dtype(np.uint16): 8}
    if dt not in codes:
        raise ValueError(f"dtype must be one of {[d.name for d in codes]}, got {dt}")
    info = np.iinfo(dt)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    sizes: list[int] = []
    tmp_bin = prefix.with_name(f".{prefix.name}.bin.tmp")
    try:
        with open(tmp_bin, "wb") as fb:
            for i, seq in enumerate(sequences):
                a = np.asarray(seq)
                if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
                    raise ValueError(f"sequence {i} must be a 1-D integer array, got shape "
                                     f"{a.shape} dtype {a.dtype}")
                if a.size and (int(a.min()) < info.min or int(a.max()) > info.max):
                    raise ValueError(f"sequence {i} holds values in [{int(a.min())}, "
                                     f"{int(a.max())}] that do not fit {dt.name}")
                if a.size > np.iinfo(np.int32).max:
                    raise ValueError(f"sequence {i} has {a.size} tokens; sizes are int32")
                fb.write(a.astype(dt.newbyteorder("<"), copy=False).tobytes())
                sizes.append(int(a.size))
            fb.flush()
            os.fsync(fb.fileno())
        n = len(sizes)
        docs = np.arange(n + 1, dtype=np.int64) if doc_idx is None else np.asarray(doc_idx, dtype=np.int64)
        if docs.ndim != 1 or (docs.size and (docs[0] != 0 or docs[-1] != n or np.any(np.diff(docs) < 0))):
            raise ValueError(f"doc_idx must be non-decreasing from 0 to n_sequences={n}, got {docs.tolist()[:10]}")
        size_arr = np.asarray(sizes, dtype="<i4")
        pointers = np.zeros(n, dtype="<i8")
        if n > 1:
            pointers[1:] = np.cumsum(size_arr[:-1].astype(np.int64)) * dt.itemsize
        tmp_idx = prefix.with_name(f".{prefix.name}.idx.tmp")
        with open(tmp_idx, "wb") as fi:
            fi.write(MMAP_INDEX_MAGIC)
            fi.write(struct.pack("<Q", INDEX_VERSION))
            fi.write(struct.pack("<B", codes[dt]))
            fi.write(struct.pack("<Q", n))
            fi.write(struct.pack("<Q", len(docs)))
            fi.write(size_arr.tobytes())
            fi.write(pointers.tobytes())
            fi.write(docs.astype("<i8").tobytes())
            fi.flush()
            os.fsync(fi.fileno())
        os.replace(tmp_bin, prefix.with_name(prefix.name + ".bin"))
        os.replace(tmp_idx, prefix.with_name(prefix.name + ".idx"))
    finally:
        for t in (tmp_bin, prefix.with_name(f".{prefix.name}.idx.tmp")):
            if t.exists():
                t.unlink()
    return prefix


class MegatronWindows(WindowOrder):
    """Training windows read from a Megatron dataset, one sequence per window (Pythia's order).

    Window c = sequence c of ``sequence_length + 1`` tokens: inputs its first
    ``sequence_length``, labels its last ``sequence_length``, every label a target, segments None
    (plain causal attention across document boundaries).  ``sequences_per_step`` windows per
    optimizer step; checkpoint ``step`` trained on windows ``[0, step·sequences_per_step)``.
    Defaults are Pythia's (2048, 1024).  Every sequence of the dataset must hold exactly
    ``sequence_length + 1`` tokens (checked at open; the error names the first that does not).
    """

    def __init__(self, dataset, sequence_length: int = PYTHIA_SEQUENCE_LENGTH,
                 sequences_per_step: int = PYTHIA_SEQUENCES_PER_STEP):
        self.dataset = dataset if isinstance(dataset, MMapIndexedDataset) else MMapIndexedDataset(dataset)
        self.context_length = check_int("sequence_length", sequence_length, 1)
        self.windows_per_step = check_int("sequences_per_step", sequences_per_step, 1)
        ds, want = self.dataset, self.context_length + 1
        if len(ds) == 0:
            raise ValueError(f"{ds.idx_path}: the dataset holds no sequences")
        for lo in range(0, len(ds), _CHUNK):
            bad = np.flatnonzero(ds.sizes[lo: lo + _CHUNK] != want)
            if bad.size:
                i = lo + int(bad[0])
                raise ValueError(
                    f"{ds.idx_path}: sequence {i} has {int(ds.sizes[i])} tokens, but windows of "
                    f"sequence_length={self.context_length} need {want} (inputs + 1 shifted label)")
        self._hash: str | None = None

    def __repr__(self) -> str:
        return (f"MegatronWindows({str(self.dataset.prefix)!r}, {len(self.dataset):,} sequences, "
                f"T={self.context_length}, B={self.windows_per_step})")

    @property
    def n_windows(self) -> int:
        return len(self.dataset)

    def trained_windows(self, step: int) -> int:
        """Windows (= sequences) checkpoint ``step`` trained on; refuses a step the dataset is
        too short for, naming the file, the step, and the needed and available counts."""
        step = check_int("step", step, 0)
        need = step * self.windows_per_step
        if need > self.n_windows:
            raise ValueError(
                f"{self.dataset.bin_path}: checkpoint step {step} trained on sequences "
                f"[0, {need:,}) ({self.windows_per_step:,} per step) but the dataset holds "
                f"{self.n_windows:,}")
        return need

    def batch(self, index) -> WindowBatch:
        idx = self.dataset._check_index(index)
        toks = self.dataset.gather(idx, self.context_length + 1)
        return WindowBatch(idx, toks[:, :-1].copy(), toks[:, 1:].copy(), None)

    def target_counts(self) -> np.ndarray:
        return np.full(self.n_windows, self.context_length, dtype=np.int64)

    # closed forms (every window holds T targets): no (n_windows + 1) cumulative array needed
    def n_targets(self, n_windows: int) -> int:
        return check_int("n_windows", n_windows, 0, self.n_windows) * self.context_length

    def cumulative_targets(self) -> np.ndarray:
        return np.arange(self.n_windows + 1, dtype=np.int64) * self.context_length

    def _check_targets(self, k) -> np.ndarray:
        k = np.asarray(k, dtype=np.int64)
        total = self.n_windows * self.context_length
        if k.size and (k.min() < 0 or k.max() >= total):
            raise ValueError(f"target index out of range [0, {total})")
        return k

    def window_of_target(self, k) -> np.ndarray:
        return self._check_targets(k) // self.context_length

    def target_offset(self, k) -> np.ndarray:
        return self._check_targets(k) % self.context_length

    def target_position(self, window, column) -> tuple[np.ndarray, np.ndarray]:
        """(sequence, position) of target (window, column): sequence = window, position =
        column + 1 inside the stored ``sequence_length + 1`` tokens."""
        return np.asarray(window, dtype=np.int64), np.asarray(column, dtype=np.int64) + 1

    def step_of_window(self, window) -> np.ndarray:
        """The 0-based optimizer step that consumed each window."""
        return np.asarray(window, dtype=np.int64) // self.windows_per_step

    def content_hash(self) -> str:
        """sha256 over the .idx and .bin sha256s and (sequence_length, sequences_per_step).
        The file digests are cached across processes (:meth:`MMapIndexedDataset.file_sha256`)."""
        if self._hash is None:
            d = self.dataset.file_sha256()
            h = hashlib.sha256(b"genbound-megatron-windows-v1")
            h.update(bytes.fromhex(d["idx"]))
            h.update(bytes.fromhex(d["bin"]))
            h.update(np.array([self.context_length, self.windows_per_step], dtype="<i8").tobytes())
            self._hash = h.hexdigest()
        return self._hash
