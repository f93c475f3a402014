"""Benchmark: GPTQ (GPTQModel, CPU) wall time per model width, and end-to-end loss gap GPTQ vs RTN.

    .venv/bin/python bench/bench_gptq.py [--widths 64 128 256] [--bits 3 4] [--steps 300]

For each width a tiny Pythia-shaped GPT-NeoX (2 layers, 4 heads, MLP 4x, vocab 260, untied) is
trained on a synthetic low-entropy Markov stream, then quantized with GPTQ and with RTN (same
b, group 32, asymmetric min-max grid); loss gaps are measured on held-out windows disjoint from
the calibration windows.  Also prints the predicted stored bits/param of Pythia-70m (shapes
only, fp16 unquantized tensors).  Prints one JSON line, then a table.  Timings live here,
never in tests.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import time

import _common as C
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from genbound_assets.measure.code_size import stored_bits
from genbound_assets.measure.quantize import predicted_specs, quantize_model

VOCAB, T = 260, 64


def _markov_stream(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    succ = torch.randint(0, VOCAB, (VOCAB, 4), generator=g)        # 4 likely successors
    probs = torch.tensor([0.55, 0.25, 0.12, 0.05])
    out = torch.empty(n, dtype=torch.long)
    cur = 0
    choice = torch.multinomial(probs, n, replacement=True, generator=g)
    noise = torch.rand(n, generator=g) < 0.03
    rand_tok = torch.randint(0, VOCAB, (n,), generator=g)
    for i in range(n):
        cur = int(rand_tok[i]) if noise[i] else int(succ[cur, choice[i]])
        out[i] = cur
    return out


def _model(width: int, seed: int) -> GPTNeoXForCausalLM:
    cfg = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=width, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=4 * width,
                        max_position_embeddings=128, rotary_pct=0.25,
                        use_parallel_residual=True, tie_word_embeddings=False, use_cache=False)
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(cfg).float()


@torch.no_grad()
def _nll(model, windows) -> float:
    return float(model(input_ids=windows, labels=windows).loss)


def _quiet(fn, *a, **k):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*a, **k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--bits", type=int, nargs="+", default=[3, 4])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--calib-windows", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1 avoids oversubscription on a shared box)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    stream = _markov_stream(60_000, args.seed)
    train, cal, ev = stream[:40_000], stream[40_000:50_000], stream[50_000:]
    calib = cal[: args.calib_windows * T].reshape(-1, T)
    evals = ev[: 64 * T].reshape(-1, T)

    # warm the GPTQModel import so the first width's timing is the quantization alone
    t0 = time.perf_counter()
    _quiet(__import__, "gptqmodel")
    import_s = time.perf_counter() - t0

    rows = []
    for width in args.widths:
        model = _model(width, args.seed)
        t0 = time.perf_counter()
        train_loss = C.train_briefly(model, train, T, args.steps, 2e-3, args.seed)
        train_s = time.perf_counter() - t0
        f = _nll(model, evals)
        n = sum(p.numel() for p in model.parameters())
        for bits in args.bits:
            row = {"width": width, "n_params": n, "bits": bits, "train_loss": train_loss,
                   "train_s": train_s, "float_loss": f}
            for method in ("gptq", "rtn"):
                t0 = time.perf_counter()
                q = _quiet(quantize_model, model, method, bits, 32, calib, seed=args.seed)
                row[f"{method}_s"] = time.perf_counter() - t0
                row[f"{method}_gap"] = _nll(q.model, evals) - f
                row[f"{method}_bits_per_param"] = q.effective_bits_per_param
            qe = _quiet(quantize_model, model, "gptq", bits, 32, calib, quantize_embeddings=True,
                        seed=args.seed)
            row["gptq_emb_gap"] = _nll(qe.model, evals) - f
            row["gptq_emb_bits_per_param"] = qe.effective_bits_per_param
            row["gptq_emb_compressed_bits_per_param"] = qe.compressed_bits_per_param
            rows.append(row)

    pythia = GPTNeoXConfig(vocab_size=50304, hidden_size=512, num_hidden_layers=6,
                           num_attention_heads=8, intermediate_size=2048,
                           max_position_embeddings=2048, rotary_pct=0.25,
                           use_parallel_residual=True, tie_word_embeddings=False)
    with torch.device("meta"):
        pm = GPTNeoXForCausalLM(pythia)
    pn = sum(p.numel() for p in pm.parameters())
    pythia70m = {f"b4_g{gs}_{'qemb' if emb else 'fp16emb'}":
                 stored_bits(predicted_specs(pm, 4, gs, emb, float_dtype=torch.float16)) / pn
                 for gs in (32, 128) for emb in (False, True)}

    import gptqmodel
    print(json.dumps({
        "bench": "gptq", "python": platform.python_version(), "torch": torch.__version__,
        "gptqmodel": gptqmodel.__version__, "cpu_count": os.cpu_count(),
        "torch_threads": args.threads, "gptqmodel_cpu_workers": os.environ.get("GPTQMODEL_CPU_WORKERS"),
        "gptqmodel_import_s": import_s, "group_size": 32, "calib_tokens": int(calib.numel()),
        "eval_tokens": int(evals.numel()), "rows": rows, "pythia70m_bits_per_param": pythia70m,
    }))
    hdr = (f"{'width':>5} {'N':>8} {'b':>2} {'float':>7} {'gptq s':>7} {'rtn s':>6} "
           f"{'gap gptq':>9} {'gap rtn':>8} {'bpp':>6} {'gap gptq+emb':>12} {'bpp+emb':>7}")
    print(hdr)
    for r in rows:
        print(f"{r['width']:>5} {r['n_params']:>8} {r['bits']:>2} {r['float_loss']:>7.4f} "
              f"{r['gptq_s']:>7.2f} {r['rtn_s']:>6.2f} {r['gptq_gap']:>9.4f} {r['rtn_gap']:>8.4f} "
              f"{r['gptq_bits_per_param']:>6.2f} {r['gptq_emb_gap']:>12.4f} "
              f"{r['gptq_emb_bits_per_param']:>7.2f}")
    print("Pythia-70m predicted stored bits/param (4-bit):",
          ", ".join(f"{k}={v:.2f}" for k, v in pythia70m.items()))


if __name__ == "__main__":
    main()
