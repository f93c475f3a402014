"""A local Pythia-like GPT-NeoX suite: several sizes, one data order, atomic checkpoints.

See docs/suite.md.  The rules, exactly:

* **Architecture** (Pythia's choices): ``transformers.GPTNeoXConfig`` with parallel residual,
  rotary on 25% of each head's dims, untied input/output embeddings, LayerNorm, gelu, MLP width
  4·d, no dropout, head dim 16.  Hidden sizes are multiples of 32 so GPTQ with group size 32
  divides every Linear's ``in_features`` (d and 4·d); see :func:`gptq_compatible`.
* **Data order** (identical for every size): the stream is read in order as windows of T+1
  tokens with stride T (``stream.training_chunks``): window c is ``tokens[c·T : (c+1)·T + 1]``.
  Step s (0-based) trains on windows ``c = s·B .. s·B + B - 1``, i.e. it reads
  ``tokens[s·B·T : (s+1)·B·T + 1]`` and its targets are the positions in
  ``(s·B·T, (s+1)·B·T]`` that are not document-opening separators (those are labels -100).
  Attention never crosses a document boundary (block-diagonal causal mask), so every training
  context is a suffix of the bound's context ``tokens[max(doc_start(p), p-T) : p]``.
* **Checkpoint ``step<k>``** holds the weights after k updates: ``tokens_seen = k·B·T`` (the
  Pythia convention, tokens_per_step × step) and it trained on exactly the targets among
  ``tokens[: k·B·T + 1]``, so its ``D = n_targets_seen = stream.n_targets(k·B·T + 1)`` (= 0 for
  step0).  Targets at positions ``>= k·B·T + 1`` are not yet trained on.
* **Compute-optimal point**: ``D* = tokens_per_param · N`` (20·N, N = total parameters incl.
  both embeddings).  The D* checkpoint is the first step whose ``n_targets_seen >= D*`` (the step
  containing D*); a bound at it uses its own D = n_targets_seen (D* <= D < D* + B·T).
* **Length**: each size trains to the first step with ``n_targets_seen >= train_multiple·D*``
  (> 2·D*), all within one pass over the stream; a size whose run needs more tokens than the
  stream holds is refused (:class:`InsufficientTokensError`) before anything is trained.
* **Schedule** (Pythia-like): step0, 1, 2, 4, ... (powers of two below ``regular_every``), every
  ``regular_every`` steps, the steps containing 1·D* and 2·D*, and the final step.
* **Optimizer**: AdamW (β=(0.9, 0.95), weight decay on matrices only), linear warmup then cosine
  decay to ``min_lr_ratio``·lr over the size's own run, grad-norm clip 1.0, seeded init.
* **Atomic writes**: a checkpoint is written into ``<root>/<model>/.tmp-step<k>-*`` (same
  parent), weights via ``save_pretrained(safe_serialization=True)``, then ``checkpoint.json`` (the
  manifest: sha256 and size of every file, config hash, tokens_seen, n_targets_seen) last, then
  ``os.rename`` to ``<root>/<model>/step<k>/``.  A folder without a complete manifest is not a
  checkpoint (``sources.LocalCheckpointSource`` never lists it).

No Dagster, no database here.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from genbound_assets.data.corpus import sha256_file
from genbound_assets.data.stream import TokenStream

__all__ = [
    "SizeSpec",
    "TrainConfig",
    "ModelPlan",
    "SuitePlan",
    "SuiteResult",
    "TrainedModel",
    "InsufficientTokensError",
    "SIZES",
    "DEMO_SIZES",
    "DEMO_GPTQ_GROUP_SIZE",
    "QUICK_SIZES",
    "MANIFEST_NAME",
    "DATA_ORDER_NAME",
    "SUITE_NAME",
    "MANIFEST_FORMAT",
    "neox_config",
    "count_params",
    "config_hash",
    "gptq_compatible",
    "plan_suite",
    "train_suite",
    "checkpoint_steps",
    "lr_at",
    "trained_prefix_len",
    "training_labels",
    "step_token_range",
    "sha256_file",
    "write_checkpoint",
    "write_json_atomic",
    "load_data_order",
    "default_data_dir",
]

MANIFEST_NAME = "checkpoint.json"
DATA_ORDER_NAME = "data_order.json"
SUITE_NAME = "suite.json"
MANIFEST_FORMAT = "genbound.checkpoint/1"
DATA_ORDER_FORMAT = "genbound.data_order/1"
HEAD_DIM = 16

DATA_ORDER_RULE = (
    "windows of T+1 tokens with stride T read in stream order: window c = tokens[c*T : (c+1)*T+1] "
    "(inputs its first T tokens, labels its last T; labels at document-opening separators are "
    "ignored; attention is block-diagonal per document). Step s (0-based) trains on windows "
    "c = s*B .. s*B+B-1, i.e. reads tokens[s*B*T : (s+1)*B*T + 1] and trains on the targets at "
    "positions (s*B*T, (s+1)*B*T]. Checkpoint step k holds the weights after k updates: "
    "tokens_seen = k*B*T, trained prefix tokens[: k*B*T + 1], D = n_targets_seen = "
    "stream.n_targets(k*B*T + 1); targets at positions >= k*B*T + 1 are not yet trained on."
)


class InsufficientTokensError(ValueError):
    """A suite needs more tokens than one pass over the stream holds."""


# --------------------------------------------------------------------------------------------
# Sizes and configs


@dataclass(frozen=True)
class SizeSpec:
    """One suite member's shape: GPT-NeoX with hidden size d, L layers, d/16 heads, MLP 4·d."""

    name: str
    hidden_size: int
    num_layers: int
    lr: float = 8e-3

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"size name must be a non-empty folder name, got {self.name!r}")
        for k in ("hidden_size", "num_layers"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{self.name}: {k} must be a positive integer, got {v!r}")
        if self.hidden_size % HEAD_DIM:
            raise ValueError(f"{self.name}: hidden_size must be a multiple of {HEAD_DIM}, got {self.hidden_size}")
        if not (isinstance(self.lr, float | int) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"{self.name}: lr must be a positive number, got {self.lr!r}")

    @property
    def num_heads(self) -> int:
        return self.hidden_size // HEAD_DIM


# Total parameters at the demo vocabulary V = 257 (byte-level + <|endoftext|>).
SIZES: dict[str, SizeSpec] = {
    s.name: s
    for s in (
        SizeSpec("neox-12k", 16, 1),    # N =  11,536 (GPTQ group size 16)
        SizeSpec("neox-29k", 32, 1),    # N =  29,216
        SizeSpec("neox-42k", 32, 2),    # N =  41,920
        SizeSpec("neox-55k", 32, 3),    # N =  54,624
        SizeSpec("neox-80k", 32, 5),    # N =  80,032
        SizeSpec("neox-133k", 64, 2),   # N = 132,992
        SizeSpec("neox-233k", 64, 4),   # N = 232,832 (needs > 10.2M tokens: synthetic only)
        SizeSpec("neox-273k", 96, 2),   # N = 273,216 (needs > 12.0M tokens: synthetic only)
    )
}
# The demo: 5 sizes, 11.5x in N; the largest fits 2.2·D* into Brown's 5.97M tokens, the
# smallest is d = 16 (so GPTQ uses group size 16 on the demo suite).
DEMO_SIZES: tuple[str, ...] = ("neox-12k", "neox-29k", "neox-55k", "neox-80k", "neox-133k")
DEMO_GPTQ_GROUP_SIZE = 16
QUICK_SIZES: tuple[str, ...] = ("neox-12k", "neox-29k")


def neox_config(spec: SizeSpec, vocab_size: int, context_length: int, separator_id: int = 0):
    """Pythia-style ``GPTNeoXConfig`` for one size."""
    from transformers import GPTNeoXConfig

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
        raise ValueError(f"vocab_size must be an integer >= 2, got {vocab_size!r}")
    if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 1:
        raise ValueError(f"context_length must be a positive integer, got {context_length!r}")
    if not 0 <= separator_id < vocab_size:
        raise ValueError(f"separator_id {separator_id} is outside the vocabulary [0, {vocab_size})")
    cfg = GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        intermediate_size=4 * spec.hidden_size,
        hidden_act="gelu",
        max_position_embeddings=context_length,
        rotary_pct=0.25,
        rotary_emb_base=10000,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        layer_norm_eps=1e-5,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        initializer_range=0.02,
        bos_token_id=separator_id,
        eos_token_id=separator_id,
        use_cache=False,
    )
    cfg.architectures = ["GPTNeoXForCausalLM"]
    return cfg


_ARCH_KEYS = (
    "model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "intermediate_size", "hidden_act", "max_position_embeddings", "use_parallel_residual",
    "tie_word_embeddings", "layer_norm_eps", "attention_bias",
)


def config_hash(config) -> str:
    """sha256 of the architecture-defining fields of a GPT-NeoX config (stable across save/load
    and transformers versions; ignores dtype, attention implementation and bookkeeping)."""
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    canon = {k: d.get(k) for k in _ARCH_KEYS}
    rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
    canon["partial_rotary_factor"] = rope.get("partial_rotary_factor", d.get("rotary_pct"))
    canon["rope_theta"] = rope.get("rope_theta", d.get("rotary_emb_base"))
    blob = json.dumps(canon, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def count_params(config) -> tuple[int, int]:
    """(total, non-embedding) parameter counts, Pythia's convention: non-embedding = total minus
    the input embedding and the (untied) output embedding.  Built on the meta device (no memory)."""
    import torch
    from transformers import GPTNeoXForCausalLM

    with torch.device("meta"):
        model = GPTNeoXForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel() + model.get_output_embeddings().weight.numel()
    return int(total), int(total - emb)


def gptq_compatible(config, group_size: int = 32, bits: int = 4) -> list[str]:
    """Problems GPTQ(Model) would hit on the transformer blocks' Linears at ``bits``:
    ``group_size`` must divide every in_features (d for query_key_value/dense/dense_h_to_4h, 4·d
    for dense_4h_to_h); GPTQModel packs qweight along in_features and qzeros along out_features
    into 32-bit words, so in_/out_features·bits must be a multiple of 32 (3-bit packing works on
    blocks of 32 values: a multiple of 32).  embed_out (V x d) is not checked: V = 257 is odd,
    so quantize.py takes its own path for it.  Returns [] when compatible."""
    d, ff = config.hidden_size, config.intermediate_size
    unit = 32 if bits == 3 else 32 // math.gcd(32, bits)
    problems = []
    for name, out_f, in_f in (("attention.query_key_value", 3 * d, d), ("attention.dense", d, d),
                              ("mlp.dense_h_to_4h", ff, d), ("mlp.dense_4h_to_h", d, ff)):
        if in_f % group_size:
            problems.append(f"{name}: in_features {in_f} is not a multiple of group_size {group_size}")
        for what, n in (("in_features", in_f), ("out_features", out_f)):
            if n % unit:
                problems.append(f"{name}: {what} {n} does not pack {bits}-bit codes into "
                                f"32-bit words (needs a multiple of {unit})")
    return problems


# --------------------------------------------------------------------------------------------
# Training rules


@dataclass(frozen=True)
class TrainConfig:
    context_length: int = 128         # T: window length (targets per window)
    batch_size: int = 32              # B: windows per step; tokens_per_step = B·T
    tokens_per_param: float = 20.0    # D* = tokens_per_param · N
    train_multiple: float = 2.2       # train each size to >= train_multiple · D* targets (> 2)
    regular_every: int = 64           # checkpoint every this many steps (after the log-spaced ones)
    frontier_multiples: tuple[float, ...] = (1.0, 2.0)  # checkpoints at the steps containing k·D*
    warmup_frac: float = 0.01         # linear warmup over this fraction of a size's steps (>= 1 step)
    min_lr_ratio: float = 0.1         # cosine decays to this fraction of the peak lr
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 1234
    vocab_multiple: int = 1           # pad the logit dimension to a multiple of this
    # Pythia's rule: every size trains as long as the longest one (same tokens, same lr schedule
    # length) and saves at the same steps (the union of every size's schedule), so a family's
    # model x step grid holds no phantom checkpoint (docs/dagster.md).  False: each size stops
    # at its own train_multiple * D*.
    common_schedule: bool = True

    def __post_init__(self):
        for k in ("context_length", "batch_size", "regular_every", "vocab_multiple"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"TrainConfig.{k} must be a positive integer, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"TrainConfig.seed must be a non-negative integer, got {self.seed!r}")
        for k in ("tokens_per_param", "weight_decay", "grad_clip", "min_lr_ratio", "warmup_frac"):
            v = getattr(self, k)
            if not (isinstance(v, float | int) and math.isfinite(v) and v >= 0):
                raise ValueError(f"TrainConfig.{k} must be a finite number >= 0, got {v!r}")
        if self.tokens_per_param <= 0:
            raise ValueError(f"TrainConfig.tokens_per_param must be > 0, got {self.tokens_per_param!r}")
        if not (isinstance(self.train_multiple, float | int) and self.train_multiple >= 1):
            raise ValueError(f"TrainConfig.train_multiple must be >= 1, got {self.train_multiple!r}")
        if self.min_lr_ratio > 1 or self.warmup_frac >= 1:
            raise ValueError("TrainConfig.min_lr_ratio must be <= 1 and warmup_frac < 1")
        if any(not (m > 0) for m in self.frontier_multiples):
            raise ValueError(f"TrainConfig.frontier_multiples must be > 0, got {self.frontier_multiples}")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context_length


def trained_prefix_len(step: int, tokens_per_step: int) -> int:
    """Length of the stream prefix whose targets checkpoint ``step`` trained on (0 for step0):
    ``step·B·T + 1``; D = ``stream.n_targets(trained_prefix_len(step, B·T))``."""
    s, bt = int(step), int(tokens_per_step)
    if s < 0 or bt < 1:
        raise ValueError(f"need step >= 0 and tokens_per_step >= 1, got {step}, {tokens_per_step}")
    return s * bt + 1 if s else 0


def step_token_range(step: int, tokens_per_step: int) -> tuple[int, int]:
    """[start, stop) of the tokens update ``step`` (0-based) reads (its windows overlap the next
    step's by one token); its targets are the non-separator positions in (start, stop - 1]."""
    s, bt = int(step), int(tokens_per_step)
    if s < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return s * bt, (s + 1) * bt + 1


def _targets_after_steps(stream: TokenStream, max_steps: int, tokens_per_step: int) -> np.ndarray:
    """n_targets_seen for step = 0..max_steps (vectorized stream.n_targets)."""
    steps = np.arange(max_steps + 1, dtype=np.int64)
    prefix = np.where(steps > 0, steps * tokens_per_step + 1, 0)
    prefix = np.minimum(prefix, len(stream))
    return prefix - np.searchsorted(stream.doc_starts, prefix, side="left")


def checkpoint_steps(total_steps: int, regular_every: int, extra: Iterable[int] = ()) -> list[int]:
    """Pythia-like schedule: 0, powers of two below ``regular_every``, multiples of
    ``regular_every``, the ``extra`` steps, and ``total_steps``; all <= total_steps."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    steps = {0, total_steps}
    p = 1
    while p < regular_every and p <= total_steps:
        steps.add(p)
        p *= 2
    steps.update(range(regular_every, total_steps + 1, regular_every))
    for e in extra:
        if not 0 <= int(e) <= total_steps:
            raise ValueError(f"extra checkpoint step {e} outside [0, {total_steps}]")
        steps.add(int(e))
    return sorted(steps)


def lr_at(update: int, total_steps: int, peak: float, warmup_frac: float, min_lr_ratio: float) -> float:
    """Learning rate of update ``update`` (0-based): linear warmup (first update already > 0, so
    step1 never equals step0), then cosine decay to ``min_lr_ratio·peak`` at the last update."""
    warm = max(1, math.ceil(warmup_frac * total_steps))
    if update < warm:
        return peak * (update + 1) / warm
    span = max(1, total_steps - warm - 1)
    prog = min(1.0, (update - warm) / span)
    lo = peak * min_lr_ratio
    return lo + (peak - lo) * 0.5 * (1.0 + math.cos(math.pi * prog))


# --------------------------------------------------------------------------------------------
# Planning


@dataclass(frozen=True)
class ModelPlan:
    name: str
    spec: SizeSpec
    n_params: int
    n_params_non_embedding: int
    d_star: int                    # ceil(tokens_per_param · N)
    d_star_step: int               # first step with n_targets_seen >= d_star
    d_star_targets: int            # n_targets_seen at d_star_step (the D a bound there uses)
    total_steps: int
    total_targets: int
    tokens_needed: int             # total_steps·B·T + 1 stream tokens read
    checkpoint_steps: tuple[int, ...]
    frontier_steps: dict[str, int] = field(default_factory=dict)  # "1xD*" -> step

    @property
    def config_kwargs(self) -> dict:
        return asdict(self.spec)


@dataclass(frozen=True)
class SuitePlan:
    train: TrainConfig
    vocab_size: int                # padded logit dimension V
    separator_id: int
    stream_tokens: int
    stream_targets: int
    stream_sha256: str
    models: tuple[ModelPlan, ...]

    def config(self, name: str):
        plan = self.model(name)
        return neox_config(plan.spec, self.vocab_size, self.train.context_length, self.separator_id)

    def model(self, name: str) -> ModelPlan:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no model {name!r} in this suite; it has {[m.name for m in self.models]}")


def _resolve_sizes(sizes) -> list[SizeSpec]:
    out: list[SizeSpec] = []
    for s in sizes:
        if isinstance(s, SizeSpec):
            out.append(s)
        elif isinstance(s, str) and s in SIZES:
            out.append(SIZES[s])
        else:
            raise ValueError(f"unknown size {s!r}; known sizes: {', '.join(SIZES)}")
    if not out:
        raise ValueError("sizes is empty")
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate size names in {names}")
    return out


def plan_suite(
    stream: TokenStream,
    sizes: Sequence[SizeSpec | str] = DEMO_SIZES,
    train: TrainConfig | None = None,
    vocab_size: int | None = None,
) -> SuitePlan:
    """Work out N, D*, the D* step, run length and checkpoint schedule of every size; refuse
    (InsufficientTokensError) any size that needs more tokens than one pass over the stream."""
    train = train or TrainConfig()
    specs = _resolve_sizes(sizes)
    if not isinstance(stream, TokenStream):
        raise ValueError(f"stream must be a TokenStream, got {type(stream).__name__}")
    max_id = int(stream.tokens.max())
    v = max_id + 1 if vocab_size is None else vocab_size
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 2:
        raise ValueError(f"vocab_size must be an integer >= 2, got {vocab_size!r}")
    if max_id >= v:
        raise ValueError(f"the stream holds token id {max_id} >= vocab_size {v}")
    v = int(-(-int(v) // train.vocab_multiple) * train.vocab_multiple)
    bt = train.tokens_per_step
    max_steps = (len(stream) - 1) // bt  # full steps one pass over the stream allows
    if max_steps < 1:
        raise InsufficientTokensError(
            f"the stream holds {len(stream):,} tokens, fewer than one step "
            f"(tokens_per_step = B·T = {train.batch_size}·{train.context_length} = {bt:,}, +1)"
        )
    targets = _targets_after_steps(stream, max_steps, bt)
    plans: list[ModelPlan] = []
    problems: list[str] = []
    for spec in specs:
        cfg = neox_config(spec, v, train.context_length, stream.separator_id)
        n, n_ne = count_params(cfg)
        d_star = math.ceil(train.tokens_per_param * n)
        need = math.ceil(max(train.train_multiple, *train.frontier_multiples, 1.0) * d_star)
        total_steps = int(np.searchsorted(targets, need, side="left"))
        if total_steps > max_steps:
            tokens_needed_est = math.ceil(need / max(targets[-1], 1) * (max_steps * bt)) + 1
            problems.append(
                f"{spec.name} (N = {n:,}) needs {train.train_multiple:g}·D* = "
                f"{train.train_multiple:g}·{train.tokens_per_param:g}·N = {need:,} training targets "
                f"(about {tokens_needed_est:,} tokens) but one pass over the stream holds "
                f"{int(targets[-1]):,} targets in {max_steps:,} full steps ({len(stream):,} tokens)"
            )
            continue
        frontier = {}
        for k in train.frontier_multiples:
            frontier[f"{k:g}xD*"] = int(np.searchsorted(targets, math.ceil(k * d_star), side="left"))
        d_step = int(np.searchsorted(targets, d_star, side="left"))
        frontier["1xD*"] = d_step
        steps = checkpoint_steps(total_steps, train.regular_every, frontier.values())
        plans.append(ModelPlan(
            name=spec.name, spec=spec, n_params=n, n_params_non_embedding=n_ne, d_star=d_star,
            d_star_step=d_step, d_star_targets=int(targets[d_step]), total_steps=total_steps,
            total_targets=int(targets[total_steps]), tokens_needed=total_steps * bt + 1,
            checkpoint_steps=tuple(steps), frontier_steps=frontier,
        ))
    if problems:
        raise InsufficientTokensError(
            "not enough tokens for one-epoch training (repeating data would break the bound's "
            "one-epoch regime): " + "; ".join(problems)
            + ". Use a larger corpus or smaller sizes."
        )
    plans.sort(key=lambda p: p.n_params)
    if train.common_schedule and plans:
        plans = _common_schedule(plans, targets, train)
    return SuitePlan(
        train=train, vocab_size=v, separator_id=int(stream.separator_id),
        stream_tokens=len(stream), stream_targets=int(stream.n_targets()),
        stream_sha256=stream.content_hash(), models=tuple(plans),
    )


def _common_schedule(plans: list[ModelPlan], targets: np.ndarray, train: TrainConfig) -> list[ModelPlan]:
    """Every size trains to the longest size's length and saves at the union of the schedules."""
    total = max(p.total_steps for p in plans)
    extra = {st for p in plans for st in p.frontier_steps.values()}
    steps = tuple(checkpoint_steps(total, train.regular_every, extra))
    return [replace(p, total_steps=total, total_targets=int(targets[total]),
                    tokens_needed=total * train.tokens_per_step + 1, checkpoint_steps=steps)
            for p in plans]


# --------------------------------------------------------------------------------------------
# Files


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path, obj) -> None:
    """Write json to ``path`` via a temp file in the same folder + fsync + os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _save_quietly(model, folder: Path) -> None:
    """save_pretrained(safetensors) without transformers' per-shard progress bar."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(str(folder), safe_serialization=True)
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def write_checkpoint(root, model_name: str, step: int, model, manifest: Mapping) -> Path:
    """Atomically write ``<root>/<model_name>/step<step>/``: weights (save_pretrained,
    safetensors) into a temp dir beside it, then checkpoint.json (with every file's sha256 and
    size, and ``manifest``'s fields) last, then rename.  Refuses to replace an existing step."""
    parent = Path(root) / model_name
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / f"step{int(step)}"
    if final.exists():
        raise FileExistsError(f"checkpoint {final} already exists")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step{int(step)}-", dir=parent))
    try:
        _save_quietly(model, tmp)
        files = {}
        for f in sorted(tmp.iterdir()):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
                files[f.name] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
        if not any(n.endswith(".safetensors") for n in files):
            raise RuntimeError(f"save_pretrained wrote no .safetensors file into {tmp}")
        body = dict(manifest)
        body.update(format=MANIFEST_FORMAT, model=model_name, step=int(step),
                    config_hash=config_hash(model.config), files=files)
        write_json_atomic(tmp / MANIFEST_NAME, body)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(parent)
    return final


def load_data_order(root) -> dict:
    """The suite's data_order.json (raises naming the path if absent or unreadable)."""
    p = Path(root) / DATA_ORDER_NAME
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise ValueError(f"no {DATA_ORDER_NAME} in {root}: not a trained suite root") from None
    except ValueError as e:
        raise ValueError(f"{p} is not valid json: {e}") from e


def default_data_dir() -> Path:
    """$GENBOUND_DATA_DIR, else ~/.local/share/genbound."""
    env = os.environ.get("GENBOUND_DATA_DIR", "").strip()
    return Path(env).expanduser().resolve() if env else Path.home() / ".local" / "share" / "genbound"


# --------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class TrainedModel:
    name: str
    n_params: int
    d_star: int
    d_star_step: int
    d_star_targets: int
    total_steps: int
    checkpoint_steps: tuple[int, ...]
    final_loss: float
    wall_s: float


@dataclass(frozen=True)
class SuiteResult:
    root: Path
    plan: SuitePlan
    models: tuple[TrainedModel, ...]
    wall_s: float


def _data_order_doc(plan: SuitePlan, stream_file: Path | None, stream_file_sha256: str | None,
                    extra: Mapping | None) -> dict:
    t = plan.train
    return {
        "format": DATA_ORDER_FORMAT,
        "stream_file": str(stream_file) if stream_file is not None else None,
        "stream_file_sha256": stream_file_sha256,
        "stream_sha256": plan.stream_sha256,
        "stream_tokens": plan.stream_tokens,
        "stream_targets": plan.stream_targets,
        "separator_id": plan.separator_id,
        "vocab_size": plan.vocab_size,
        "context_length": t.context_length,
        "batch_size": t.batch_size,
        "tokens_per_step": t.tokens_per_step,
        "rule": DATA_ORDER_RULE,
        "one_epoch": True,
        "max_tokens_read": max(m.tokens_needed for m in plan.models),
        "train": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(t).items()},
        "models": {
            m.name: {
                "hidden_size": m.spec.hidden_size, "num_layers": m.spec.num_layers,
                "lr": m.spec.lr, "n_params": m.n_params,
                "n_params_non_embedding": m.n_params_non_embedding, "d_star": m.d_star,
                "d_star_step": m.d_star_step, "d_star_targets": m.d_star_targets,
                "total_steps": m.total_steps, "total_targets": m.total_targets,
                "tokens_read": m.tokens_needed, "checkpoint_steps": list(m.checkpoint_steps),
                "frontier_steps": m.frontier_steps,
            }
            for m in plan.models
        },
        **({"source": dict(extra)} if extra else {}),
    }


def training_labels(tokens: np.ndarray, doc_starts: np.ndarray) -> np.ndarray:
    """Labels of the stream positions: the token itself, -100 (ignored) at document-opening
    separators, which are context only and never targets."""
    labels = np.array(tokens, dtype=np.int64, copy=True)
    labels[np.asarray(doc_starts, dtype=np.int64)] = -100
    return labels


def _step_batch(stream_tokens, labels_all, doc_starts, step: int, B: int, T: int):
    """Inputs (B, T), labels (B, T), and an additive block-diagonal mask (or None)."""
    import torch

    base = step * B * T
    idx = base + np.arange(B)[:, None] * T + np.arange(T + 1)[None, :]
    window = stream_tokens[idx]
    lab = labels_all[idx][:, 1:]
    inputs = window[:, :-1]
    seg = np.searchsorted(doc_starts, idx[:, :-1], side="right")
    if np.all(seg == seg[:, :1]):
        mask = None
    else:
        allowed = (seg[:, :, None] == seg[:, None, :]) & np.tril(np.ones((T, T), dtype=bool))[None]
        m = np.zeros(allowed.shape, dtype=np.float32)
        m[~allowed] = np.finfo(np.float32).min
        mask = torch.from_numpy(m)[:, None]
    return torch.from_numpy(inputs), torch.from_numpy(lab), mask


def _train_one(plan: SuitePlan, name: str, tokens: np.ndarray, doc_starts: np.ndarray,
               root: str, order_sha: str, progress: bool, position: int,
               num_threads: int | None) -> TrainedModel:
    """Train one size and write its checkpoints (runs in the caller or in a worker process)."""
    import torch
    from tqdm.auto import tqdm
    from transformers import GPTNeoXForCausalLM

    t0 = time.perf_counter()
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    try:
        train = plan.train
        m = plan.model(name)
        B, T = train.batch_size, train.context_length
        labels_np = training_labels(tokens, doc_starts)
        prefix = np.where(np.arange(m.total_steps + 1) > 0, np.arange(m.total_steps + 1) * B * T + 1, 0)
        targets = prefix - np.searchsorted(doc_starts, prefix, side="left")
        cfg = plan.config(name)
        cfg._attn_implementation = "sdpa"
        torch.manual_seed(train.seed)
        model = GPTNeoXForCausalLM(cfg)
        model.train()
        decay = [p for p in model.parameters() if p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.ndim < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": train.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=m.spec.lr, betas=train.betas, eps=1e-8,
        )
        ckpts = set(m.checkpoint_steps)
        frontier_of: dict[int, list[str]] = {}
        for label, st in m.frontier_steps.items():
            frontier_of.setdefault(st, []).append(label)
        losses: list[float] = []

        def save(step: int, lr: float) -> None:
            write_checkpoint(root, name, step, model, {
                "tokens_seen": step * B * T,
                "n_targets_seen": int(targets[step]),
                "trained_prefix_len": trained_prefix_len(step, B * T),
                "tokens_per_step": B * T,
                "context_length": T,
                "batch_size": B,
                "n_params": m.n_params,
                "n_params_non_embedding": m.n_params_non_embedding,
                "d_star": m.d_star,
                "is_d_star": step == m.d_star_step,
                "frontier": sorted(frontier_of.get(step, [])),
                "total_steps": m.total_steps,
                "lr_last_update": lr,
                "train_loss": (sum(losses) / len(losses)) if losses else None,
                "data_order_sha256": order_sha,
                "stream_sha256": plan.stream_sha256,
                "seed": train.seed,
            })
            losses.clear()

        bar = tqdm(total=m.total_steps, desc=f"{name} (N={m.n_params:,})", unit="step",
                   disable=not progress, leave=True, dynamic_ncols=True, position=position)
        lr, last_loss = 0.0, float("nan")
        for step in range(m.total_steps):
            if step in ckpts:
                save(step, lr)
            lr = lr_at(step, m.total_steps, m.spec.lr, train.warmup_frac, train.min_lr_ratio)
            for g in opt.param_groups:
                g["lr"] = lr
            inputs, labels, mask = _step_batch(tokens, labels_np, doc_starts, step, B, T)
            logits = model(input_ids=inputs, attention_mask=mask).logits
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
            opt.step()
            last_loss = float(loss.detach())
            if not math.isfinite(last_loss):
                raise FloatingPointError(f"{name}: non-finite training loss at step {step}")
            losses.append(last_loss)
            bar.update(1)
            if step % 16 == 0:
                bar.set_postfix(loss=f"{last_loss:.3f}", lr=f"{lr:.2e}")
        save(m.total_steps, lr)
        bar.close()
        return TrainedModel(
            name=name, n_params=m.n_params, d_star=m.d_star, d_star_step=m.d_star_step,
            d_star_targets=m.d_star_targets, total_steps=m.total_steps,
            checkpoint_steps=m.checkpoint_steps, final_loss=last_loss,
            wall_s=time.perf_counter() - t0,
        )
    finally:
        if num_threads is not None:
            torch.set_num_threads(old_threads)


def train_suite(
    stream: TokenStream,
    root,
    sizes: Sequence[SizeSpec | str] = DEMO_SIZES,
    train: TrainConfig | None = None,
    vocab_size: int | None = None,
    stream_file=None,
    source_info: Mapping | None = None,
    overwrite: bool = False,
    progress: bool = True,
    num_threads: int | None = 1,
    workers: int = 1,
    on_model_done: Callable[[TrainedModel], None] | None = None,
) -> SuiteResult:
    """Train every size on the same in-order data and write atomic checkpoints under ``root``.

    ``stream_file``: where the stream is saved (recorded in data_order.json with its sha256).
    ``source_info``: json-able description of corpus/tokenizer, recorded as-is.
    ``overwrite``: replace existing model folders (else an existing one is an error).
    ``num_threads``: torch threads per model (1: on a shared 2-core machine, 2 OpenMP threads
    spin-wait and run several times slower than 1).  ``workers``: sizes trained at once, each in
    its own (spawned) process, largest first; results are identical to ``workers=1``.
    """
    t_start = time.perf_counter()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int)
                                    or num_threads < 1):
        raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}")
    plan = plan_suite(stream, sizes, train, vocab_size)
    train = plan.train
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    order_path = root / DATA_ORDER_NAME
    old = load_data_order(root) if order_path.exists() else None
    same_order = old is not None and all(
        old.get(k) == v for k, v in (("stream_sha256", plan.stream_sha256),
                                     ("tokens_per_step", train.tokens_per_step),
                                     ("context_length", train.context_length)))
    if old is not None and not same_order and not overwrite:
        raise FileExistsError(
            f"{order_path} records a different stream/data order (stream "
            f"{old.get('stream_sha256')}); use another root or overwrite=True")
    for m in plan.models:
        d = root / m.name
        if d.exists() and any(d.iterdir()):
            if not overwrite:
                raise FileExistsError(
                    f"{d} already holds checkpoints; pass overwrite=True (--overwrite) to retrain it")
            shutil.rmtree(d)
    if old is not None and not same_order:  # a new suite: the old one's models are stale
        for name in old.get("models", {}):
            if isinstance(name, str) and name and "/" not in name and not name.startswith("."):
                shutil.rmtree(root / name, ignore_errors=True)
    file_sha = None
    if stream_file is not None:
        stream_file = Path(stream_file)
        if not stream_file.is_file():
            raise ValueError(f"stream_file {stream_file} does not exist")
        file_sha = sha256_file(stream_file)
        try:
            stream_file = stream_file.resolve().relative_to(root.resolve())
        except ValueError:
            stream_file = stream_file.resolve()
    order = _data_order_doc(plan, stream_file, file_sha, source_info)
    if same_order:  # sizes trained earlier on the same data order stay recorded
        order["models"] = {**old.get("models", {}), **order["models"]}
    write_json_atomic(order_path, order)
    order_sha = sha256_file(order_path)

    # largest first: with several workers the longest run starts at once (LPT scheduling)
    jobs = sorted(plan.models, key=lambda m: m.total_steps * m.n_params, reverse=True)
    args = {m.name: (plan, m.name, stream.tokens, stream.doc_starts, str(root), order_sha,
                     progress, i, num_threads) for i, m in enumerate(plan.models)}
    done: dict[str, TrainedModel] = {}
    if workers == 1 or len(jobs) == 1:
        for m in plan.models:
            done[m.name] = _train_one(*args[m.name])
            if on_model_done is not None:
                on_model_done(done[m.name])
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)),
                                 mp_context=mp.get_context("spawn")) as pool:
            futs = {pool.submit(_train_one, *args[m.name]): m.name for m in jobs}
            for f in as_completed(futs):
                done[futs[f]] = f.result()
                if on_model_done is not None:
                    on_model_done(done[futs[f]])
    results = [done[m.name] for m in plan.models]
    wall = time.perf_counter() - t_start
    suite_doc = {
        "data_order_sha256": order_sha,
        "wall_s": wall,
        "workers": workers,
        "num_threads": num_threads,
        "models": {r.name: asdict(r) for r in results},
    }
    suite_path = root / SUITE_NAME
    if suite_path.exists() and same_order:
        try:
            prev = json.loads(suite_path.read_text()).get("models", {})
        except ValueError:
            prev = {}
        prev.update(suite_doc["models"])
        suite_doc["models"] = prev
    write_json_atomic(suite_path, suite_doc)
    return SuiteResult(root=root, plan=plan, models=tuple(results), wall_s=wall)
