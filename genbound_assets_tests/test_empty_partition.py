"""A partition replaced by nothing (storage/records.py ``_empty``): what token_losses writes for
the reference pairs when the reference quantization failed, or for every table of a checkpoint
whose evaluation failed.  Found by test_production_config.py: the empty frame's columns are
untyped text, and the partition-key check compared them with the integer step."""

import numpy as np
import polars as pl

from genbound_assets.storage import read_frame
from genbound_assets.storage.io import replace_partitions
from genbound_assets.storage.records import _empty


def _pair_rows(model: str, step: int, n: int) -> pl.DataFrame:
    return pl.DataFrame({"model": [model] * n, "step": [step] * n, "sample": ["bound"] * n,
                         "i": np.arange(n, dtype=np.int32), "position": np.arange(n, dtype=np.int64),
                         "quantizer": ["none"] * n, "bits": [0] * n, "group_size": [0] * n,
                         "alpha": [0.0] * n, "loss": np.linspace(1.0, 2.0, n)})


def test_an_empty_frame_replaces_an_integer_keyed_partition(pg_clean):
    engine = pg_clean
    for model, step in (("m", 5), ("m", 6)):
        replace_partitions(engine, [("token_losses", {"model": model, "step": step}, _pair_rows(model, step, 3))])
    written = replace_partitions(engine, [("token_losses", {"model": "m", "step": 5}, _empty("token_losses"))])
    assert written == 0
    left = read_frame(engine, "SELECT step, count(*) AS n FROM token_losses GROUP BY step ORDER BY step")
    assert left.rows() == [(6, 3)]   # step 5 emptied, step 6 untouched
