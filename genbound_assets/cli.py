"""``genbound``: the single entry point (setup-db, sql, report, demo, ui, stop-db, and ``suite``).

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
    first = " ".join(lines[0].split()) if lines else type(orig).__name__
    return first[len("ERROR: "):] if first.startswith("ERROR: ") else first


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


class OneLineErrors(click.Group):
    """Usage errors (an unknown command or option, a bad option value) as one line on stderr,
    like every other genbound error, instead of click's usage block; exit status unchanged (2)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            if isinstance(e, getattr(click.exceptions, "NoArgsIsHelpError", ())):
                e.show()              # `genbound` or `genbound family` alone: the help, as before
                sys.exit(e.exit_code)
            where = e.ctx.command_path if e.ctx is not None else "genbound"
            click.echo(f"genbound: error: {' '.join(e.format_message().split())} "
                       f"(see `{where} --help`)", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            _fail(" ".join(e.format_message().split()), e.exit_code)
        except click.Abort:
            _fail("aborted")
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """genbound: provable token-level generalization bounds for LLM checkpoint families.

    The store is Postgres: $GENBOUND_DATABASE_URL (postgresql://...) or, when unset,
    an embedded server under $GENBOUND_DATA_DIR (default ~/.local/share/genbound).
    """
    from genbound_assets.runtime import tune_allocator

    tune_allocator()


@main.command("setup-db")
@store_errors
def setup_db() -> None:
    """Start/attach the store, create the schema (idempotent), the views and the read-only role."""
    engine = storage.get_engine()
    added = storage.create_schema(engine)  # additive migrations, if this code is newer
    views = storage.create_views_report(engine)
    reader = storage.setup_reader(engine)
    counts = storage.table_counts(engine)
    click.echo(f"store: {storage.describe_url(engine.url.render_as_string(hide_password=False))}")
    if added:
        click.echo(f"added: {', '.join(added)}")
    _print_counts(counts)
    click.echo(f"views: {', '.join(views.created) if views.created else '(none)'}")
    pw_from = (f"${storage.READER_PASSWORD_ENV}" if os.environ.get(storage.READER_PASSWORD_ENV, "").strip()
               else str(storage.reader.reader_password_file()))
    click.echo(f"read-only role: {reader.role} ({'created' if reader.created else 'updated'}; "
               f"password from {pw_from}; `genbound sql --url` prints its URL)")
    for w in reader.warnings:
        click.echo(f"genbound: warning: {w}", err=True)
    for msg in views.failed.values():
        click.echo(f"genbound: error: view not created: {msg}", err=True)
    if views.failed:
        sys.exit(1)


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


def _json_value(v):
    import datetime as dt
    import decimal
    import uuid

    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, decimal.Decimal):
        return _json_value(float(v)) if not v.is_finite() or v != v.to_integral_value() else int(v)
    if isinstance(v, dt.datetime | dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return v.total_seconds()
    if isinstance(v, uuid.UUID | memoryview | bytes):
        return bytes(v).hex() if not isinstance(v, uuid.UUID) else str(v)
    if isinstance(v, list | tuple):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    return v


@main.command("sql")
@click.argument("query", required=False)
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV instead of an aligned table.")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON array of objects (one per row; NaN/Infinity as strings).")
@click.option("--url", "print_url", is_flag=True,
              help="Print the read-only role's connection URL (for psql, pandas, BI tools) and exit.")
@store_errors
def sql(query: str | None, as_csv: bool, as_json: bool, print_url: bool) -> None:
    """Run QUERY as the read-only role genbound_reader and print the result.

    Writes (INSERT, UPDATE, DELETE, CREATE, DROP, TRUNCATE, ...) are refused by PostgreSQL:
    the role may only read.  Use psql or Python with the store's own URL to change data.
    """
    from sqlalchemy.exc import DBAPIError

    if as_csv and as_json:
        _fail("--csv and --json are exclusive")
    if print_url:
        engine = storage.reader_engine()
        click.echo("postgresql://" + engine.url.render_as_string(hide_password=False).split("://", 1)[1])
        return
    if not query:
        _fail("give a QUERY (or --url)")
    engine = storage.reader_engine()
    try:
        with engine.begin() as conn:
            # sent verbatim: no ':name' or '%' processing by SQLAlchemy or psycopg2
            cursor = storage.views.execute_verbatim(conn, query)
            try:
                if cursor.description is not None:
                    columns = [d.name for d in cursor.description]
                    rows = [tuple(r) for r in cursor.fetchall()]
                else:
                    columns, rows = None, cursor.rowcount
            finally:
                cursor.close()
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
    elif as_json:
        import json

        records = [dict(zip(columns, (_json_value(v) for v in r), strict=True)) for r in rows]
        # one object per line: valid JSON that also reads (and greps) line by line
        lines = [json.dumps(r, ensure_ascii=False) for r in records]
        click.echo("[\n" + ",\n".join(lines) + "\n]" if lines else "[]")
    else:
        _print_table(columns, rows)


@main.command("report")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file to write (default: <data dir>/report.html).")
@store_errors
def report(output: Path | None) -> None:
    """Write the HTML report (figures inline, no external resources) and print its path."""
    from genbound_assets.report import write_report

    engine = storage.get_engine()
    storage.create_views(engine)  # the sections read the views
    path = write_report(engine, output)
    click.echo(str(path))


@main.command("demo")
@click.option("--corpus", type=click.Choice(["brown", "synthetic"]), default="brown",
              show_default=True, help="Corpus to train the suite on when it is missing.")
@click.option("--quick", is_flag=True, help="Two smallest sizes only (a smoke test).")
@click.pass_context
@store_errors
def demo(ctx: click.Context, corpus: str, quick: bool) -> None:
    """Train the local suite if missing, then materialize the whole asset graph.

    The same Dagster definitions as `genbound ui`, the sensor and the schedule, on a persistent
    instance under the data dir: every checkpoint's inventory and loss-curve point, the
    quantization, token losses and certificates of the selected checkpoints, the model-level
    assets, the SQL views.  Settings: GENBOUND_PROFILE and GENBOUND_<SETTING> (docs/dagster.md).
    """
    import time

    from genbound_assets.families.registry import families_file, load_families
    from genbound_assets.pipeline.settings import CertifySettings

    try:  # refuse bad settings or a bad registry before training or writing anything
        CertifySettings.from_env()
        for spec in load_families():
            try:
                CertifySettings.from_env(spec.profile)
            except ValueError as e:
                raise ValueError(f"family {spec.name} in {families_file()}: {e}") from None
    except ValueError as e:
        _fail(" ".join(str(e).split()))
    t0 = time.perf_counter()
    engine = storage.get_engine()
    click.echo(f"demo: store at {storage.describe_url(engine.url.render_as_string(False))}")
    storage.create_schema(engine)
    storage.create_views(engine)

    from genbound_assets.cli_suite import train as suite_train
    from genbound_assets.demo import demo_instance, print_summary, run_demo, suite_ready
    from genbound_assets.families.registry import families_file
    from genbound_assets.families.suite import DEMO_SIZES, QUICK_SIZES, default_data_dir

    root = default_data_dir() / "suite"
    sizes = list(QUICK_SIZES if quick else DEMO_SIZES)
    if suite_ready(root, sizes):
        click.echo(f"demo: suite at {root} is complete for {', '.join(sizes)}; not retraining")
    else:
        click.echo(f"demo: training the suite ({', '.join(sizes)}) into {root}")
        missing = [s for s in sizes if not (root / s).is_dir()]
        ctx.invoke(suite_train, root=root, corpus=corpus, sizes=",".join(missing) if missing
                   and len(missing) < len(sizes) else None, quick=quick and len(missing) == len(sizes))
    if families_file().exists():
        click.echo(f"demo: families from {families_file()}")
    instance = demo_instance(storage.data_dir() / "dagster_home")
    click.echo(f"demo: Dagster instance at {instance.root_directory}")
    summary = run_demo(engine, instance, echo=click.echo)
    print_summary(summary, echo=click.echo)
    click.echo(f"demo: done in {time.perf_counter() - t0:.0f} s.  Next:")
    click.echo("  genbound ui       the asset graph, every materialization with its plots")
    click.echo("  genbound report   one HTML file with every figure")
    click.echo("  genbound sql \"select * from bound_breakdown\"")


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
    click.echo(f"genbound ui: `dagster dev` on {workspace.name}; equivalent to `dg dev -h {host} -p "
               f"{port}` run in {workspace.parent} with GENBOUND_DATABASE_URL and DAGSTER_HOME "
               "exported (the [tool.dg] project in pyproject.toml is the same code location)", err=True)
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
main.add_command(__import__("genbound_assets.cli_family", fromlist=["family"]).family)


main.add_command(__import__("genbound_assets.cli_validate", fromlist=["validate"]).validate)

if __name__ == "__main__":
    main()
