"""Scaling laws across a family's model sizes at their compute-optimal checkpoints (Sec. 4
Fig. 2 centre: Σ(N) = a + b·N^−c; Sec. 5.2 Fig. 3: K(h) = a·N^c), with 95% intervals and the
headline bound extrapolated to a larger N.  Pure numpy/scipy: no database, no Dagster.

* ``points_at_compute_optimal(compute_optimal, bounds)``: one ``SizePoint`` per model from the
  ``compute_optimal`` rows and the ``bounds`` rows (dicts): the rows at the certified
  compute-optimal checkpoint, or, when a model's D* = 20 N falls between two checkpoints, the
  rows interpolated linearly in N/D (``interpolated`` rows; a method without one, e.g.
  ``prequential``, is interpolated here with the same weight).  Such a point is not certified.
* ``fit_scaling(points)``: one ``ScalingFit`` per entry of ``QUANTITIES``: the form is fixed in
  advance per quantity (no form is chosen after seeing the data).  Fewer sizes than the form
  needs for an interval (3 for a·N^c, 4 for a + b·N^−c) gives a ``not_enough_sizes`` record,
  not a fit; values a log-log fit cannot take (≤ 0) or a fit that does not converge give
  ``not_fitted`` with the reason.

Every fit is descriptive (certified = false): the points are bounds and estimates at checkpoints
chosen by a rule, and the intervals are the regression's, under its noise model
(fits/power_law.py), not a probability statement about the bounds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import OptimizeWarning

from .power_law import fit_offset_power_law, fit_power_law

__all__ = ["QUANTITIES", "EXTRAPOLATE_FACTOR", "MIN_SIZES", "SELECTION", "FitSpec", "ScalingFit",
           "SizePoint", "fit_quantity", "fit_scaling", "points_at_compute_optimal"]

SELECTION = "compute_optimal"
EXTRAPOLATE_FACTOR = 10.0
# points a form needs for a 95% interval: t quantiles with n - (number of parameters) df >= 1
MIN_SIZES = {"power": 3, "offset_power": 4}


@dataclass(frozen=True)
class FitSpec:
    """What to fit: ``quantity`` (a key of ``SizePoint.values``), its pre-declared form, unit,
    the stored values it reads, and whether to extrapolate it."""

    quantity: str
    form: str
    unit: str
    source: str
    extrapolate: bool = False


_DEC = "freedman_decomposed rows (Thm 3.4 terms)"
QUANTITIES: tuple[FitSpec, ...] = (
    FitSpec("headline", "offset_power", "nats/token", "headline rows: bound", extrapolate=True),
    FitSpec("headline", "power", "nats/token", "headline rows: bound", extrapolate=True),
    FitSpec("empirical_risk", "offset_power", "nats/token", f"{_DEC}: empirical_risk (R̂_h)"),
    FitSpec("sigma", "offset_power", "nats/token", f"{_DEC}: sigma (Σ)"),
    FitSpec("random_guess_term", "power", "nats/token", f"{_DEC}: C·log V"),
    FitSpec("loss_variation_term", "power", "nats/token", f"{_DEC}: Σ·√C"),
    FitSpec("smoothing_term", "power", "nats/token", f"{_DEC}: √(2C)"),
    FitSpec("quantization_gap", "power", "nats/token", f"{_DEC}: R̂_q − R̂_h"),
    FitSpec("subsample_term", "power", "nats/token", f"{_DEC}: subsample term"),
    FitSpec("prequential_bits", "power", "bits", "prequential rows: code_length_bits (K(h), eq. 5)"),
)

# quantity -> (method, column) of the bounds row it is read from
_VALUE_SOURCES: dict[str, tuple[str, str]] = {
    "headline": ("headline", "bound"),
    "empirical_risk": ("freedman_decomposed", "empirical_risk"),
    "sigma": ("freedman_decomposed", "sigma"),
    "random_guess_term": ("freedman_decomposed", "random_guess_term"),
    "loss_variation_term": ("freedman_decomposed", "loss_variation_term"),
    "smoothing_term": ("freedman_decomposed", "smoothing_term"),
    "quantization_gap": ("freedman_decomposed", "quantization_gap"),
    "subsample_term": ("freedman_decomposed", "subsample_term"),
    "prequential_bits": ("prequential", "code_length_bits"),
}


@dataclass(frozen=True)
class SizePoint:
    """One model size at its compute-optimal checkpoint: N and the values of each quantity
    (None where the row is missing); ``certified``: the values come from the certified
    compute-optimal checkpoint (not interpolated)."""

    model: str
    n_params: float
    values: Mapping[str, float | None]
    certified: bool = True
    step: int | None = None


def _num(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _values(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, float | None]:
    out = {}
    for q, (method, col) in _VALUE_SOURCES.items():
        r = rows.get(method)
        out[q] = None if r is None else _num(r.get(col))
    return out


def _newest(rows: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """method -> its row (the newest ``computed_at`` when a method has several)."""
    out: dict[str, Mapping[str, Any]] = {}
    for r in rows:
        m = r["method"]
        if m not in out or str(r.get("computed_at") or "") > str(out[m].get("computed_at") or ""):
            out[m] = r
    return out


def points_at_compute_optimal(compute_optimal: Iterable[Mapping[str, Any]],
                              bounds: Iterable[Mapping[str, Any]]) -> list[SizePoint]:
    """One point per model with a compute-optimal selection (module docstring), by N."""
    by_model: dict[str, list[Mapping[str, Any]]] = {}
    for r in bounds:
        by_model.setdefault(r["model"], []).append(r)
    points = []
    for co in compute_optimal:
        model, rows = co["model"], by_model.get(co["model"], [])
        n = co.get("n_params")
        if n is None:
            n = next((r.get("n_params") for r in rows if r.get("n_params")), None)
        if not n:
            continue
        if co.get("step") is not None:
            at = _newest(r for r in rows if r["step"] == co["step"] and not r["interpolated"])
            if at:
                points.append(SizePoint(model, float(n), _values(at), bool(co.get("certified")),
                                        int(co["step"])))
            continue
        lo, hi, w = co.get("step_lo"), co.get("step_hi"), co.get("weight_hi")
        if hi is None or lo is None or w is None:
            continue
        w = float(w)
        interp = _newest(r for r in rows if r["interpolated"] and r["step"] == hi)
        ends = {s: _newest(r for r in rows if r["step"] == s and not r["interpolated"])
                for s in (lo, hi)}
        values = _values(interp)
        for q, (method, col) in _VALUE_SOURCES.items():
            if values[q] is not None or method in interp:
                continue
            a = _num(ends[lo].get(method, {}).get(col))
            b = _num(ends[hi].get(method, {}).get(col))
            values[q] = None if a is None or b is None else (1.0 - w) * a + w * b
        if any(v is not None for v in values.values()):
            points.append(SizePoint(model, float(n), values, False, None))
    return sorted(points, key=lambda p: p.n_params)


@dataclass
class ScalingFit:
    """One stored fit (a row of ``power_law_fits``), or a record saying why there is none."""

    quantity: str
    form: str
    unit: str
    source: str
    status: str                               # ok | not_enough_sizes | not_fitted
    note: str
    x: list[float]
    y: list[float]
    models: list[str]
    params: dict[str, float] | None = None
    std_errors: dict[str, float] | None = None
    ci_low: dict[str, float] | None = None
    ci_high: dict[str, float] | None = None
    r2: float | None = None
    residuals: list[float] | None = None
    extrapolation: dict[str, Any] | None = None
    fit: Any = field(default=None, repr=False)

    @property
    def n_points(self) -> int:
        return len(self.x)

    def predict(self, x) -> np.ndarray:
        """The fitted curve at x (only when status is 'ok')."""
        if self.params is None:
            raise ValueError(f"{self.quantity} ({self.form}): no fit ({self.status}: {self.note})")
        x = np.asarray(x, dtype=np.float64)
        p = self.params
        if self.form == "power":
            return p["a"] * x ** p["c"]
        return p["a"] + p["b"] * x ** (-p["c"])

    def record(self, family: str, selection: str = SELECTION) -> dict[str, Any]:
        """The row for ``power_law_fits`` (JSON columns as dicts; certified = false)."""
        return {"family": family, "quantity": self.quantity, "form": self.form,
                "selection": selection, "status": self.status, "note": self.note,
                "unit": self.unit, "source": self.source, "params": self.params,
                "std_errors": self.std_errors, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "r2": self.r2, "n_points": self.n_points, "residuals": self.residuals,
                "x": self.x, "y": self.y, "models": self.models,
                "extrapolation": self.extrapolation, "certified": False}


def _finite_dict(d: Mapping[str, float]) -> dict[str, float | None]:
    return {k: (float(v) if math.isfinite(float(v)) else None) for k, v in d.items()}


def fit_quantity(spec: FitSpec, points: Sequence[SizePoint],
                 extrapolate_factor: float = EXTRAPOLATE_FACTOR) -> ScalingFit:
    """Fit one quantity across the sizes that have it (module docstring)."""
    have = [(p.n_params, p.values.get(spec.quantity), p.model) for p in points
            if p.values.get(spec.quantity) is not None]
    have.sort()
    x = [float(a) for a, _, _ in have]
    y = [float(b) for _, b, _ in have]
    models = [m for _, _, m in have]
    base = dict(quantity=spec.quantity, form=spec.form, unit=spec.unit, source=spec.source,
                x=x, y=y, models=models)
    need = MIN_SIZES[spec.form]
    sizes = len(set(x))
    if sizes < need:
        what = "a·N^c (2 parameters)" if spec.form == "power" else "a + b·N^−c (3 parameters)"
        return ScalingFit(**base, status="not_enough_sizes", note=(
            f"not enough sizes: {sizes} model size(s) with a value; {what} needs at least {need} "
            "for a 95% interval"))
    if spec.form == "power" and min(y) <= 0:
        bad = [f"{m} ({v:.3g})" for v, m in zip(y, models, strict=True) if v <= 0]
        return ScalingFit(**base, status="not_fitted", note=(
            "a·N^c is fitted on log y, and the value is ≤ 0 at " + ", ".join(bad)
            + (" (every training target was evaluated: no subsample step)"
               if spec.quantity == "subsample_term" and max(y) <= 0 else "")))
    try:
        with warnings.catch_warnings():   # an unidentified covariance is caught below
            warnings.simplefilter("ignore", OptimizeWarning)
            fit = fit_power_law(x, y) if spec.form == "power" else fit_offset_power_law(x, y)
    except (ValueError, ArithmeticError) as e:
        return ScalingFit(**base, status="not_fitted", note=f"fit failed: {e}")
    lo = {k: v[0] for k, v in fit.conf_int.items()}
    hi = {k: v[1] for k, v in fit.conf_int.items()}
    out = ScalingFit(**base, status="ok", note="", params=_finite_dict(fit.params),
                     std_errors=_finite_dict(fit.std_errors), ci_low=_finite_dict(lo),
                     ci_high=_finite_dict(hi), r2=_num(fit.r_squared),
                     residuals=[float(r) for r in fit.residuals], fit=fit)
    if spec.extrapolate:
        n_new = extrapolate_factor * max(x)
        pr = fit.predict([n_new])
        out.extrapolation = {
            "n_params": n_new, "factor": extrapolate_factor, "y": _num(pr.y[0]),
            "ci_low": _num(pr.ci_low[0]), "ci_high": _num(pr.ci_high[0]),
            "pi_low": _num(pr.pi_low[0]), "pi_high": _num(pr.pi_high[0]), "method": pr.method}
    return out


def fit_scaling(points: Sequence[SizePoint], specs: Sequence[FitSpec] = QUANTITIES,
                extrapolate_factor: float = EXTRAPOLATE_FACTOR) -> list[ScalingFit]:
    """Every pre-declared fit (``QUANTITIES``) across the points, in that order."""
    return [fit_quantity(s, points, extrapolate_factor) for s in specs]
