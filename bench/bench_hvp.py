"""One Hessian-vector product vs one forward+backward on the same batch (docs/hessian.md).

    .venv/bin/python bench/bench_hvp.py                      # Pythia-shaped toy on the CPU
    .venv/bin/python bench/bench_hvp.py --preset pythia-70m --device cuda --batch 8 --seq 2048

Builds a randomly initialized GPT-NeoX (eager attention; no weights are downloaded), times
(median of --repeats after one warm-up):
  fwd_bwd        HessianOperator.gradient(): forward + backward (the unit of training cost)
  hvp            HessianOperator.matvec(): forward + backward(create_graph) + double backward
  hvp_cached     matvec with cache_graph=True: one backward through the kept gradient graph
  hvp_fwd_rev    torch.func.jvp(grad(loss)) forward-over-reverse, for comparison only
  slq_step       one Lanczos step with full reorthogonalization at --slq-steps, HVP included
and prints a table and one JSON line (ratios are what to compare across machines).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import GPTNeoXConfig, GPTNeoXForCausalLM  # noqa: E402

from genbound_assets.ml.hessian import HessianOperator, slq  # noqa: E402

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


def timed(fn, repeats: int, device: str) -> float:
    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    fn()  # warm-up
    sync()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def fwd_over_rev(op: HessianOperator):
    """H v = jvp(grad L)(theta; v) with torch.func on a functional call (single vector: no vmap)."""
    from torch.func import functional_call, grad, jvp

    model, ids = op.model, op.input_ids
    names = op.param_names
    frozen = {n: p.detach() for n, p in model.named_parameters() if n not in set(names)}

    def loss(params):
        logits = functional_call(model, {**frozen, **params}, (), {"input_ids": ids}).logits
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))

    primals = {n: p.detach() for n, p in zip(names, op._params, strict=True)}

    def hvp(v):
        tangents = dict(zip(names, op.unflatten(v), strict=True))
        return jvp(grad(loss), (primals,), (tangents,))[1]

    return hvp


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
    ap.add_argument("--no-fwd-rev", action="store_true", help="skip the torch.func comparison")
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
    op = HessianOperator(model, ids, dtype=dtype)
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(2), dtype=dtype).to(args.device)
    r = args.repeats
    t = {
        "fwd_bwd": timed(op.gradient, r, args.device),
        "hvp": timed(lambda: op.matvec(v), r, args.device),
    }
    cached = HessianOperator(model, ids, dtype=dtype, cache_graph=True)
    t["hvp_cached"] = timed(lambda: cached.matvec(v), r, args.device)
    if not args.no_fwd_rev:
        f = fwd_over_rev(op)
        t["hvp_fwd_rev"] = timed(lambda: f(v), r, args.device)
    m = args.slq_steps
    t0 = time.perf_counter()
    slq(op, m, 1, seed=0, dtype=dtype)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t["slq_step"] = (time.perf_counter() - t0) / m

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
        "seconds": {k: round(s, 6) for k, s in t.items()},
        "ratio_to_fwd_bwd": {k: round(s / t["fwd_bwd"], 3) for k, s in t.items()},
        "slq_steps_for_slq_step": m,
    }
    print(f"{'what':<14}{'seconds':>12}{'x fwd+bwd':>12}")
    for k, s in t.items():
        print(f"{k:<14}{s:>12.4f}{s / t['fwd_bwd']:>12.2f}")
    print(
        f"({args.preset}: {op.dim:,} params, batch {args.batch}x{args.seq}, {args.dtype}, "
        f"{args.device}, {torch.get_num_threads()} threads)"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
