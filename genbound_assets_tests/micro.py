"""The micro suite for graph tests: a synthetic corpus, 2 sizes on one step grid, seconds to train.

``train_micro(root)`` writes a suite in the demo's format (stream.npz, data_order.json,
<model>/step<N>/ checkpoints); ``micro_env(monkeypatch, root)`` registers it as the only
family (``micro``, profile ``micro``) so freshly built definitions see just it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from genbound_assets.data.stream import build_stream
from genbound_assets.families import suite as S

MICRO_TRAIN = S.TrainConfig(context_length=16, batch_size=8, tokens_per_param=2.0,
                            train_multiple=2.2, regular_every=64, warmup_frac=0.05)
MICRO_SIZES = [S.SizeSpec("m-a", 16, 1, lr=1e-2), S.SizeSpec("m-b", 16, 2, lr=1e-2)]
FAMILY = "micro"


def micro_stream(n_docs=400, vocab=23, seed=0, lo=40, hi=200):
    """A learnable sparse bigram chain (separator = vocab), ~48k tokens."""
    rng = np.random.default_rng(seed)
    nxt = rng.integers(0, vocab, size=(vocab, 3))
    docs = []
    for _ in range(n_docs):
        n = int(rng.integers(lo, hi))
        d = np.empty(n, dtype=np.int64)
        d[0] = rng.integers(vocab)
        for i in range(1, n):
            d[i] = nxt[d[i - 1], rng.integers(3)]
        docs.append(d)
    return build_stream(docs, vocab)


def train_micro(root: Path) -> Path:
    from genbound_assets.data.stream import save_stream

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stream = micro_stream()
    save_stream(stream, root / "stream.npz")
    S.train_suite(stream, root, MICRO_SIZES, MICRO_TRAIN, stream_file=root / "stream.npz",
                  progress=False, num_threads=1)
    return root


def registry_doc(root: Path, name: str = FAMILY) -> dict:
    return {"families": [{"name": name, "kind": "suite", "checkpoints": str(root),
                          "profile": "micro"}]}


def micro_env(monkeypatch, root: Path, tmp: Path, **settings) -> Path:
    """Point the registry at ``root`` only, with the micro profile (plus GENBOUND_* overrides)."""
    reg = Path(tmp) / "families.json"
    reg.write_text(json.dumps(registry_doc(root)))
    monkeypatch.setenv("GENBOUND_FAMILIES_FILE", str(reg))
    monkeypatch.setenv("GENBOUND_PROFILE", "micro")
    monkeypatch.setenv("GENBOUND_TOKENS_PER_PARAM", str(MICRO_TRAIN.tokens_per_param))
    for k, v in settings.items():
        monkeypatch.setenv(f"GENBOUND_{k.upper()}", str(v))
    from genbound_assets.defs.families import resources

    resources._open.cache_clear()
    return reg


def copy_suite(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
