"""Megatron MMapIndexedDataset files and Pythia's training-window order (data/megatron.py).

The files are written by ``write_mmap_dataset`` and read back both by the reader and, here, by
hand with ``struct`` from the format table (EleutherAI/gpt-neox megatron/data/indexed_dataset.py):
magic b"MMIDIDX\\x00\\x00", u64 version 1, u8 dtype code (uint16 = 8), u64 n_sequences, u64
len(doc_idx), int32 sizes, int64 byte pointers, int64 doc_idx.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from genbound_assets.data.megatron import (
    PYTHIA_SEQUENCE_LENGTH,
    PYTHIA_SEQUENCES_PER_STEP,
    MegatronWindows,
    MMapIndexedDataset,
    write_mmap_dataset,
)
from genbound_assets.data.order import IGNORE, WindowOrder

EOD = 0
V = 300          # > 255: tokens need both bytes of a uint16
L = 8            # targets per window; sequences hold L + 1 tokens
B = 3            # sequences per step


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GENBOUND_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def documents(seed=0, n=7):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, V, size=int(rng.integers(3, 20))) for _ in range(n)]


def packed_sequences(docs, length=L + 1):
    """Documents joined by EOD and cut into sequences of ``length`` tokens (GPT-NeoX packing:
    a sequence starts and ends anywhere inside a document)."""
    stream = np.concatenate([np.concatenate([d, [EOD]]) for d in docs])
    n = len(stream) // length
    return [stream[i * length:(i + 1) * length] for i in range(n)]


def read_index_by_hand(idx: Path) -> dict:
    raw = idx.read_bytes()
    magic, version, code, n, m = struct.unpack_from("<9sQBQQ", raw, 0)
    o = 34
    sizes = struct.unpack_from(f"<{n}i", raw, o)
    pointers = struct.unpack_from(f"<{n}q", raw, o + 4 * n)
    doc_idx = struct.unpack_from(f"<{m}q", raw, o + 12 * n)
    assert len(raw) == o + 12 * n + 8 * m
    return dict(magic=magic, version=version, code=code, n=n, m=m, sizes=list(sizes),
                pointers=list(pointers), doc_idx=list(doc_idx))


def token_from_bin(bin_path: Path, byte_offset: int) -> int:
    with open(bin_path, "rb") as f:
        f.seek(byte_offset)
        return struct.unpack("<H", f.read(2))[0]


@pytest.fixture()
def small(tmp_path):
    seqs = packed_sequences(documents(), L + 1)
    assert len(seqs) >= 9 and any(EOD in s[1:-1] for s in seqs)   # documents cross sequences
    prefix = write_mmap_dataset(tmp_path / "pile" / "document", seqs)
    return prefix, seqs


def one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


# -- the file format ------------------------------------------------------------------------


def test_header_decoded_by_hand_matches_reader_and_sequences(small):
    prefix, seqs = small
    h = read_index_by_hand(prefix.with_suffix(".idx"))
    assert h["magic"] == b"MMIDIDX\x00\x00" and h["version"] == 1
    assert h["code"] == 8                                   # uint16 in Megatron's table
    assert h["n"] == len(seqs) and h["m"] == len(seqs) + 1  # default doc_idx 0..N
    assert h["sizes"] == [L + 1] * len(seqs)
    assert h["pointers"] == [i * (L + 1) * 2 for i in range(len(seqs))]
    assert h["doc_idx"] == list(range(len(seqs) + 1))
    bin_path = prefix.with_suffix(".bin")
    assert bin_path.stat().st_size == 2 * (L + 1) * len(seqs)

    ds = MMapIndexedDataset(prefix)
    assert (len(ds), ds.dtype, ds.dtype_code, ds.version) == (len(seqs), np.uint16, 8, 1)
    assert ds.sizes.tolist() == h["sizes"] and ds.pointers.tolist() == h["pointers"]
    assert ds.doc_idx.tolist() == h["doc_idx"] and ds.n_docs == len(seqs)
    for i, s in enumerate(seqs):
        by_hand = [token_from_bin(bin_path, h["pointers"][i] + 2 * j) for j in range(h["sizes"][i])]
        assert ds.sequence(i).tolist() == by_hand == s.tolist()
    # memory-mapped, no copy: sequences are read-only views of one map of the .bin
    assert isinstance(ds.tokens, np.memmap) and not ds.sequence(3).flags.writeable
    assert np.shares_memory(ds.sequence(3), ds.tokens)
    assert np.shares_memory(ds.sizes, ds._idx)
    # the prefix may be given with either suffix
    assert len(MMapIndexedDataset(str(prefix) + ".bin")) == len(MMapIndexedDataset(str(prefix) + ".idx"))


def test_writer_variable_sizes_doc_idx_and_dtypes(tmp_path):
    seqs = [np.array([1, 2, 3]), np.array([], dtype=np.int64), np.array([40000, 7]), np.array([9])]
    p = write_mmap_dataset(tmp_path / "v", seqs, doc_idx=[0, 2, 4])
    h = read_index_by_hand(p.with_suffix(".idx"))
    assert h["sizes"] == [3, 0, 2, 1] and h["pointers"] == [0, 6, 6, 10] and h["doc_idx"] == [0, 2, 4]
    ds = MMapIndexedDataset(p)
    assert [ds.sequence(i).tolist() for i in range(4)] == [s.tolist() for s in seqs]
    assert ds.n_docs == 2
    for dtype, code in ((np.int32, 4), (np.uint8, 1), (np.int64, 5), (np.int16, 3), (np.int8, 2)):
        q = write_mmap_dataset(tmp_path / f"d{code}", [np.array([1, 2, 3]), np.array([4])], dtype=dtype)
        h = read_index_by_hand(q.with_suffix(".idx"))
        item = np.dtype(dtype).itemsize
        assert h["code"] == code and h["pointers"] == [0, 3 * item]
        assert MMapIndexedDataset(q).sequence(1).tolist() == [4]
    with pytest.raises(ValueError, match=r"sequence 1 holds values in \[5, 70000\] that do not fit uint16"):
        write_mmap_dataset(tmp_path / "o", [np.array([1]), np.array([5, 70000])])
    with pytest.raises(ValueError, match="dtype must be one of"):
        write_mmap_dataset(tmp_path / "f", [np.array([1])], dtype=np.float32)
    with pytest.raises(ValueError, match="sequence 0 must be a 1-D integer array"):
        write_mmap_dataset(tmp_path / "f", [np.array([1.5])])
    with pytest.raises(ValueError, match="doc_idx must be non-decreasing from 0 to n_sequences=2"):
        write_mmap_dataset(tmp_path / "g", [np.array([1]), np.array([2])], doc_idx=[0, 1])
    assert not (tmp_path / "o.idx").exists() and not list(tmp_path.glob(".*.tmp"))


# -- malformed files --------------------------------------------------------------------------


def _corrupt_idx(prefix: Path, offset: int, fmt: str, value) -> None:
    idx = prefix.with_suffix(".idx")
    raw = bytearray(idx.read_bytes())
    struct.pack_into(fmt, raw, offset, value)
    idx.write_bytes(bytes(raw))


def test_malformed_files_get_one_line_errors_naming_file_and_field(small, tmp_path):
    prefix, seqs = small
    n = len(seqs)
    idx, binf = prefix.with_suffix(".idx"), prefix.with_suffix(".bin")
    good_idx, good_bin = idx.read_bytes(), binf.read_bytes()

    def restore():
        idx.write_bytes(good_idx)
        binf.write_bytes(good_bin)

    def error(match):
        with pytest.raises(ValueError) as e:
            MMapIndexedDataset(prefix)
        msg = one_line(e)
        assert str(idx) in msg or str(binf) in msg or str(prefix) in msg, msg
        assert __import__("re").search(match, msg), msg
        restore()

    cases = [
        (lambda: idx.write_bytes(good_idx[:20]), r"truncated index header: 20 bytes, the header needs 34"),
        (lambda: _corrupt_idx(prefix, 0, "<9s", b"TNTIDX\x00\x00\x00"), r"magic is b'TNTIDX.*expected b'MMIDIDX"),
        (lambda: _corrupt_idx(prefix, 9, "<Q", 2), r"version is 2, only version 1"),
        (lambda: _corrupt_idx(prefix, 17, "<B", 6), r"dtype code 6 is a float type"),
        (lambda: _corrupt_idx(prefix, 17, "<B", 9), r"dtype code 9 is not a Megatron integer dtype code \[1, 2, 3, 4, 5, 8\]"),
        (lambda: idx.write_bytes(good_idx[:-8]), rf"truncated index: n_sequences={n} and n_doc_idx={n + 1} need {34 + 20 * n + 8:,} bytes, the file has {34 + 20 * n:,}"),
        (lambda: idx.write_bytes(good_idx + b"\x00" * 8), r"8 bytes after doc_idx"),
        (lambda: _corrupt_idx(prefix, 18, "<Q", n + 5), r"truncated index: n_sequences="),
        (lambda: _corrupt_idx(prefix, 34 + 4 * 2, "<i", -3), r"sizes\[2\] = -3 is negative"),
        (lambda: binf.write_bytes(good_bin[:-2]),
         rf"pointers\[{n - 1}\] = {(n - 1) * 18:,} \+ sizes\[{n - 1}\] = 9 tokens × 2 bytes ends at byte {n * 18:,}, past the end of .*document.bin \({n * 18 - 2:,} bytes\)"),
        (lambda: _corrupt_idx(prefix, 34 + 4 * n + 8 * 4, "<q", 37), r"pointers\[4\] = 37 is not a byte offset of a uint16 token"),
        (lambda: _corrupt_idx(prefix, 34 + 4 * n + 8 * 4, "<q", -2), r"pointers\[4\] = -2 is not a byte offset"),
        (lambda: _corrupt_idx(prefix, 34 + 12 * n + 8 * 3, "<q", 1), r"doc_idx\[3\] = 1 < doc_idx\[2\] = 2; doc_idx must be non-decreasing"),
        (lambda: _corrupt_idx(prefix, 34 + 12 * n + 8 * n, "<q", n + 1), rf"doc_idx\[{n}\] = {n + 1} is outside \[0, n_sequences={n}\]"),
        (lambda: idx.unlink(), r"document.idx does not exist"),
        (lambda: binf.unlink(), r"document.bin does not exist"),
    ]
    for make, match in cases:
        make()
        error(match)
    assert len(MMapIndexedDataset(prefix)) == n   # restored: the cases were really the errors


def test_windows_refuse_sequences_of_the_wrong_length(tmp_path):
    p = write_mmap_dataset(tmp_path / "w", [np.arange(L + 1)] * 3 + [np.arange(L + 2)])
    with pytest.raises(ValueError) as e:
        MegatronWindows(p, L, B)
    assert one_line(e).startswith(f"{p}.idx: sequence 3 has {L + 2} tokens, but windows of "
                                  f"sequence_length={L} need {L + 1}")
    empty = write_mmap_dataset(tmp_path / "e", [])
    assert len(MMapIndexedDataset(empty)) == 0
    with pytest.raises(ValueError, match=r"e.idx: the dataset holds no sequences"):
        MegatronWindows(empty, L, B)
    with pytest.raises(ValueError, match="sequences_per_step must be >= 1"):
        MegatronWindows(p, L, 0)


# -- the window order -------------------------------------------------------------------------


def test_window_order_contract(small):
    prefix, seqs = small
    w = MegatronWindows(prefix, L, B)
    assert isinstance(w, WindowOrder)
    assert (w.n_windows, w.context_length, w.windows_per_step, w.tokens_per_step) == (len(seqs), L, B, L * B)
    idx = [5, 0, 5, len(seqs) - 1]                      # any order, repeats allowed
    b = w.batch(idx)
    assert b.index.tolist() == idx and len(b) == 4
    assert b.inputs.shape == b.labels.shape == (4, L) and b.inputs.dtype == b.labels.dtype == np.int64
    assert b.segments is None                           # plain causal attention
    for r, c in enumerate(idx):
        assert b.inputs[r].tolist() == seqs[c][:-1].tolist()
        assert b.labels[r].tolist() == seqs[c][1:].tolist()
    assert not (b.labels == IGNORE).any() and b.n_targets.tolist() == [L] * 4
    every = w.batch(np.arange(w.n_windows))
    assert (every.labels == EOD).any() and not (every.labels == IGNORE).any()   # EOD is a target
    assert w.target_counts().tolist() == [L] * len(seqs)
    assert w.cumulative_targets().tolist() == [L * c for c in range(len(seqs) + 1)]
    for step in range(len(seqs) // B + 1):
        assert w.trained_windows(step) == B * step
        assert w.n_targets(w.trained_windows(step)) == L * B * step
    with pytest.raises(ValueError, match=r"sequence -1 is out of range \[0, "):
        w.batch([0, -1])
    with pytest.raises(ValueError, match=r"sequence 99 is out of range"):
        w.batch([99])


def test_step_sequence_position_mapping_against_the_bin_bytes(small):
    """Target k of the training order <-> (step, sequence, position) <-> (window, column), each
    token checked against the .bin read independently with struct."""
    prefix, seqs = small
    w = MegatronWindows(prefix, L, B)
    h = read_index_by_hand(prefix.with_suffix(".idx"))
    bin_path = prefix.with_suffix(".bin")
    step = len(seqs) // B
    D = w.n_targets(w.trained_windows(step))
    k = np.arange(D)
    win, col = w.window_of_target(k), w.target_offset(k)
    # the closed forms agree with WindowOrder's generic implementation
    assert np.array_equal(win, WindowOrder.window_of_target(w, k))
    assert np.array_equal(col, WindowOrder.target_offset(w, k))
    seq, pos = w.target_position(win, col)
    assert np.array_equal(seq, k // L) and np.array_equal(pos, k % L + 1)
    assert np.array_equal(w.step_of_window(win), k // (L * B))
    batch = w.batch(np.arange(w.trained_windows(step)))
    for kk in range(D):
        c, j, s, p = int(win[kk]), int(col[kk]), int(seq[kk]), int(pos[kk])
        label = token_from_bin(bin_path, h["pointers"][s] + 2 * p)
        context = [token_from_bin(bin_path, h["pointers"][s] + 2 * q) for q in range(p)]
        assert batch.labels[c, j] == label
        assert batch.inputs[c, : j + 1].tolist() == context   # the preceding tokens of its sequence
        assert c // B == s // B < step                         # trained by checkpoint `step`
    with pytest.raises(ValueError, match=rf"target index out of range \[0, {len(seqs) * L}\)"):
        w.window_of_target([len(seqs) * L])


def test_pythia_constants(tmp_path):
    """Pythia's rule: 2049-token sequences, 1024 per step, D = 2048·1024·step = tokens_seen."""
    from genbound_assets.families.sources import PYTHIA_TOKENS_PER_STEP

    rng = np.random.default_rng(1)
    n = 2 * 1024 + 5
    stream = rng.integers(0, 50277, size=n * 2049).astype(np.uint16)
    p = write_mmap_dataset(tmp_path / "document", stream.reshape(n, 2049))
    w = MegatronWindows(p)
    assert (w.context_length, w.windows_per_step) == (PYTHIA_SEQUENCE_LENGTH, PYTHIA_SEQUENCES_PER_STEP) == (2048, 1024)
    assert w.tokens_per_step == PYTHIA_TOKENS_PER_STEP == 2_097_152
    for step in (0, 1, 2):
        assert w.trained_windows(step) == 1024 * step
        assert w.n_targets(w.trained_windows(step)) == 2048 * 1024 * step == PYTHIA_TOKENS_PER_STEP * step
    # the last target step 2 trained on: sequence 2047, token 2048
    b = w.batch([2047])
    assert b.labels[0, -1] == stream[2047 * 2049 + 2048] and b.inputs[0, 0] == stream[2047 * 2049]
    assert w.step_of_window(2047) == 1 and w.step_of_window(2048) == 2
    with pytest.raises(ValueError) as e:
        w.trained_windows(3)
    assert one_line(e) == (f"{p}.bin: checkpoint step 3 trained on sequences [0, 3,072) "
                           f"(1,024 per step) but the dataset holds 2,053")


def test_content_hash_identifies_tokens_and_rule(small, tmp_path, monkeypatch):
    prefix, seqs = small
    cache = tmp_path / "c"
    monkeypatch.setenv("GENBOUND_CACHE_DIR", str(cache))
    h = MegatronWindows(prefix, L, B).content_hash()
    assert len(list((cache / "megatron-sha256").glob("*.json"))) == 2   # .idx and .bin digests
    assert MegatronWindows(prefix, L, B).content_hash() == h             # from the cache
    assert MegatronWindows(prefix, L, B + 1).content_hash() != h
    changed = [s.copy() for s in seqs]
    changed[4][3] += 1
    write_mmap_dataset(prefix, changed)                                  # same sizes, one token
    assert MegatronWindows(prefix, L, B).content_hash() != h
    write_mmap_dataset(prefix, seqs)
    assert MegatronWindows(prefix, L, B).content_hash() == h
