"""Benchmark: `genbound report` on the store's current tables, per section and in all.

    GENBOUND_DATA_DIR=<data dir> .venv/bin/python bench/bench_report.py [-o report.html]

Uses the store genbound would use ($GENBOUND_DATABASE_URL, else the embedded server under
$GENBOUND_DATA_DIR).  Prints one JSON line, then a table.  Timings live here, never in tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, default=None, help="HTML file (default: a temp file)")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    from genbound_assets import storage
    from genbound_assets.report import SECTIONS, write_report

    t0 = time.perf_counter()
    engine = storage.get_engine()
    storage.create_views(engine)
    t_setup = time.perf_counter() - t0
    rows = []
    for fn in SECTIONS:
        t1 = time.perf_counter()
        sec = fn(engine)
        rows.append({"section": fn.key, "s": round(time.perf_counter() - t1, 3),
                     "content": "figure" if sec.png else "table" if sec.table else "note",
                     "png_kB": round(len(sec.png) / 1e3, 1) if sec.png else 0.0})
    out = args.output or Path(tempfile.mkdtemp()) / "report.html"
    t2 = time.perf_counter()
    path = write_report(engine, out)
    t_report = time.perf_counter() - t2
    n_models = storage.read_frame(engine, "SELECT count(*) AS n FROM frontier")["n"][0]
    print(json.dumps({"bench": "report", "models": int(n_models), "setup_s": round(t_setup, 2),
                      "report_s": round(t_report, 2), "html_kB": round(path.stat().st_size / 1e3),
                      "sections": rows, "python": platform.python_version()}))
    print(f"\n{'section':<26}{'s':>7}  {'content':<8}{'png kB':>8}")
    for r in rows:
        print(f"{r['section']:<26}{r['s']:>7.2f}  {r['content']:<8}{r['png_kB']:>8.1f}")
    print(f"{'whole report (write_report)':<26}{t_report:>7.2f}  -> {path}")


if __name__ == "__main__":
    main()
