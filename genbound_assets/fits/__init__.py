"""Scaling-law fits (statsmodels/scipy): y = a N^c and y = a + b N^-c with intervals."""

from .power_law import (
    OffsetPowerLawFit,
    PowerLawFit,
    Prediction,
    fit_offset_power_law,
    fit_power_law,
)

__all__ = ["OffsetPowerLawFit", "PowerLawFit", "Prediction", "fit_offset_power_law", "fit_power_law"]
