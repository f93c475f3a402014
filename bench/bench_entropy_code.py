"""Benchmark: code lengths of h_q (stored, lzma, entropy-coded) and entropy coder speed.

    .venv/bin/python bench/bench_entropy_code.py [--sizes neox-12k neox-29k ...] [--bits 2 3 4 8]
        [--group-sizes 16 32] [--methods gptq rtn] [--steps 300] [--suite PATH] [--float-embeddings]

Models: the suite's final checkpoints when a suite exists (``--suite``, default
$GENBOUND_DATA_DIR/suite; calibration windows from the tail of its stream.npz), otherwise the
suite's architectures (``families.suite.neox_config``, V = 257, T = 128) trained ``--steps``
AdamW steps on a synthetic low-entropy Markov stream.  Each model is quantized with GPTQ
(GPTQModel) and RTN at every b and group size the architecture allows (embeddings quantized
too, as the pipeline does for tiny models, unless ``--float-embeddings``), then coded three
ways: stored bits (fixed-length code), 8 x lzma of the canonical payload, and the entropy code
(measure/entropy_code.py).  Also times entropy encode and decode, and lzma compress, as MB/s
of stored tensor bytes.  Prints one JSON line, then a table.  Timings live here, never in tests.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import lzma
import os
import platform
import time
from pathlib import Path

import _common as C
import numpy as np
import torch
from transformers import GPTNeoXForCausalLM

from genbound_assets.families.suite import (
    SIZES,
    default_data_dir,
    gptq_compatible,
    neox_config,
)
from genbound_assets.measure.code_size import canonical_payload
from genbound_assets.measure.entropy_code import EntropyTemplate, entropy_code, entropy_decode
from genbound_assets.measure.quantize import quantize_model

VOCAB, CTX, T = 257, 128, 64


def _markov_stream(n: int, seed: int) -> np.ndarray:
    """4 likely successors per token (p = .55/.25/.12/.05) plus 3% uniform noise."""
    rng = np.random.default_rng(seed)
    succ = rng.integers(0, VOCAB, (VOCAB, 4))
    choice = rng.choice(4, size=n, p=[0.55, 0.25, 0.12, 0.08])
    noise = rng.random(n) < 0.03
    rand_tok = rng.integers(0, VOCAB, n)
    out = np.empty(n, dtype=np.int64)
    cur = 0
    for i in range(n):
        cur = int(rand_tok[i]) if noise[i] else int(succ[cur, choice[i]])
        out[i] = cur
    return out


def _suite_models(root: Path, names: list[str] | None):
    """[(name, description, model)] of the suite's final checkpoints, and the stream's tokens
    (None when the suite has no stream.npz)."""
    from genbound_assets.data.stream import load_stream
    from genbound_assets.families.sources import LocalCheckpointSource

    src = LocalCheckpointSource(root)
    avail = src.list_models()
    out = []
    for name in names or avail:
        if name not in avail:
            print(f"# suite at {root} has no model {name!r} (has {avail}); skipped")
            continue
        ref = src.list_checkpoints(name)[-1]
        out.append((name, f"suite {name} step{ref.step}", src.load_model(name, ref.step).eval()))
    stream_path = root / "stream.npz"
    return out, (load_stream(stream_path).tokens if stream_path.exists() else None)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return a.numel() == 0 or torch.equal(a.reshape(-1).view(torch.uint8),
                                         b.reshape(-1).view(torch.uint8))


def _compatible(model, method: str, bits: int, gs: int, emb: bool) -> str | None:
    cfg = model.config
    if method == "gptq":
        problems = gptq_compatible(cfg, gs, bits)
        if problems:
            return problems[0]
    for n in (cfg.hidden_size, cfg.intermediate_size):
        if n % gs:
            return f"group size {gs} does not divide {n}"
    return None


def _time(fn, *a, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*a)
        best = min(best, time.perf_counter() - t0)
    return out, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["neox-12k", "neox-29k", "neox-55k",
                                                   "neox-133k"])
    ap.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4, 8])
    ap.add_argument("--group-sizes", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--methods", nargs="+", default=["gptq", "rtn"])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--calib-windows", type=int, default=64)
    ap.add_argument("--suite", type=Path, default=default_data_dir() / "suite")
    ap.add_argument("--float-embeddings", action="store_true",
                    help="keep embed_in/embed_out in float (default: quantized, as the pipeline)")
    ap.add_argument("--speed-pythia70m", action="store_true",
                    help="also time the coder on a random-init Pythia-70m-shaped model, RTN b=4 "
                         "g=32 (untrained: its bits/param say nothing; speed only)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
    emb = not args.float_embeddings

    use_suite = (args.suite / "data_order.json").exists()
    if use_suite:
        models, tokens = _suite_models(args.suite, args.sizes)
        if tokens is None:
            tokens = _markov_stream(args.calib_windows * T, args.seed + 1)
        source = f"suite at {args.suite}"
    else:
        stream = torch.from_numpy(_markov_stream(60_000, args.seed))
        tokens = stream[40_000:].numpy()
        models = []
        for name in args.sizes:
            cfg = neox_config(SIZES[name], VOCAB, CTX)
            torch.manual_seed(args.seed)
            model = GPTNeoXForCausalLM(cfg).float()
            loss, train_s = _time(C.train_briefly, model, stream[:40_000], T, args.steps, 3e-3, args.seed)
            models.append((name, f"synthetic {name}, {args.steps} steps, loss {loss:.3f}, "
                                 f"{train_s:.1f} s", model))
        source = f"synthetic Markov stream, {args.steps} AdamW steps (no suite at {args.suite})"
    calib = torch.as_tensor(np.asarray(tokens[-args.calib_windows * T:], dtype=np.int64)
                            ).reshape(-1, T)

    rows, skipped = [], []
    for name, _desc, model in models:
        n = sum(p.numel() for p in model.parameters())
        for method in args.methods:
            for gs in args.group_sizes:
                for bits in args.bits:
                    why = _compatible(model, method, bits, gs, emb)
                    if why:
                        skipped.append({"model": name, "method": method, "bits": bits,
                                        "group_size": gs, "reason": why})
                        continue
                    with contextlib.redirect_stdout(io.StringIO()), \
                            contextlib.redirect_stderr(io.StringIO()):
                        q = quantize_model(model, method, bits, gs, calib,
                                           quantize_embeddings=emb, seed=args.seed)
                    template = EntropyTemplate.of(q)
                    code, enc_s = _time(entropy_code, q, repeat=2)
                    dec, dec_s = _time(entropy_decode, code.payload, template, repeat=2)
                    exact = list(dec) == list(q.state) and all(
                        _same_bits(dec[k], q.state[k]) for k in q.state)
                    payload = canonical_payload(q.state, q.metadata)
                    _, lzma_s = _time(lambda p: lzma.compress(p, preset=9 | lzma.PRESET_EXTREME),
                                      payload)
                    mb = sum(t.numel() * t.element_size() for t in q.state.values()) / 1e6
                    rows.append({
                        "model": name, "n_params": n, "method": method, "bits": bits,
                        "group_size": gs, "stored_bits": q.stored_bits,
                        "lzma_bits": q.compressed_bits, "entropy_bits": code.bits,
                        "entropy_header_bits": code.header_bits,
                        "stored_bpp": q.stored_bits / n, "lzma_bpp": q.compressed_bits / n,
                        "entropy_bpp": code.bits / n,
                        "entropy_le_lzma": code.bits <= q.compressed_bits,
                        "round_trip_exact": exact, "state_mb": mb,
                        "encode_mb_s": mb / enc_s, "decode_mb_s": mb / dec_s,
                        "lzma_mb_s": mb / lzma_s,
                        "modes": {m: list(code.modes.values()).count(m)
                                  for m in sorted(set(code.modes.values()))},
                    })
    speed = None
    if args.speed_pythia70m:
        from transformers import GPTNeoXConfig

        cfg = GPTNeoXConfig(vocab_size=50304, hidden_size=512, num_hidden_layers=6,
                            num_attention_heads=8, intermediate_size=2048,
                            max_position_embeddings=2048, rotary_pct=0.25,
                            use_parallel_residual=True, tie_word_embeddings=False)
        torch.manual_seed(args.seed)
        big = GPTNeoXForCausalLM(cfg).float()
        q, quant_s = _time(quantize_model, big, "rtn", 4, 32, None)
        code, enc_s = _time(entropy_code, q)
        dec, dec_s = _time(entropy_decode, code.payload, EntropyTemplate.of(q))
        assert all(_same_bits(dec[k], q.state[k]) for k in q.state)
        payload = canonical_payload(q.state, q.metadata)
        _, lzma_s = _time(lambda p: lzma.compress(p, preset=9 | lzma.PRESET_EXTREME), payload)
        mb = sum(t.numel() * t.element_size() for t in q.state.values()) / 1e6
        speed = {"model": "pythia-70m shape, random init, rtn b=4 g=32, fp32 embeddings",
                 "n_params": q.n_params, "state_mb": mb, "rtn_s": quant_s,
                 "encode_s": enc_s, "decode_s": dec_s, "lzma_s": lzma_s,
                 "encode_mb_s": mb / enc_s, "decode_mb_s": mb / dec_s, "lzma_mb_s": mb / lzma_s,
                 "stored_bpp": q.stored_bits / q.n_params, "lzma_bpp": q.compressed_bits / q.n_params,
                 "entropy_bpp": code.bits / q.n_params}
        del big, q, dec, payload

    from importlib.metadata import version

    import gptqmodel

    print(json.dumps({
        "bench": "entropy_code", "python": platform.python_version(), "torch": torch.__version__,
        "gptqmodel": gptqmodel.__version__, "constriction": version("constriction"),
        "cpu_count": os.cpu_count(), "torch_threads": args.threads, "source": source,
        "models": [d for _, d, _ in models], "quantize_embeddings": emb,
        "calib_tokens": int(calib.numel()), "rows": rows, "skipped": skipped, "speed": speed,
    }))
    print(f"{'model':>10} {'N':>7} {'meth':>4} {'b':>2} {'g':>3} {'stored':>7} {'lzma':>7} "
          f"{'entropy':>7} {'ent/lzma':>8} {'exact':>5} {'enc MB/s':>8} {'dec MB/s':>8} "
          f"{'lzma MB/s':>9}")
    for r in rows:
        print(f"{r['model']:>10} {r['n_params']:>7} {r['method']:>4} {r['bits']:>2} "
              f"{r['group_size']:>3} {r['stored_bpp']:>7.3f} {r['lzma_bpp']:>7.3f} "
              f"{r['entropy_bpp']:>7.3f} {r['entropy_bits'] / r['lzma_bits']:>8.3f} "
              f"{r['round_trip_exact']!s:>5} {r['encode_mb_s']:>8.2f} {r['decode_mb_s']:>8.2f} "
              f"{r['lzma_mb_s']:>9.2f}")
    for s in skipped:
        print(f"# skipped {s['model']} {s['method']} b={s['bits']} g={s['group_size']}: "
              f"{s['reason']}")
    if speed:
        print(f"# speed, {speed['model']}: {speed['state_mb']:.1f} MB of stored tensors; encode "
              f"{speed['encode_mb_s']:.2f} MB/s, decode {speed['decode_mb_s']:.2f} MB/s, lzma "
              f"{speed['lzma_mb_s']:.2f} MB/s; bits/param stored {speed['stored_bpp']:.3f} lzma "
              f"{speed['lzma_bpp']:.3f} entropy {speed['entropy_bpp']:.3f}")
    if rows:
        worst = max(rows, key=lambda r: r["entropy_bits"] / r["lzma_bits"])
        print(f"# bits/param (stored, lzma, entropy); entropy <= lzma in "
              f"{sum(r['entropy_le_lzma'] for r in rows)}/{len(rows)} rows; worst ratio "
              f"{worst['entropy_bits'] / worst['lzma_bits']:.3f} ({worst['model']} "
              f"{worst['method']} b={worst['bits']} g={worst['group_size']})")


if __name__ == "__main__":
    main()
