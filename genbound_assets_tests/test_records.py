"""The graph's writers (storage/records.py): one partition, one transaction; a rerun replaces it
exactly; a failing write leaves the previous rows; the per-target arrays come back bit-exact."""

import numpy as np
import pytest

from genbound_assets.storage import read_frame, table_counts
from genbound_assets.storage import records as R


def _checkpoint_rows():
    return [{"step": 0, "tokens_seen": 0, "n_train_tokens": 0, "location": "/x/m/step0",
             "fingerprint": "sha256:a", "status": "ok", "quarantine_reason": None},
            {"step": 1, "tokens_seen": 4096, "n_train_tokens": 4000, "location": "/x/m/step1",
             "fingerprint": None, "status": "quarantined",
             "quarantine_reason": "model.safetensors is truncated (10 of 20 bytes)"}]


MODEL_ROW = {"model": "m", "family": "suite", "source_kind": "local", "location": "/x",
             "n_params": 100, "n_params_non_embedding": 40, "vocab_size": 257,
             "context_length": 128, "tokens_per_step": 4096, "config": {"kind": "suite"}}


def test_checkpoints_keep_their_quarantine_reason_and_reruns_replace(pg_clean):
    for _ in range(2):
        R.write_checkpoints(pg_clean, MODEL_ROW, _checkpoint_rows())
    rows = read_frame(pg_clean, "select step, status, quarantine_reason from checkpoints order by step")
    assert rows["status"].to_list() == ["ok", "quarantined"]
    assert rows["quarantine_reason"][1] == "model.safetensors is truncated (10 of 20 bytes)"
    assert table_counts(pg_clean)["models"] == 1


def test_token_loss_arrays_round_trip_bit_exact_across_chunks(pg_clean, monkeypatch):
    monkeypatch.setattr(R, "ARRAY_CHUNK", 1000)          # force several chunks
    rng = np.random.default_rng(0)
    n = 2500
    arrays = {"window": rng.integers(0, 10**9, n), "column": rng.integers(0, 128, n).astype(np.int16),
              "h_loss": rng.random(n) * 7, "q_sq_entropy": np.nextafter(rng.random(n), 2.0)}
    dtypes = {"window": "<i8", "column": "<i2", "h_loss": "<f8", "q_sq_entropy": "<f8"}
    summary = {"design": "exact", "status": "ok", "n_train_tokens": n, "n_draws": 0,
               "settings": {"delta": 0.01}}
    R.write_token_loss_set(pg_clean, "m", 5, summary, arrays, dtypes)
    row, back = R.read_token_loss_set(pg_clean, "m", 5)
    assert row["design"] == "exact" and row["n_train_tokens"] == n
    for k, v in arrays.items():
        assert back[k].dtype == np.dtype(dtypes[k]) and np.array_equal(back[k], v), k
    assert table_counts(pg_clean)["token_loss_arrays"] == 4 * 3
    # a rerun replaces the partition exactly (fewer chunks now)
    R.write_token_loss_set(pg_clean, "m", 5, summary, {k: v[:10] for k, v in arrays.items()}, dtypes)
    assert table_counts(pg_clean)["token_loss_arrays"] == 4
    assert R.read_token_loss_set(pg_clean, "m", 6) == (None, {})


def test_a_failing_write_leaves_the_previous_bounds(pg_clean):
    row = {"model": "m", "step": 3, "method": "headline", "role": "headline", "quantizer": "gptq",
           "bits": 2, "group_size": -1, "code_length_method": "entropy", "alpha": 0.1,
           "loss_range_method": "tight", "delta": 0.01, "sample": "suite:bound", "n_sample": 0,
           "design": "exact", "bound": 3.0, "empirical_risk": 2.0, "certified": True,
           "delta_split": {"martingale": 0.01}}
    R.write_bounds(pg_clean, "m", 3, "suite:bound", [row])
    with pytest.raises(Exception):  # noqa: B017 - a duplicate key: the database refuses the batch
        R.write_bounds(pg_clean, "m", 3, "suite:bound", [{**row, "bound": 9.0}, {**row, "bound": 9.0}])
    got = read_frame(pg_clean, "select bound from bounds where model = 'm' and step = 3")
    assert got["bound"].to_list() == [3.0]
    R.write_bounds(pg_clean, "m", 3, "suite:bound", [])   # a failed checkpoint: no rows
    assert table_counts(pg_clean)["bounds"] == 0
