"""Domain results -> table partitions (one transaction per result, see docs/storage.md).

Each writer replaces exactly the partitions its result owns, so re-running a checkpoint
replaces its rows and a failure leaves the previous ones intact.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl
from sqlalchemy.engine import Engine

from .io import replace_partitions
from .schema import get_table


def token_sample_frame(sample: str, uniforms, seed: int, purpose: str = "bound") -> pl.DataFrame:
    u = np.asarray(uniforms, dtype=np.float64)
    return pl.DataFrame({"sample": [sample] * len(u), "i": np.arange(len(u), dtype=np.int32),
                         "u": u, "seed": [int(seed)] * len(u), "purpose": [purpose] * len(u)})


def write_token_sample(engine: Engine, sample: str, uniforms, seed: int,
                       purpose: str = "bound") -> int:
    """Store the m seeded uniforms u_i once; every checkpoint maps them to its own targets."""
    return replace_partitions(engine, [("token_samples", {"sample": sample},
                                        token_sample_frame(sample, uniforms, seed, purpose))])


def _empty(table: str) -> pl.DataFrame:
    """A zero-row frame with the table's required columns: replaces a partition with nothing."""
    t = get_table(table)
    required = [c.name for c in t.columns if not c.nullable and c.server_default is None]
    return pl.DataFrame({name: pl.Series(name, [], dtype=pl.Utf8) for name in required})


# --------------------------------------------------------------------------------------------
# The asset graph's partitions (defs/): one function per asset, one transaction each.


def checkpoint_frame(model: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    now = datetime.now(UTC)
    return pl.DataFrame([{**r, "model": model, "checked_at": now} for r in rows],
                        infer_schema_length=None)


def write_checkpoints(engine: Engine, model_row: dict[str, Any], rows: list[dict[str, Any]]) -> int:
    """The model's row and the given checkpoints' rows (each its own (model, step) partition),
    in one transaction.  ``rows``: dicts with step, tokens_seen, n_train_tokens, location,
    fingerprint, status, quarantine_reason."""
    model = model_row["model"]
    frame = pl.DataFrame([{**model_row, "config": json.dumps(model_row.get("config") or {})}])
    parts = [("models", {"model": model}, frame)]
    for r in rows:
        parts.append(("checkpoints", {"model": model, "step": int(r["step"])},
                      checkpoint_frame(model, [r])))
    return replace_partitions(engine, parts)


def write_checkpoint_losses(engine: Engine, model: str, rows: list[dict[str, Any]]) -> int:
    """Loss-curve points: rows with step, tokens_seen, eval_kind, n_tokens, mean_loss; each step
    is its own partition (all of a ranged run in one transaction)."""
    by_step: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_step.setdefault(int(r["step"]), []).append({**r, "model": model})
    return replace_partitions(engine, [("checkpoint_losses", {"model": model, "step": s},
                                        pl.DataFrame(rs, infer_schema_length=None))
                                       for s, rs in sorted(by_step.items())])


def write_quantization(engine: Engine, model: str, step: int, rows: list[dict[str, Any]]) -> int:
    """Every configuration's quantized_models row of one checkpoint (replaces the checkpoint's)."""
    frame = pl.DataFrame(rows, infer_schema_length=None) if rows else _empty("quantized_models")
    return replace_partitions(engine, [("quantized_models", {"model": model, "step": int(step)}, frame)])


ARRAY_CHUNK = 1 << 20   # elements per stored chunk (8 MiB of float64)


def _array_rows(model: str, step: int, arrays: dict[str, np.ndarray], dtypes: dict[str, str]
                ) -> pl.DataFrame:
    rows = []
    for name in sorted(arrays):
        dt = np.dtype(dtypes[name])
        a = np.ascontiguousarray(arrays[name], dtype=dt)
        n_chunks = max(1, -(-len(a) // ARRAY_CHUNK))
        for c in range(n_chunks):
            part = a[c * ARRAY_CHUNK:(c + 1) * ARRAY_CHUNK]
            rows.append({"model": model, "step": int(step), "name": name, "chunk": c,
                         "dtype": dt.str, "n": len(part), "data": part.tobytes()})
    return pl.DataFrame(rows, schema={"model": pl.String, "step": pl.Int64, "name": pl.String,
                                      "chunk": pl.Int64, "dtype": pl.String, "n": pl.Int64,
                                      "data": pl.Binary})


def write_token_loss_set(engine: Engine, model: str, step: int, summary: dict[str, Any],
                         arrays: dict[str, np.ndarray] | None, dtypes: dict[str, str] | None,
                         pair_rows: pl.DataFrame | None = None) -> int:
    """A checkpoint's certificate data in one transaction: the summary row, its per-target
    arrays (bytea chunks) and the reference pairs as plain rows of ``token_losses``."""
    key = {"model": model, "step": int(step)}
    summary = {**summary, **key}
    if isinstance(summary.get("settings"), dict):
        summary["settings"] = json.dumps(summary["settings"])
    parts = [("token_loss_sets", key, pl.DataFrame([summary], infer_schema_length=None)),
             ("token_loss_arrays", key, _array_rows(model, step, arrays or {}, dtypes or {})
              if arrays else _empty("token_loss_arrays")),
             ("token_losses", key, pair_rows if pair_rows is not None and pair_rows.height
              else _empty("token_losses"))]
    return replace_partitions(engine, parts)


def read_token_loss_set(engine: Engine, model: str, step: int
                        ) -> tuple[dict[str, Any] | None, dict[str, np.ndarray]]:
    """(summary row or None, name -> array) of one checkpoint, arrays reassembled from chunks."""
    import sqlalchemy as sa

    t_sets, t_arr = get_table("token_loss_sets"), get_table("token_loss_arrays")
    with engine.connect() as conn:
        row = conn.execute(sa.select(t_sets).where(t_sets.c.model == model, t_sets.c.step == int(step))
                           ).mappings().first()
        chunks = conn.execute(
            sa.select(t_arr.c.name, t_arr.c.chunk, t_arr.c.dtype, t_arr.c.n, t_arr.c.data)
            .where(t_arr.c.model == model, t_arr.c.step == int(step))
            .order_by(t_arr.c.name, t_arr.c.chunk)).all()
    parts: dict[str, list[np.ndarray]] = {}
    for name, chunk, dtype, n, data in chunks:
        got = np.frombuffer(bytes(data), dtype=np.dtype(dtype))
        if len(got) != n or chunk != len(parts.get(name, [])):
            raise ValueError(f"token_loss_arrays {model}@{step} {name} chunk {chunk} is damaged "
                             f"({len(got)} values, expected {n})")
        parts.setdefault(name, []).append(got)
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    return (dict(row) if row is not None else None), arrays


def write_bounds(engine: Engine, model: str, step: int, sample: str, rows: list[dict[str, Any]]) -> int:
    """The certificate rows of one checkpoint (replaces the checkpoint's non-interpolated rows of
    ``sample``)."""
    key = {"model": model, "step": int(step), "sample": sample, "interpolated": False}
    return replace_partitions(engine, [("bounds", key, _bounds_frame(rows) if rows else _empty("bounds"))])


def _bounds_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    out = []
    for r in rows:
        r = dict(r)
        if isinstance(r.get("delta_split"), dict):
            r["delta_split"] = json.dumps(r["delta_split"])
        out.append(r)
    return pl.DataFrame(out, infer_schema_length=None)


def write_model_rows(engine: Engine, model: str, *, compute_optimal: dict[str, Any] | None = None,
                     interpolated: list[dict[str, Any]] | None = None,
                     prequential: list[dict[str, Any]] | None = None,
                     hessian: dict[str, Any] | None = None) -> int:
    """Model-level rows; each argument given replaces that partition of the model."""
    parts = []
    if compute_optimal is not None:
        parts.append(("compute_optimal", {"model": model}, pl.DataFrame([compute_optimal], infer_schema_length=None)))
    if interpolated is not None:
        parts.append(("bounds", {"model": model, "interpolated": True},
                      _bounds_frame(interpolated) if interpolated else _empty("bounds")))
    if prequential is not None:
        parts.append(("bounds", {"model": model, "method": "prequential"},
                      _bounds_frame(prequential) if prequential else _empty("bounds")))
    if hessian is not None:
        parts.append(("hessian_spectra", {"model": model}, pl.DataFrame([hessian], infer_schema_length=None)))
    return replace_partitions(engine, parts)
