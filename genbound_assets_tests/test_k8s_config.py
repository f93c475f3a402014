"""Kubernetes configuration (docker/k8s/), checked against dagster-k8s's and Dagster's own config
schemas and rendered into the Job manifests dagster-k8s would submit; no cluster.

* values.yaml: the instance parts (Postgres storage, K8sRunLauncher, queued runs, concurrency) are
  rendered from the Helm values the way the chart's templates render them (``render_instance``,
  which refuses keys it does not know), then validated by Dagster's instance schema and
  ``K8sRunLauncher.config_type()``; the launcher is constructed (with a kubeconfig file written
  here instead of in-cluster config) and builds a run pod.
* run-config-pythia.yaml: validated as run config of an asset job whose executor is
  ``k8s_job_executor``; a step pod is built from it the way ``K8sStepHandler`` builds one.
* deploy.gpu_op_tags: the ``dagster-k8s/config`` op tag, parsed by dagster-k8s, gives GPU steps an
  ``nvidia.com/gpu`` limit and a toleration; CPU steps get neither.

The chart's values.schema.json is not validated here: the chart is not published on PyPI or npm
(docs/deploy.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster._core.storage.dagster_run import DagsterRun
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    UserDefinedDagsterK8sConfig,
    construct_dagster_k8s_job,
    get_user_defined_k8s_config,
)
from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict
from kubernetes.client import V1PersistentVolumeClaim, V1Volume, V1VolumeMount

from genbound_assets import deploy

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "docker" / "k8s"
RELEASE, NAMESPACE = "genbound", "genbound"
IMAGE = "registry.example.org/genbound:0.1.0"


def load(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


# Keys of the chart's value sections this renderer maps (chart 1.13.x values.schema.json); any
# other key in those sections fails the test instead of being silently dropped.
K8S_RUN_LAUNCHER_KEYS = {
    "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile",
    "envConfigMaps", "envSecrets", "envVars", "volumeMounts", "volumes", "labels",
    "failPodOnRunFailure", "resources", "schedulerName", "securityContext", "runK8sConfig",
}
RUN_K8S_CONFIG_KEYS = {"containerConfig": "container_config", "podSpecConfig": "pod_spec_config",
                       "podTemplateSpecMetadata": "pod_template_spec_metadata",
                       "jobSpecConfig": "job_spec_config", "jobMetadata": "job_metadata"}
POSTGRESQL_KEYS = {"enabled", "image", "postgresqlHost", "postgresqlUsername", "postgresqlPassword",
                   "postgresqlDatabase", "postgresqlParams", "postgresqlScheme", "service"}
QUEUED_KEYS = {"maxConcurrentRuns": "max_concurrent_runs", "tagConcurrencyLimits": "tag_concurrency_limits",
               "dequeueIntervalSeconds": "dequeue_interval_seconds"}


def _strict(section: dict, known, where: str) -> None:
    unknown = set(section) - set(known)
    assert not unknown, f"{where}: keys the chart does not know: {sorted(unknown)}"


def render_instance(values: dict) -> dict:
    """The dagster.yaml parts the chart renders from ``values`` (templates/helpers/instance/
    _postgresql.tpl, _run-launcher.tpl, _run-coordinator.tpl, _concurrency.tpl), for release
    RELEASE in namespace NAMESPACE."""
    pg = values["postgresql"]
    _strict(pg, POSTGRESQL_KEYS, "postgresql")
    pg_config = {"postgres_db": {
        "username": pg["postgresqlUsername"], "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"], "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"], "params": pg.get("postgresqlParams") or {},
        **({"scheme": pg["postgresqlScheme"]} if pg.get("postgresqlScheme") else {}),
    }}
    instance: dict[str, Any] = {
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage", "config": pg_config},
        "event_log_storage": {"module": "dagster_postgres.event_log", "class": "PostgresEventLogStorage",
                              "config": pg_config},
        "schedule_storage": {"module": "dagster_postgres.schedule_storage", "class": "PostgresScheduleStorage",
                             "config": pg_config},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }

    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    k8s = launcher["config"]["k8sRunLauncher"]
    _strict(k8s, K8S_RUN_LAUNCHER_KEYS, "runLauncher.config.k8sRunLauncher")
    config: dict[str, Any] = {
        "load_incluster_config": k8s["loadInclusterConfig"],
        "job_namespace": k8s.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": k8s["imagePullPolicy"],
        "service_account_name": f"{RELEASE}-dagster",
        "dagster_home": "/opt/dagster/dagster_home",
        "instance_config_map": f"{RELEASE}-dagster-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
    }
    if k8s.get("kubeconfigFile"):
        config["kubeconfig_file"] = k8s["kubeconfigFile"]
    if k8s.get("envConfigMaps"):
        config["env_config_maps"] = [c["name"] for c in k8s["envConfigMaps"] if "name" in c]
    if k8s.get("envSecrets"):
        config["env_secrets"] = [s["name"] for s in k8s["envSecrets"] if "name" in s]
    for src, dst in (("envVars", "env_vars"), ("volumeMounts", "volume_mounts"), ("volumes", "volumes"),
                     ("labels", "labels"), ("resources", "resources"),
                     ("securityContext", "security_context"), ("schedulerName", "scheduler_name")):
        if k8s.get(src):
            config[dst] = k8s[src]
    if k8s.get("failPodOnRunFailure"):
        config["fail_pod_on_run_failure"] = True
    if k8s.get("runK8sConfig"):
        _strict(k8s["runK8sConfig"], RUN_K8S_CONFIG_KEYS, "runK8sConfig")
        config["run_k8s_config"] = {RUN_K8S_CONFIG_KEYS[k]: v for k, v in k8s["runK8sConfig"].items() if v}
    instance["run_launcher"] = {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}

    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    queued = coordinator["config"]["queuedRunCoordinator"] or {}
    _strict(queued, QUEUED_KEYS, "queuedRunCoordinator")
    instance["run_coordinator"] = {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator",
                                   **({"config": {QUEUED_KEYS[k]: v for k, v in queued.items()}} if queued else {})}

    conc = values.get("concurrency") or {}
    if conc.get("enabled"):
        _strict(conc, {"enabled", "pools", "runs"}, "concurrency")
        pools, runs = conc.get("pools") or {}, conc.get("runs") or {}
        _strict(pools, {"defaultLimit", "granularity", "opGranularityRunBuffer"}, "concurrency.pools")
        _strict(runs, {"maxConcurrentRuns", "tagConcurrencyLimits"}, "concurrency.runs")
        rendered: dict[str, Any] = {}
        if pools:
            rendered["pools"] = {{"defaultLimit": "default_limit", "granularity": "granularity",
                                  "opGranularityRunBuffer": "op_granularity_run_buffer"}[k]: v
                                 for k, v in pools.items()}
        if runs:
            rendered["runs"] = {{"maxConcurrentRuns": "max_concurrent_runs",
                                 "tagConcurrencyLimits": "tag_concurrency_limits"}[k]: v for k, v in runs.items()}
        instance["concurrency"] = rendered
    return instance


def _kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig naming a cluster that is never contacted (constructing clients does not connect)."""
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "test", "user": {"token": "unused"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
    }))
    return path


def run_launcher_from_values(tmp_path: Path) -> K8sRunLauncher:
    config = render_instance(load("values.yaml"))["run_launcher"]["config"]
    result = process_config(K8sRunLauncher.config_type(), config)
    assert result.success, result.errors
    processed = dict(result.value)
    processed.update(load_incluster_config=False, kubeconfig_file=str(_kubeconfig(tmp_path)))
    return K8sRunLauncher(**processed)


def _container(job) -> Any:
    (container,) = job.spec.template.spec.containers
    return container


def _env(container) -> dict[str, str]:
    return {e.name: e.value for e in container.env or []}


# --------------------------------------------------------------------------------------------


def test_helm_values_render_a_valid_dagster_instance(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "from-the-secret")  # the chart sets it from the Secret
    instance = render_instance(load("values.yaml"))
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance))
    config, _ = dagster_instance_config(str(tmp_path))  # Dagster's schema + concurrency rules
    assert config["concurrency"]["pools"] == {"default_limit": 2, "granularity": "op"}
    assert config["concurrency"]["runs"]["tag_concurrency_limits"] == [
        {"key": deploy.RESOURCE_TAG, "value": "gpu", "limit": 2}]
    assert "config" not in config["run_coordinator"]  # limits only under `concurrency`
    from dagster_postgres import PostgresRunStorage

    storage = process_config(PostgresRunStorage.config_type(), instance["run_storage"]["config"])
    assert storage.success, storage.errors
    assert instance["run_storage"]["config"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    # the same limits as the compose instance, where they mean the same thing
    compose = yaml.safe_load((REPO / "docker" / "dagster.yaml").read_text())
    assert compose["concurrency"]["runs"]["tag_concurrency_limits"][0]["key"] == deploy.RESOURCE_TAG


def test_render_instance_refuses_unknown_or_conflicting_values(tmp_path):
    values = load("values.yaml")
    values["runLauncher"]["config"]["k8sRunLauncher"]["envSecret"] = [{"name": "typo"}]
    with pytest.raises(AssertionError, match="envSecret"):
        render_instance(values)
    # the same limit in the coordinator and under `concurrency` is refused by Dagster itself
    values = load("values.yaml")
    values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"] = {"maxConcurrentRuns": 3}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(render_instance(values)))
    with pytest.raises(DagsterInvalidConfigError, match="max_concurrent_runs"):
        dagster_instance_config(str(tmp_path))
    # and a wrongly typed launcher field fails dagster-k8s's schema
    config = render_instance(load("values.yaml"))["run_launcher"]["config"]
    assert not process_config(K8sRunLauncher.config_type(), {**config, "env_secrets": "genbound-store"}).success


def test_run_launcher_builds_the_run_pod(tmp_path):
    launcher = run_launcher_from_values(tmp_path)
    run = DagsterRun(job_name="__ASSET_JOB", run_id="0123abcd-0000-0000-0000-000000000000",
                     tags=dict(deploy.GPU_RUN_TAGS))
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=True)
    job = construct_dagster_k8s_job(context.get_k8s_job_config(IMAGE, launcher), args=["dagster", "api", "execute_run"],
                                    job_name="dagster-run-0123abcd", component="run_worker",
                                    user_defined_k8s_config=context.run_k8s_config)
    container = _container(job)
    assert container.image == IMAGE and container.image_pull_policy == "IfNotPresent"
    assert _env(container)["GENBOUND_PROFILE"] == "pythia"
    assert "genbound-store" in [e.secret_ref.name for e in container.env_from if e.secret_ref]
    assert container.resources.requests == {"cpu": "500m", "memory": "2Gi"}
    assert job.spec.ttl_seconds_after_finished == 86400
    assert job.spec.template.spec.service_account_name == f"{RELEASE}-dagster"
    assert context.namespace == NAMESPACE


def test_user_deployment_serves_the_code_location():
    from dagster._cli.code_server import start_command

    (dep,) = load("values.yaml")["dagster-user-deployments"]["deployments"]
    assert dep["codeServerArgs"] == ["-m", "genbound_assets.definitions"]
    ctx = start_command.make_context("start", ["-h", "0.0.0.0", "-p", str(dep["port"]), *dep["codeServerArgs"]])
    assert ctx.params["module_name"] == "genbound_assets.definitions" and ctx.params["port"] == dep["port"]
    env = {e["name"]: e["value"] for e in dep["env"]}
    assert env["GENBOUND_PROFILE"] == "pythia" and env[deploy.EXECUTOR_ENV] == "k8s"
    assert [s["name"] for s in dep["envSecrets"]] == ["genbound-store"]
    assert dep["includeConfigInLaunchedRuns"]["enabled"] is True
    # volumes and mounts are valid Kubernetes objects, and every mount has a volume
    volumes = [k8s_model_from_dict(V1Volume, k8s_snake_case_dict(V1Volume, v)) for v in dep["volumes"]]
    mounts = [k8s_model_from_dict(V1VolumeMount, k8s_snake_case_dict(V1VolumeMount, m)) for m in dep["volumeMounts"]]
    assert {m.name for m in mounts} <= {v.name for v in volumes}
    assert {m.mount_path for m in mounts} == {env["GENBOUND_DATA_DIR"], env["GENBOUND_CACHE_DIR"], env["HF_HOME"]}
    claims = {v.persistent_volume_claim.claim_name for v in volumes}
    pvcs = [k8s_model_from_dict(V1PersistentVolumeClaim, k8s_snake_case_dict(V1PersistentVolumeClaim, d))
            for d in yaml.safe_load_all((K8S / "storage.yaml").read_text())]
    assert claims == {p.metadata.name for p in pvcs}
    assert all(p.spec.access_modes == ["ReadWriteMany"] for p in pvcs)


# --------------------------------------------------------------------------------------------
# Steps: the k8s_job_executor, the Pythia run config and the GPU op tag


@dg.asset(pool=deploy.GPU_POOL, op_tags=deploy.gpu_op_tags())
def gpu_heavy() -> None:
    """Stands in for a GPTQ / Hessian asset."""


@dg.asset
def cpu_light() -> None:
    """Stands in for a bound computed from stored numbers."""


def _asset_job():
    defs = dg.Definitions(assets=[gpu_heavy, cpu_light], executor=k8s_job_executor)
    return defs.resolve_implicit_global_asset_job_def()


def step_pod(run_config: dict, step_tags: dict[str, str], tmp_path: Path):
    """The Job ``K8sStepHandler`` would create for a step with ``step_tags`` (same merge order)."""
    launcher = run_launcher_from_values(tmp_path)
    exc = process_config(k8s_job_executor.config_schema.config_type, run_config["execution"]["config"])
    assert exc.success, exc.errors
    exc_cfg = exc.value
    executor_context = K8sContainerContext(
        env_vars=exc_cfg.get("env_vars"), resources=exc_cfg.get("resources"),
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(exc_cfg.get("step_k8s_config", {})),
    )
    run = DagsterRun(job_name="__ASSET_JOB", run_id="4567cdef-0000-0000-0000-000000000000")
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
    context = context.merge(executor_context).merge(
        K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step_tags)))
    return construct_dagster_k8s_job(context.get_k8s_job_config(IMAGE, launcher),
                                     args=["dagster", "api", "execute_step"], job_name="dagster-step-x",
                                     component="step_worker", user_defined_k8s_config=context.run_k8s_config)


def test_pythia_run_config_is_valid_for_the_k8s_executor():
    run_config = load("run-config-pythia.yaml")
    assert dg.validate_run_config(_asset_job(), run_config)
    assert "GENBOUND_PROFILE=pythia" in run_config["execution"]["config"]["env_vars"]
    bad = json.loads(json.dumps(run_config))
    bad["execution"]["config"]["max_concurent"] = 8
    with pytest.raises(DagsterInvalidConfigError, match="max_concurent"):
        dg.validate_run_config(_asset_job(), bad)


def test_gpu_steps_get_a_gpu_and_cpu_steps_do_not(tmp_path):
    job = _asset_job()
    tags = {node.name: dict(node.definition.tags) for node in job.graph.node_dict.values()}
    assert tags["gpu_heavy"][deploy.RESOURCE_TAG] == "gpu"
    assert json.loads(tags["gpu_heavy"][deploy.K8S_CONFIG_TAG]) == deploy.gpu_k8s_config()
    assert gpu_heavy.op.pool == deploy.GPU_POOL

    run_config = load("run-config-pythia.yaml")
    gpu = _container(step_pod(run_config, tags["gpu_heavy"], tmp_path))
    assert gpu.resources.limits[deploy.GPU_RESOURCE] == "1"
    assert gpu.resources.requests == {"cpu": "4", "memory": "48Gi"}  # the op tag overrides the run config
    gpu_spec = step_pod(run_config, tags["gpu_heavy"], tmp_path).spec.template.spec
    assert any(t.key == deploy.GPU_RESOURCE and t.operator == "Exists" for t in gpu_spec.tolerations)
    assert _env(gpu)["GENBOUND_PROFILE"] == "pythia"

    cpu_job = step_pod(run_config, tags["cpu_light"], tmp_path)
    cpu = _container(cpu_job)
    assert deploy.GPU_RESOURCE not in (cpu.resources.limits or {})
    assert cpu.resources.requests == {"cpu": "1", "memory": "8Gi"}
    assert not cpu_job.spec.template.spec.tolerations
    assert _env(cpu)["GENBOUND_PROFILE"] == "pythia"


def test_gpu_tag_is_checked_by_dagster_k8s():
    value = deploy.gpu_k8s_config(2, node_selector={"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"})
    parsed = get_user_defined_k8s_config({deploy.K8S_CONFIG_TAG: json.dumps(value)})
    assert parsed.container_config["resources"]["limits"][deploy.GPU_RESOURCE] == "2"
    assert parsed.pod_spec_config["node_selector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    typo = {"container_confg": value["container_config"]}
    with pytest.raises(DagsterInvalidConfigError):
        get_user_defined_k8s_config({deploy.K8S_CONFIG_TAG: json.dumps(typo)})
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="gpus must be a positive integer"):
            deploy.gpu_k8s_config(bad)


def test_executor_from_env(monkeypatch):
    monkeypatch.delenv(deploy.EXECUTOR_ENV, raising=False)
    assert deploy.executor_from_env() is None
    monkeypatch.setenv(deploy.EXECUTOR_ENV, "default")
    assert deploy.executor_from_env() is None
    monkeypatch.setenv(deploy.EXECUTOR_ENV, " K8s ")
    assert deploy.executor_from_env() is k8s_job_executor
    monkeypatch.setenv(deploy.EXECUTOR_ENV, "in_process")
    assert deploy.executor_from_env() is dg.in_process_executor
    monkeypatch.setenv(deploy.EXECUTOR_ENV, "celery")
    with pytest.raises(ValueError, match="GENBOUND_EXECUTOR='celery' is not an executor"):
        deploy.executor_from_env()


# --------------------------------------------------------------------------------------------
# The real asset graph (genbound_assets/defs/) wired to the same machinery

GPU_ASSETS = {"checkpoint_loss", "quantized_model", "token_losses", "hessian_spectrum"}


def _real_defs(monkeypatch, tmp_path: Path, executor: str | None = None):
    """The code location's definitions with the micro family registered (nothing trained: the
    definitions read only the registry)."""
    from genbound_assets.definitions import build_defs
    from genbound_assets_tests.micro import micro_env

    micro_env(monkeypatch, tmp_path / "suite", tmp_path)
    if executor is None:
        monkeypatch.delenv(deploy.EXECUTOR_ENV, raising=False)
    else:
        monkeypatch.setenv(deploy.EXECUTOR_ENV, executor)
    return build_defs()


def test_real_gpu_assets_declare_the_pool_and_the_gpu_pod(monkeypatch, tmp_path):
    from genbound_assets_tests.micro import FAMILY

    defs = _real_defs(monkeypatch, tmp_path)
    repo = defs.get_repository_def()
    family = {k.path[-1]: a for k, a in repo.assets_defs_by_key.items()
              if k.path[0] == FAMILY and a.is_executable}
    assert GPU_ASSETS < set(family), sorted(family)
    for name, a in family.items():
        tags = dict(a.op.tags)
        if name in GPU_ASSETS:
            assert a.op.pool == deploy.GPU_POOL, name
            assert tags[deploy.RESOURCE_TAG] == "gpu", name
            assert json.loads(tags[deploy.K8S_CONFIG_TAG]) == deploy.gpu_k8s_config(), name
        else:  # inventory, certificates from stored numbers, fits: CPU steps, no slot, no GPU
            assert a.op.pool is None and deploy.RESOURCE_TAG not in tags, name
    # the family's checkpoint job mixes CPU and GPU steps: the pool limits its GPU steps; it
    # carries no run-level GPU tag (that would also serialize every inventory-only run)
    job = defs.resolve_job_def(f"{FAMILY}_checkpoints")
    assert deploy.RESOURCE_TAG not in (job.tags or {})

    # the pod the k8s executor would start for the real quantization step has the GPU
    run_config = load("run-config-pythia.yaml")
    qtags = dict(family["quantized_model"].op.tags)
    container = _container(step_pod(run_config, qtags, tmp_path))
    assert container.resources.limits[deploy.GPU_RESOURCE] == "1"
    ctags = dict(family["checkpoint"].op.tags)
    assert deploy.GPU_RESOURCE not in (_container(step_pod(run_config, ctags, tmp_path)).resources.limits or {})


def test_real_definitions_take_the_executor_from_the_environment(monkeypatch, tmp_path):
    from genbound_assets_tests.micro import FAMILY

    default = _real_defs(monkeypatch, tmp_path)
    assert default.executor is None
    jobs = default.get_repository_def().get_all_jobs()
    assert jobs and {j.executor_def.name for j in jobs} == {"multi_or_in_process_executor"}

    k8s = _real_defs(monkeypatch, tmp_path, "k8s")
    jobs = k8s.get_repository_def().get_all_jobs()
    assert {j.name for j in jobs} >= {"__ASSET_JOB", f"{FAMILY}_checkpoints"}
    assert all(j.executor_def is k8s_job_executor for j in jobs)
    # the Pythia run config is valid for the real checkpoint job under that executor
    job = k8s.resolve_job_def(f"{FAMILY}_checkpoints")
    assert dg.validate_run_config(job, load("run-config-pythia.yaml"))

    # a wrong value stops the code location from loading, with the one-line reason (Dagster wraps
    # it in the error that names the defs module, defs/executor.py)
    with pytest.raises(Exception) as err:
        _real_defs(monkeypatch, tmp_path, "celery")
    chain, e = [], err.value
    while e is not None:
        chain.append(e)
        e = e.__cause__ or e.__context__
    assert any(isinstance(x, ValueError) and str(x).startswith("GENBOUND_EXECUTOR='celery' is not an "
               "executor: use 'k8s'") for x in chain), chain
    assert "executor.py" in str(err.value)
