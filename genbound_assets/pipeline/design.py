"""Which training windows a checkpoint's certificate looks at, fixed before any loss is seen.

Order (docs/pipeline.md):

1. calibration windows: ``n_calibration_windows`` of the checkpoint's trained windows, drawn
   without replacement with their own seed.  They shape h_q (GPTQ) and decide the quantization
   choice and status; in sampled designs they are the exact stratum.
2. the evaluation design:
   * ``exact`` (D <= exact_max_targets): every trained window, so every one of the D targets is
     evaluated and the certificate needs no subsample step (the whole δ goes to the martingale
     statement).  h_q may depend on the calibration windows: Lemma 3.2 holds for every h in the
     prefix-code class, whatever data chose it.
   * ``windows``: m draws; draw i maps the stored uniform u_i to the floor(u_i · D')-th target of
     the D' targets outside the calibration windows and takes the window holding it, so windows
     are drawn iid with probability proportional to their number of targets and the drawn
     target is itself a uniform single-target sample.  Every target of a drawn window is
     evaluated; the calibration windows' targets are the exact stratum (weight n_exact / D).
3. the reference pairs (the paper's recipe, not certified here): the first ``n_reference_pairs``
   uniforms mapped the same way; only the drawn target of each pair is used.

The uniforms are stored once per family (table ``token_samples``) so every checkpoint of the
family is evaluated on paired draws.  No torch, no Dagster, no database.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genbound_assets.data.order import WindowOrder

__all__ = ["Design", "calibration_windows", "draw_uniforms", "evaluation_design",
           "sampled_targets", "sample_uniforms_needed"]


def draw_uniforms(m: int, seed: int) -> np.ndarray:
    """m iid uniforms in [0, 1) from numpy's default_rng(SeedSequence(seed)), float64."""
    if m < 1 or seed < 0:
        raise ValueError(f"need m >= 1 and seed >= 0, got m={m}, seed={seed}")
    return np.random.default_rng(np.random.SeedSequence(int(seed))).random(int(m), dtype=np.float64)


def sample_uniforms_needed(n_windows: int, n_reference_pairs: int) -> int:
    return max(int(n_windows), int(n_reference_pairs))


def calibration_windows(n_trained: int, n_windows: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n_windows`` distinct windows among [0, n_trained), own seed."""
    if n_trained < 1:
        raise ValueError("the checkpoint has trained on no window (step 0 has nothing to bound)")
    if not 1 <= n_windows < n_trained:
        raise ValueError(f"need 1 <= n_calibration_windows < trained windows ({n_trained}), "
                         f"got {n_windows}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x63616C]))   # "cal"
    return np.sort(rng.choice(n_trained, size=int(n_windows), replace=False)).astype(np.int64)


def sampled_targets(order: WindowOrder, n_trained: int, excluded: np.ndarray,
                    uniforms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(window, column) of the target drawn by each uniform: uniform over the targets of
    windows [0, n_trained) outside ``excluded``."""
    u = np.asarray(uniforms, dtype=np.float64)
    if u.ndim != 1 or u.size == 0 or not np.all((u >= 0.0) & (u < 1.0)):
        raise ValueError("uniforms must be a non-empty 1-D array in [0, 1)")
    counts = order.target_counts()[:n_trained].copy()
    counts[np.asarray(excluded, dtype=np.int64)] = 0
    cum = np.concatenate([[0], np.cumsum(counts)])
    d_kept = int(cum[-1])
    if d_kept < 1:
        raise ValueError("no target outside the calibration windows")
    k = np.minimum(np.floor(u * d_kept).astype(np.int64), d_kept - 1)
    window = np.searchsorted(cum, k, side="right") - 1
    rank = k - cum[window]
    # column of the rank-th target inside each drawn window
    uniq, inv = np.unique(window, return_inverse=True)
    is_target = order.batch(uniq).labels != -100
    running = np.cumsum(is_target, axis=1)
    column = np.argmax(running[inv] > rank[:, None], axis=1).astype(np.int64)
    return window.astype(np.int64), column


@dataclass(frozen=True)
class Design:
    """The evaluation design of one checkpoint (all arrays int64)."""

    kind: str                     # "exact" | "windows"
    n_trained_windows: int        # W: windows [0, W) trained on
    n_train_tokens: int           # D
    calibration: np.ndarray       # calibration window indices (sorted)
    windows: np.ndarray           # windows evaluated for the bound, in draw order (exact: 0..W-1)
    draws: int                    # m (0 for exact)
    exact_windows: np.ndarray     # the exact stratum (windows design: the calibration windows)
    reference_windows: np.ndarray # per reference pair: its window
    reference_columns: np.ndarray # per reference pair: the target's column

    def summary(self) -> dict:
        return {"design": self.kind, "n_trained_windows": self.n_trained_windows,
                "n_train_tokens": self.n_train_tokens, "n_calibration": len(self.calibration),
                "n_draws": self.draws, "n_reference_pairs": len(self.reference_windows)}


def evaluation_design(order: WindowOrder, step: int, uniforms: np.ndarray, *,
                      n_calibration_windows: int, calibration_seed: int,
                      exact_max_targets: int, n_windows: int, n_reference_pairs: int) -> Design:
    """The design for the checkpoint at ``step`` (module docstring)."""
    w = order.trained_windows(step)
    d = order.n_targets(w)
    if d < 1:
        raise ValueError(f"step {step} has trained on no target: nothing to bound")
    cal = calibration_windows(w, n_calibration_windows, calibration_seed)
    u = np.asarray(uniforms, dtype=np.float64)
    need = sample_uniforms_needed(0 if d <= exact_max_targets else n_windows, n_reference_pairs)
    if len(u) < need:
        raise ValueError(f"the stored token sample holds {len(u)} uniforms; this design needs {need}")
    if n_reference_pairs > 0:
        ref_w, ref_c = sampled_targets(order, w, cal, u[:n_reference_pairs])
    else:   # no paper-recipe row at this checkpoint
        ref_w = ref_c = np.zeros(0, dtype=np.int64)
    if d <= exact_max_targets:
        return Design("exact", w, d, cal, np.arange(w, dtype=np.int64), 0,
                      np.zeros(0, dtype=np.int64), ref_w, ref_c)
    draw_w, _ = sampled_targets(order, w, cal, u[:n_windows])
    return Design("windows", w, d, cal, draw_w, int(n_windows), cal, ref_w, ref_c)
