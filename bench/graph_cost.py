"""Estimate: GPU-hours and bytes read for the asset graph on all of Pythia (docs/scale.md).

    .venv/bin/python bench/graph_cost.py [--selection compute_optimal|all] [--tflops 400]
        [--io-gbps 2] [--checkpoints 154]

Counts what each asset of genbound_assets/defs/ does per partition at the ``pythia`` profile
(genbound_assets/pipeline/settings.py PROFILES["pythia"]) and prices it with the FLOP
conventions of bench/pythia_cost.py (docs/pythia.md, "Compute per asset"): a forward pass costs
2·N FLOPs per token (N = all parameters), forward + backward 3 forwards, a Hessian-vector
product 3 forward + backward; GPTQ 4 forward-equivalents over the calibration tokens plus
48·d³ FLOPs of column solves per layer.  Unlike pythia_cost.py (which prices every asset on
every checkpoint, and the design and the paper recipe as alternatives), this follows the graph:

* ``checkpoint_loss`` on every checkpoint: 2 · curve_tokens tokens (next update + held sample);
* ``quantized_model`` on the bounded checkpoints (``selection``): every configuration of the
  grid and the reference (deduplicated), each GPTQ plus one calibration-loss pass, and one
  float calibration-loss pass;
* ``token_losses`` on the bounded checkpoints: h and h_q over the union of the sampled windows,
  the calibration windows and the paper recipe's pair windows (both certificates in one pass);
* ``hessian_spectrum`` once per model (the compute-optimal checkpoint);
* loading: every asset that opens a checkpoint reads its weights (fp16 on the hub) at
  ``--io-gbps``; ``checkpoint`` (integrity: hashes, shapes, finite weights) reads them once more.

A FLOP model, not a measurement; prints one JSON line, then a table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genbound_assets.families.inventory import selected_steps  # noqa: E402
from genbound_assets.families.sources import PYTHIA_MODELS, PYTHIA_STEPS  # noqa: E402
from genbound_assets.pipeline.settings import settings_for_profile  # noqa: E402

T = 2048
TOKENS_PER_STEP = 2048 * 1024
FINAL_STEP = 143_000


def estimate(selection: str = "compute_optimal", tflops: float = 400.0, io_gbps: float = 2.0,
             checkpoints: int = len(PYTHIA_STEPS), profile: str = "pythia") -> dict:
    s = settings_for_profile(profile)
    rate = tflops * 1e12
    steps = list(PYTHIA_STEPS)[-checkpoints:] if checkpoints < len(PYTHIA_STEPS) else list(PYTHIA_STEPS)
    configs = len(set(s.quant_grid) | {s.reference_config})
    curve_windows = 2 * math.ceil(s.curve_tokens / T)
    token_windows = s.n_windows + s.n_calibration_windows + s.n_reference_pairs
    rows = []
    for size, r in PYTHIA_MODELS.items():
        n, layers, d = r["total_params"], r["layers"], r["d_model"]
        fwd = 2 * n * T                                   # FLOPs of one window
        gb = 2 * n / 1e9                                  # fp16 weights
        bounded = selected_steps(n, {st: st * TOKENS_PER_STEP for st in steps}, selection,
                                 s.tokens_per_param, FINAL_STEP if FINAL_STEP in steps else None)
        k = len(bounded)
        loss_s = curve_windows * fwd / rate                                    # per checkpoint
        quant_s = (configs * (4 + 1) * s.n_calibration_windows * fwd + s.n_calibration_windows * fwd
                   + configs * 48 * d ** 3 * layers) / rate                   # per bounded
        tokens_s = 2 * token_windows * fwd / rate                             # per bounded
        slq_s = s.slq_lanczos * s.slq_vectors * s.slq_batch_tokens * 3 * 3 * 2 * n / rate  # per model
        load_s = gb / io_gbps
        gpu_s = len(steps) * loss_s + k * (quant_s + tokens_s) + slq_s
        # weights read: checkpoint (integrity) + checkpoint_loss on every checkpoint; quantized_model
        # and token_losses (h, plus the h_q artifacts) on the bounded ones; the Hessian once
        reads = 2 * len(steps) + 2 * k + 1
        rows.append(dict(size=size, n_params=n, bounded=k, loss_s=loss_s, quant_s=quant_s,
                         tokens_s=tokens_s, slq_s=slq_s, load_s=load_s,
                         gpu_h=gpu_s / 3600, read_tb=reads * gb / 1e3,
                         io_h=reads * load_s / 3600))
    total = {key: sum(r[key] for r in rows) for key in ("gpu_h", "read_tb", "io_h")}
    return dict(assumptions=dict(selection=selection, tflops=tflops, io_gbps=io_gbps,
                                 checkpoints=len(steps), profile=profile, configs=configs,
                                 curve_windows=curve_windows, token_windows=token_windows,
                                 calibration_windows=s.n_calibration_windows,
                                 slq=[s.slq_lanczos, s.slq_vectors, s.slq_batch_tokens]),
                rows=rows, total=total)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--selection", default="compute_optimal", choices=["compute_optimal", "all"])
    ap.add_argument("--tflops", type=float, default=400.0)
    ap.add_argument("--io-gbps", type=float, default=2.0)
    ap.add_argument("--checkpoints", type=int, default=len(PYTHIA_STEPS))
    a = ap.parse_args(argv)
    out = estimate(a.selection, a.tflops, a.io_gbps, a.checkpoints)
    print(json.dumps(out))
    print(f"{'size':>5} {'bounded':>7} {'loss s/ckpt':>11} {'quant s':>8} {'tokens s':>9} {'SLQ s':>7} "
          f"{'load s':>7} {'GPU-h':>7} {'read TB':>8} {'I/O h':>6}")
    for r in out["rows"]:
        print(f"{r['size']:>5} {r['bounded']:>7} {r['loss_s']:11.2f} {r['quant_s']:8.1f} "
              f"{r['tokens_s']:9.1f} {r['slq_s']:7.1f} {r['load_s']:7.1f} {r['gpu_h']:7.2f} "
              f"{r['read_tb']:8.2f} {r['io_h']:6.2f}")
    t = out["total"]
    print(f"total ({a.selection}): {t['gpu_h']:.1f} GPU-h of compute at {a.tflops:g} TFLOP/s; "
          f"{t['read_tb']:.1f} TB of weights read, {t['io_h']:.1f} h at {a.io_gbps:g} GB/s")


if __name__ == "__main__":
    main()
