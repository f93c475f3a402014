"""TokenStream layout, building, persistence and in-order consumption."""

from __future__ import annotations

import numpy as np
import pytest

from genbound_assets.data.stream import (
    TokenStream,
    build_stream,
    consumed_prefix_len,
    load_stream,
    save_stream,
    stream_metadata,
    tokenize_corpus,
    training_chunks,
)

SEP = 9


def random_stream(seed: int, n_docs: int = 30, max_len: int = 12) -> TokenStream:
    rng = np.random.default_rng(seed)
    docs = [rng.integers(0, SEP, size=rng.integers(1, max_len + 1)) for _ in range(n_docs)]
    return build_stream(docs, SEP)


def brute_targets(tokens: np.ndarray, doc_starts: np.ndarray, prefix_len: int) -> list[int]:
    starts = set(doc_starts.tolist())
    return [p for p in range(prefix_len) if p not in starts]


def test_build_stream_layout():
    s = build_stream([np.array([1, 2, 3]), np.array([], dtype=np.int64), np.array([4])], SEP)
    assert s.tokens.tolist() == [SEP, 1, 2, 3, SEP, 4]
    assert s.doc_starts.tolist() == [0, 4]  # the empty document is dropped
    assert s.n_documents == 2
    assert s.document(0).tolist() == [1, 2, 3] and s.document(1).tolist() == [4]
    # the first real token's context is exactly [separator]
    assert s.context_starts([1, 5], 100).tolist() == [0, 4]
    assert s.n_targets() == 4


@pytest.mark.parametrize(
    "docs, match",
    [
        ([np.array([1, SEP, 2])], "contains the separator"),
        ([np.zeros((2, 2), dtype=np.int64)], "1-D"),
        ([np.array([1.5, 2.0])], "integer"),
        ([np.array([-1, 2])], "negative"),
        ([np.array([], dtype=np.int64)], "no non-empty"),
    ],
)
def test_build_stream_rejects_bad_documents(docs, match):
    with pytest.raises(ValueError, match=match):
        build_stream(docs, SEP)


def test_n_targets_and_target_positions_match_brute_force():
    for seed in range(5):
        s = random_stream(seed)
        for n in range(1, len(s) + 1):
            brute = brute_targets(s.tokens, s.doc_starts, n)
            assert s.n_targets(n) == len(brute)
            assert s.target_positions(n).tolist() == brute
        # target_at: the k-th target without materializing them all
        all_t = s.target_positions()
        assert np.array_equal(s.target_at(np.arange(len(all_t))), all_t)
        with pytest.raises(ValueError):
            s.target_at([len(all_t)])


def test_prefix_keeps_documents_and_targets():
    s = random_stream(7)
    for n in (1, 2, 17, len(s)):
        p = s.prefix(n)
        assert len(p) == n and p.n_targets() == s.n_targets(n)
        assert np.array_equal(p.target_positions(), s.target_positions(n))
    for bad in (0, len(s) + 1, 2.5):
        with pytest.raises(ValueError, match="prefix_len"):
            s.prefix(bad)


def test_context_never_crosses_a_document_boundary():
    s = random_stream(3)
    pos = s.target_positions()
    for T in (1, 2, 5, 50):
        cs = s.context_starts(pos, T)
        doc = s.doc_start_of(pos)
        assert np.all(cs >= doc) and np.all(pos - cs <= T) and np.all(cs < pos)
        # a context contains the separator only as its first token, and only at the doc start
        for a, p in zip(cs, pos, strict=True):
            ctx = s.tokens[a:p]
            assert np.all(ctx[1:] != SEP)
            assert (ctx[0] == SEP) == (a == s.doc_start_of([p])[0])


def test_save_load_roundtrip_and_corruption(tmp_path):
    s = random_stream(1)
    f = tmp_path / "s.npz"
    digest = save_stream(s, f, metadata={"corpus": "unit"})
    t = load_stream(f, expected_hash=digest)
    assert np.array_equal(t.tokens, s.tokens) and np.array_equal(t.doc_starts, s.doc_starts)
    assert t.separator_id == SEP and t.content_hash() == digest
    assert stream_metadata(f) == {"corpus": "unit"}
    with np.load(f) as z:
        assert z["tokens"].dtype == np.uint16
        arrays = {k: z[k] for k in z.files}
    with pytest.raises(ValueError, match="expected"):
        load_stream(f, expected_hash="0" * 64)
    arrays["tokens"] = arrays["tokens"].copy()
    arrays["tokens"][3] = (arrays["tokens"][3] + 1) % SEP  # still a valid stream, other content
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ValueError, match="corrupt"):
        load_stream(bad)
    with pytest.raises(ValueError, match="no stream file"):
        load_stream(tmp_path / "missing.npz")


def test_content_hash_sees_boundaries():
    a = build_stream([np.array([1, 2]), np.array([3])], SEP)
    b = build_stream([np.array([1]), np.array([2, 3])], SEP)
    assert a.content_hash() != b.content_hash()


def test_training_chunks_label_every_target_exactly_once():
    s = random_stream(11, n_docs=40)
    L = 7
    seen = []
    chunks = list(training_chunks(s, L))
    assert len(chunks) == (len(s) - 1) // L
    for o, inputs, labels, seg in chunks:
        assert np.array_equal(inputs, s.tokens[o: o + L])
        lab_pos = np.arange(o + 1, o + L + 1)
        real = labels != -100
        assert np.array_equal(labels[real], s.tokens[lab_pos][real])
        assert not np.any(np.isin(lab_pos[real], s.doc_starts))  # separators never labels
        assert np.array_equal(s.doc_starts[seg], s.doc_start_of(np.arange(o, o + L)))
        seen.extend(lab_pos[real].tolist())
    assert len(seen) == len(set(seen))
    for n in (1, 3, len(chunks)):
        prefix = consumed_prefix_len(n, L)
        assert sorted(seen[: sum((lab != -100).sum() for _, _, lab, _ in chunks[:n])]) == (
            s.target_positions(prefix).tolist()
        )


def test_tokenize_corpus_byte_level(tmp_path):
    from genbound_assets.data.corpus import TextFilesSource
    from genbound_assets.data.tokenizer import byte_tokenizer

    texts = ["first doc\n", "zweites Dokument — ü", "", "3"]
    for i, t in enumerate(texts):
        (tmp_path / f"d{i}.txt").write_text(t, encoding="utf-8")
    tok = byte_tokenizer()
    s = tokenize_corpus(TextFilesSource(str(tmp_path / "*.txt")), tok)
    assert s.separator_id == tok.token_to_id("<|endoftext|>") == 0
    assert s.n_documents == 3  # the empty file adds nothing
    decoded = [tok.decode(s.document(j).tolist()) for j in range(s.n_documents)]
    assert decoded == [t for t in texts if t]
    assert s.n_targets() == sum(len(t.encode("utf-8")) for t in texts)
    with pytest.raises(ValueError, match="separator token"):
        tokenize_corpus(TextFilesSource(str(tmp_path / "*.txt")), tok, separator_token="<eos>")
