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


def _loss_frame(cert, quantizer: str, bits: int, group_size: int, alpha: float, loss, entropy,
                sample: str) -> pl.DataFrame:
    rows = cert.token_rows
    m = cert.n_sample
    exact = rows["exact"]
    # sampled pairs keep their index i into token_samples; the exact stratum is its own sample
    i = np.where(exact, np.arange(len(exact)) - m, np.arange(len(exact))).astype(np.int32)
    names = np.where(exact, f"{sample}:calibration-exact", sample)
    n = len(exact)
    return pl.DataFrame({
        "model": [cert.model] * n, "step": [cert.step] * n, "quantizer": [quantizer] * n,
        "bits": [bits] * n, "group_size": [group_size] * n, "alpha": [alpha] * n,
        "sample": names.tolist(), "i": i, "position": rows["position"].astype(np.int64),
        "loss": np.asarray(loss, dtype=np.float64), "entropy": np.asarray(entropy, dtype=np.float64),
    })


def certificate_partitions(cert, sample: str = "bound") -> list[tuple[str, dict[str, Any], pl.DataFrame]]:
    """(table, key, frame) for everything a `CheckpointCertificate` owns."""
    q = cert.quantized
    qkey = {"model": cert.model, "step": cert.step, "quantizer": q["quantizer"],
            "bits": q["bits"], "group_size": q["group_size"]}
    parts: list[tuple[str, dict[str, Any], pl.DataFrame]] = [
        ("quantized_models", {**qkey, "quantize_embeddings": q["quantize_embeddings"]},
         pl.DataFrame([q])),
    ]
    rows = cert.token_rows
    if rows:
        alpha = float(rows["alpha"][0])
        parts.append(("token_losses", {"model": cert.model, "step": cert.step, "quantizer": "none"},
                      _loss_frame(cert, "none", 0, 0, 0.0, rows["h_loss"], rows["h_entropy"], sample)))
        parts.append(("token_losses", qkey, pl.concat([
            _loss_frame(cert, q["quantizer"], q["bits"], q["group_size"], 0.0, rows["q_loss"],
                        rows["q_entropy"], sample),
            _loss_frame(cert, q["quantizer"], q["bits"], q["group_size"], alpha, rows["sq_loss"],
                        rows["sq_entropy"], sample),
        ])))
    bounds = [{**r, "delta_split": json.dumps(r["delta_split"])} for r in cert.bounds]
    parts.append(("bounds", {**qkey, "sample": sample},
                  pl.DataFrame(bounds, infer_schema_length=None) if bounds else _empty("bounds")))
    return parts


def _empty(table: str) -> pl.DataFrame:
    """A zero-row frame with the table's required columns: replaces a partition with nothing."""
    t = get_table(table)
    required = [c.name for c in t.columns if not c.nullable and c.server_default is None]
    return pl.DataFrame({name: pl.Series(name, [], dtype=pl.Utf8) for name in required})


def write_certificate(engine: Engine, cert, sample: str = "bound") -> int:
    """Replace the checkpoint's token losses, quantization record and bounds in one transaction."""
    return replace_partitions(engine, certificate_partitions(cert, sample))


def write_model_registry(engine: Engine, info, source_kind: str, location: str, refs, reports,
                         family: str = "genbound-suite", config: dict | None = None) -> int:
    """One model's row in `models` and all its checkpoints (with integrity status) in one
    transaction.  ``info``: ml.sources.ModelInfo; ``refs``: CheckpointRefs; ``reports``:
    ml.integrity.IntegrityReports for them (a quarantined checkpoint keeps its reason)."""
    by_step = {r.step: r for r in reports}
    missing = [ref.step for ref in refs if ref.step not in by_step]
    if missing:
        raise ValueError(f"no integrity report for step(s) {missing[:5]} of {info.name}")
    model_row = pl.DataFrame([{
        "model": info.name, "family": family, "source_kind": source_kind, "location": location,
        "n_params": info.n_params, "n_params_non_embedding": info.n_params_non_embedding,
        "vocab_size": info.vocab_size, "context_length": info.context_length,
        "tokens_per_step": info.tokens_per_step, "config": json.dumps(config or {}),
    }])
    now = datetime.now(UTC)
    ckpts = pl.DataFrame([{
        "model": info.name, "step": ref.step, "tokens_seen": ref.tokens_seen,
        "location": ref.location, "fingerprint": by_step[ref.step].fingerprint,
        "status": by_step[ref.step].status, "quarantine_reason": by_step[ref.step].reason,
        "checked_at": now,
    } for ref in refs], infer_schema_length=None)
    return replace_partitions(engine, [("models", {"model": info.name}, model_row),
                                       ("checkpoints", {"model": info.name}, ckpts)])
