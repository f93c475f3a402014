"""Throughput of genbound's token_losses vs a bare transformers loop doing the same work.

Both sides get the same randomly initialised Pythia-shaped model, the same IID-sampled
token-context pairs (stream contract of genbound_assets/data/stream.py), the same batch size,
the same right-padded, length-sorted batches and the same outputs (X, Y, and X_s, Y_s per alpha,
log-softmax in float32).  The bare loop is `model(input_ids).logits`, gather each row's last real
position, then the same reductions.  Runs alternate (ours, bare, ours, ...) and the median is kept.

FLOP accounting per pair with context length L (d = hidden, V = logit dimension):
  model FLOPs     = 2 * N * L + 2 * n_layer * d * L^2     (N = all parameters but the input
                    embedding, the usual 2*N*tokens convention; attention causal QK^T and AV)
  executed FLOPs  = the same with the LM head counted once per pair instead of L times: what
                    token_losses actually computes.
Peak = best float32 (or --dtype) torch matmul FLOP/s measured in this run, same threads.

    .venv/bin/python bench/bench_token_losses.py                 # CPU default shape
    .venv/bin/python bench/bench_token_losses.py --preset pythia-70m --device cuda --dtype bf16
Prints one JSON line, then a table.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genbound_assets.data.stream import TokenStream  # noqa: E402
from genbound_assets.families.models import resolve_device_dtype, tiny_gpt_neox  # noqa: E402
from genbound_assets.measure.token_losses import token_losses  # noqa: E402

PRESETS = {
    "cpu-small": dict(vocab=50304, hidden=256, layers=4, heads=4, context=256),
    "pythia-70m": dict(vocab=50304, hidden=512, layers=6, heads=8, context=2048),
    "pythia-160m": dict(vocab=50304, hidden=768, layers=12, heads=12, context=2048),
}


def make_stream(n_tokens: int, vocab: int, mean_doc: int, seed: int) -> TokenStream:
    rng = np.random.default_rng(seed)
    lens = np.maximum(2, rng.geometric(1.0 / mean_doc, size=n_tokens // 2))
    lens = lens[: int(np.searchsorted(np.cumsum(lens), n_tokens)) + 1]
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    toks = rng.integers(1, min(vocab, 50277), size=int(lens.sum()))
    toks[starts] = 0
    return TokenStream(toks, starts, 0)


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_loop(model, stream, positions, T, alphas, batch_size, device):
    """The straightforward transformers implementation of the same outputs."""
    cs = stream.context_starts(positions, T)
    lens = positions - cs
    order = np.argsort(-lens, kind="stable")
    V = model.config.vocab_size
    n = len(positions)
    out = {"loss": np.empty(n), "entropy": np.empty(n)}
    for a in alphas:
        out[f"sl{a}"], out[f"se{a}"] = np.empty(n), np.empty(n)
    with torch.inference_mode():
        for b0 in range(0, n, batch_size):
            idx = order[b0:b0 + batch_size]
            width = int(lens[idx].max())
            ids = np.zeros((len(idx), width), dtype=np.int64)
            for i, j in enumerate(idx):
                ids[i, : lens[j]] = stream.tokens[cs[j]:positions[j]]
            logits = model(input_ids=torch.from_numpy(ids).to(device)).logits
            last = torch.from_numpy(lens[idx] - 1).to(device)
            logits = logits[torch.arange(len(idx), device=device), last].float()
            logp = torch.log_softmax(logits, -1)
            tgt = torch.from_numpy(stream.tokens[positions[idx]]).to(device)
            lpx = logp.gather(1, tgt[:, None])[:, 0].double()
            out["loss"][idx] = (-lpx).cpu().numpy()
            p = logp.exp()
            out["entropy"][idx] = (-(p * logp).sum(-1, dtype=torch.float64)).cpu().numpy()
            for a in alphas:
                lq = torch.logaddexp(logp + math.log1p(-a), torch.tensor(math.log(a / V),
                                                                         device=device))
                out[f"se{a}"][idx] = (-(lq.exp() * lq).sum(-1, dtype=torch.float64)).cpu().numpy()
                out[f"sl{a}"][idx] = (-torch.logaddexp(
                    lpx + math.log1p(-a), torch.full_like(lpx, math.log(a / V)))).cpu().numpy()
    return out


def matmul_peak(device, dtype, size=1024, reps=10):
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = math.inf
    for _ in range(3):
        torch.matmul(a, b)
        sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b)
        sync(device)
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * size**3 / best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu-small")
    ap.add_argument("--pairs", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--alphas", type=float, nargs="*", default=[0.1])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--mean-doc", type=int, default=0, help="mean document length (0: 4*T)")
    ap.add_argument("--seed", type=int, default=0)
    for k in ("vocab", "hidden", "layers", "heads", "context"):
        ap.add_argument(f"--{k}", type=int, default=None, help=f"override the preset's {k}")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = dict(PRESETS[args.preset])
    cfg.update({k: getattr(args, k) for k in cfg if getattr(args, k) is not None})
    device, dtype = resolve_device_dtype(args.device, args.dtype)
    T = cfg["context"]
    model = tiny_gpt_neox(cfg["vocab"], cfg["hidden"], cfg["layers"], cfg["heads"], T,
                          seed=args.seed).to(device=device, dtype=dtype)
    stream = make_stream(max(64 * T, 4 * args.pairs * T), cfg["vocab"],
                         args.mean_doc or 4 * T, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    pos = np.sort(rng.choice(stream.target_positions(), size=args.pairs, replace=False))
    ctx_lens = pos - stream.context_starts(pos, T)
    tokens = int(ctx_lens.sum())

    d, nl = cfg["hidden"], cfg["layers"]
    n_params = sum(p.numel() for p in model.parameters())
    n_no_embed_in = n_params - model.gpt_neox.embed_in.weight.numel()
    head = model.lm_head.weight.numel()
    attn = 2 * nl * d * float((ctx_lens.astype(np.float64) ** 2).sum())
    model_flops = 2 * n_no_embed_in * tokens + attn
    exec_flops = 2 * (n_no_embed_in - head) * tokens + 2 * head * len(pos) + attn

    alphas = tuple(args.alphas)
    ours_t, bare_t = [], []
    ours = bare = None
    # warm-up (kernels, allocator) on a few pairs
    token_losses(model, stream, pos[:4], T, alphas, args.batch_size)
    bare_loop(model, stream, pos[:4], T, alphas, args.batch_size, device)
    for _ in range(args.repeats):
        sync(device)
        t = time.perf_counter()
        ours = token_losses(model, stream, pos, T, alphas, args.batch_size)
        sync(device)
        ours_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        bare = bare_loop(model, stream, pos, T, alphas, args.batch_size, device)
        sync(device)
        bare_t.append(time.perf_counter() - t)
    peak = matmul_peak(device, dtype)

    diff = max(float(np.abs(ours.loss - bare["loss"]).max()),
               float(np.abs(ours.entropy - bare["entropy"]).max()),
               *[float(np.abs(ours.smoothed_entropy[a] - bare[f"se{a}"]).max()) for a in alphas],
               *[float(np.abs(ours.smoothed_loss[a] - bare[f"sl{a}"]).max()) for a in alphas])
    t_ours, t_bare = statistics.median(ours_t), statistics.median(bare_t)
    res = {
        "bench": "token_losses", "preset": args.preset, **cfg,
        "device": str(device), "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "pairs": len(pos), "batch_size": args.batch_size, "alphas": list(alphas),
        "context_tokens": tokens, "mean_context": tokens / len(pos),
        "n_params": n_params, "repeats": args.repeats,
        "ours_s": t_ours, "bare_s": t_bare,
        "ours_tokens_per_s": tokens / t_ours, "bare_tokens_per_s": tokens / t_bare,
        "speedup_vs_bare": t_bare / t_ours,
        "matmul_peak_flops": peak,
        "ours_model_flops_per_s": model_flops / t_ours,
        "bare_model_flops_per_s": model_flops / t_bare,
        "ours_model_flops_frac_peak": model_flops / t_ours / peak,
        "bare_model_flops_frac_peak": model_flops / t_bare / peak,
        "ours_executed_flops_frac_peak": exec_flops / t_ours / peak,
        "max_abs_diff_vs_bare": diff,
    }
    print(json.dumps(res))
    rows = [
        ("", "token_losses", "bare loop"),
        ("seconds (median)", f"{t_ours:.3f}", f"{t_bare:.3f}"),
        ("context tokens/s", f"{tokens / t_ours:,.0f}", f"{tokens / t_bare:,.0f}"),
        ("pairs/s", f"{len(pos) / t_ours:,.1f}", f"{len(pos) / t_bare:,.1f}"),
        ("model FLOP/s", f"{model_flops / t_ours:.3e}", f"{model_flops / t_bare:.3e}"),
        ("  / matmul peak", f"{model_flops / t_ours / peak:.1%}", f"{model_flops / t_bare / peak:.1%}"),
        ("executed FLOP/s / peak", f"{exec_flops / t_ours / peak:.1%}", f"{model_flops / t_bare / peak:.1%}"),
    ]
    w = max(len(r[0]) for r in rows)
    for r in rows:
        print(f"{r[0]:<{w}}  {r[1]:>14}  {r[2]:>14}")
    print(f"speedup {t_bare / t_ours:.2f}x; matmul peak {peak:.3e} FLOP/s; "
          f"max |ours - bare| = {diff:.2e}")


if __name__ == "__main__":
    main()
