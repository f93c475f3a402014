"""Cost of token_losses' float64 reductions vs the former float32 ones (CPU).

token_losses computes X, Y, X_s, Y_s from the logits with a float64 log-softmax and float64
entropies (measure/token_losses.py `_reduce_logits`), because float32 ones leave the exact proxy
range by up to ~1e-5 at V = 50,304 (docs/measurements.md).  Three configurations:

  former    float32 reduction (float32 log-softmax and products, float64 sums), 2^25-element
            chunks: what token_losses did before;
  f32       the float32 reduction with the current CPU chunk size (isolates the precision cost);
  current   `_reduce_logits` (float64) with the current chunk size (`_chunk_rows`).

Measured: the reduction alone on (rows, V) float32 logits, chunked as token_losses chunks them
(CPU seconds per row); token_losses end to end on the bench_token_losses preset (median of
alternating runs); and, for the sampled-window design where every target of a T-token window is
a row, the reduction of one window next to one trunk + head forward of it.  Times are CPU
seconds of this process (time.process_time), robust to other jobs on a shared box; use
--threads 1.

    .venv/bin/python bench/bench_token_precision.py --threads 1
Prints one JSON line, then a table.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_token_losses import PRESETS, make_stream  # noqa: E402

import genbound_assets.measure.token_losses as tl  # noqa: E402
from genbound_assets.families.models import tiny_gpt_neox  # noqa: E402

F64 = tl._reduce_logits


def reduce_float32(logits, targets, alphas, work=None):
    """The former path: float32 log-softmax, float32 products, sums accumulated in float64
    (fresh arrays per chunk, as before; `work` is ignored)."""
    vocab = logits.shape[-1]
    logp = torch.log_softmax(logits.float(), dim=-1)
    lp_x = logp.gather(1, targets[:, None])[:, 0].double()
    p = logp.exp()
    ent = -(p * logp.clamp_min(torch.finfo(logp.dtype).min)).sum(-1, dtype=torch.float64)
    del p
    s_loss, s_ent = [], []
    for a in alphas:
        s_loss.append(-torch.logaddexp(lp_x + math.log1p(-a),
                                       torch.full_like(lp_x, math.log(a / vocab))))
        logq = torch.logaddexp(logp + math.log1p(-a), torch.tensor(math.log(a / vocab)))
        s_ent.append(-(logq.exp() * logq).sum(-1, dtype=torch.float64))
        del logq
    return -lp_x, ent, s_loss, s_ent


# name -> (reduction, chunk elements on CPU).  Order matters for "f32": glibc serves its 4 MB
# arrays from the heap only once an array that size has been freed (as after "current" or a
# forward pass); after only 128 MB arrays it mmaps them afresh and pays page faults.
CONFIGS = {
    "current": (F64, tl._HEAD_CHUNK_ELEMS["cpu"]),
    "f32": (reduce_float32, tl._HEAD_CHUNK_ELEMS["cpu"]),
    "former": (reduce_float32, 1 << 25),
}


def best_time(fn, reps):
    best = math.inf
    for _ in range(reps):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def reduce_chunked(fn, chunk_elems, logits, tgt, alphas):
    """As token_losses: one workspace per call, reused by every chunk."""
    rows = max(1, chunk_elems // logits.shape[-1])
    work = tl._Workspace(min(rows, len(logits)), logits.shape[-1], logits.device) \
        if fn is F64 else None
    for c in range(0, len(logits), rows):
        fn(logits[c:c + rows], tgt[c:c + rows], alphas, work)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu-small")
    ap.add_argument("--rows", type=int, default=1334, help="rows of the reduction micro-bench")
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--alphas", type=float, nargs="*", default=[0.1])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = PRESETS[args.preset]
    vocab, T = cfg["vocab"], cfg["context"]
    alphas = tuple(args.alphas)
    g = torch.Generator().manual_seed(args.seed)

    # 1. reduction only, on the same float32 logits, chunked as token_losses would
    logits = 3.0 * torch.randn(args.rows, vocab, generator=g)
    tgt = torch.randint(0, vocab, (args.rows,), generator=g)
    red, faults = {}, {}
    with torch.inference_mode():
        for name, (fn, elems) in CONFIGS.items():
            reduce_chunked(fn, elems, logits, tgt, alphas)
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            red[name] = best_time(lambda fn=fn, elems=elems: reduce_chunked(
                fn, elems, logits, tgt, alphas), args.repeats) / args.rows
            faults[name] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / (
                args.repeats * args.rows)

    # 2. end to end, each configuration patched in
    model = tiny_gpt_neox(vocab, cfg["hidden"], cfg["layers"], cfg["heads"], T, seed=args.seed)
    stream = make_stream(max(64 * T, 4 * args.pairs * T), vocab, 4 * T, args.seed)
    rng = np.random.default_rng(args.seed)
    pos = rng.choice(stream.target_positions(), size=args.pairs, replace=True)
    tl.token_losses(model, stream, pos[:4], T, alphas, args.batch_size)  # warm-up
    e2e = {name: [] for name in CONFIGS}
    res = {}
    saved = dict(tl._HEAD_CHUNK_ELEMS)
    try:
        for _ in range(args.repeats):
            for name, (fn, elems) in CONFIGS.items():
                tl._reduce_logits, tl._HEAD_CHUNK_ELEMS["cpu"] = fn, elems
                t = time.process_time()
                res[name] = tl.token_losses(model, stream, pos, T, alphas, args.batch_size)
                e2e[name].append(time.process_time() - t)
    finally:
        tl._reduce_logits = F64
        tl._HEAD_CHUNK_ELEMS.update(saved)
    e2e = {k: statistics.median(v) for k, v in e2e.items()}
    diff = max(float(np.abs(res["current"].entropy - res["former"].entropy).max()),
               *[float(np.abs(res["current"].smoothed_entropy[a]
                              - res["former"].smoothed_entropy[a]).max()) for a in alphas])

    # 3. window mode: one forward of a T-token window (trunk + head on every position)
    ids = torch.from_numpy(stream.tokens[1:T + 1].astype(np.int64))[None]
    with torch.inference_mode():
        def window_forward():
            hid = model.gpt_neox(input_ids=ids, use_cache=False).last_hidden_state[0]
            return model.lm_head(hid)
        window_forward()
        t_window = best_time(window_forward, args.repeats)

    out = {
        "bench": "token_precision", "preset": args.preset, **cfg, "alphas": list(alphas),
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "rows": args.rows, **{f"reduce_{k}_s_per_row": v for k, v in red.items()},
        **{f"reduce_{k}_page_faults_per_row": v for k, v in faults.items()},
        "pairs": args.pairs, **{f"e2e_{k}_s": v for k, v in e2e.items()},
        "max_abs_entropy_change": diff, "window_forward_s": t_window,
        **{f"window_reduce_{k}_s": T * v for k, v in red.items()},
    }
    print(json.dumps(out))
    rows = [("", *CONFIGS)]
    rows.append((f"reduction, us/row (V={vocab})", *[f"{1e6 * red[k]:.1f}" for k in CONFIGS]))
    rows.append(("  page faults/row", *[f"{faults[k]:.0f}" for k in CONFIGS]))
    rows.append((f"token_losses, {args.pairs} pairs, s", *[f"{e2e[k]:.3f}" for k in CONFIGS]))
    rows.append((f"window of T={T}: reduction s", *[f"{T * red[k]:.3f}" for k in CONFIGS]))
    rows.append(("  / its trunk+head forward", *[f"{T * red[k] / t_window:.0%}" for k in CONFIGS]))
    w = max(len(r[0]) for r in rows)
    for r in rows:
        print(f"{r[0]:<{w}}  " + "  ".join(f"{c:>10}" for c in r[1:]))
    print(f"window forward {t_window:.3f} s; max |current - former| over entropies: {diff:.2e}")


if __name__ == "__main__":
    main()
