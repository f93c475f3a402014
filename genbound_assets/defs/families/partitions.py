"""Partitions and asset keys of one checkpoint family (docs/dagster.md, "Partitions").

Every registered family (families/registry.py) gets its own two dynamic dimensions,
``<family>__model`` and ``<family>__step``.  A family is a set of models saved on one step grid
(Pythia's rule; the local suite trains every size on the same schedule), so its model × step
cross product holds only real checkpoints: nothing phantom to request, count or show as missing.
Checkpoint-level assets are partitioned ``model × step``, model-level assets by ``model`` (the
same dynamic definition as the multi-partition's model dimension, so
``MultiToSingleDimensionPartitionMapping`` maps one to the other).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import dagster as dg

from genbound_assets.families.registry import FamilySpec, load_families

__all__ = ["FamilyParts", "family_parts", "all_family_parts", "split_key", "check_model_key",
           "step_key", "CHECKPOINT_ASSETS", "BOUND_ASSETS", "MODEL_ASSETS"]

# asset names (keys are [family, name])
CHECKPOINT_ASSETS = ("checkpoint", "checkpoint_loss")
BOUND_ASSETS = ("quantized_model", "token_losses", "checkpoint_bounds")
MODEL_ASSETS = ("loss_curve", "compute_optimal", "prequential_complexity", "hessian_spectrum",
                "model_bounds")

# a model key must survive Dagster's multi-partition key ("a|b") and UI backfills (no commas)
_MODEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_model_key(name: str) -> str:
    if not isinstance(name, str) or not _MODEL_KEY.match(name):
        raise ValueError(f"model name {name!r} cannot be a Dagster partition key: use letters, "
                         "digits, '.', '_' and '-' (no '|', ',' or spaces), at most 128 characters")
    return name


def step_key(step: int) -> str:
    if isinstance(step, bool) or int(step) != step or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    return str(int(step))


@dataclass(frozen=True)
class FamilyParts:
    spec: FamilySpec
    model: dg.DynamicPartitionsDefinition
    step: dg.DynamicPartitionsDefinition
    checkpoint: dg.MultiPartitionsDefinition

    @property
    def name(self) -> str:
        return self.spec.name

    def key(self, asset: str) -> dg.AssetKey:
        return dg.AssetKey([self.name, asset])

    def partition_key(self, model: str, step: int) -> dg.MultiPartitionKey:
        return dg.MultiPartitionKey({"model": model, "step": step_key(step)})

    @property
    def model_mapping(self) -> dg.MultiToSingleDimensionPartitionMapping:
        return dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="model")


@cache
def _parts(spec: FamilySpec) -> FamilyParts:
    model = dg.DynamicPartitionsDefinition(name=f"{spec.name}__model")
    step = dg.DynamicPartitionsDefinition(name=f"{spec.name}__step")
    return FamilyParts(spec, model, step, dg.MultiPartitionsDefinition({"model": model, "step": step}))


def family_parts(spec: FamilySpec) -> FamilyParts:
    return _parts(spec)


def all_family_parts() -> list[FamilyParts]:
    """The registered families (read when the code location loads)."""
    return [_parts(s) for s in load_families()]


def split_key(key) -> tuple[str, int]:
    """(model, step) of a checkpoint partition key (MultiPartitionKey or its 'model|step' text)."""
    if isinstance(key, dg.MultiPartitionKey):
        d = key.keys_by_dimension
        return d["model"], int(d["step"])
    model, _, step = str(key).partition("|")
    return model, int(step)
