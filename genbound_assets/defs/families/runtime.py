"""What every genbound asset body needs: its partitions grouped by model, the run's log as a
plain ``log(str)`` callable for the core, the family's bound-sample name, a model's size row and
the result of a "no problems" check.  (Figures: defs/sql/figures.py, the report's own.)"""

from __future__ import annotations

import dagster as dg

from genbound_assets.storage import read_frame

from .partitions import split_key

__all__ = ["partitions_by_model", "DagsterLog", "sample_name", "model_size", "problems_check"]


def sample_name(family: str) -> str:
    """The name of the family's bound sample (token_samples, token_loss_sets, bounds)."""
    return f"{family}:bound"


def model_size(engine, model: str) -> tuple[int, int]:
    """(n_params, vocab_size) of ``model`` from its models row; a Failure naming the asset to
    materialize when the row (or a value of it) is missing."""
    df = read_frame(engine, "SELECT n_params, vocab_size FROM models WHERE model = :m", {"m": model})
    if df.height != 1 or df["n_params"][0] is None or df["vocab_size"][0] is None:
        raise dg.Failure(f"{model}: no models row (materialize checkpoint first)")
    return int(df["n_params"][0]), int(df["vocab_size"][0])


def problems_check(check_name: str, problems: list) -> dg.AssetCheckResult:
    """A blocking check's result: passed when ``problems`` is empty, which it lists otherwise."""
    return dg.AssetCheckResult(check_name=check_name, passed=not problems,
                               metadata={"problems": dg.MetadataValue.json(problems)})


def partitions_by_model(context: dg.AssetExecutionContext) -> dict[str, list[int]]:
    """The run's checkpoint partitions (one, or a range) as model -> sorted steps."""
    keys = context.partition_keys if context.has_partition_key_range or context.has_partition_key else []
    out: dict[str, list[int]] = {}
    for k in keys:
        model, step = split_key(k)
        out.setdefault(model, []).append(step)
    return {m: sorted(s) for m, s in sorted(out.items())}


class DagsterLog:
    """A ``log(str)`` callable for the core that writes to the run's log."""

    def __init__(self, context: dg.AssetExecutionContext, prefix: str = ""):
        self.context, self.prefix = context, prefix

    def __call__(self, msg: str) -> None:
        self.context.log.info(f"{self.prefix}{msg}")
