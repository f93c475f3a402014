"""Dagster's overhead per checkpoint partition: one batched run over a range vs one run each.

    .venv/bin/python bench/bench_dagster_overhead.py [--instances sqlite postgres] [--max-steps 6]

On the micro suite (genbound_assets_tests/micro.py: 2 sizes on one step grid, trained here in
seconds) registered as the only family, with the store on a throwaway embedded PostgreSQL:

* workloads: ``trivial`` (an asset on the family's model x step partitions whose body only
  loops over ``context.partition_keys``: everything measured is Dagster) and ``checkpoint`` (the
  real ``micro/checkpoint`` asset: integrity check of the checkpoint files, rows written to
  Postgres);
* modes: ``batched`` (one run per model over its range of steps, tags
  ``dagster/asset_partition_range_start/end``, as the sensor requests; the asset loops over the
  range) and ``per_partition`` (one run per partition key);
* instances: ``sqlite`` (a DagsterInstance in a temp dir: the default local storage) and
  ``postgres`` (run/event/schedule storage in a database of the same embedded server,
  dagster-postgres).

No `from __future__ import annotations` here (Dagster resolves the asset's annotations).
Every run goes through ``dagster.materialize`` (in-process executor), as ``genbound demo`` does.
Seconds per partition = total / partitions; the per-run overhead is the median per_partition
run of the trivial workload.  One untimed warm-up run per workload and instance comes first.  Prints one JSON line, then a table.
"""


import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import _common as C


def _instance(kind: str, root: Path, pg_url: str):
    import dagster as dg

    home = root / f"dagster-{kind}"
    home.mkdir(parents=True, exist_ok=True)
    cfg = "telemetry:\n  enabled: false\n"
    if kind == "postgres":
        import sqlalchemy as sa

        # keep the +psycopg2 driver (SQLAlchemy 2.1 maps bare postgresql:// to psycopg 3)
        url = pg_url
        eng = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
        with eng.connect() as conn:
            conn.exec_driver_sql("DROP DATABASE IF EXISTS dagster_bench")
            conn.exec_driver_sql("CREATE DATABASE dagster_bench")
        eng.dispose()
        url = url.replace("/postgres?", "/dagster_bench?")
        cfg += f"storage:\n  postgres:\n    postgres_url: {json.dumps(url)}\n"
    (home / "dagster.yaml").write_text(cfg)
    return dg.DagsterInstance.from_config(str(home))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", nargs="+", default=["sqlite", "postgres"],
                    choices=["sqlite", "postgres"])
    ap.add_argument("--workloads", nargs="+", default=["trivial", "checkpoint"],
                    choices=["trivial", "checkpoint"])
    ap.add_argument("--max-steps", type=int, default=6,
                    help="checkpoints per model used (the first ones of the common grid)")
    ap.add_argument("--url", default=None, help="an external store (else embedded, throwaway)")
    args = ap.parse_args(argv)
    C.one_thread()
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("dagster").setLevel(logging.ERROR)

    tmp = Path(tempfile.mkdtemp(prefix="genbound-bench-dagster-"))
    saved = {k: os.environ.get(k) for k in ("GENBOUND_FAMILIES_FILE", "GENBOUND_PROFILE",
                                            "GENBOUND_TOKENS_PER_PARAM", "GENBOUND_DATABASE_URL",
                                            "GENBOUND_DATA_DIR", "DAGSTER_HOME")}
    try:
        with C.EmbeddedPostgres(args.url) as url:
            return _run(args, tmp, url)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)


def _run(args, tmp: Path, url: str) -> dict:
    import dagster as dg

    from genbound_assets import storage
    from genbound_assets_tests.micro import MICRO_TRAIN, registry_doc, train_micro

    t0 = time.perf_counter()
    root = train_micro(tmp / "suite")
    train_s = time.perf_counter() - t0
    reg = tmp / "families.json"
    reg.write_text(json.dumps(registry_doc(root)))
    os.environ.update({"GENBOUND_FAMILIES_FILE": str(reg), "GENBOUND_PROFILE": "micro",
                       "GENBOUND_TOKENS_PER_PARAM": str(MICRO_TRAIN.tokens_per_param),
                       "GENBOUND_DATABASE_URL": url, "GENBOUND_DATA_DIR": str(tmp / "data")})
    from genbound_assets.defs.families import resources

    resources._open.cache_clear()
    engine = storage.get_engine(url)
    from genbound_assets.definitions import build_defs
    from genbound_assets.defs.checkpoints.assets import BATCHED
    from genbound_assets.defs.families.partitions import all_family_parts
    from genbound_assets.defs.families.resources import GenboundResource
    from genbound_assets.defs.families.watch import plan_tick

    (parts,) = all_family_parts()
    defs = build_defs()
    real_assets = list(defs.get_repository_def().assets_defs_by_key.values())

    @dg.asset(key=dg.AssetKey(["bench", "trivial"]), partitions_def=parts.checkpoint,
              backfill_policy=BATCHED)
    def trivial(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        n = sum(1 for _ in context.partition_keys)
        return dg.MaterializeResult(metadata={"partitions": n})

    genbound = GenboundResource()
    settings = genbound.settings()
    family = genbound.family(parts.spec)
    models = sorted(family.source.list_models())
    steps = {m: [r.step for r in family.source.list_checkpoints(m)][: args.max_steps] for m in models}
    n_parts = sum(len(v) for v in steps.values())

    results = []
    for kind in args.instances:
        t_inst = time.perf_counter()
        instance = _instance(kind, tmp, url)
        plan = plan_tick(instance, parts, family, engine, settings, seen=set(), limit=100_000,
                         key_prefix=None)
        instance.add_dynamic_partitions(parts.model.name, plan.add_models)
        instance.add_dynamic_partitions(parts.step.name, plan.add_steps)
        setup_s = time.perf_counter() - t_inst
        for work in args.workloads:
            if work == "trivial":
                assets, sel = [trivial], [trivial.key]
            else:
                assets, sel = real_assets, [parts.key("checkpoint")]
            # warm-up (imports, first-run caches): one untimed run of the first partition
            dg.materialize(assets, instance=instance, selection=sel, raise_on_error=False,
                           partition_key=parts.partition_key(models[0], steps[models[0]][0]))
            for mode in ("per_partition", "batched"):
                runs, t1, per_run = 0, time.perf_counter(), []
                ok = True
                for m in models:
                    calls = ([{"tags": {"dagster/asset_partition_range_start": f"{m}|{steps[m][0]}",
                                        "dagster/asset_partition_range_end": f"{m}|{steps[m][-1]}"}}]
                             if mode == "batched" else
                             [{"partition_key": parts.partition_key(m, s)} for s in steps[m]])
                    for kw in calls:
                        t2 = time.perf_counter()
                        res = dg.materialize(assets, instance=instance, selection=sel,
                                             raise_on_error=False, **kw)
                        per_run.append(time.perf_counter() - t2)
                        ok &= res.success
                        runs += 1
                total = time.perf_counter() - t1
                done = instance.get_materialized_partitions(sel[0])
                results.append({"instance": kind, "workload": work, "mode": mode, "runs": runs,
                                 "partitions": n_parts, "seconds": total,
                                 "seconds_per_partition": total / n_parts,
                                 "seconds_per_run": total / runs,
                                 "median_run_s": statistics.median(per_run),
                                 "run_s": [round(x, 4) for x in per_run], "success": bool(ok),
                                 "materialized_partitions": len(done), "instance_setup_s": setup_s})
        instance.dispose()
    engine.dispose()

    def get(kind, work, mode):
        return next((r for r in results if (r["instance"], r["workload"], r["mode"]) == (kind, work, mode)), None)

    heads = []
    for kind in args.instances:
        for work in args.workloads:
            b, p = get(kind, work, "batched"), get(kind, work, "per_partition")
            heads.append(C.headline(
                f"{work} work, {kind} instance: s/partition batched vs one run each",
                f"{b['seconds_per_partition']:.2f} vs {p['seconds_per_partition']:.2f}", "s",
                None, None))
        tp = get(kind, "trivial", "per_partition")
        if tp:
            heads.append(C.headline(f"Dagster overhead per run (trivial asset, {kind} instance; "
                                    "median run)", tp["median_run_s"], "s"))
    table = C.fmt_table(["instance", "workload", "mode", "runs", "partitions", "total s",
                         "s/partition", "median s/run", "ok"],
                        [[r["instance"], r["workload"], r["mode"], r["runs"], r["partitions"],
                          r["seconds"], r["seconds_per_partition"], r["median_run_s"],
                          r["success"]] for r in results])
    table.append(f"(micro suite: {len(models)} models x {args.max_steps} steps, trained in "
                 f"{train_s:.1f} s; dagster.materialize, in-process executor; 1 torch thread)")
    return C.emit({"bench": "dagster_overhead", "dagster": dg.__version__, "models": models,
                   "steps": steps, "rows": results, "headline": heads}, table)


if __name__ == "__main__":
    main()
