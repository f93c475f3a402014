"""Bad input at every door is refused with one line naming what was wrong (docs/reliability.md).

Doors: CLI flags, settings (GENBOUND_<FIELD> via ``genbound demo``, which checks them before it
trains or writes anything), environment variables (the store, the data dir, the registry, the
sensor's knobs at code-location load), SQL view files (``genbound setup-db``), SQL queries
(``genbound sql``), checkpoint sources (``genbound family add``) and the family registry file
(``genbound family list``).

Each case runs the real entry point in-process (click's CliRunner on ``genbound``; the code
location's module import for its environment variables) and checks: a non-zero exit, no
exception other than SystemExit (no traceback), exactly one line on stderr starting
``genbound: error:``.  The observed message, normalized, must equal the row of
docs/reliability.md's bad-input table (test_drills_doc.py); a test checks that the table holds
exactly these cases.  One case also runs as a subprocess to prove the installed entry point
prints that one line and nothing else.
"""

import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from genbound_assets_tests.test_drills_doc import check_row, normalize, read_table

REFUSED_URL = "postgresql://u@127.0.0.1:1/db"   # nothing listens on port 1: fails at once


@dataclass(frozen=True)
class Case:
    key: str
    door: str
    input: str
    run: Callable  # (Ctx) -> (exit, message)


@dataclass
class Ctx:
    tmp: Path
    suite: Path          # a complete micro suite (one model, one step is enough)
    empty: Path          # an empty folder
    afile: Path          # a plain file


def cli(args, env=None):
    """Run ``genbound ARGS``: (exit code, the one stderr line without its prefix)."""
    from genbound_assets.cli import main

    r = CliRunner().invoke(main, args, env=env, prog_name="genbound")
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        import traceback

        raise AssertionError("".join(traceback.format_exception(r.exception)))
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code != 0, (args, r.output)
    assert len(lines) == 1, (args, r.stderr)
    assert lines[0].startswith("genbound: error: "), lines[0]
    return str(r.exit_code), lines[0][len("genbound: error: "):]


def _digest(obj) -> str:
    """A stable short name for a case's file (hash() is salted per process)."""
    import hashlib

    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:8]


def demo_with(**env):
    """``genbound demo`` with GENBOUND_<KEY>=value; the store URL refuses connections, so a
    setting that slipped through would fail on the store, never train."""
    full = {f"GENBOUND_{k.upper()}": v for k, v in env.items()}
    return lambda c: cli(["demo"], {"GENBOUND_DATABASE_URL": REFUSED_URL, **full})


def setup_db_with(**env):
    return lambda c: cli(["setup-db"], {f"GENBOUND_{k.upper()}": v for k, v in env.items()})


def sql_files(files: dict[str, str]):
    """``genbound setup-db`` with GENBOUND_SQL_DIR holding ``files`` (name -> SQL)."""
    def run(c: Ctx):
        folder = c.tmp / f"sql-{_digest(files)}"
        folder.mkdir(exist_ok=True)
        for name, body in files.items():
            (folder / name).write_text(body)
        return cli(["setup-db"], {"GENBOUND_SQL_DIR": str(folder)})
    return run


def registry(doc, command=("family", "list")):
    """``genbound family list`` (or ``command``) with GENBOUND_FAMILIES_FILE holding ``doc``;
    the store URL refuses connections (``demo`` must refuse before it needs one)."""
    def run(c: Ctx):
        p = c.tmp / f"families-{_digest(doc)}.json"
        p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        return cli(list(command), {"GENBOUND_FAMILIES_FILE": str(p), "GENBOUND_DATABASE_URL": REFUSED_URL})
    return run


def code_location(**env):
    """Import the sensor/schedule module and build its definitions (what loading the code
    location does) with the variables set: (load error, the error's one line); the module is
    reloaded clean after."""
    def run(c: Ctx):
        from genbound_assets.defs.families import automation

        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            importlib.reload(automation)   # module constants
            automation.automation()        # the sensors and schedules the code location builds
        except ValueError as e:
            msg = str(e)
        else:
            raise AssertionError(f"{env} accepted")
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            importlib.reload(automation)
        assert "\n" not in msg
        return "load error", msg
    return run


def _family_add(*extra, path=None):
    """``genbound family add fam PATH EXTRA...`` (callables get the Ctx)."""
    def run(c: Ctx):
        p = path(c) if callable(path) else path
        return cli(["family", "add", "fam", str(p), *(str(x(c)) if callable(x) else x for x in extra)])
    return run


def _tampered_suite(c: Ctx) -> Path:
    """The suite with its token stream changed after training (the stored hash no longer fits)."""
    dst = c.tmp / "tampered"
    if not dst.exists():
        shutil.copytree(c.suite, dst)
        from genbound_assets.data.stream import load_stream, save_stream

        s = load_stream(dst / "stream.npz")
        toks = s.tokens.copy()
        toks[5] = (toks[5] + 1) % s.separator_id
        save_stream(type(s)(toks, s.doc_starts, s.separator_id), dst / "stream.npz")
    return dst


def _user_run_without_t(c: Ctx) -> Path:
    """A step-folder run (a real tiny checkpoint) registered without --context-length."""
    dst = c.tmp / "userrun"
    if not dst.exists():
        step = next((c.suite / "m-a").iterdir())
        shutil.copytree(step, dst / "step4", ignore=shutil.ignore_patterns("checkpoint.json"))
        np.save(c.tmp / "tokens.npy", np.arange(1000) % 20)
    return dst


CASES = [
    # -- CLI flags
    Case("cli-unknown-command", "CLI", "genbound bogus", lambda c: cli(["bogus"])),
    Case("cli-unknown-option", "CLI", "genbound setup-db --force", lambda c: cli(["setup-db", "--force"])),
    Case("cli-port-not-int", "CLI", "genbound ui --port abc", lambda c: cli(["ui", "--port", "abc"])),
    Case("cli-bad-choice", "CLI", "genbound demo --corpus nope", lambda c: cli(["demo", "--corpus", "nope"])),
    Case("cli-exclusive-flags", "CLI", "genbound sql --csv --json 'select 1'",
         lambda c: cli(["sql", "--csv", "--json", "select 1"])),
    Case("cli-missing-query", "CLI", "genbound sql", lambda c: cli(["sql"])),
    Case("cli-unknown-size", "CLI", "genbound suite train --sizes bogus",
         lambda c: cli(["suite", "train", "--root", str(c.tmp / "nosuite"), "--sizes", "bogus"])),
    Case("cli-sizes-and-quick", "CLI", "genbound suite train --sizes neox-12k --quick",
         lambda c: cli(["suite", "train", "--root", str(c.tmp / "nosuite"), "--sizes", "neox-12k", "--quick"])),
    Case("cli-missing-workspace", "CLI", "genbound ui --workspace <tmp>/none.yaml",
         lambda c: cli(["ui", "--workspace", str(c.tmp / "none.yaml")])),
    Case("cli-family-name", "CLI", "genbound family add Bad <suite>",
         lambda c: cli(["family", "add", "Bad", str(c.suite)])),
    Case("cli-family-kind", "CLI", "genbound family add fam <suite> --kind nope",
         _family_add("--kind", "nope", path=lambda c: c.suite)),
    Case("cli-family-option", "CLI", "genbound family add fam <suite> --option novalue",
         _family_add("--option", "novalue", path=lambda c: c.suite)),
    Case("cli-int-range", "CLI", "genbound family add fam <suite> --context-length 0",
         _family_add("--context-length", "0", path=lambda c: c.suite)),
    Case("cli-flag-for-other-kind", "CLI", "genbound family add fam <suite> --context-length 16",
         _family_add("--context-length", "16", path=lambda c: c.suite)),
    Case("cli-family-profile", "CLI", "genbound family add fam <suite> --profile huge",
         _family_add("--profile", "huge", path=lambda c: c.suite)),
    Case("cli-remove-unknown", "CLI", "genbound family remove nope",
         lambda c: cli(["family", "remove", "nope"])),
    # -- settings (GENBOUND_<FIELD>), checked by genbound demo before anything runs
    Case("set-delta-not-number", "settings", "GENBOUND_DELTA=abc", demo_with(delta="abc")),
    Case("set-delta-range", "settings", "GENBOUND_DELTA=1.5", demo_with(delta="1.5")),
    Case("set-grid-bits", "settings", "GENBOUND_QUANT_GRID=gptq:5:16", demo_with(quant_grid="gptq:5:16")),
    Case("set-grid-syntax", "settings", "GENBOUND_QUANT_GRID=gptq4", demo_with(quant_grid="gptq4")),
    Case("set-reference-two", "settings", "GENBOUND_REFERENCE_CONFIG=gptq:4:16,rtn:4:16",
         demo_with(reference_config="gptq:4:16,rtn:4:16")),
    Case("set-selection", "settings", "GENBOUND_SELECTION=best", demo_with(selection="best")),
    Case("set-profile", "settings", "GENBOUND_PROFILE=huge", demo_with(profile="huge")),
    Case("set-batch-size", "settings", "GENBOUND_BATCH_SIZE=0", demo_with(batch_size="0")),
    Case("set-grid-size-float", "settings", "GENBOUND_GRID_SIZE=1e3", demo_with(grid_size="1e3")),
    Case("set-dtype", "settings", "GENBOUND_DTYPE=int8", demo_with(dtype="int8")),
    Case("set-device", "settings", "GENBOUND_DEVICE=tpu", demo_with(device="tpu")),
    Case("set-bool", "settings", "GENBOUND_QUANTIZE_EMBEDDINGS=maybe", demo_with(quantize_embeddings="maybe")),
    Case("set-n-windows", "settings", "GENBOUND_N_WINDOWS=2", demo_with(n_windows="2")),
    Case("set-nan", "settings", "GENBOUND_MAX_GAP_NATS=nan", demo_with(max_gap_nats="nan")),
    Case("set-negative-seed", "settings", "GENBOUND_SAMPLE_SEED=-1", demo_with(sample_seed="-1")),
    # -- environment variables
    Case("env-url-scheme", "environment", "GENBOUND_DATABASE_URL=mysql://x@y/z (setup-db)",
         setup_db_with(database_url="mysql://x@y/z")),
    Case("env-url-garbage", "environment", "GENBOUND_DATABASE_URL=:::: (setup-db)",
         setup_db_with(database_url="::::")),
    Case("env-url-refused", "environment", f"GENBOUND_DATABASE_URL={REFUSED_URL} (setup-db)",
         setup_db_with(database_url=REFUSED_URL)),
    Case("env-data-dir-file", "environment", "GENBOUND_DATA_DIR=<a file>, no URL (setup-db)",
         lambda c: cli(["setup-db"], {"GENBOUND_DATABASE_URL": "", "GENBOUND_DATA_DIR": str(c.afile)})),
    Case("env-families-dir", "environment", "GENBOUND_FAMILIES_FILE=<a folder> (family list)",
         lambda c: cli(["family", "list"], {"GENBOUND_FAMILIES_FILE": str(c.empty)})),
    Case("env-sql-dir-missing", "environment", "GENBOUND_SQL_DIR=<tmp>/nope (setup-db)",
         lambda c: cli(["setup-db"], {"GENBOUND_SQL_DIR": str(c.tmp / "nope")})),
    Case("env-sensor-per-tick", "environment", "GENBOUND_SENSOR_MAX_PER_TICK=abc (code location load)",
         code_location(GENBOUND_SENSOR_MAX_PER_TICK="abc")),
    Case("env-sensor-interval", "environment", "GENBOUND_SENSOR_INTERVAL_S=0 (code location load)",
         code_location(GENBOUND_SENSOR_INTERVAL_S="0")),
    Case("env-sensor-budget", "environment", "GENBOUND_SENSOR_TICK_BUDGET_S=nan (code location load)",
         code_location(GENBOUND_SENSOR_TICK_BUDGET_S="nan")),
    Case("env-automation", "environment", "GENBOUND_AUTOMATION=maybe (code location load)",
         code_location(GENBOUND_AUTOMATION="maybe")),
    # -- SQL view files (dbt_like_sql/), via genbound setup-db
    Case("sqlfile-syntax", "SQL file", "bad.sql: SELEC 1", sql_files({"bad.sql": "SELEC 1"})),
    Case("sqlfile-two-statements", "SQL file", "two.sql: SELECT 1; SELECT 2",
         sql_files({"two.sql": "SELECT 1 AS a; SELECT 2 AS b"})),
    Case("sqlfile-not-select", "SQL file", "wipe.sql: DELETE FROM bounds",
         sql_files({"wipe.sql": "DELETE FROM bounds"})),
    Case("sqlfile-unknown-table", "SQL file", "ghost.sql: SELECT * FROM no_such_table",
         sql_files({"ghost.sql": "SELECT * FROM no_such_table"})),
    Case("sqlfile-bad-name", "SQL file", "Bad-Name.sql: SELECT 1",
         sql_files({"Bad-Name.sql": "SELECT 1 AS one"})),
    # -- SQL queries, via genbound sql (the read-only role)
    Case("sql-syntax", "SQL query", "genbound sql 'selec 1'", lambda c: cli(["sql", "selec 1"])),
    Case("sql-write", "SQL query", "genbound sql 'delete from bounds'", lambda c: cli(["sql", "delete from bounds"])),
    Case("sql-unknown-table", "SQL query", "genbound sql 'select * from nope'",
         lambda c: cli(["sql", "select * from nope"])),
    # -- checkpoint sources, via genbound family add
    Case("src-missing-folder", "checkpoint source", "genbound family add fam <tmp>/absent",
         _family_add(path=lambda c: c.tmp / "absent")),
    Case("src-empty-folder", "checkpoint source", "genbound family add fam <empty folder>",
         _family_add(path=lambda c: c.empty)),
    Case("src-suite-no-order", "checkpoint source", "genbound family add fam <empty folder> --kind suite",
         _family_add("--kind", "suite", path=lambda c: c.empty)),
    Case("src-steps-none", "checkpoint source", "genbound family add fam <empty folder> --kind step_folders",
         _family_add("--kind", "step_folders", path=lambda c: c.empty)),
    Case("src-tampered-stream", "checkpoint source", "a suite whose stream.npz changed after training",
         _family_add(path=_tampered_suite)),
    Case("src-run-no-context", "checkpoint source", "a step-folder run without --context-length",
         _family_add("--data", lambda c: c.tmp / "tokens.npy", path=_user_run_without_t)),
    # -- the family registry file, via genbound family list
    Case("reg-not-json", "registry file", "{nope", registry("{nope")),
    Case("reg-not-object", "registry file", "[1]", registry([1])),
    Case("reg-unknown-field", "registry file", "an entry with 'color'",
         registry({"families": [{"name": "a", "kind": "suite", "checkpoints": "/x", "color": 1}]})),
    Case("reg-missing-field", "registry file", "an entry without 'checkpoints'",
         registry({"families": [{"name": "a", "kind": "suite"}]})),
    Case("reg-bad-name", "registry file", "name 'A b'",
         registry({"families": [{"name": "A b", "kind": "suite", "checkpoints": "/x"}]})),
    Case("reg-bad-kind", "registry file", "kind 'zip'",
         registry({"families": [{"name": "a", "kind": "zip", "checkpoints": "/x"}]})),
    Case("reg-duplicate", "registry file", "two families named 'a'",
         registry({"families": [{"name": "a", "kind": "suite", "checkpoints": "/x"},
                                {"name": "a", "kind": "suite", "checkpoints": "/y"}]})),
    Case("reg-checkpoints-type", "registry file", "'checkpoints': 5",
         registry({"families": [{"name": "a", "kind": "suite", "checkpoints": 5}]})),
    Case("reg-unknown-profile", "registry file", "'profile': 'huge' (genbound demo)",
         registry({"families": [{"name": "a", "kind": "suite", "checkpoints": "/x", "profile": "huge"}]},
                  ["demo"])),
]
KEYS = [c.key for c in CASES]


@pytest.fixture(scope="module")
def ctx(micro_suite_root, pg_engine, tmp_path_factory):
    from genbound_assets import storage

    tmp = tmp_path_factory.mktemp("bad-inputs")
    suite = tmp / "suite"
    suite.mkdir()
    for f in micro_suite_root.iterdir():
        if f.is_file():
            shutil.copy2(f, suite / f.name)
    first = sorted((micro_suite_root / "m-a").iterdir())[0]
    shutil.copytree(first, suite / "m-a" / first.name)
    (tmp / "empty").mkdir()
    (tmp / "afile").write_text("not a folder\n")
    mp = pytest.MonkeyPatch()
    mp.setenv("GENBOUND_FAMILIES_FILE", str(tmp / "families.json"))   # absent: default family
    try:
        yield Ctx(tmp, suite, tmp / "empty", tmp / "afile")
    finally:
        mp.undo()
        storage.create_views(pg_engine)      # the SQL-file cases replaced the session's views


@pytest.mark.parametrize("case", CASES, ids=KEYS)
def test_bad_input_is_refused_in_one_line(ctx, case):
    from genbound_assets import storage

    code, message = case.run(ctx)
    text = normalize(message, suite=ctx.suite, tmp=ctx.tmp, data=storage.data_dir())
    check_row("bad-inputs", [case.key, case.door, case.input, code, text], KEYS)


def test_bad_input_table_holds_exactly_these_cases():
    assert list(read_table("bad-inputs")) == KEYS
    assert len(KEYS) >= 30 and len(set(KEYS)) == len(KEYS)


def test_the_installed_entry_point_prints_one_line(tmp_path):
    """No traceback through the real process either: the same door as a subprocess."""
    env = dict(os.environ, GENBOUND_DELTA="abc", GENBOUND_DATABASE_URL=REFUSED_URL,
               GENBOUND_DATA_DIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "genbound_assets.cli", "demo"], env=env,
                       capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().splitlines() == ["genbound: error: GENBOUND_DELTA='abc': expected a number"]


def test_a_bare_group_still_prints_its_help():
    """Not bad input: ``genbound`` or ``genbound family`` alone shows the help (click's usage
    block), and --help exits 0."""
    from genbound_assets.cli import main

    for args in ([], ["family"]):
        r = CliRunner().invoke(main, args, prog_name="genbound")
        assert r.exit_code == 2 and "Commands:" in r.output and "genbound: error" not in r.output
    r = CliRunner().invoke(main, ["sql", "--help"], prog_name="genbound")
    assert r.exit_code == 0 and "Usage: genbound sql" in r.output
