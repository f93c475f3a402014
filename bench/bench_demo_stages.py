"""`make demo` by stage: parse the per-stage lines `genbound demo` prints.

    .venv/bin/python bench/bench_demo_stages.py [--log bench/results/demo.log] [--train-log FILE]
    .venv/bin/python bench/bench_demo_stages.py --run [--data-dir DIR]   # run the demo (~10+ min)

Stages (the lines genbound/cli.py and genbound/demo.py print):

* ``train suite``          ``suite: trained N sizes in S s`` (only when the demo trained it; or
                           from --train-log, a `genbound suite train` log);
* ``register``             ``demo: [1/4] <family>: ... (S s)``: partitions, integrity scan;
* ``checkpoint runs``      ``demo: [2/4] run i/n <range>: <assets>: ok (S s)``, grouped by the
                           asset set (inventory + loss curve only, or with quantization, token
                           losses and bounds);
* ``model-level assets``   ``demo: [3/4] <family>/<model>: ...: ok (S s)``;
* ``unpartitioned assets`` ``demo: [4/4] unpartitioned assets (...): ok (S s)``;
* ``total``                ``demo: done in S s``;
* per asset               Dagster's ``STEP_SUCCESS ... step "<family>__<asset>" in 1.2s`` lines
                           (in the log when stderr was captured with stdout, as --run does).

--run executes `python -m genbound_assets.cli demo` with GENBOUND_DATA_DIR=--data-dir (default a
new temp dir, kept: the log is written to --log).  Never part of `make bench`: it parses a log.
Prints one JSON line, then a table.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C

RESULTS = Path(__file__).resolve().parent / "results"

PATTERNS = {
    "train": re.compile(r"suite: trained (\d+) sizes in ([\d.]+) s"),
    "register": re.compile(r"demo: \[1/4\] (\S+): (.*) \(([\d.]+) s\)$"),
    "run": re.compile(r"demo: \[2/4\] run (\d+)/(\d+) (.+?): (.+): (ok|FAILED) \(([\d.]+) s\)$"),
    "model": re.compile(r"demo: \[3/4\] (\S+)/(\S+): (.+): (ok|FAILED) \(([\d.]+) s\)$"),
    "model_total": re.compile(r"demo: \[3/4\] model-level assets: ([\d.]+) s$"),
    "unpartitioned": re.compile(r"demo: \[4/4\] unpartitioned assets \((.*)\): (ok|FAILED) \(([\d.]+) s\)$"),
    "done": re.compile(r"demo: done in ([\d.]+) s"),
    # Dagster's own step lines (the demo's stderr): per-asset step time
    "step": re.compile(r'STEP_(SUCCESS|FAILURE) - .*step "([^"]+)" in ((?:\d+m)?[\d.]+(?:ms|s)?)'),
}


def _duration(text: str) -> float:
    """Dagster's step duration text: 552ms, 1.08s, 1m52s."""
    m = re.fullmatch(r"(?:(\d+)m)?([\d.]+)(ms|s)?", text)
    if not m:
        return 0.0
    minutes, value, unit = m.groups()
    secs = float(value) / (1000.0 if unit == "ms" else 1.0)
    return secs + 60.0 * int(minutes or 0)


def parse(lines: list[str]) -> dict:
    st: dict = {"train_s": None, "register_s": 0.0, "runs": [], "models": [], "model_total_s": None,
                "unpartitioned_s": None, "total_s": None, "failed": 0, "steps": {}}
    for raw in lines:
        line = raw.rstrip("\n").split("\r")[-1].strip()
        if m := PATTERNS["train"].search(line):
            st["train_s"] = float(m.group(2))
        elif m := PATTERNS["register"].match(line):
            st["register_s"] += float(m.group(3))
        elif m := PATTERNS["run"].match(line):
            st["runs"].append({"range": m.group(3), "assets": m.group(4), "ok": m.group(5) == "ok",
                               "s": float(m.group(6))})
            st["failed"] += m.group(5) != "ok"
        elif m := PATTERNS["model_total"].match(line):
            st["model_total_s"] = (st["model_total_s"] or 0.0) + float(m.group(1))
        elif m := PATTERNS["model"].match(line):
            st["models"].append({"model": m.group(2), "ok": m.group(4) == "ok", "s": float(m.group(5))})
            st["failed"] += m.group(4) != "ok"
        elif m := PATTERNS["unpartitioned"].match(line):
            st["unpartitioned_s"] = float(m.group(3))
            st["failed"] += m.group(2) != "ok"
        elif m := PATTERNS["done"].search(line):
            st["total_s"] = float(m.group(1))
        elif m := PATTERNS["step"].search(line):
            asset = m.group(2).split("__", 1)[-1]
            n, t = st["steps"].get(asset, (0, 0.0))
            st["steps"][asset] = (n + 1, t + _duration(m.group(3)))
    return st


def stages(st: dict) -> list[dict]:
    out = []
    if st["train_s"] is not None:
        out.append({"stage": "train suite", "runs": None, "s": st["train_s"]})
    out.append({"stage": "register partitions (integrity scan)", "runs": None, "s": st["register_s"]})
    groups: dict[str, list[float]] = {}
    for r in st["runs"]:
        kind = ("checkpoint runs: inventory + loss curve + quantize + token losses + bounds"
                if "checkpoint_bounds" in r["assets"] else "checkpoint runs: inventory + loss curve")
        groups.setdefault(kind, []).append(r["s"])
    for kind, ss in sorted(groups.items()):
        out.append({"stage": kind, "runs": len(ss), "s": sum(ss)})
    if st["models"]:
        out.append({"stage": "model-level assets (per model)", "runs": len(st["models"]),
                    "s": sum(m["s"] for m in st["models"])})
    if st["unpartitioned_s"] is not None:
        out.append({"stage": "unpartitioned assets (schema, SQL views, fits)", "runs": 1,
                    "s": st["unpartitioned_s"]})
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log", type=Path, default=Path(os.environ.get("GENBOUND_DEMO_LOG", RESULTS / "demo.log")))
    ap.add_argument("--train-log", type=Path, default=RESULTS / "suite_train.log",
                    help="a `genbound suite train` log (when the demo reused a trained suite)")
    ap.add_argument("--run", action="store_true", help="run `genbound demo` first (~10+ minutes)")
    ap.add_argument("--data-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    run_s = None
    if args.run:
        data = args.data_dir or Path(tempfile.mkdtemp(prefix="genbound-demo-bench-"))
        env = dict(os.environ, GENBOUND_DATA_DIR=str(data))
        env.pop("GENBOUND_DATABASE_URL", None)
        args.log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with open(args.log, "w") as f:
            rc = subprocess.call([sys.executable, "-m", "genbound_assets.cli", "demo"], cwd=C.REPO,
                                 env=env, stdout=f, stderr=subprocess.STDOUT)
        run_s = time.perf_counter() - t0
        subprocess.call([sys.executable, "-m", "genbound_assets.cli", "stop-db"], cwd=C.REPO, env=env,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if rc != 0:
            print(f"bench_demo_stages: genbound demo exited {rc}; see {args.log}", file=sys.stderr)
    if not args.log.is_file():
        return C.emit({"bench": "demo_stages", "log": str(args.log), "available": False,
                       "headline": [C.headline("make demo by stage", "no demo log", "",
                                               None, None)]},
                      [f"no demo log at {args.log}: run `bench/bench_demo_stages.py --run` once "
                       "on a quiet machine, or pass --log"])
    lines = args.log.read_text(errors="replace").splitlines()
    st = parse(lines)
    separate_train = False
    if st["train_s"] is None and args.train_log and args.train_log.is_file():
        st["train_s"] = parse(args.train_log.read_text(errors="replace").splitlines())["train_s"]
        separate_train = st["train_s"] is not None
    rows = stages(st)
    demo_total = st["total_s"] or sum(r["s"] for r in rows if r["stage"] != "train suite")
    # the demo's "done in" includes training only when the demo trained the suite itself
    total = demo_total + (st["train_s"] if separate_train else 0.0)
    for r in rows:
        r["share"] = r["s"] / total if total else None
    if separate_train:
        rows[0]["stage"] = "train suite (separate `genbound suite train` log)"
    heads = [C.headline(f"make demo: {r['stage']}", r["s"], "s") for r in rows]
    heads.append(C.headline("make demo: genbound demo (`done in`)", demo_total, "s"))
    if separate_train:
        heads.append(C.headline("make demo: training + genbound demo", total, "s"))
    extra = [["genbound demo (done in)", None, demo_total, demo_total / total if total else None]]
    if separate_train:
        extra.append(["total incl. training", None, total, 1.0])
    table = C.fmt_table(["stage", "runs", "seconds", "share"],
                        [[r["stage"], r["runs"], r["s"], r["share"]] for r in rows] + extra)
    if st["steps"]:
        table.append("")
        table += C.fmt_table(["asset (Dagster step time, all runs)", "steps", "seconds"],
                             [[a, n, t] for a, (n, t) in sorted(st["steps"].items(),
                                                               key=lambda kv: -kv[1][1])])
        for a, (n, t) in st["steps"].items():
            heads.append(C.headline(f"make demo: asset {a} (Dagster step time, {n} step(s))", t, "s"))
    if st["failed"]:
        table.append(f"({st['failed']} FAILED run(s) in the log)")
    try:
        log_name = str(args.log.resolve().relative_to(C.REPO))
    except ValueError:
        log_name = str(args.log)
    return C.emit({"bench": "demo_stages", "log": log_name, "available": True,
                   "train_log": str(args.train_log) if separate_train else None,
                   "run_s": run_s, "parsed": st, "stages": rows, "demo_s": demo_total,
                   "total_s": total, "headline": heads}, table)


if __name__ == "__main__":
    main()
