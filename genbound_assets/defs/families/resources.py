"""The ``genbound`` resource: the certificate settings (profile + environment + run config) and
the opened families.  Every setting is documented in docs/dagster.md; none needs a code edit.

Precedence: the profile (``GENBOUND_PROFILE``, default ``demo``), then ``GENBOUND_<FIELD>``
environment variables, then this resource's fields set in run config (the launchpad).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import dagster as dg
from pydantic import Field

from genbound_assets.families.registry import Family, FamilySpec, open_family
from genbound_assets.pipeline.settings import CertifySettings, parse_quant_grid
from genbound_assets.storage import data_dir


class GenboundResource(dg.ConfigurableResource):
    """Certificate settings and family access for every genbound asset (resource key ``genbound``)."""

    profile: str | None = Field(default=None, description="demo | micro | pythia (else $GENBOUND_PROFILE)")
    delta: float | None = Field(default=None, description="failure probability of each certified row")
    selection: str | None = Field(default=None, description="compute_optimal | all | none: what the automation bounds")
    quant_grid: str | None = Field(default=None, description="e.g. 'gptq:3:16,gptq:4:16' (declared before data)")
    exact_max_targets: int | None = Field(default=None, description="evaluate every target when D <= this")
    n_windows: int | None = Field(default=None, description="windows drawn when D is larger")
    device: str | None = Field(default=None, description="cpu | cuda")
    dtype: str | None = Field(default=None, description="float32 | bfloat16 | float16")
    batch_size: int | None = Field(default=None, description="windows per forward pass")

    def settings(self, family: FamilySpec | None = None) -> CertifySettings:
        """The settings for ``family``: the profile is this resource's ``profile`` (run config),
        else the family's registry profile, else $GENBOUND_PROFILE, else ``demo``; then the
        GENBOUND_<FIELD> variables; then this resource's other fields."""
        over = {k: getattr(self, k) for k in ("delta", "selection", "exact_max_targets",
                                              "n_windows", "device", "dtype", "batch_size")
                if getattr(self, k) is not None}
        if self.quant_grid:
            over["quant_grid"] = parse_quant_grid(self.quant_grid)
        profile = self.profile or (family.profile if family is not None else None)
        return CertifySettings.from_env(profile, **over)

    def family(self, spec: FamilySpec) -> Family:
        return _open(spec)

    def artifact_dir(self, family: str, model: str, step: int, config_key: str) -> Path:
        return data_dir() / "artifacts" / family / model / f"step{int(step)}" / config_key


@lru_cache(maxsize=8)
def _open(spec: FamilySpec) -> Family:
    """Open a family once per process (the suite's stream is read once, not per partition)."""
    return open_family(spec)


def genbound_resource() -> GenboundResource:
    return GenboundResource()


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"genbound": genbound_resource()})
