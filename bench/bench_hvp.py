"""One Hessian-vector product vs one forward+backward on the same batch (docs/hessian.md).

    .venv/bin/python bench/bench_hvp.py                      # Pythia-shaped toy on the CPU
    .venv/bin/python bench/bench_hvp.py --preset pythia-70m --device cuda --batch 8 --seq 2048

Builds a randomly initialized GPT-NeoX (eager attention; no weights are downloaded), times
(median of --repeats after one warm-up):
  fwd_bwd          HessianOperator.gradient(): forward + backward (the unit of training cost)
  hvp              matvec, method="double_backward" (the default): fwd + bwd(create_graph)
                   + a backward of (grad . v)
  hvp_fwd_rev      matvec, method="fwd_rev": torch.func.jvp(grad(loss)) forward-over-reverse
  hvp_cached       double_backward with cache_graph=True: one backward through the kept graph
  slq_step         one Lanczos step (default HVP + full reorthogonalization), mean of
                   --slq-steps steps
and prints a table and one JSON line (ratios are what to compare across machines).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common as C  # noqa: E402  (bench/: timing, the machine description)
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM  # noqa: E402

from genbound_assets.measure.hessian import HessianOperator, slq  # noqa: E402

PRESETS = {
    # hidden, layers, heads, intermediate, vocab
    "toy": (128, 2, 4, 512, 2048),
    "pythia-14m": (128, 6, 4, 512, 50304),
    "pythia-70m": (512, 6, 8, 2048, 50304),
    "pythia-160m": (768, 12, 12, 3072, 50304),
}


def build(preset: str, dtype: torch.dtype, device: str, seed: int) -> GPTNeoXForCausalLM:
    hidden, layers, heads, inter, vocab = PRESETS[preset]
    cfg = GPTNeoXConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=inter,
        max_position_embeddings=2048,
        rotary_pct=0.25,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(cfg).to(device=device, dtype=dtype).eval()


def measure(fns: dict, repeats: int, device: str) -> dict:
    """Round-robin timing (so load drifts hit every candidate alike): min and median wall
    seconds and median CPU seconds of this process, after one warm-up call each."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    t = C.side_by_side(fns, repeats, sync=sync)
    return {k: {q: d[q] for q in ("min", "median", "cpu_median")} for k, d in t.items()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="toy")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--slq-steps", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slq-sweep", type=int, nargs="*", default=[],
                    help="also time slq() with these Lanczos step counts (1 probe each): SLQ "
                         "time vs steps, the reorthogonalization's O(j n) share")
    ap.add_argument("--out-json-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    model = build(args.preset, dtype, args.device, args.seed)
    ids = torch.randint(
        0,
        model.config.vocab_size,
        (args.batch, args.seq),
        generator=torch.Generator().manual_seed(args.seed + 1),
    )
    op = HessianOperator(model, ids, dtype=dtype)  # method="double_backward"
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(2), dtype=dtype)
    v = v.to(args.device)
    fr = HessianOperator(model, ids, dtype=dtype, method="fwd_rev")
    cached = HessianOperator(model, ids, dtype=dtype, method="double_backward", cache_graph=True)
    t = measure(
        {
            "fwd_bwd": op.gradient,
            "hvp": partial(op.matvec, v),
            "hvp_fwd_rev": partial(fr.matvec, v),
            "hvp_cached": partial(cached.matvec, v),
        },
        args.repeats,
        args.device,
    )
    del fr, cached
    m = args.slq_steps
    t0, c0 = time.perf_counter(), time.process_time()
    slq(op, m, 1, seed=0, dtype=dtype)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    step = (time.perf_counter() - t0) / m
    t["slq_step"] = {"min": step, "median": step, "cpu_median": (time.process_time() - c0) / m}
    base = t["fwd_bwd"]
    sweep = []
    for steps in args.slq_sweep:
        t0, c0 = time.perf_counter(), time.process_time()
        res = slq(op, steps, 1, seed=0, dtype=dtype)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        sweep.append({"lanczos_steps": steps, "nodes": int(sum(len(n) for n in res.nodes))
                      if hasattr(res, "nodes") else None, "seconds": wall, "cpu_seconds": cpu,
                      "seconds_per_step": wall / steps,
                      "x_fwd_bwd_per_step": (wall / steps) / base["min"]})

    result = {
        "bench": "hvp",
        "preset": args.preset,
        "n_params": op.dim,
        "batch": [args.batch, args.seq],
        "dtype": args.dtype,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "repeats": args.repeats,
        "seconds": {k: {q: round(x, 6) for q, x in d.items()} for k, d in t.items()},
        "ratio_to_fwd_bwd": {k: round(d["min"] / base["min"], 3) for k, d in t.items()},
        "ratio_to_fwd_bwd_cpu": {
            k: round(d["cpu_median"] / base["cpu_median"], 3) for k, d in t.items()
        },
        "slq_steps_for_slq_step": m,
        "slq_sweep": sweep,
        "headline": [
            {"what": f"one HVP / one forward+backward, same batch ({args.preset}, wall min; cpu median)",
             "value": f"{t['hvp']['min'] / base['min']:.2f}; {t['hvp']['cpu_median'] / base['cpu_median']:.2f}",
             "unit": "x", "target": "<= 3", "met": t["hvp"]["cpu_median"] / base["cpu_median"] <= 3.0},
            {"what": "one SLQ step (HVP + full reorthogonalization) / forward+backward",
             "value": round(t["slq_step"]["min"] / base["min"], 2), "unit": "x", "target": None,
             "met": None},
        ] + [{"what": f"SLQ, {r['lanczos_steps']} Lanczos steps, 1 probe", "value": round(r["seconds"], 3),
              "unit": "s", "target": None, "met": None} for r in sweep],
    }
    head = f"{'what':<16}{'min s':>10}{'median s':>10}{'cpu s':>10}{'x fwd+bwd':>11}{'x (cpu)':>9}"
    print(head)
    for k, d in t.items():
        print(
            f"{k:<16}{d['min']:>10.4f}{d['median']:>10.4f}{d['cpu_median']:>10.4f}"
            f"{d['min'] / base['min']:>11.2f}{d['cpu_median'] / base['cpu_median']:>9.2f}"
        )
    print(
        f"({args.preset}: {op.dim:,} params, batch {args.batch}x{args.seq}, {args.dtype}, "
        f"{args.device}, {torch.get_num_threads()} threads)"
    )
    for r in sweep:
        print(f"slq {r['lanczos_steps']:>4} steps: {r['seconds']:.3f} s, {r['seconds_per_step']:.4f} s/step "
              f"({r['x_fwd_bwd_per_step']:.2f}x fwd+bwd per step)")
    result["machine"] = _machine()
    print(json.dumps(result))
    return result


def _machine() -> dict:
    return C.machine_info()


if __name__ == "__main__":
    main()
