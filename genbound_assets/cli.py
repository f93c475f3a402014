"""``genbound``: the single entry point (setup-db, sql, demo, ui, stop-db, and the ``suite`` group).

User errors (bad URL, unreachable database, SQL errors) print one line to stderr and exit 1;
they never dump a stack trace.  Heavy imports (dagster, polars) stay inside the commands.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import signal
import sys
from pathlib import Path

import click

from genbound_assets import storage
from genbound_assets.storage import StoreError

REPO_ROOT = Path(__file__).resolve().parents[1]


def _fail(msg: str, code: int = 1) -> None:
    click.echo(f"genbound: error: {msg}", err=True)
    sys.exit(code)


def _one_line(err: BaseException) -> str:
    orig = getattr(err, "orig", None) or err
    text = getattr(orig, "pgerror", None) or str(orig) or type(orig).__name__
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return " ".join(lines[0].split()) if lines else type(orig).__name__


def store_errors(fn):
    """Turn StoreError (and connection loss) into a one-line message and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from sqlalchemy.exc import OperationalError

        try:
            return fn(*args, **kwargs)
        except StoreError as e:
            _fail(str(e))
        except OperationalError as e:
            _fail(f"database connection failed: {_one_line(e)}")

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """genbound: provable token-level generalization bounds for LLM checkpoint families.

    The store is Postgres: $GENBOUND_DATABASE_URL (postgresql+psycopg2://...) or, when unset,
    an embedded server under $GENBOUND_DATA_DIR (default ~/.local/share/genbound).
    """


@main.command("setup-db")
@store_errors
def setup_db() -> None:
    """Start/attach the store, create the schema (idempotent) and the views."""
    engine = storage.get_engine()
    added = storage.create_schema(engine)  # additive migrations, if this code is newer
    views = storage.create_views(engine)
    counts = storage.table_counts(engine)
    click.echo(f"store: {storage.describe_url(engine.url.render_as_string(hide_password=False))}")
    if added:
        click.echo(f"added: {', '.join(added)}")
    _print_counts(counts)
    click.echo(f"views: {', '.join(views) if views else '(none)'}")


def _print_counts(counts: dict[str, int]) -> None:
    width = max(len(t) for t in counts)
    click.echo("tables:")
    for table, n in counts.items():
        click.echo(f"  {table:<{width}}  {n:>12,d} rows")


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    return str(v)


def _print_table(columns: list[str], rows: list[tuple]) -> None:
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    def line(values: list[str]) -> str:
        return (" " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True))).rstrip()

    click.echo(line(columns))
    click.echo("-" + "-+-".join("-" * w for w in widths) + "-")
    for r in cells:
        click.echo(line(r))
    click.echo(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")


@main.command("sql")
@click.argument("query")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV instead of an aligned table.")
@store_errors
def sql(query: str, as_csv: bool) -> None:
    """Run QUERY against the store and print the result (committed if it changes data)."""
    from sqlalchemy.exc import DBAPIError

    engine = storage.get_engine()
    try:
        with engine.begin() as conn:
            # exec_driver_sql: the text goes to Postgres as is (no ':name' or '%' processing)
            result = conn.exec_driver_sql(query)
            if result.returns_rows:
                columns = list(result.keys())
                rows = [tuple(r) for r in result.fetchall()]
            else:
                columns, rows = None, result.rowcount
    except DBAPIError as e:
        if e.connection_invalidated:
            raise storage.db.connection_error(str(engine.url.render_as_string(False)), e) from None
        _fail(_one_line(e))
    if columns is None:
        click.echo(f"OK ({rows} row{'' if rows == 1 else 's'} affected)" if rows >= 0 else "OK")
    elif as_csv:
        import csv

        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(columns)
        w.writerows([[_fmt(v) for v in r] for r in rows])
    else:
        _print_table(columns, rows)


@main.command("demo")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Suite folder (default: $GENBOUND_DATA_DIR/suite).")
@click.option("--corpus", type=click.Choice(["brown", "synthetic"]), default="brown",
              show_default=True, help="Corpus to train the suite on when it is missing.")
@click.option("--quick", is_flag=True, help="Two smallest sizes only (a smoke test).")
@click.option("--sample-size", type=click.IntRange(min=10), default=2000, show_default=True,
              help="m, the bound's token-context pairs per checkpoint.")
@click.pass_context
@store_errors
def demo(ctx: click.Context, root: Path | None, corpus: str, quick: bool, sample_size: int) -> None:
    """Train the local suite if missing, then certify each size's compute-optimal checkpoint.

    Every model's checkpoints are registered with their integrity status, the bound's token
    sample is drawn once, and each size's checkpoint at D* = 20 N gets its certified bounds
    (Thm 3.4 decomposed, direct, Azuma baseline) written to the store.
    """
    import time

    t0 = time.perf_counter()
    engine = storage.get_engine()
    click.echo(f"demo: store at {storage.describe_url(engine.url.render_as_string(False))}")
    storage.create_schema(engine)
    views = storage.create_views(engine)
    click.echo(f"demo: schema ready ({len(storage.TABLES)} tables, views: {', '.join(views) or '-'})")

    from genbound_assets.cli_suite import train as suite_train
    from genbound_assets.demo import DemoSettings, run_demo, suite_ready
    from genbound_assets.families.suite import DEMO_SIZES, QUICK_SIZES, default_data_dir

    root = (root or default_data_dir() / "suite").expanduser()
    sizes = list(QUICK_SIZES if quick else DEMO_SIZES)
    if suite_ready(root, sizes):
        click.echo(f"demo: suite at {root} is complete for {', '.join(sizes)}; not retraining")
    else:
        click.echo(f"demo: training the suite ({', '.join(sizes)}) into {root}")
        missing = [s for s in sizes if not (root / s).is_dir()]
        ctx.invoke(suite_train, root=root, corpus=corpus, sizes=",".join(missing) if missing
                   and len(missing) < len(sizes) else None, quick=quick and len(missing) == len(sizes))
    certs = run_demo(engine, root, DemoSettings(n_sample=sample_size), echo=click.echo)
    ok = [c for c in certs if c.status == "ok"]
    click.echo(f"demo: done in {time.perf_counter() - t0:.0f} s: {len(ok)} of {len(certs)} "
               "compute-optimal checkpoints certified; inspect them with")
    click.echo("  genbound sql \"select model, step, method, code_length_method, certified, "
               "round(bound::numeric, 3) as bound from bounds order by model, method\"")
    click.echo("  genbound ui   (Dagster)")


def ui_command(host: str, port: int, workspace: Path) -> tuple[list[str], dict[str, str]]:
    """argv and environment for `dagster dev` on the store (starts the embedded server if needed).

    Exports the resolved GENBOUND_DATABASE_URL (so the webserver, the daemon and every run
    worker share one database) and DAGSTER_HOME=<data dir>/dagster_home (telemetry off).
    """
    if not workspace.is_file():
        raise StoreError(f"workspace file {workspace} not found (run from a source checkout, "
                         "or pass --workspace)")
    url = storage.database_url()  # starts the embedded server when no URL is configured
    storage.create_views(storage.get_engine(url))
    home = storage.data_dir() / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = dict(os.environ, **{storage.DATABASE_URL_ENV: url, "DAGSTER_HOME": str(home)})
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or shutil.which("dagster")
    if dagster is None:
        raise StoreError("the `dagster` executable was not found next to this Python (run `make setup`)")
    argv = [dagster, "dev", "-w", str(workspace), "-h", host, "-p", str(port)]
    return argv, env


@main.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3000, show_default=True, type=int)
@click.option("--workspace", type=click.Path(dir_okay=False, path_type=Path),
              default=REPO_ROOT / "workspace.yaml", show_default="repo's workspace.yaml")
@store_errors
def ui(host: str, port: int, workspace: Path) -> None:
    """Start `dagster dev -w workspace.yaml` on the store (replaces this process)."""
    argv, env = ui_command(host, port, workspace)
    click.echo(f"genbound ui: store {storage.describe_url(env[storage.DATABASE_URL_ENV])}; "
               f"DAGSTER_HOME={env['DAGSTER_HOME']}; http://{host}:{port}", err=True)
    # A shell's `&` leaves SIGINT ignored, and exec keeps ignored signals ignored: restore the
    # defaults so Ctrl-C / SIGTERM stop dagster dev.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(workspace.parent)
    os.execve(argv[0], argv, env)


@main.command("stop-db")
def stop_db() -> None:
    """Stop the embedded PostgreSQL under the data dir (no effect on an external database)."""
    pg = storage.embedded_pg_dir()
    if storage.stop_embedded():
        click.echo(f"stopped the embedded server in {pg}")
    else:
        click.echo(f"no embedded server running in {pg}")


try:
    from genbound_assets.cli_suite import suite
except ModuleNotFoundError as e:  # the `suite` group lands separately; only its absence is OK
    if e.name != "genbound_assets.cli_suite":
        raise
else:
    main.add_command(suite)


if __name__ == "__main__":
    main()
