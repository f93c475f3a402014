"""A correctly rounded reference for reductions of logits (tests of token_losses, window_losses)."""

import math

import numpy as np
import torch


def exact_reduction(logits: torch.Tensor, tgt: torch.Tensor, alphas) -> dict:
    """Per row, float64 with math.fsum (correctly rounded sums): X, Y and, per alpha, X_s, Y_s
    of q = (1 - alpha) p + alpha/V.  Keys x, y (arrays) and xs, ys (alpha -> array)."""
    out = {"x": [], "y": [], "xs": {a: [] for a in alphas}, "ys": {a: [] for a in alphas}}
    for row, t in zip(logits.double().numpy(), tgt.numpy(), strict=True):
        mx = row.max()
        logp = row - (mx + math.log(math.fsum(np.exp(row - mx))))
        p = np.exp(logp)
        out["x"].append(-logp[t])
        out["y"].append(-math.fsum(p * logp))
        for a in alphas:
            q = (1 - a) * p + a / len(row)
            out["xs"][a].append(-math.log(q[t]))
            out["ys"][a].append(-math.fsum(q * np.log(q)))
    return {k: (np.array(v) if k in ("x", "y") else {a: np.array(w) for a, w in v.items()})
            for k, v in out.items()}
