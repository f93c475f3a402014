"""The code location's executor: ``GENBOUND_EXECUTOR`` (genbound_assets/deploy.py, docs/deploy.md).

Unset: none here, so Dagster's default (multiprocess for launched runs; ``dg.materialize`` and
the demo run in process either way).  ``in_process``: every step in the run's process.  ``k8s``:
``k8s_job_executor``, one Kubernetes Job per step, where the GPU-heavy assets'
``dagster-k8s/config`` op tag asks for a GPU.  Dagster merges the
definitions of every module of this folder and allows one executor among them: this one.
"""

import dagster as dg

from genbound_assets import deploy


@dg.definitions
def executor() -> dg.Definitions:
    return dg.Definitions(executor=deploy.executor_from_env())
