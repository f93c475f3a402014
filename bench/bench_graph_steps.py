"""Per-asset cost of the asset graph, read from Dagster's own step timings of a demo run.

Runs `genbound demo`'s driver (genbound_assets/demo.py `run_demo`: the same definitions, batched
checkpoint runs, then the model-level assets, then the unpartitioned ones) on the micro suite
(genbound_assets_tests/micro.py: trained here in seconds, or --suite ROOT) against a throwaway
store (an embedded PostgreSQL under a temporary data dir, or $GENBOUND_DATABASE_URL with
--use-env-db) and a temporary Dagster instance; then reads every run's step statistics
(`DagsterInstance.get_run_step_stats`: start/end of each step as Dagster recorded them) and
divides each checkpoint-level step by the number of partitions its run covered.

    .venv/bin/python bench/bench_graph_steps.py                  # micro suite, profile micro
    .venv/bin/python bench/bench_graph_steps.py --suite DIR --profile demo --family suite

Prints one JSON line, then a table: per asset, the partitions materialized, the summed step
seconds, seconds per partition, and the in-process run overhead (run wall time minus its steps).
docs/scale.md quotes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", type=Path, help="a trained suite root (default: train the micro suite)")
    ap.add_argument("--profile", default="micro")
    ap.add_argument("--family", default="micro")
    ap.add_argument("--use-env-db", action="store_true",
                    help="write to $GENBOUND_DATABASE_URL (its genbound tables are overwritten)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="genbound-bench-graph-"))
    os.environ["GENBOUND_DATA_DIR"] = str(work / "data")
    from genbound_assets import storage

    started_pg = False
    try:
        t0 = time.perf_counter()
        if args.suite is None:
            from genbound_assets_tests.micro import train_micro

            root = train_micro(work / "suite")
        else:
            root = args.suite.resolve()
        t_train = time.perf_counter() - t0
        reg = work / "families.json"
        reg.write_text(json.dumps({"families": [{"name": args.family, "kind": "suite",
                                                 "checkpoints": str(root), "profile": args.profile}]}))
        os.environ["GENBOUND_FAMILIES_FILE"] = str(reg)
        os.environ["GENBOUND_PROFILE"] = args.profile
        if args.suite is None:
            from genbound_assets_tests.micro import MICRO_TRAIN

            os.environ["GENBOUND_TOKENS_PER_PARAM"] = str(MICRO_TRAIN.tokens_per_param)
        if args.use_env_db:
            url = storage.validate_url(os.environ[storage.DATABASE_URL_ENV], source=storage.DATABASE_URL_ENV)
        else:
            os.environ.pop(storage.DATABASE_URL_ENV, None)
            url = storage.start_embedded(work / "data")
            started_pg = True
        engine = storage.get_engine(url)
        storage.create_views(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("TRUNCATE " + ", ".join(f'"{t}"' for t in storage.TABLES))

        import dagster as dg

        from genbound_assets.definitions import build_defs
        from genbound_assets.demo import run_demo

        defs = build_defs()
        lines: list[str] = []
        (work / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(work / "dagster")) as instance:
            t1 = time.perf_counter()
            run_demo(engine, instance, echo=lines.append, defs=defs)
            t_demo = time.perf_counter() - t1
            failed = [ln for ln in lines if "FAILED" in ln]
            order = {}
            per_asset: dict[str, dict] = defaultdict(lambda: {"partitions": 0, "step_s": 0.0, "runs": 0})
            overhead = []
            for run in instance.get_runs():
                stats = instance.get_run_step_stats(run.run_id)
                rs = instance.get_run_stats(run.run_id)
                n = 1
                lo = run.tags.get("dagster/asset_partition_range_start")
                if lo:
                    fam = run.tags.get("genbound/family", args.family)
                    if fam not in order:
                        order[fam] = instance.get_dynamic_partitions(f"{fam}__step")
                    steps = order[fam]
                    a = steps.index(lo.split("|")[1])
                    b = steps.index(run.tags["dagster/asset_partition_range_end"].split("|")[1])
                    n = b - a + 1
                step_total = 0.0
                for st in stats:
                    if st.start_time is None or st.end_time is None:
                        continue
                    name = st.step_key.split("__", 1)[-1] if "__" in st.step_key else st.step_key
                    d = st.end_time - st.start_time
                    step_total += d
                    per_asset[name]["partitions"] += n
                    per_asset[name]["step_s"] += d
                    per_asset[name]["runs"] += 1
                if rs.start_time and rs.end_time:
                    overhead.append((rs.end_time - rs.start_time) - step_total)
            from genbound_assets.storage import read_frame

            df = read_frame(engine, "SELECT model, n_params FROM models")
            n_params = dict(df.iter_rows())
        engine.dispose()
        rows = {k: {**v, "s_per_partition": v["step_s"] / max(v["partitions"], 1)}
                for k, v in sorted(per_asset.items())}
        out = {"bench": "graph_steps", "profile": args.profile, "family": args.family,
               "machine": platform.machine(), "cpus": os.cpu_count(), "torch_threads": args.threads,
               "train_s": round(t_train, 2), "demo_s": round(t_demo, 2), "failed": failed,
               "n_params": n_params,
               "runs": len(overhead), "run_overhead_s_median": round(sorted(overhead)[len(overhead) // 2], 3)
               if overhead else None,
               # everything the demo spent outside steps (planning, materialize() setup, run
               # start/finish events), per run
               "outside_steps_s_per_run": round((t_demo - sum(v["step_s"] for v in rows.values()))
                                                / max(len(overhead), 1), 3),
               "assets": {k: {"partitions": v["partitions"], "runs": v["runs"], "step_s": round(v["step_s"], 3),
                              "s_per_partition": round(v["s_per_partition"], 3)} for k, v in rows.items()}}
        print(json.dumps(out))
        print(f"\n{'asset':<28}{'partitions':>11}{'runs':>6}{'step s':>9}{'s/partition':>13}")
        for k, v in rows.items():
            print(f"{k:<28}{v['partitions']:>11}{v['runs']:>6}{v['step_s']:>9.2f}{v['s_per_partition']:>13.3f}")
        print(f"\ndemo {t_demo:.1f} s over {len(overhead)} runs; inside a run, wall - steps: median "
              f"{out['run_overhead_s_median']} s; demo wall - all steps: {out['outside_steps_s_per_run']} s "
              f"per run; training {t_train:.1f} s")
        return 1 if failed else 0
    finally:
        if started_pg:
            storage.stop_embedded(work / "data", mode="immediate")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
