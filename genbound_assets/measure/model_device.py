"""Where a model runs: one helper for the token evaluators (window_losses, token_losses) and
the trunk/head probe.  Imports torch only, so the evaluators stay cheap to import (the Dagster
code location imports them at load)."""

from __future__ import annotations

import torch

__all__ = ["model_device_dtype"]


def model_device_dtype(model) -> tuple[torch.device, torch.dtype]:
    """The device and float dtype of ``model``'s first floating-point parameter (float32 on the
    first parameter's device if none is floating point)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    p = next(model.parameters())
    return p.device, torch.float32
