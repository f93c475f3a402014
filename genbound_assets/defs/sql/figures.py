"""The report's figures as Dagster metadata (inline PNG markdown, small), for the assets whose
numbers they draw: ``<family>/model_bounds`` (per model) and ``<family>/scaling_fits`` (across
sizes).  The figures read the views, as in ``genbound report`` (docs/sql.md)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import dagster as dg

__all__ = ["MODEL_FIGURES", "SCALING_FIGURES", "figure_metadata"]

# (report section, alt text)
MODEL_FIGURES = (("bound_over_training", "headline bound and loss curve over training"),
                 ("term_breakdown", "Thm 3.4 and headline terms at the compute-optimal checkpoint"))
SCALING_FIGURES = (("scaling_laws", "headline bound and R̂_h across sizes, with fits"),
                   ("sigma_vs_n", "Σ across sizes with its fit (Fig. 2 centre)"),
                   ("prequential_vs_counting", "K(h) vs parameter counting (Fig. 3)"),
                   ("headline_vs_recipe", "headline vs the paper's recipe"))


def figure_metadata(engine, models: Sequence[str], figures=SCALING_FIGURES, log=None,
                    prefix: str = "figure/") -> dict:
    """``{prefix + section: MetadataValue.md(inline PNG)}`` for the sections' figures restricted
    to ``models``, at the report's metadata resolution.  A figure without data is left out; one
    that fails (e.g. a view not created yet: `genbound setup-db`) is logged and left out: a
    figure never fails the asset."""
    from genbound_assets.report import md_image
    from genbound_assets.report.sections import METADATA_DPI, figure_png

    out = {}
    for key, alt in figures:
        try:
            png = figure_png(key, engine, list(models), dpi=METADATA_DPI)
        except Exception as e:  # noqa: BLE001 - see the docstring
            (log or logging.getLogger(__name__)).warning(
                f"figure {key} not drawn: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            continue
        if png:
            out[f"{prefix}{key}"] = dg.MetadataValue.md(md_image(png, alt))
    return out
