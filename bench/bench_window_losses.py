"""Token evaluation by windows vs a bare transformers forward, and vs the old per-pair path.

    .venv/bin/python bench/bench_window_losses.py [--presets demo-133k pythia-shape pythia-70m] [--repeats N]

Side by side in one run, round-robin, same model, same tokens, same batches, 1 torch thread:

* ``window``        measure.window_losses.window_losses(model, order, windows, alphas=(0.1,),
                    entropy=False): what the pipeline runs for h_q (X, X_s, Y_s of every
                    target; float32 reduction, X rounded up, proxies clamped: docs/bounds.md);
* ``window_noalpha`` window_losses(..., entropy=False) without smoothing: what it runs for the
                    float h and the loss curve (X only: log-sum-exp and the target's logit);
* ``bare``          model(input_ids, attention_mask).logits over the same windows, the same
                    batch size and the same block-diagonal masks (built before timing): the floor
                    any evaluator pays;
* ``bare_f32``      bare + a plain float32 log-softmax, target gather and entropy (no rounding
                    rules, fresh temporaries): the obvious reduction, for comparison;
* ``per_pair``      measure.token_losses.token_losses on targets of the same windows, one
                    forward pass per target (the old path), tokens/s = targets/s.

tokens/s counts targets evaluated; "cpu" ratios use the process's CPU time (less sensitive to
other jobs on a shared box than wall time).  The window/bare ratios are paired: the median over
round-robin rounds of (bare time / window time) within a round, whose order rotates
(_common.side_by_side), so drift between rounds cancels.  The process runs with genbound's
allocator setting (genbound_assets/runtime.py), as the pipeline does.  Model FLOPs per window = 2 N' T + 2 n_layer d T^2 (N' = every
parameter but the input embedding: the LM head runs on every position; causal attention) and
the fraction is of the best 1024^3 float32 matmul measured in the same run, same thread count.
Prints one JSON line, then a table.
"""

from __future__ import annotations

import argparse

import _common as C
import numpy as np
import torch

PRESETS = {
    # the demo suite's largest size (suite.neox_config neox-133k: d 64, 2 layers, V 257), T 128,
    # the pipeline's batch of 32 windows
    "demo-133k": dict(kind="the demo suite's largest model", vocab=257, hidden=64, layers=2,
                      heads=4, T=128, batch=32, windows=128, pairs=64, doc=300, repeats=21),
    # Pythia's head (V = 50,304) on a CPU-sized trunk (d 256, 4 layers), T 256
    "pythia-shape": dict(kind="stress shape, no real model", vocab=50304, hidden=256, layers=4,
                         heads=4, T=256, batch=8, windows=8, pairs=16, doc=600, repeats=7),
    # Pythia-70m itself (../shared/reference/pythia.json: d 512, 6 layers, 8 heads,
    # V 50,304, 70.4M parameters), at T 256 instead of 2,048 to fit a CPU run; 11 rounds: its
    # paired ratio moved 0.88-0.96 over 7-round runs on a shared box
    "pythia-70m": dict(kind="a real model's shape", vocab=50304, hidden=512, layers=6, heads=8,
                       T=256, batch=4, windows=4, pairs=4, doc=600, repeats=11),
}


def build(p: dict, seed: int = 0):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = GPTNeoXConfig(vocab_size=p["vocab"], hidden_size=p["hidden"],
                        num_hidden_layers=p["layers"], num_attention_heads=p["heads"],
                        intermediate_size=4 * p["hidden"], max_position_embeddings=p["T"],
                        rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False,
                        use_cache=False, attn_implementation="sdpa")
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(cfg).eval()


def make_order(p: dict, seed: int = 0):
    from genbound_assets.data.order import StreamWindows
    from genbound_assets.data.stream import build_stream

    rng = np.random.default_rng(seed)
    need = (p["windows"] + 2) * p["T"] + 1
    docs, n = [], 0
    sep = p["vocab"] - 1
    while n < need:
        k = int(rng.geometric(1.0 / p["doc"])) + 1
        docs.append(rng.integers(0, min(sep, 50277), size=k))
        n += k + 1
    stream = build_stream(docs, sep)
    return stream, StreamWindows(stream, p["T"], p["batch"])


def run_preset(name: str, repeats: int, peak: float) -> dict:
    from genbound_assets.data.order import IGNORE
    from genbound_assets.measure.token_losses import token_losses
    from genbound_assets.measure.window_losses import attention_mask, window_losses

    p = PRESETS[name]
    model = build(p)
    stream, order = make_order(p)
    windows = np.arange(p["windows"], dtype=np.int64)
    B, T = p["batch"], p["T"]
    batches = []
    for b0 in range(0, len(windows), B):
        wb = order.batch(windows[b0:b0 + B])
        batches.append((torch.from_numpy(wb.inputs), attention_mask(wb.segments, torch.float32),
                        torch.from_numpy(wb.labels)))
    n_targets = int(sum((lab != IGNORE).sum() for _, _, lab in batches))
    # per-pair targets: evenly spread over the same windows' targets
    labels = order.batch(windows).labels
    rows, cols = np.nonzero(labels != IGNORE)
    all_pos = order.target_position(windows[rows], cols)
    pairs = all_pos[np.linspace(0, len(all_pos) - 1, p["pairs"]).astype(np.int64)]

    def bare():
        with torch.inference_mode():
            for ids, mask, _ in batches:
                _ = model(input_ids=ids, attention_mask=mask, use_cache=False).logits

    def bare_f32():
        with torch.inference_mode():
            for ids, mask, lab in batches:
                lg = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                keep = lab.reshape(-1) != IGNORE
                logp = torch.log_softmax(lg.reshape(-1, lg.shape[-1])[keep], -1)
                logp.gather(1, lab.reshape(-1)[keep][:, None])
                (-(logp.exp() * logp).sum(-1))

    def ours():
        return window_losses(model, order, windows, alphas=(0.1,), batch_size=B, entropy=False)

    fns = {
        "window": ours,
        "window_noalpha": lambda: window_losses(model, order, windows, batch_size=B, entropy=False),
        "bare": bare,
        "bare_f32": bare_f32,
        "per_pair": lambda: token_losses(model, stream, pairs, T, alphas=(0.1,), batch_size=B),
    }
    t = C.side_by_side(fns, repeats)
    n_params = sum(q.numel() for q in model.parameters())
    n_embed_in = model.gpt_neox.embed_in.weight.numel()
    flops_window = 2 * (n_params - n_embed_in) * T + 2 * p["layers"] * p["hidden"] * T * T
    flops = flops_window * len(windows)
    out = {"preset": name, **p, "n_params": n_params, "n_targets": n_targets,
           "n_pairs": int(len(pairs)), "model_flops": flops, "seconds": t}
    for k in ("window", "window_noalpha", "bare", "bare_f32"):
        s = t[k]["median"]
        out[f"{k}_tokens_per_s"] = n_targets / s
        out[f"{k}_tokens_per_cpu_s"] = n_targets / t[k]["cpu_median"]
        out[f"{k}_flops_per_s"] = flops / s
        out[f"{k}_peak_fraction"] = flops / s / peak
    out["per_pair_tokens_per_s"] = len(pairs) / t["per_pair"]["median"]
    out["per_pair_tokens_per_cpu_s"] = len(pairs) / t["per_pair"]["cpu_median"]
    for k in ("window", "window_noalpha"):
        out[f"ratio_{k}_vs_bare"] = out[f"{k}_tokens_per_s"] / out["bare_tokens_per_s"]
        out[f"ratio_{k}_vs_bare_cpu"] = out[f"{k}_tokens_per_cpu_s"] / out["bare_tokens_per_cpu_s"]
        # tokens/s ratio = bare time / window time, paired within each round-robin round
        out[f"ratio_{k}_vs_bare_paired"] = C.paired_ratio(t, "bare", k, "all")
        out[f"ratio_{k}_vs_bare_cpu_paired"] = C.paired_ratio(t, "bare", k)
    out["ratio_window_vs_per_pair"] = out["window_tokens_per_s"] / out["per_pair_tokens_per_s"]
    out["ratio_window_vs_per_pair_cpu"] = out["window_tokens_per_cpu_s"] / out["per_pair_tokens_per_cpu_s"]
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["demo-133k", "pythia-shape", "pythia-70m"],
                    choices=sorted(PRESETS))
    ap.add_argument("--repeats", type=int, default=None,
                    help="round-robin rounds per preset (default: the preset's, "
                         + ", ".join(f"{n} {p['repeats']}" for n, p in PRESETS.items()) + ")")
    args = ap.parse_args(argv)
    C.one_thread()
    peak = C.matmul_peak()
    reps = {n: args.repeats or PRESETS[n]["repeats"] for n in args.presets}
    rows = [run_preset(n, reps[n], peak) for n in args.presets]
    peak_after = C.matmul_peak()
    heads = []
    for r in rows:
        pr = f"{r['preset']}: {r['kind']}"
        heads.append(C.headline(f"window_losses (h_q pass) / bare forward, tokens/s ({pr}; "
                                f"wall, cpu; paired medians)",
                                f"{r['ratio_window_vs_bare_paired']:.2f}, "
                                f"{r['ratio_window_vs_bare_cpu_paired']:.2f}",
                                "x", ">= 0.9", r["ratio_window_vs_bare_cpu_paired"] >= 0.9))
        heads.append(C.headline(f"window_losses without smoothing (the float h pass) / bare ({pr})",
                                f"{r['ratio_window_noalpha_vs_bare_paired']:.2f}, "
                                f"{r['ratio_window_noalpha_vs_bare_cpu_paired']:.2f}", "x", ">= 0.9",
                                r["ratio_window_noalpha_vs_bare_cpu_paired"] >= 0.9))
        heads.append(C.headline(f"window_losses, model FLOP/s / matmul peak ({pr}; bare forward)",
                                f"{r['window_peak_fraction']:.3f} ({r['bare_peak_fraction']:.3f})",
                                "fraction"))
        heads.append(C.headline(f"window_losses / per-pair token_losses, tokens/s ({pr}; wall, cpu)",
                                f"{r['ratio_window_vs_per_pair']:.1f}, {r['ratio_window_vs_per_pair_cpu']:.1f}",
                                "x", "> 1 (issue #10)", r["ratio_window_vs_per_pair_cpu"] > 1))
    table = C.fmt_table(
        ["preset", "targets", "window tok/s", "no-alpha tok/s", "bare tok/s",
         "bare+f32 tok/s", "per-pair tok/s", "window/bare (cpu)", "window/per-pair (cpu)",
         "FLOP/s frac (window, bare)"],
        [[r["preset"], r["n_targets"], r["window_tokens_per_s"], r["window_noalpha_tokens_per_s"], r["bare_tokens_per_s"], r["bare_f32_tokens_per_s"],
          r["per_pair_tokens_per_s"],
          f"{r['ratio_window_vs_bare_paired']:.2f} ({r['ratio_window_vs_bare_cpu_paired']:.2f})",
          f"{r['ratio_window_vs_per_pair']:.1f} ({r['ratio_window_vs_per_pair_cpu']:.1f})",
          f"{r['window_peak_fraction']:.2f}, {r['bare_peak_fraction']:.2f}"] for r in rows])
    from genbound_assets.measure import window_losses as wl

    kernels = wl.kernels()
    table.append(f"(matmul peak {peak / 1e9:.1f} GFLOP/s before, {peak_after / 1e9:.1f} after; "
                 f"1 torch thread; medians of {'/'.join(str(reps[n]) for n in args.presets)} "
                 f"round-robin repeats; SIMD {C.simd_level()}: {kernels['exp']} exp, "
                 f"{kernels['proxy_log']})")
    return C.emit({"bench": "window_losses", "repeats": reps, "kernels": kernels,
                   "matmul_peak_flops": peak, "matmul_peak_flops_after": peak_after,
                   "rows": rows, "headline": heads}, table)


if __name__ == "__main__":
    main()
