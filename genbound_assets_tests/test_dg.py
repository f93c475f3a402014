"""The project as `dg` (dagster-dg-cli) sees it, and `genbound ui`'s pointer to `dg dev`.

pyproject.toml's [tool.dg] makes the repository a dg project (root module genbound_assets,
defs module genbound_assets.defs, code location "genbound"); `dg list defs --json` loads it in
a subprocess the way `dg dev` / `dg check defs` do, with a registry holding the micro family.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from genbound_assets import storage

REPO = Path(__file__).resolve().parents[1]
DG = shutil.which("dg", path=str(Path(sys.executable).parent))
needs_dg = pytest.mark.skipif(
    DG is None, reason="dagster-dg-cli is not installed next to this Python (pyproject.toml pins "
    "dagster-dg-cli==1.13.27; `make setup` installs it)")


def _dg(args: list[str], tmp_path: Path, registry: dict | str) -> subprocess.CompletedProcess:
    reg = tmp_path / "families.json"
    reg.write_text(registry if isinstance(registry, str) else json.dumps(registry))
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = dict(os.environ, GENBOUND_FAMILIES_FILE=str(reg), GENBOUND_DATA_DIR=str(tmp_path / "data"),
               DAGSTER_HOME=str(tmp_path / "home"), PYTHONWARNINGS="ignore", NO_COLOR="1")
    env.pop("GENBOUND_EXECUTOR", None)
    return subprocess.run([DG, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@needs_dg
@pytest.mark.slow
def test_dg_list_defs_loads_the_project(tmp_path):
    from genbound_assets_tests.micro import FAMILY, registry_doc

    out = _dg(["list", "defs", "--json"], tmp_path, registry_doc(tmp_path / "suite"))
    assert out.returncode == 0, out.stderr[-3000:]
    defs = json.loads(out.stdout)
    assets = {a["asset_key"] for a in defs["assets"]}
    family = {f"{FAMILY}/{a}" for a in ("checkpoint", "checkpoint_loss", "quantized_model", "token_losses",
                                         "checkpoint_bounds", "loss_curve", "compute_optimal",
                                         "prequential_complexity", "hessian_spectrum", "model_bounds")}
    assert family | {"store_schema"} <= assets, sorted(assets)
    assert not {a for a in assets if a.startswith("suite/")}, "the default family leaked in"
    names = {kind: {x.get("name") or x.get("key") for x in defs[kind]} for kind in
             ("jobs", "sensors", "schedules", "resources")}
    assert f"{FAMILY}_checkpoints" in names["jobs"], defs["jobs"]
    assert {"new_checkpoints", "genbound_automation"} <= names["sensors"], defs["sensors"]
    assert f"{FAMILY}_checkpoint_backfill" in names["schedules"], defs["schedules"]
    assert {"genbound", "postgres"} <= names["resources"], defs["resources"]


@needs_dg
@pytest.mark.slow
def test_dg_reports_a_broken_registry(tmp_path):
    out = _dg(["list", "defs", "--json"], tmp_path, '{"families": 1}')
    assert out.returncode != 0
    assert "expected {\"families\": [...]}" in out.stdout + out.stderr, (out.stdout + out.stderr)[-3000:]


def test_genbound_ui_names_dg_dev(pg_engine, tmp_path, monkeypatch):
    """`genbound ui` execs `dagster dev` and says which `dg dev` command is the same."""
    from genbound_assets import cli

    class Execd(Exception):
        pass

    def execve(path, argv, env):
        raise Execd(argv)

    monkeypatch.setenv(storage.DATA_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(cli.os, "execve", execve)
    monkeypatch.setattr(cli.os, "chdir", lambda p: None)
    monkeypatch.setattr(cli.signal, "signal", lambda *a: signal.SIG_DFL)  # leave pytest's handlers
    res = CliRunner().invoke(cli.main, ["ui", "--port", "4322"])
    assert isinstance(res.exception, Execd), res.output
    assert res.exception.args[0][1] == "dev"
    assert f"equivalent to `dg dev -h 127.0.0.1 -p 4322` run in {REPO}" in res.output, res.output
