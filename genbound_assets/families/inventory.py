"""What a family holds now: new complete checkpoints, their integrity, folders not yet complete,
and which checkpoints the automation bounds.  The sensor, the schedule and the demo all call
these (no Dagster, no database: the callers read and write the store).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from genbound_assets.data.order import WindowOrder

from .integrity import IntegrityReport, check_checkpoint
from .sources import CheckpointRef, CheckpointSource

__all__ = ["Found", "ScanResult", "scan_source", "selected_steps", "train_tokens",
           "checkpoint_record", "model_record", "data_max_token_id", "vocab_problem"]


@dataclass(frozen=True)
class Found:
    ref: CheckpointRef
    report: IntegrityReport

    @property
    def ok(self) -> bool:
        return self.report.ok


@dataclass
class ScanResult:
    found: list[Found] = field(default_factory=list)               # new, complete, checked
    incomplete: list[tuple[str, str, str]] = field(default_factory=list)  # (model, folder, reason)
    refused: list[tuple[str, str]] = field(default_factory=list)   # (model, why it cannot be listed)
    more: bool = False                                             # the per-tick budget ran out

    @property
    def intact(self) -> list[Found]:
        return [f for f in self.found if f.ok]

    @property
    def quarantined(self) -> list[Found]:
        return [f for f in self.found if not f.ok]


def scan_source(source: CheckpointSource, known: set[tuple[str, int]],
                fingerprints: Mapping[tuple[str, int], str] | None = None,
                limit: int = 1_000, models: Iterable[str] | None = None,
                time_budget_s: float | None = None) -> ScanResult:
    """New complete checkpoints of ``source`` (not in ``known``), each integrity-checked
    (duplicates against ``fingerprints`` of earlier checkpoints and of this scan), at most
    ``limit`` per call and, with ``time_budget_s``, no new check started once that many seconds
    have passed (hashing a 12B checkpoint takes tens of seconds; a sensor tick that times out
    saves no cursor); oldest steps first.  Also the folders that are not checkpoints yet, and the
    models whose checkpoints cannot be listed at all (``refused``: the source's one-line reason,
    e.g. a run whose token counts contradict each other), so that the caller can say why instead
    of skipping the model silently."""
    import time

    t0 = time.monotonic()
    res = ScanResult()
    prints: dict[tuple[str, int], str] = dict(fingerprints or {})
    for model in (list(models) if models is not None else source.list_models()):
        for folder, reason in source.incomplete(model):
            res.incomplete.append((model, folder, reason))
        try:
            refs = source.list_checkpoints(model)
        except ValueError as e:
            res.refused.append((model, " ".join(str(e).split())))
            continue
        for ref in refs:
            if (ref.model, ref.step) in known:
                continue
            over_time = time_budget_s is not None and time.monotonic() - t0 > time_budget_s
            if len(res.found) >= limit or (over_time and res.found):
                res.more = True
                return res
            rep = check_checkpoint(ref, source, prints)
            if rep.fingerprint:
                prints[(ref.model, ref.step)] = rep.fingerprint
            res.found.append(Found(ref, rep))
    return res


def train_tokens(order: WindowOrder, step: int) -> int:
    """D of the checkpoint at ``step``: the targets of the windows it trained on."""
    return order.n_targets(order.trained_windows(step))


def selected_steps(n_params: int, d_by_step: Mapping[int, int], selection: str,
                   tokens_per_param: float = 20.0, final_step: int | None = None,
                   tolerance: float = 0.05) -> set[int]:
    """The checkpoints the automation quantizes and bounds.

    ``compute_optimal``: the first checkpoint with D >= D* = tokens_per_param · N, and, unless it
    is within ``tolerance`` of D* (then it *is* the compute-optimal checkpoint, Sec. 2.2), the
    last one with D < D* too (the bracket the interpolation of Sec. 4 needs); and the final
    checkpoint of training (when the source knows the final step and it is present).
    ``all``: every checkpoint with D > 0; ``none``: nothing.
    """
    steps = sorted(s for s, d in d_by_step.items() if d > 0)
    if selection == "none" or not steps:
        return set()
    if selection == "all":
        return set(steps)
    if selection != "compute_optimal":
        raise ValueError(f"selection must be compute_optimal, all or none, got {selection!r}")
    d_star = math.ceil(tokens_per_param * n_params)
    above = [s for s in steps if d_by_step[s] >= d_star]
    below = [s for s in steps if d_by_step[s] < d_star]
    out = {final_step} if final_step in d_by_step and d_by_step[final_step] > 0 else set()
    if above:
        out.add(above[0])
    close = bool(above) and (d_by_step[above[0]] - d_star) <= tolerance * d_star
    if below and not close:
        out.add(below[-1])
    return out


def checkpoint_record(family, ref: CheckpointRef, report: IntegrityReport) -> dict:
    """Row of ``checkpoints`` (without the model) for one checked checkpoint of ``family``."""
    return {"step": ref.step, "tokens_seen": ref.tokens_seen,
            "n_train_tokens": train_tokens(family.order, ref.step), "location": ref.location,
            "fingerprint": report.fingerprint, "status": report.status,
            "quarantine_reason": report.reason}


def model_record(family, model: str) -> dict:
    """Row of ``models`` for one model of ``family`` (a registry.Family)."""
    info = family.source.model_info(model)
    return {"model": model, "family": family.name,
            "source_kind": "pythia_hub" if family.spec.kind == "pythia" else "local",
            "location": family.spec.checkpoints, "n_params": info.n_params,
            "n_params_non_embedding": info.n_params_non_embedding, "vocab_size": info.vocab_size,
            "context_length": info.context_length, "tokens_per_step": info.tokens_per_step,
            "config": {"kind": family.spec.kind}}


CHEAP_MAX_ID_TOKENS = 50_000_000   # one pass over at most 400 MB of int64


def data_max_token_id(order: WindowOrder) -> int | None:
    """The largest token id of the training data when the order can tell cheaply: the local
    suite's stream (in memory), a token array of at most CHEAP_MAX_ID_TOKENS (one cached pass;
    a user run's array is checked in full when it is registered); None otherwise (Megatron
    data, e.g. the Pile: its tokenizer is Pythia's by construction)."""
    stream = getattr(order, "stream", None)
    if stream is not None and getattr(stream, "tokens", None) is not None:
        cached = getattr(order, "_genbound_max_id", None)
        if cached is None:
            cached = int(stream.tokens.max()) if len(stream.tokens) else -1
            order._genbound_max_id = cached
        return cached
    fn, tokens = getattr(order, "max_token_id", None), getattr(order, "tokens", None)
    if callable(fn) and tokens is not None and len(tokens) <= CHEAP_MAX_ID_TOKENS:
        return int(fn())
    return None


def vocab_problem(family, ref: CheckpointRef) -> str | None:
    """Why a checkpoint cannot read its family's data, or None: a token id of the data >= the
    vocab_size of the checkpoint's config.json (another tokenizer; the embedding lookup would
    index out of range)."""
    import json
    from pathlib import Path

    top = data_max_token_id(family.order)
    if top is None:
        return None
    folder = family.source.local_dir(ref)
    cfg = Path(folder) / "config.json" if folder is not None else None
    try:
        vocab = int(json.loads(cfg.read_text())["vocab_size"]) if cfg is not None else None
        where = f"{cfg} vocab_size"
    except (OSError, ValueError, KeyError, TypeError):
        vocab = None
    if vocab is None:
        vocab, where = family.source.model_info(ref.model).vocab_size, f"{ref.model}'s vocab_size"
    if top >= vocab:
        return (f"tokenizer/vocabulary mismatch: the training data holds token id {top:,} but "
                f"{where} is {vocab:,} (ids must be < vocab_size)")
    return None
