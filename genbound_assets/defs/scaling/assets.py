"""``<family>/scaling_fits``: the family's scaling laws across model sizes at their
compute-optimal checkpoints (Sec. 4 Fig. 2 centre, Sec. 5.2 Fig. 3; fits/scaling.py).

Unpartitioned, downstream of every model partition of ``<family>/compute_optimal`` and
``<family>/model_bounds`` (``AllPartitionMapping``), updated by declarative automation when any
of them updates (eager without ``any_deps_missing``, like the model-level assets: a model that
is not bounded yet must not block the fit of the others).  Writes the family's
``power_law_fits`` rows (selection ``compute_optimal``) in one transaction: a fit per
pre-declared quantity and form, or a record saying why there is none (fewer than 3 sizes,
values a log-log fit cannot take).  Nothing here is certified.

No ``from __future__ import annotations`` (Dagster reads the annotations).
"""

import json
import math

import dagster as dg
import polars as pl

from genbound_assets.defs.families.partitions import FamilyParts, all_family_parts
from genbound_assets.defs.sql.figures import SCALING_FIGURES, figure_metadata
from genbound_assets.defs.store.resources import PostgresResource
from genbound_assets.fits.scaling import (
    SELECTION,
    ScalingFit,
    fit_scaling,
    points_at_compute_optimal,
)
from genbound_assets.storage import read_frame, replace_partitions

AUTO = dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing())

_BOUND_COLS = ("model", "step", "method", "interpolated", "n_params", "bound", "empirical_risk",
               "sigma", "random_guess_term", "loss_variation_term", "smoothing_term",
               "quantization_gap", "subsample_term", "code_length_bits", "computed_at")


def family_fits(engine, family: str) -> tuple[list[ScalingFit], list]:
    """(fits, points) of one family from the store: its models' compute_optimal rows and
    bounds (fits/scaling.py does the rest, with no database)."""
    co = read_frame(engine, "SELECT c.* FROM compute_optimal AS c JOIN models AS m "
                    "ON m.model = c.model WHERE m.family = :f ORDER BY c.model", {"f": family})
    cols = ", ".join(f"b.{c}" for c in _BOUND_COLS)
    b = read_frame(engine, f"SELECT {cols} FROM bounds AS b JOIN models AS m ON m.model = b.model "
                   "WHERE m.family = :f", {"f": family})
    points = points_at_compute_optimal(co.iter_rows(named=True), b.iter_rows(named=True))
    return fit_scaling(points), points


def write_fits(engine, family: str, fits: list[ScalingFit], selection: str = SELECTION) -> int:
    """Replace the family's fits of ``selection`` (one transaction)."""
    rows = []
    for f in fits:
        r = f.record(family, selection)
        for k in ("params", "std_errors", "ci_low", "ci_high", "extrapolation"):
            r[k] = None if r[k] is None else json.dumps(r[k])
        rows.append(r)
    schema = {"x": pl.List(pl.Float64), "y": pl.List(pl.Float64), "residuals": pl.List(pl.Float64),
              "models": pl.List(pl.String), "r2": pl.Float64, "n_points": pl.Int64}
    frame = pl.DataFrame(rows, schema_overrides=schema, infer_schema_length=None)
    return replace_partitions(engine, [("power_law_fits", {"family": family, "selection": selection},
                                        frame)])


def _fits_table(fits: list[ScalingFit]) -> str:
    lines = ["| quantity | form | status | a | b | c | R² | sizes |", "|---|---|---|---|---|---|---|---|"]
    for f in fits:
        p = f.params or {}

        def cell(k, p=p, f=f):
            if k not in p or p[k] is None:
                return "–"

            def end(v):   # an interval end can be open (None or inf: overflow in the fit)
                return "∞" if v is None or (isinstance(v, float) and math.isinf(v)) else f"{v:.3g}"

            lo, hi = (f.ci_low or {}).get(k), (f.ci_high or {}).get(k)
            return f"{p[k]:.4g} [{'-' if lo is None else ''}{end(lo)}, {end(hi)}]"

        status = f.status if f.status == "ok" else f"{f.status}: {f.note}"
        lines.append(f"| {f.quantity} | {f.form} | {status} | {cell('a')} | {cell('b')} | "
                     f"{cell('c')} | {'' if f.r2 is None else f'{f.r2:.3f}'} | {f.n_points} |")
    return "\n".join(lines)


def build(parts: FamilyParts) -> list:
    fam = parts.name
    every = dg.AllPartitionMapping()

    @dg.asset(key=parts.key("scaling_fits"), group_name=fam, kinds={"postgres"},
              deps=[dg.AssetDep(parts.key("compute_optimal"), partition_mapping=every),
                    dg.AssetDep(parts.key("model_bounds"), partition_mapping=every)],
              automation_condition=AUTO, metadata={"genbound/writes": ["power_law_fits"]},
              description="Scaling laws across the family's model sizes at their compute-optimal "
              "checkpoints: Σ(N) = a + b·N^−c (Fig. 2 centre), K(h) = a·N^c (Fig. 3), every "
              "Thm 3.4 term, R̂_h and the headline bound, with 95% intervals; the headline "
              "extrapolated to 10× the largest N.  Fewer than 3 sizes: a 'not enough sizes' "
              "record.  Not certified.")
    def scaling_fits(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
        engine = postgres.get_engine()
        fits, points = family_fits(engine, fam)
        write_fits(engine, fam, fits)
        ok = [f for f in fits if f.status == "ok"]
        context.log.info(f"{fam}: {len(points)} size(s); {len(ok)} of {len(fits)} fits made"
                         + ("" if ok else f" ({fits[0].note})" if fits else ""))
        meta = {"sizes": len(points), "fits_made": len(ok),
                "models": dg.MetadataValue.json([p.model for p in points]),
                "fits": dg.MetadataValue.md(_fits_table(fits))}
        head = next((f for f in fits if f.quantity == "headline" and f.form == "offset_power"), None)
        if head is not None and head.extrapolation:
            meta["headline_extrapolated"] = dg.MetadataValue.json(head.extrapolation)
        meta.update(figure_metadata(engine, [p.model for p in points], SCALING_FIGURES,
                                    log=context.log))
        return dg.MaterializeResult(metadata=meta)

    return [scaling_fits]


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[a for p in all_family_parts() for a in build(p)])
