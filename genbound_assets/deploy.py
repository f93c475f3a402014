"""Names the service deployment and the asset graph share: the GPU pool, the GPU run tag, the
Kubernetes pod settings of GPU steps, and the executor (docs/deploy.md).

The limits themselves live in the instance config: docker/dagster.yaml (compose) and
docker/k8s/values.yaml (Helm) cap the pool ``gpu`` at one step and runs tagged
``genbound/resource=gpu`` at one run.  A GPU-heavy asset (GPTQ, Hessian/SLQ, forward passes of
1B-12B checkpoints) declares::

    @dg.asset(pool=GPU_POOL, op_tags=gpu_op_tags())

and a job or schedule made only of such assets adds ``tags=GPU_RUN_TAGS``.  Under the
``k8s_job_executor`` (``GENBOUND_EXECUTOR=k8s``, see :func:`executor_from_env`) every step is its
own pod and the ``dagster-k8s/config`` op tag gives GPU steps a GPU; elsewhere that tag is inert.

Wired into the asset graph (genbound_assets/defs/): ``checkpoint_loss``, ``quantized_model``,
``token_losses`` and ``hessian_spectrum`` declare the pool and the op tags; defs/executor.py sets
the executor.  dagster-k8s is imported only when that executor is asked for.
"""

from __future__ import annotations

import os
from typing import Any

GPU_POOL = "gpu"
RESOURCE_TAG = "genbound/resource"
GPU_RUN_TAGS: dict[str, str] = {RESOURCE_TAG: "gpu"}
K8S_CONFIG_TAG = "dagster-k8s/config"
EXECUTOR_ENV = "GENBOUND_EXECUTOR"
GPU_RESOURCE = "nvidia.com/gpu"


def gpu_k8s_config(
    gpus: int = 1,
    *,
    cpu: str = "4",
    memory: str = "48Gi",
    node_selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The ``dagster-k8s/config`` value for one GPU step: ``gpus`` NVIDIA GPUs as a limit (Kubernetes
    sets the request of an extended resource equal to its limit), CPU and memory requests, a memory
    limit, and a toleration for the usual ``nvidia.com/gpu`` taint of GPU node pools.

    Validated against dagster-k8s's own schema and rendered into a Job manifest by
    genbound_assets_tests/test_k8s_config.py.
    """
    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 1:
        raise ValueError(f"gpu_k8s_config: gpus must be a positive integer, got {gpus!r}")
    pod_spec: dict[str, Any] = {
        "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
    }
    if node_selector:
        pod_spec["node_selector"] = dict(node_selector)
    return {
        "container_config": {
            "resources": {
                "requests": {"cpu": cpu, "memory": memory},
                "limits": {"memory": memory, GPU_RESOURCE: str(gpus)},
            }
        },
        "pod_spec_config": pod_spec,
    }


def gpu_op_tags(gpus: int = 1, **k8s: Any) -> dict[str, Any]:
    """Op tags of a GPU-heavy asset: the resource tag and its Kubernetes pod settings."""
    return {RESOURCE_TAG: "gpu", K8S_CONFIG_TAG: gpu_k8s_config(gpus, **k8s)}


def executor_from_env():
    """The executor ``GENBOUND_EXECUTOR`` names for the code location, or None for Dagster's default.

    Read by genbound_assets/defs/executor.py when the code location loads.

    * unset, empty or ``default``: None, Dagster's multiprocess executor (each step a new
      process), which is what docker compose and ``genbound ui`` run by default;
    * ``in_process``: ``dagster.in_process_executor``: every step in the run's own process, which
      saves one Python + torch import per step (20-30 s on a loaded 2-core machine, a few seconds
      on a server) at the price of no parallel steps within a run; pools still apply;
    * ``k8s``: ``dagster_k8s.k8s_job_executor`` (each step a Kubernetes Job; used with the Helm
      chart's K8sRunLauncher).

    Anything else raises a one-line ValueError.
    """
    kind = os.environ.get(EXECUTOR_ENV, "").strip().lower()
    if kind in ("", "default"):
        return None
    if kind == "in_process":
        import dagster as dg

        return dg.in_process_executor
    if kind == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    raise ValueError(f"{EXECUTOR_ENV}={kind!r} is not an executor: use 'k8s', 'in_process' or "
                     "leave it unset")
