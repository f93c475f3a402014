"""`make bench`: every bench at its `make bench` size, results to bench/results/, tables to
docs/performance.md.

    .venv/bin/python bench/run_all.py [--only NAME ...] [--no-docs] [--timeout 600]

Each bench runs in its own process (1 torch thread, PYTHONPATH = this checkout), prints one JSON
line and a table; this script stores ``bench/results/<name>.json`` = {name, argv, wall_s,
returncode, machine, record (the JSON line), table (the printed table)} and rewrites the part of
docs/performance.md between the ``bench-results`` markers from every stored result (so a partial
run keeps the other benches' last results).  Sized to finish within 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import _common as C

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOC = C.REPO / "docs" / "performance.md"
BEGIN, END = "<!-- bench-results:begin -->", "<!-- bench-results:end -->"

# name -> (script, argv at `make bench` size, what it measures)
BENCHES: dict[str, tuple[str, list[str], str]] = {
    "window_losses": ("bench_window_losses.py", [],
                      "token evaluation by windows vs a bare forward and vs the per-pair path"),
    "freedman": ("bench_freedman.py", ["--ns", "10000", "100000", "1000000", "--repeats", "3"],
                 "Sigma over the 1000-point grid vs n"),
    "pg_ingest": ("bench_pg_ingest.py", [], "token-loss ingest into Postgres and the read-back"),
    "hvp": ("bench_hvp.py", ["--threads", "1", "--repeats", "5", "--slq-steps", "8",
                             "--slq-sweep", "8", "16", "32"], "HVP vs forward+backward; SLQ vs steps"),
    "gptq": ("bench_gptq.py", ["--widths", "64", "128", "256", "--bits", "4", "--steps", "100",
                               "--threads", "1"], "GPTQ (and RTN) time per size"),
    "entropy_code": ("bench_entropy_code.py", ["--sizes", "neox-12k", "neox-55k", "neox-133k",
                                               "--bits", "4", "--group-sizes", "16",
                                               "--methods", "rtn", "--steps", "100",
                                               "--suite", "/nonexistent-use-synthetic"],
                     "entropy coder speed and bits/param"),
    "dagster_overhead": ("bench_dagster_overhead.py", ["--max-steps", "6"],
                         "Dagster overhead per checkpoint partition"),
    "coverage": ("bench_coverage.py", ["--trials", "10000"], "Monte-Carlo coverage of Thm 3.1"),
    "demo_stages": ("bench_demo_stages.py", [], "make demo by stage (parses a demo log)"),
}


def _json_line(out: str) -> tuple[dict | None, list[str]]:
    rec, table = None, []
    for line in out.splitlines():
        s = line.strip()
        if rec is None and s.startswith("{") and '"bench"' in s:
            try:
                rec = json.loads(s)
                continue
            except ValueError:
                pass
        table.append(line)
    return rec, table


def _headlines(name: str, rec: dict) -> list[dict]:
    """The bench's own headline lines, or ones derived here for the older benches."""
    if rec.get("headline"):
        return rec["headline"]
    if name == "gptq":
        return [C.headline(f"GPTQ (GPTQModel) wall time, width {r['width']} (N = {r['n_params']:,}), "
                           f"{r['bits']}-bit; RTN", f"{r['gptq_s']:.2f}; {r['rtn_s']:.2f}", "s")
                for r in rec.get("rows", [])]
    if name == "entropy_code":
        return [C.headline(f"entropy coder {r['model']} {r['method']} b={r['bits']} g={r['group_size']}: "
                           "encode, decode (lzma)", f"{r['encode_mb_s']:.2f}, {r['decode_mb_s']:.2f} "
                           f"({r['lzma_mb_s']:.2f})", "MB/s")
                for r in rec.get("rows", [])]
    return []


def run_one(name: str, timeout: int) -> dict:
    script, argv, what = BENCHES[name]
    env = dict(os.environ, PYTHONPATH=str(C.REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.setdefault("GPTQMODEL_CPU_WORKERS", "2")
    cmd = [sys.executable, str(HERE / script), *argv]
    print(f"bench: {name}: {' '.join(cmd[1:])}", flush=True)
    load0 = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=C.REPO, env=env, capture_output=True, text=True, timeout=timeout)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = 124, (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), "timeout"
    wall = time.perf_counter() - t0
    rec, table = _json_line(out)
    result = {"name": name, "what": what, "argv": [f"bench/{script}", *argv], "wall_s": wall,
              "returncode": rc,
              "machine": (rec or {}).get("machine") or {**C.machine_info(), "loadavg_start": load0},
              "record": rec, "table": table,
              "stderr_tail": err.strip().splitlines()[-5:] if rc or rec is None else []}
    if rec is not None:
        rec.pop("machine", None)
        result["headline"] = _headlines(name, rec)
    print("\n".join(table), flush=True)
    print(f"bench: {name}: {'ok' if rc == 0 and rec else f'FAILED (rc {rc})'} in {wall:.0f} s", flush=True)
    return result


def _fmt(v) -> str:
    if isinstance(v, float):
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return f"{v:.3g}"
    return str(v)


def render(results: dict[str, dict]) -> str:
    """The generated part of docs/performance.md."""
    lines = [BEGIN, "", "<!-- generated by `make bench` (bench/run_all.py) from bench/results/*.json; "
             "edit the text outside the markers -->", ""]
    machines = {json.dumps({k: v for k, v in r["machine"].items()
                            if not k.startswith("loadavg") and k != "torch_threads"},
                           sort_keys=True) for r in results.values()}
    m = next(iter(results.values()))["machine"] if results else {}
    lines += ["### Machine", "",
              f"* CPU: {m.get('cpu')} ({m.get('arch')}), {m.get('cpu_count')} cores "
              f"({m.get('cpus_usable')} usable), {m.get('mem_gib')} GiB memory; shared with other "
              "jobs (load average per bench below)",
              f"* Python {m.get('python')}, torch {m.get('torch')} ({m.get('torch_threads')} thread in "
              f"the torch benches), numpy {m.get('numpy')}",
              f"* BLAS: torch {m.get('torch_blas_info')} (LAPACK {m.get('torch_lapack_info')}, oneDNN "
              f"{m.get('torch_onednn')}), numpy {m.get('numpy_blas')}",
              "* GPU: none (no device was lent to this task)", ""]
    if len(machines) > 1:
        lines += ["(the results below come from more than one machine description: see each JSON)", ""]
    lines += ["### Headline numbers", "",
              "| bench | what | value | unit | target | met |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        for h in r.get("headline", []):
            met = {True: "yes", False: "**no**", None: ""}[h.get("met")]
            lines.append(f"| {name} | {h['what']} | {_fmt(h['value'])} | {h.get('unit') or ''} | "
                         f"{h.get('target') or ''} | {met} |")
    lines += ["", "### Per bench", ""]
    for name, r in results.items():
        la, lb = r["machine"].get("loadavg_start"), r["machine"].get("loadavg_end")
        lines += [f"#### {name}: {r['what']}", "",
                  f"`{' '.join(['python', *r['argv']])}` ({r['wall_s']:.0f} s, exit {r['returncode']}; "
                  f"load average {la[0] if la else '?'} → {lb[0] if lb else '?'}; "
                  f"`bench/results/{name}.json`)", ""]
        if r.get("table"):
            lines += ["```", *[t.rstrip() for t in r["table"] if t.strip()], "```", ""]
        if r.get("stderr_tail"):
            lines += ["stderr (last lines):", "```", *r["stderr_tail"], "```", ""]
    lines.append(END)
    return "\n".join(lines)


def write_doc(results: dict[str, dict]) -> None:
    text = DOC.read_text() if DOC.exists() else "# Performance\n\n" + BEGIN + "\n" + END + "\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + "\n\n" + BEGIN + "\n" + END + "\n"
    a, b = text.index(BEGIN), text.index(END) + len(END)
    DOC.write_text(text[:a] + render(results) + text[b:])


def load_results() -> dict[str, dict]:
    out = {}
    for name in BENCHES:
        f = RESULTS / f"{name}.json"
        if f.exists():
            out[name] = json.loads(f.read_text())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHES), default=None)
    ap.add_argument("--no-docs", action="store_true")
    ap.add_argument("--docs-only", action="store_true", help="rewrite docs/performance.md from results")
    ap.add_argument("--timeout", type=int, default=600)
    args = ap.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    failed = []
    if not args.docs_only:
        t0 = time.perf_counter()
        for name in args.only or list(BENCHES):
            res = run_one(name, args.timeout)
            if res["returncode"] != 0 or res["record"] is None:
                failed.append(name)
            (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
        print(f"bench: {len(args.only or BENCHES)} bench(es) in {time.perf_counter() - t0:.0f} s"
              + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    if not args.no_docs:
        write_doc(load_results())
        print(f"bench: wrote {DOC.relative_to(C.REPO)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
