"""Benchmark: opening a Megatron dataset (index checks) and reading Pythia-shaped windows.

    .venv/bin/python bench/bench_megatron.py [--sequences 20000] [--batch 64] [--repeats 5]

Writes a random uint16 dataset of 2049-token sequences to a temp folder, then times
MegatronWindows(...) (reads and checks the whole index: sizes, pointers, doc_idx, lengths) and
batch() of random windows (memory-mapped gather; the file is in the page cache after writing,
so this is the warm-cache rate).  Prints one JSON line, then a table, with the open time scaled
to Pythia's 146,432,000 trained sequences.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from genbound_assets.data.megatron import MegatronWindows, write_mmap_dataset

PYTHIA_SEQUENCES = 143_000 * 1024


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        tokens = rng.integers(0, 50277, size=(a.sequences, 2049), dtype=np.uint16)
        prefix = write_mmap_dataset(Path(d) / "document", tokens)
        open_s = math.inf
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            w = MegatronWindows(prefix)
            open_s = min(open_s, time.perf_counter() - t0)
        batch_s = math.inf
        for _ in range(a.repeats):
            idx = rng.integers(0, a.sequences, size=a.batch)
            t0 = time.perf_counter()
            b = w.batch(idx)
            batch_s = min(batch_s, time.perf_counter() - t0)
        assert np.array_equal(b.labels, tokens[idx, 1:])
    out = dict(sequences=a.sequences, batch=a.batch, open_s=open_s,
               open_s_per_million_sequences=open_s / a.sequences * 1e6,
               open_s_pythia_extrapolated=open_s / a.sequences * PYTHIA_SEQUENCES,
               batch_s=batch_s, windows_per_s=a.batch / batch_s,
               tokens_per_s=a.batch * 2049 / batch_s, python=platform.python_version())
    print(json.dumps(out))
    print(f"{'what':<34} {'value':>12}")
    print(f"{'open (index checks), s':<34} {open_s:12.4f}")
    print(f"{'  extrapolated to Pythia, s':<34} {out['open_s_pythia_extrapolated']:12.1f}")
    print(f"{'batch of ' + str(a.batch) + ' windows, s':<34} {batch_s:12.5f}")
    print(f"{'windows/s (warm cache)':<34} {out['windows_per_s']:12.0f}")


if __name__ == "__main__":
    main()
