"""``genbound suite``: train the local Pythia-like GPT-NeoX suite (docs/suite.md).

    genbound suite train [--root DIR] [--corpus brown|synthetic] [--sizes a,b,...] [--quick]

User errors (unknown size, a corpus too small for one-epoch training, an occupied root) print
one line to stderr and exit 1.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import click

SYNTHETIC_VOCAB = 256      # data ids 0..255, separator 256: V = 257 like the byte-level demo
SYNTHETIC_DOC_LEN = 512
STREAM_FILE = "stream.npz"


def _fail(msg: str) -> None:
    click.echo(f"genbound: error: {msg}", err=True)
    sys.exit(1)


def _parse_sizes(sizes: str | None, quick: bool) -> list[str]:
    from genbound_assets.families.suite import DEMO_SIZES, QUICK_SIZES, SIZES

    if sizes:
        if quick:
            raise click.UsageError("--quick and --sizes are exclusive")
        names = [s.strip() for s in sizes.split(",") if s.strip()]
        unknown = [s for s in names if s not in SIZES]
        if unknown or not names:
            raise click.BadParameter(
                f"unknown size(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(SIZES)}",
                param_hint="--sizes")
        return names
    return list(QUICK_SIZES if quick else DEMO_SIZES)


def _synthetic_docs_needed(names: list[str], train) -> int:
    """Documents of SYNTHETIC_DOC_LEN tokens that hold the largest size's run (+1% margin)."""
    from genbound_assets.families.suite import SIZES, count_params, neox_config

    v = SYNTHETIC_VOCAB + 1
    most = max(count_params(neox_config(SIZES[n], v, train.context_length, SYNTHETIC_VOCAB))[0]
               for n in names)
    need = train.train_multiple * train.tokens_per_param * most + 2 * train.tokens_per_step
    return math.ceil(need * 1.01 / SYNTHETIC_DOC_LEN) + 1


def _build_stream(corpus: str, root: Path, names: list[str], train):
    """(stream, source_info) for the chosen corpus; the tokenizer is saved under root."""
    if corpus == "brown":
        from genbound_assets.data.corpus import BrownCorpusSource
        from genbound_assets.data.stream import tokenize_corpus
        from genbound_assets.data.tokenizer import N_BYTES, save_tokenizer, train_bpe

        src = BrownCorpusSource()
        tok = train_bpe(src, N_BYTES + 1)  # the bare byte alphabet + <|endoftext|>: V = 257
        save_tokenizer(tok, root / "tokenizer")
        stream = tokenize_corpus(src, tok)
        info = {"corpus": src.name, "corpus_sha256": src.content_hash(),
                "tokenizer": "byte-level BPE, no merges (genbound_assets.data.tokenizer.train_bpe)",
                "tokenizer_dir": "tokenizer", "vocab_size": tok.get_vocab_size()}
        return stream, info, tok.get_vocab_size()
    from genbound_assets.data.corpus import SyntheticMarkovSource

    src = SyntheticMarkovSource(vocab_size=SYNTHETIC_VOCAB, order=2,
                                n_docs=_synthetic_docs_needed(names, train),
                                doc_len=SYNTHETIC_DOC_LEN, seed=0)
    info = {"corpus": src.name, "corpus_sha256": src.content_hash(),
            "tokenizer": "none (token ids; separator = vocab_size)",
            "vocab_size": src.model_vocab_size}
    return src.stream(), info, src.model_vocab_size


@click.group("suite")
def suite():
    """The local Pythia-like GPT-NeoX model suite."""


@suite.command("train")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Suite folder (default: $GENBOUND_DATA_DIR/suite, data dir default "
                   "~/.local/share/genbound).")
@click.option("--corpus", type=click.Choice(["brown", "synthetic"]), default="brown",
              show_default=True, help="Training corpus: Brown (byte-level, V=257) or synthetic Markov.")
@click.option("--sizes", default=None, metavar="A,B,...",
              help="Comma-separated sizes (default: the 4 demo sizes).")
@click.option("--quick", is_flag=True, help="Train only the two smallest sizes (a smoke test).")
@click.option("--overwrite", is_flag=True, help="Replace existing checkpoints of these sizes.")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Init seed (default 1234).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Sizes trained at once, one process each (default: min(2, CPUs)).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="torch threads per worker.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def train(root, corpus, sizes, quick, overwrite, seed, workers, threads, no_progress):
    """Train the demo suite: every size on the same in-order data, one pass, atomic checkpoints."""
    from genbound_assets.data.stream import load_stream, save_stream
    from genbound_assets.families.suite import (
        DATA_ORDER_NAME,
        InsufficientTokensError,
        TrainConfig,
        default_data_dir,
        plan_suite,
        train_suite,
    )

    t0 = time.perf_counter()
    names = _parse_sizes(sizes, quick)
    workers = workers or max(1, min(2, os.cpu_count() or 1))
    root = (root or default_data_dir() / "suite").expanduser()
    cfg = TrainConfig() if seed is None else TrainConfig(seed=seed)
    occupied = [n for n in names if (root / n).is_dir() and any((root / n).iterdir())]
    if occupied and not overwrite:
        _fail(f"{root} already holds checkpoints of {', '.join(occupied)}; pass --overwrite to retrain")
    try:
        root.mkdir(parents=True, exist_ok=True)
        click.echo(f"suite: building the {corpus} stream ...")
        stream, info, vocab = _build_stream(corpus, root, names, cfg)
        plan = plan_suite(stream, names, cfg, vocab_size=vocab)  # fail before writing anything
        stream_path = root / STREAM_FILE
        if stream_path.exists() and (root / DATA_ORDER_NAME).exists() and not overwrite:
            try:
                same = load_stream(stream_path).content_hash() == plan.stream_sha256
            except ValueError:
                same = False
            if not same:
                _fail(f"{stream_path} holds a different stream; use another --root or --overwrite")
        save_stream(stream, stream_path, metadata=info)
        click.echo(f"suite: {len(stream):,} tokens ({plan.stream_targets:,} targets), V = "
                   f"{plan.vocab_size}, T = {cfg.context_length}, tokens/step = {cfg.tokens_per_step:,}; "
                   f"training {', '.join(m.name for m in plan.models)} into {root}")
        result = train_suite(stream, root, names, cfg, vocab_size=vocab, stream_file=stream_path,
                             source_info=info, overwrite=overwrite, progress=not no_progress,
                             num_threads=threads, workers=workers)
    except InsufficientTokensError as e:
        _fail(str(e))
    except (ValueError, FileExistsError, RuntimeError, OSError) as e:
        _fail(f"{type(e).__name__}: {e}")
    wall = time.perf_counter() - t0
    click.echo("")
    click.echo(f"{'model':<11} {'d':>4} {'L':>2} {'N':>9} {'N non-emb':>10} {'D*':>10} "
               f"{'D*step':>6} {'D@D*':>10} {'steps':>6} {'ckpts':>5} {'loss':>6} {'time s':>7}")
    for m, r in zip(result.plan.models, result.models, strict=True):
        click.echo(f"{m.name:<11} {m.spec.hidden_size:>4} {m.spec.num_layers:>2} {m.n_params:>9,} "
                   f"{m.n_params_non_embedding:>10,} {m.d_star:>10,} {m.d_star_step:>6} "
                   f"{m.d_star_targets:>10,} {m.total_steps:>6} {len(m.checkpoint_steps):>5} "
                   f"{r.final_loss:>6.3f} {r.wall_s:>7.1f}")
    click.echo(f"suite: trained {len(result.models)} sizes in {result.wall_s:.1f} s with "
               f"{workers} worker(s) x {threads} thread(s) "
               f"(wall time incl. corpus/tokenizer: {wall:.1f} s); checkpoints in {root}")
