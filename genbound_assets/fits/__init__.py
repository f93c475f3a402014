"""Scaling-law fits (statsmodels/scipy): y = a N^c and y = a + b N^-c with intervals
(power_law.py), and the family-level fits at the compute-optimal checkpoints (scaling.py)."""

from .power_law import (
    OffsetPowerLawFit,
    PowerLawFit,
    Prediction,
    fit_offset_power_law,
    fit_power_law,
)
from .scaling import (
    QUANTITIES,
    FitSpec,
    ScalingFit,
    SizePoint,
    fit_quantity,
    fit_scaling,
    points_at_compute_optimal,
)

__all__ = ["QUANTITIES", "FitSpec", "OffsetPowerLawFit", "PowerLawFit", "Prediction", "ScalingFit",
           "SizePoint", "fit_offset_power_law", "fit_power_law", "fit_quantity", "fit_scaling",
           "points_at_compute_optimal"]
