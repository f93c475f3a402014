"""Token-loss ingest into PostgreSQL: COPY vs executemany, the bytea array path, the read-back.

    .venv/bin/python bench/bench_pg_ingest.py [--rows 50000] [--copy-rows 1000000]
        [--targets 1000000] [--url postgresql://...]

On a throwaway embedded PostgreSQL 16 (pgserver; default settings, fsync on), or --url:

1. ``token_losses`` rows (the paper-recipe pairs' table: model, step, quantizer, bits,
   group_size, alpha, sample, i, position, loss, entropy), side by side on the same --rows rows,
   each one transaction:
   * ``copy``:            storage.io.replace_partitions (validate, DELETE, COPY csv): production;
   * ``executemany``:     psycopg2 ``cursor.executemany(INSERT ... VALUES (%s, ...))``;
   * ``sqla_insertmany``: SQLAlchemy ``conn.execute(insert(t), rows)`` (insertmanyvalues);
   then ``copy`` alone on --copy-rows rows (the sustained rate).
2. The bytea array path: ``storage.records.write_token_loss_set`` of one checkpoint with
   --targets per-target values in each of the 7 design arrays (plus 10^4 reference pairs in 6),
   then ``read_token_loss_set``: values/s each way.
3. The bound step's read: read_token_loss_set + pipeline.bounds_step.certify_from_losses on that
   checkpoint (exact design, D = --targets), split into its two parts.
Prints one JSON line, then a table.
"""

from __future__ import annotations

import argparse
import math
import time

import _common as C
import numpy as np
import polars as pl

V, ALPHA = 257, 0.1


def pair_frame(n: int, seed: int = 0, model: str = "bench-m", step: int = 1) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({
        "model": [model] * n, "step": [step] * n, "quantizer": ["gptq"] * n, "bits": [4] * n,
        "group_size": [16] * n, "alpha": [ALPHA] * n, "sample": ["bench:bound"] * n,
        "i": np.arange(n, dtype=np.int32), "position": rng.integers(0, 10**9, n),
        "loss": rng.gamma(2.0, 1.2, n), "entropy": rng.gamma(2.0, 1.1, n),
    })


def loss_arrays(d: int, m: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A plausible exact-design TokenLossSet's arrays at V = 257, alpha = 0.1 (values inside the
    ranges the certificates check)."""
    from genbound_assets.bounds.loss_range import smoothed_min_entropy
    from genbound_assets.bounds.smoothing import smoothed_worst_case_loss

    rng = np.random.default_rng(seed)
    hmin, hmax, xmax = smoothed_min_entropy(ALPHA, V), math.log(V), smoothed_worst_case_loss(ALPHA, V)
    y = rng.uniform(hmin + 0.05, hmax - 0.05, d)
    x = np.clip(y + rng.normal(0.0, 1.0, d), 0.01, xmax - 0.01)
    h = np.clip(x - 0.1 + rng.normal(0.0, 0.3, d), 0.0, None)
    window, column = np.divmod(np.arange(d, dtype=np.int64), 128)
    return {"window": window, "column": column.astype(np.int16), "draw": np.full(d, -1, np.int32),
            "h_loss": h, "q_loss": h + 0.02, "q_sq_loss": x, "q_sq_entropy": y,
            "ref_window": rng.integers(0, d // 128, m), "ref_column": rng.integers(0, 128, m).astype(np.int16),
            "ref_h_loss": rng.gamma(2.0, 1.2, m), "ref_q_loss": rng.gamma(2.0, 1.2, m),
            "ref_sq_loss": np.clip(rng.gamma(2.0, 1.2, m), 0.0, xmax - 0.01),
            "ref_sq_entropy": rng.uniform(hmin + 0.05, hmax - 0.05, m)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--copy-rows", type=int, default=1_000_000)
    ap.add_argument("--targets", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--url", default=None, help="an external database (else embedded, throwaway)")
    args = ap.parse_args(argv)

    import sqlalchemy as sa

    from genbound_assets import storage
    from genbound_assets.pipeline.bounds_step import CodeChoice, certify_from_losses
    from genbound_assets.pipeline.losses_step import ARRAY_DTYPES, TokenLossSet
    from genbound_assets.pipeline.settings import CertifySettings
    from genbound_assets.storage.io import replace_partitions
    from genbound_assets.storage.records import read_token_loss_set, write_token_loss_set
    from genbound_assets.storage.schema import get_table

    t_start = time.perf_counter()
    with C.EmbeddedPostgres(args.url) as url:
        engine = storage.get_engine(url)
        t_pg = time.perf_counter() - t_start
        table = get_table("token_losses")
        cols = [c for c in pair_frame(1).columns]
        insert_sql = (f"INSERT INTO token_losses ({', '.join(cols)}) "
                      f"VALUES ({', '.join(['%s'] * len(cols))})")

        def clear():
            with engine.begin() as conn:
                conn.exec_driver_sql("TRUNCATE token_losses")

        frame = pair_frame(args.rows)
        tuples = frame.rows()
        dicts = frame.to_dicts()
        key = {"model": "bench-m", "step": 1}

        def copy_path():
            clear()
            replace_partitions(engine, [("token_losses", key, frame)])

        def executemany_path():
            clear()
            with engine.begin() as conn:
                cur = conn.connection.dbapi_connection.cursor()
                cur.executemany(insert_sql, tuples)
                cur.close()

        def sqla_path():
            clear()
            with engine.begin() as conn:
                conn.execute(sa.insert(table), dicts)

        t = C.side_by_side({"copy": copy_path, "executemany": executemany_path,
                            "sqla_insertmany": sqla_path}, args.repeats, warmup=0)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM token_losses").scalar() == args.rows
        rates = {k: args.rows / v["median"] for k, v in t.items()}

        big = pair_frame(args.copy_rows, seed=1)
        clear()
        t0 = time.perf_counter()
        replace_partitions(engine, [("token_losses", key, big)])
        copy_big_s = time.perf_counter() - t0
        clear()

        # the bytea array path: one checkpoint's certificate data
        arrays = loss_arrays(args.targets, 10_000)
        n_values = int(sum(len(a) for a in arrays.values()))
        summary = {"design": "exact", "status": "ok", "n_train_tokens": args.targets, "n_draws": 0,
                   "n_targets": args.targets, "n_exact": args.targets, "n_reference_pairs": 10_000,
                   "quantizer": "gptq", "bits": 4, "group_size": 16, "alpha": ALPHA,
                   "vocab_size": V, "sample": "bench:bound", "settings": {"bench": True}}
        # the reference pairs as plain rows (as the asset writes them; with None, storage's
        # zero-row frame trips validate_frame's key check: see docs/performance.md)
        pairs = pair_frame(10_000, seed=2, step=2)
        writes, reads, certs = [], [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            write_token_loss_set(engine, "bench-m", 2, summary, arrays, ARRAY_DTYPES, pairs)
            writes.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            row, back = read_token_loss_set(engine, "bench-m", 2)
            reads.append(time.perf_counter() - t0)
            assert all(np.array_equal(back[k], arrays[k]) for k in arrays)
            t0 = time.perf_counter()
            tl = TokenLossSet(row["design"], row["n_train_tokens"], row["n_draws"], row["alpha"],
                              None, back, row["vocab_size"])
            bound_rows = certify_from_losses(
                tl, CodeChoice("gptq", 4, 16, "entropy", 5.0 * 130_000, math.log(6)), None,
                model="bench-m", step=2, n_params=130_000, settings=CertifySettings())
            certs.append(time.perf_counter() - t0)
        head_bound = next(r["bound"] for r in bound_rows if r["method"] == "headline")
        with engine.connect() as conn:
            stored = conn.exec_driver_sql(
                "SELECT pg_total_relation_size('token_loss_arrays')").scalar()
        engine.dispose()

    w, r, c = min(writes), min(reads), min(certs)
    res = {
        "rows": args.rows, "seconds": t, "rows_per_s": rates,
        "copy_vs_executemany": rates["copy"] / rates["executemany"],
        "copy_vs_sqla_insertmany": rates["copy"] / rates["sqla_insertmany"],
        "copy_rows_big": args.copy_rows, "copy_big_s": copy_big_s,
        "copy_big_rows_per_s": args.copy_rows / copy_big_s,
        "array_targets": args.targets, "array_values": n_values,
        "array_write_s": w, "array_read_s": r, "array_write_values_per_s": n_values / w,
        "array_read_values_per_s": n_values / r, "array_stored_bytes": stored,
        "certify_s": c, "bound_step_s": r + c, "headline_bound": head_bound,
        "pg_start_s": t_pg, "external": bool(args.url),
    }
    heads = [
        C.headline("token_losses rows: COPY / executemany, rows/s", res["copy_vs_executemany"], "x",
                   ">= 10", res["copy_vs_executemany"] >= 10),
        C.headline(f"token_losses rows: COPY rows/s ({args.copy_rows:,} rows)",
                   res["copy_big_rows_per_s"], "rows/s", ">= 200k", res["copy_big_rows_per_s"] >= 2e5),
        C.headline(f"token_losses rows: COPY rows/s ({args.rows:,} rows, side by side)",
                   rates["copy"], "rows/s", ">= 200k", rates["copy"] >= 2e5),
        C.headline("bytea arrays: write_token_loss_set", res["array_write_values_per_s"], "values/s"),
        C.headline("bytea arrays: read_token_loss_set", res["array_read_values_per_s"], "values/s"),
        C.headline(f"bound step from the store, D = {args.targets:,} (read + certify_from_losses)",
                   res["bound_step_s"], "s"),
    ]
    table = C.fmt_table(["path", "rows or values", "seconds", "per second"], [
        ["COPY (replace_partitions)", args.rows, t["copy"]["median"], rates["copy"]],
        ["executemany (psycopg2)", args.rows, t["executemany"]["median"], rates["executemany"]],
        ["insert many (SQLAlchemy)", args.rows, t["sqla_insertmany"]["median"], rates["sqla_insertmany"]],
        ["COPY, large", args.copy_rows, copy_big_s, res["copy_big_rows_per_s"]],
        ["bytea write_token_loss_set", n_values, w, res["array_write_values_per_s"]],
        ["bytea read_token_loss_set", n_values, r, res["array_read_values_per_s"]],
        ["certify_from_losses (exact, D)", args.targets, c, args.targets / c],
    ])
    table.append(f"(COPY / executemany = {res['copy_vs_executemany']:.1f}x, COPY / SQLAlchemy "
                 f"insert-many = {res['copy_vs_sqla_insertmany']:.1f}x; stored arrays "
                 f"{stored / 2**20:.1f} MiB; embedded PostgreSQL 16, fsync on)")
    return C.emit({"bench": "pg_ingest", **res, "headline": heads}, table)


if __name__ == "__main__":
    main()
