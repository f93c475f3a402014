"""Estimate: disk and GPU-hours to materialize the Pythia family (docs/pythia.md, "Compute").

    .venv/bin/python bench/pythia_cost.py [--windows 2000] [--pairs 10000] [--calib 128]
        [--lanczos 80] [--probes 4] [--slq-tokens 8192] [--tflops 400] [--checkpoints 154]

A FLOP model, not a measurement: forward = 2·N FLOPs per token (N = total parameters, both
embeddings); forward+backward = 3 forwards; one Hessian-vector product = 3 forward+backward
(docs/hessian.md bench: 2.8-3.2x); GPTQ = 4 forwards over the calibration tokens (the layer
inputs, the quantized layer outputs, and ~1.6 forward-equivalents of X^T X accumulation) plus
the column solves, 48·d³ FLOPs per layer.  All at ``--tflops`` sustained (default: an H100 at
~40% of its 989 TFLOP/s dense bf16 peak).  Prints one JSON line, then a table.
"""

from __future__ import annotations

import argparse
import json

from genbound_assets.families.sources import PYTHIA_MODELS

T = 2048


def estimate(windows=2000, pairs=10_000, calib=128, lanczos=80, probes=4, slq_tokens=8192,
             tflops=400.0, checkpoints=154) -> dict:
    rate = tflops * 1e12
    rows = []
    for size, r in PYTHIA_MODELS.items():
        n, layers, d = r["total_params"], r["layers"], r["d_model"]
        weights_gb = 2 * n / 1e9                         # fp16 on the hub
        masks_gb = layers * 2048 * 2048 / 1e9            # legacy bool attention.bias buffers
        fwd = 2 * n                                      # FLOPs per token
        windows_s = 2 * windows * T * fwd / rate         # h and h_q
        pairs_s = 2 * pairs * T * fwd / rate             # each pair's full window, h and h_q
        gptq_s = (4 * calib * T * fwd + 48 * d ** 3 * layers) / rate
        slq_s = lanczos * probes * slq_tokens * 3 * 3 * fwd / rate
        rows.append(dict(
            size=size, n_params=n, weights_gb=weights_gb, masks_gb=masks_gb,
            download_gb=(weights_gb + masks_gb) * checkpoints,
            windows_s=windows_s, pairs_s=pairs_s, gptq_s=gptq_s, slq_s=slq_s,
            design_gpu_h=(windows_s + gptq_s + slq_s) * checkpoints / 3600,
            paper_gpu_h=(pairs_s + gptq_s + slq_s) * checkpoints / 3600))
    total = {k: sum(r[k] for r in rows) for k in ("download_gb", "design_gpu_h", "paper_gpu_h")}
    return dict(assumptions=dict(windows=windows, pairs=pairs, calib=calib, lanczos=lanczos,
                                 probes=probes, slq_tokens=slq_tokens, tflops=tflops,
                                 checkpoints=checkpoints), rows=rows, total=total)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=2000)
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--calib", type=int, default=128)
    ap.add_argument("--lanczos", type=int, default=80)
    ap.add_argument("--probes", type=int, default=4)
    ap.add_argument("--slq-tokens", type=int, default=8192)
    ap.add_argument("--tflops", type=float, default=400.0)
    ap.add_argument("--checkpoints", type=int, default=154)
    a = ap.parse_args(argv)
    out = estimate(a.windows, a.pairs, a.calib, a.lanczos, a.probes, a.slq_tokens, a.tflops,
                   a.checkpoints)
    print(json.dumps(out))
    print(f"{'size':>5} {'GB/ckpt':>8} {'GB all':>7} {'windows s':>9} {'pairs s':>8} {'GPTQ s':>7} "
          f"{'SLQ s':>7} {'design h':>9} {'paper h':>8}")
    for r in out["rows"]:
        print(f"{r['size']:>5} {r['weights_gb'] + r['masks_gb']:8.3f} {r['download_gb']:7.0f} "
              f"{r['windows_s']:9.1f} {r['pairs_s']:8.1f} {r['gptq_s']:7.1f} {r['slq_s']:7.1f} "
              f"{r['design_gpu_h']:9.2f} {r['paper_gpu_h']:8.2f}")
    t = out["total"]
    print(f"total download {t['download_gb']:,.0f} GB; design {t['design_gpu_h']:.1f} GPU-h; "
          f"paper recipe {t['paper_gpu_h']:.1f} GPU-h")


if __name__ == "__main__":
    main()
