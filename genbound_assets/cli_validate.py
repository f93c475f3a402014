"""``genbound validate``: every certified bound against the exact quantity it bounds.

On a synthetic source whose next-token law p*(.|past) is known exactly
(``data.corpus.SyntheticMarkovSource``), train small GPT-NeoX models, run the pipeline's own steps
on each checkpoint (no Dagster, no database):

    pipeline.design.evaluation_design -> pipeline.quantize_step.quantize_checkpoint
    -> pipeline.losses_step.evaluate_design -> pipeline.bounds_step.certify_from_losses

and compute, independently of those steps, what Thm 3.4 / Lemma 3.2 bound: the mean over the
checkpoint's D training targets, each with its training-window context (data/order.py: target j of
window c is predicted from the window's inputs 0..j under the block-diagonal document mask), of

    R_sq = E_{x ~ p*(.|past)} [ -log p_sq(x | window context) ],   p_sq = (1 - a) p_q + a / V,

for the smoothed quantized model at the row's a (Azuma rows: its own a; the paper-recipe row:
the reference h_q at its nominal a).  p*(.|past) conditions on the whole document before the
target (the martingale's filtration), the model only on the window; ``SyntheticMarkovSource.
expected_losses`` evaluates the expectation in closed form.  A certified row below R_sq is a
violation; each certified row holds with probability >= 1 - delta, so the count of violations
is compared with delta x (number of certified rows).

Two training regimes, both certified the same way:

* ``one_pass``: the suite trainer (``families.suite.train_suite``: windows in order, one epoch,
  block-diagonal attention) to each size's D* = 20 N checkpoint -- the demo's regime;
* ``memorize``: E passes over a small prefix of windows (multi-epoch on D ~ 2k targets of a
  high-entropy first-order chain), so the model memorizes its sample and the true
  generalization gap is large.  Validity does not need one-epoch training: Lemma 3.2 holds for
  every hypothesis of the prefix code, whatever data chose it.

Negative controls (must be violated somewhere, or the truth test has no power): the headline
certificate recomputed (i) with the complexity divided by 20 and by 100 (exact design: Thm 3.1 at
n = 20 D / 100 D) and (ii) with the code length omitted (L(h) = 0: the trained model treated as if
fixed before the data; both designs, through ``certify_from_losses`` with a zero-bit code).

Exit status: 0 when no certified row lies below its truth, 1 on any violation.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import click
import numpy as np

__all__ = ["Regime", "REGIMES", "SIZES", "CheckpointResult", "ValidationReport", "true_risks",
           "validate_checkpoint", "train_memorizer", "train_one_pass", "run_validation",
           "validate", "CONTROLS"]

IGNORE = -100
# headline controls: name -> divisor of the complexity (exact design: Thm 3.1 at n = k D); "L=0"
# is the certificate with a zero-bit code (both designs)
CONTROLS = ("C/20", "C/100", "L=0")
MUST_FAIL_CONTROL = "L=0"


@dataclass(frozen=True)
class Regime:
    """A synthetic source and a training rule (module docstring)."""

    name: str
    vocab: int                      # data ids 0..vocab-1; separator = vocab; model V = vocab + 1
    order: int                      # Markov order of the source
    sparsity: float                 # support of each state's next-token law, fraction of vocab
    doc_len: tuple[int, int]
    context_length: int             # T
    batch_size: int                 # B windows per step
    epochs: int                     # 1: the suite trainer to D*; > 1: passes over `steps` steps
    steps: int | None = None        # the certified checkpoint (memorize only)
    lr: float = 8e-3

    @property
    def model_vocab(self) -> int:
        return self.vocab + 1


REGIMES: dict[str, Regime] = {
    "one_pass": Regime("one_pass", vocab=31, order=2, sparsity=0.1, doc_len=(10, 60),
                       context_length=32, batch_size=8, epochs=1),
    "memorize": Regime("memorize", vocab=31, order=1, sparsity=1.0, doc_len=(10, 60),
                       context_length=32, batch_size=8, epochs=300, steps=8, lr=1e-2),
}


def _sizes():
    from genbound_assets.families.suite import SizeSpec

    # N at V = 32: 4,336 / 14,816 / 27,520
    return {"tiny": SizeSpec("v-tiny", 16, 1), "small": SizeSpec("v-small", 32, 1),
            "medium": SizeSpec("v-medium", 32, 2)}


SIZES = ("tiny", "small", "medium")


# ------------------------------------------------------------------------------ truth


def _window_mask(segments: np.ndarray | None, T: int):
    """Additive (n, 1, T, T) mask: j attends to i <= j of the same document (written here,
    independently of measure/window_losses.py, from data/order.py's rule)."""
    import torch

    if segments is None:
        return None
    same = segments[:, :, None] == segments[:, None, :]
    causal = np.arange(T)[None, :, None] >= np.arange(T)[None, None, :]
    m = np.where(same & causal, 0.0, np.finfo(np.float32).min).astype(np.float32)
    return torch.from_numpy(m)[:, None]


@dataclass(frozen=True)
class TargetDistributions:
    """The model's full next-token distribution at every target of windows [0, W) (float64)."""

    probs: np.ndarray           # (D, V)
    positions: np.ndarray       # (D,) stream positions of the targets
    tokens: np.ndarray          # (D,) the realized targets


def target_distributions(model, order, n_windows: int, batch_size: int = 64) -> TargetDistributions:
    """Softmax of ``model`` at every target of windows [0, n_windows), in training order."""
    import torch

    T = order.context_length
    probs, pos, toks = [], [], []
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for b0 in range(0, n_windows, batch_size):
                b = order.batch(np.arange(b0, min(n_windows, b0 + batch_size)))
                logits = model(input_ids=torch.from_numpy(b.inputs),
                               attention_mask=_window_mask(b.segments, T), use_cache=False).logits
                p = torch.softmax(logits.double(), dim=-1).numpy()
                r, c = np.nonzero(b.labels != IGNORE)
                probs.append(p[r, c])
                pos.append(b.index[r] * T + c + 1)     # StreamWindows: window c = tokens[cT : (c+1)T + 1]
                toks.append(b.labels[r, c])
    finally:
        model.train(was)
    out = TargetDistributions(np.concatenate(probs), np.concatenate(pos), np.concatenate(toks))
    stream = getattr(order, "stream", None)
    if stream is not None and not np.array_equal(stream.tokens[out.positions], out.tokens):
        raise AssertionError("window labels do not match the stream at their positions")
    return out


def true_risks(dist: TargetDistributions, source, stream, alpha: float) -> tuple[float, float]:
    """(R_sq, R̂_sq) over every target: the exact smoothed risk under p*(.|past) and the
    empirical smoothed loss of the realized tokens, at smoothing weight ``alpha``."""
    V = dist.probs.shape[1]
    q = (1.0 - alpha) * dist.probs + alpha / V
    truth = source.expected_losses(q, stream, dist.positions)
    emp = -np.log(q[np.arange(len(q)), dist.tokens])
    return float(truth.mean()), float(emp.mean())


# ------------------------------------------------------------------------------ training


def _source(regime: Regime, seed: int, n_targets: int):
    from genbound_assets.data.corpus import SyntheticMarkovSource

    mean_len = sum(regime.doc_len) / 2
    n_docs = math.ceil(1.15 * n_targets / mean_len) + 64
    return SyntheticMarkovSource(vocab_size=regime.vocab, order=regime.order, n_docs=n_docs,
                                 doc_len=regime.doc_len, seed=seed, sparsity=regime.sparsity)


def train_one_pass(regime: Regime, specs, seed: int, root: Path):
    """The suite trainer on a fresh synthetic source: [(name, model, step, n_params)], source,
    stream, order (each model at its D* = 20 N checkpoint)."""
    from genbound_assets.data.order import StreamWindows
    from genbound_assets.families import suite as S
    from genbound_assets.families.sources import LocalCheckpointSource

    train = S.TrainConfig(context_length=regime.context_length, batch_size=regime.batch_size,
                          tokens_per_param=20.0, train_multiple=1.0, frontier_multiples=(1.0,),
                          regular_every=1 << 20, warmup_frac=0.05, seed=seed, common_schedule=False)
    specs = [replace(s, lr=regime.lr) for s in specs]
    most = max(S.count_params(S.neox_config(s, regime.model_vocab, regime.context_length,
                                            regime.vocab))[0] for s in specs)
    source = _source(regime, seed, 20 * most + 4 * train.tokens_per_step)
    stream = source.stream()
    res = S.train_suite(stream, root, specs, train, vocab_size=regime.model_vocab,
                        progress=False, num_threads=1, overwrite=True)
    ckpts = LocalCheckpointSource(root)
    models = [(m.name, ckpts.load_model(m.name, m.d_star_step, attn_implementation="sdpa"),
               m.d_star_step, m.n_params) for m in res.models]
    return models, source, stream, StreamWindows(stream, regime.context_length, regime.batch_size)


def train_memorizer(regime: Regime, spec, seed: int, epochs: int | None = None):
    """``epochs`` passes, in order, over the first ``regime.steps`` steps' windows (the trainer's
    rule otherwise: block-diagonal attention, separators ignored): (name, model, step, N),
    source, stream, order."""
    import torch
    from transformers import GPTNeoXForCausalLM

    from genbound_assets.data.order import StreamWindows
    from genbound_assets.families.suite import neox_config

    T, B, steps = regime.context_length, regime.batch_size, int(regime.steps)
    source = _source(regime, seed, steps * B * T + 2 * T)
    stream = source.stream()
    order = StreamWindows(stream, T, B)
    cfg = neox_config(spec, regime.model_vocab, T, regime.vocab)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=regime.lr, weight_decay=0.0)
    batches = []
    for s in range(steps):
        b = order.batch(np.arange(s * B, (s + 1) * B))
        batches.append((torch.from_numpy(b.inputs), _window_mask(b.segments, T),
                        torch.from_numpy(b.labels).reshape(-1)))
    model.train()
    for _ in range(int(epochs or regime.epochs)):
        for ids, mask, labels in batches:
            logits = model(input_ids=ids, attention_mask=mask).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels,
                                                     ignore_index=IGNORE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    n = sum(p.numel() for p in model.parameters())
    return (f"{spec.name}-mem", model, steps, n), source, stream, order


# ------------------------------------------------------------------------------ one checkpoint


@dataclass
class CheckpointResult:
    """One model x design: the pipeline's rows next to their truth."""

    regime: str
    seed: int
    model: str
    design: str
    n_params: int
    n_train_tokens: int
    status: str                                   # "ok" | "no_certificate"
    reason: str | None = None
    alpha: float | None = None
    complexity: float | None = None
    true_risk: float | None = None                # R_sq at the headline's alpha, all D targets
    empirical_risk: float | None = None           # R̂_sq at that alpha, all D targets
    # pipeline mean X_sq - ours (exact design): in [0, 3.5e-6], the pipeline rounds X up
    # (docs/bounds.md, "Rounding of the reduction")
    context_check: float | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    controls: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def generalization_gap(self) -> float | None:
        if self.true_risk is None:
            return None
        return self.true_risk - self.empirical_risk

    @property
    def violations(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["certified"] and r["violated"]]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["generalization_gap"] = self.generalization_gap
        return d


def validation_settings(design: str, *, grid: str = "rtn:4:16,gptq:4:16", delta: float = 0.01,
                        seed: int = 0, **overrides):
    """The certificate settings of a validation run: the micro-sized design (4 calibration
    windows, 64 sampled windows, 256 reference pairs) at the production constants (|K| = 1000,
    delta_split 0.1); ``design`` "exact" (every target) or "windows" (exact_max_targets = 0)."""
    from genbound_assets.pipeline.settings import CertifySettings, parse_quant_grid

    if design not in ("exact", "windows"):
        raise ValueError(f"design must be 'exact' or 'windows', got {design!r}")
    configs = parse_quant_grid(grid)
    ref = next((c for c in configs if c.quantizer == "gptq" and c.bits == 4), configs[-1])
    base = dict(quant_grid=configs, reference_config=ref, delta=delta, n_calibration_windows=4,
                exact_max_targets=10**12 if design == "exact" else 0, n_windows=64,
                n_reference_pairs=256, batch_size=32, sample_seed=int(seed),
                calibration_seed=int(seed) + 1)
    base.update(overrides)
    return CertifySettings(**base)


def validate_checkpoint(model, order, step: int, source, stream, settings, *, name: str,
                        regime: str, seed: int, n_params: int,
                        log: Callable[[str], None] = lambda s: None) -> CheckpointResult:
    """The pipeline's certificate of one checkpoint, each row against its exact truth."""
    from genbound_assets.bounds.freedman import freedman_bound
    from genbound_assets.pipeline.bounds_step import (
        CodeChoice,
        ReferenceAccounting,
        certify_from_losses,
    )
    from genbound_assets.pipeline.design import (
        draw_uniforms,
        evaluation_design,
        sample_uniforms_needed,
    )
    from genbound_assets.pipeline.losses_step import evaluate_design
    from genbound_assets.pipeline.quantize_step import quantize_checkpoint

    t0 = time.perf_counter()
    s = settings
    u = draw_uniforms(sample_uniforms_needed(s.n_windows, s.n_reference_pairs), s.sample_seed)
    design = evaluation_design(order, step, u, n_calibration_windows=s.n_calibration_windows,
                               calibration_seed=s.calibration_seed,
                               exact_max_targets=s.exact_max_targets, n_windows=s.n_windows,
                               n_reference_pairs=s.n_reference_pairs)
    out = CheckpointResult(regime, seed, name, design.kind, int(n_params), design.n_train_tokens, "ok")
    res = quantize_checkpoint(model, order, design.calibration, design.n_train_tokens, design.kind,
                              s, log=log)
    if res.chosen is None:
        out.status, out.reason = "no_certificate", res.failure_reason()
        out.wall_s = time.perf_counter() - t0
        return out
    ch = res.chosen
    q_ref = alpha_ref = None
    if res.reference is not None:
        q_ref, alpha_ref = res.outcome(res.reference.config).q.model, res.reference.alpha
    tl = evaluate_design(model, ch.q.model, ch.alpha, order, design, q_ref=q_ref,
                         alpha_ref=alpha_ref, batch_size=s.batch_size)
    code = CodeChoice(ch.config.quantizer, ch.config.bits, ch.config.group_size, ch.code.method,
                      float(ch.code.bits), ch.choice_nats)
    reference = None if res.reference is None else ReferenceAccounting(
        res.reference.config.quantizer, res.reference.config.bits,
        res.reference.config.group_size, float(res.reference.code.bits))
    rows = certify_from_losses(tl, code, reference, model=name, step=step, n_params=n_params,
                               settings=s)

    # the truth: every target of the trained windows, full distributions of h_q (and ref h_q)
    dist = target_distributions(ch.q.model, order, design.n_trained_windows)
    if len(dist.tokens) != design.n_train_tokens:
        raise AssertionError(f"{len(dist.tokens)} targets in the trained windows, D = {design.n_train_tokens}")
    dist_ref = None
    if q_ref is not None:
        dist_ref = dist if q_ref is ch.q.model else target_distributions(q_ref, order, design.n_trained_windows)
    cache: dict[tuple[bool, float], tuple[float, float]] = {}

    def truth(alpha: float, ref: bool = False) -> tuple[float, float]:
        key = (ref, float(alpha))
        if key not in cache:
            cache[key] = true_risks(dist_ref if ref else dist, source, stream, alpha)
        return cache[key]

    out.alpha, out.complexity = ch.alpha, ch.complexity
    out.true_risk, out.empirical_risk = truth(ch.alpha)
    if design.kind == "exact":
        out.context_check = float(tl["q_sq_loss"].mean()) - out.empirical_risk
    for r in rows:
        tr, emp = truth(r["alpha"], ref=r["method"] == "paper_recipe")
        out.rows.append({
            "method": r["method"], "role": r["role"], "certified": bool(r["certified"]),
            "alpha": r["alpha"], "complexity": r["complexity"], "bound": r["bound"],
            "true_risk": tr, "empirical_risk_all": emp, "slack": r["bound"] - tr,
            "violated": bool(r["bound"] < tr), "row": _jsonable(r)})

    # negative controls on the headline (module docstring)
    head = next(r for r in rows if r["method"] == "headline")
    code_nats = code.code_length_bits * math.log(2.0) + code.choice_nats
    for ctrl in CONTROLS:
        if ctrl == "L=0":
            zero = replace(code, code_length_bits=0.0, choice_nats=0.0)
            bound = next(r for r in certify_from_losses(tl, zero, None, model=name, step=step,
                                                        n_params=n_params, settings=s)
                         if r["method"] == "headline")["bound"]
        elif design.kind == "exact":
            k = int(ctrl.split("/")[1])
            bound = freedman_bound(tl["q_sq_loss"], tl["q_sq_entropy"], head["loss_range"], s.delta,
                                   code_nats, s.grid_size, k * design.n_train_tokens).bound
        else:
            continue
        out.controls.append({"control": ctrl, "bound": bound, "true_risk": out.true_risk,
                             "violated": bool(bound < out.true_risk)})
    out.wall_s = time.perf_counter() - t0
    return out


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, str | int | float | bool | type(None) | dict) else str(v))
            for k, v in row.items()}


# ------------------------------------------------------------------------------ the whole run


@dataclass
class ValidationReport:
    results: list[CheckpointResult]
    delta: float
    wall_s: float = 0.0

    @property
    def certified_rows(self) -> int:
        return sum(1 for r in self.results for row in r.rows if row["certified"])

    @property
    def violations(self) -> list[tuple[CheckpointResult, dict]]:
        return [(r, row) for r in self.results for row in r.violations]

    def control_violations(self, control: str, regime: str | None = None) -> tuple[int, int]:
        """(violated, computed) for one negative control."""
        got = [c for r in self.results if regime in (None, r.regime)
               for c in r.controls if c["control"] == control]
        return sum(c["violated"] for c in got), len(got)

    def binomial_pvalue(self) -> float:
        """P(X >= violations) for X ~ Binomial(certified rows, delta): small means the rows
        fail more often than delta allows (rows of one checkpoint are not independent, so this
        is indicative)."""
        from scipy.stats import binom

        k, n = len(self.violations), self.certified_rows
        return float(binom.sf(k - 1, n, self.delta)) if n else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {"delta": self.delta, "wall_s": self.wall_s, "certified_rows": self.certified_rows,
                "violations": len(self.violations), "binomial_pvalue": self.binomial_pvalue(),
                "controls": {c: dict(zip(("violated", "computed"), self.control_violations(c), strict=True))
                             for c in CONTROLS},
                "results": [r.as_dict() for r in self.results]}


def run_validation(*, seeds: int = 20, suite_sizes: Sequence[str] = ("tiny", "small"),
                   seed_size: str = "tiny", designs: Sequence[str] = ("exact", "windows"),
                   regimes: Sequence[str] = ("one_pass", "memorize"), grid: str = "rtn:4:16,gptq:4:16",
                   delta: float = 0.01, memorize_epochs: int | None = None,
                   echo: Callable[[str], None] = print) -> ValidationReport:
    """The small suite (one_pass, ``suite_sizes``, seed 0) and ``seeds`` seeds at ``seed_size``
    in each regime; every checkpoint under each design."""
    import torch

    sizes = _sizes()
    for nm in (*suite_sizes, seed_size):
        if nm not in sizes:
            raise ValueError(f"unknown size {nm!r}; sizes: {', '.join(sizes)}")
    for rg in regimes:
        if rg not in REGIMES:
            raise ValueError(f"unknown regime {rg!r}; regimes: {', '.join(REGIMES)}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    for d in designs:
        validation_settings(d, grid=grid, delta=delta)          # refuses bad values up front
    from transformers.utils import logging as hf_logging

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()         # checkpoint save/load bars, once per model
    t0 = time.perf_counter()
    results: list[CheckpointResult] = []
    try:
        for seed in range(seeds):
            for rg in regimes:
                regime = REGIMES[rg]
                names = list(suite_sizes) if (seed == 0 and rg == "one_pass") else [seed_size]
                t1 = time.perf_counter()
                with tempfile.TemporaryDirectory(prefix="genbound-validate-") as tmp:
                    if rg == "one_pass":
                        trained, source, stream, order = train_one_pass(
                            regime, [sizes[n] for n in names], seed, Path(tmp))
                    else:
                        trained, source, stream, order = [], None, None, None
                        for n in names:
                            one, source, stream, order = train_memorizer(regime, sizes[n], seed,
                                                                         memorize_epochs)
                            trained.append(one)
                    t_train = time.perf_counter() - t1
                    for name, model, step, n_params in trained:
                        for d in designs:
                            s = validation_settings(d, grid=grid, delta=delta, seed=seed)
                            r = validate_checkpoint(model, order, step, source, stream, s, name=name,
                                                    regime=rg, seed=seed, n_params=n_params)
                            results.append(r)
                            echo(_line(r))
                echo(f"validate: seed {seed} {rg}: trained {len(trained)} model(s) in {t_train:.1f} s, "
                     f"{time.perf_counter() - t1:.1f} s in all")
    finally:
        torch.set_num_threads(threads)
        if bars:
            hf_logging.enable_progress_bar()
    return ValidationReport(results, delta, time.perf_counter() - t0)


def _line(r: CheckpointResult) -> str:
    head = f"validate: {r.regime:8s} seed {r.seed:2d} {r.model:14s} {r.design:7s} N={r.n_params:,} D={r.n_train_tokens:,}"
    if r.status != "ok":
        return f"{head}: no certificate ({r.reason})"
    parts = [f"{row['method']} {row['bound']:.4f} (slack {row['slack']:+.4f}{' VIOLATED' if row['violated'] and row['certified'] else ''})"
             for row in r.rows]
    ctrl = ", ".join(f"{c['control']} {c['bound']:.4f}{' violated' if c['violated'] else ''}" for c in r.controls)
    return (f"{head}: R_sq {r.true_risk:.4f}, R̂_sq {r.empirical_risk:.4f}, gap {r.generalization_gap:+.4f}; "
            + "; ".join(parts) + f" | controls: {ctrl}")


def print_report(rep: ValidationReport, echo: Callable[[str], None] = print) -> None:
    """Per model x design: truth, every bound, slack, gap; then the violation summary."""
    cols = ["regime", "seed", "model", "design", "N", "D", "R_sq", "R̂_sq", "gap", "headline",
            "slack", "decomposed", "azuma", "paper(nc)", "C/20", "L=0"]
    table = []
    for r in rep.results:
        if r.status != "ok":
            table.append([r.regime, str(r.seed), r.model, r.design, f"{r.n_params:,}",
                          f"{r.n_train_tokens:,}", "no certificate"] + [""] * (len(cols) - 7))
            continue
        by = {row["method"]: row for row in r.rows}
        ct = {c["control"]: c for c in r.controls}

        def b(m, by=by):
            row = by.get(m)
            return "-" if row is None else f"{row['bound']:.3f}" + ("!" if row["violated"] and row["certified"] else "")

        def c(k, ct=ct):
            x = ct.get(k)
            return "-" if x is None else f"{x['bound']:.3f}" + ("*" if x["violated"] else "")

        table.append([r.regime, str(r.seed), r.model, r.design, f"{r.n_params:,}", f"{r.n_train_tokens:,}",
                      f"{r.true_risk:.4f}", f"{r.empirical_risk:.4f}", f"{r.generalization_gap:+.4f}",
                      b("headline"), f"{by['headline']['slack']:+.3f}", b("freedman_decomposed"),
                      b("azuma"), b("paper_recipe"), c("C/20"), c("L=0")])
    widths = [max(len(cols[i]), *(len(t[i]) for t in table)) if table else len(cols[i])
              for i in range(len(cols))]
    echo("  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)))
    for t in table:
        echo("  ".join(v.rjust(w) for v, w in zip(t, widths, strict=True)))
    echo("(nats/token; R_sq = exact smoothed risk of h_q at the headline's alpha over all D training "
         "targets; gap = R_sq - R̂_sq; ! = certified bound below its truth; * = control violated; "
         "paper(nc) is not certified)")
    n, k = rep.certified_rows, len(rep.violations)
    echo(f"validate: {k} violation(s) in {n} certified rows (delta = {rep.delta:g} each: "
         f"expected <= {rep.delta * n:.2f}; P(Binomial({n}, delta) >= {k}) = {rep.binomial_pvalue():.3g})")
    for ctrl in CONTROLS:
        v, m = rep.control_violations(ctrl)
        by_regime = ", ".join(f"{rg} {rep.control_violations(ctrl, rg)[0]}/{rep.control_violations(ctrl, rg)[1]}"
                              for rg in REGIMES if rep.control_violations(ctrl, rg)[1])
        echo(f"validate: negative control {ctrl}: violated on {v}/{m} ({by_regime})")
    for r, row in rep.violations:
        echo(f"validate: VIOLATION {r.regime} seed {r.seed} {r.model} {r.design} {row['method']}: "
             f"bound {row['bound']:.5f} < true risk {row['true_risk']:.5f}")


@click.command("validate")
@click.option("--seeds", type=click.IntRange(1), default=20, show_default=True,
              help="Seeds (source data and model init) at --seed-size, in each regime.")
@click.option("--sizes", "suite_sizes", default="tiny,small", show_default=True,
              help=f"The small suite's sizes (seed 0, one_pass); from {', '.join(SIZES)}.")
@click.option("--seed-size", default="tiny", show_default=True, type=click.Choice(SIZES))
@click.option("--designs", default="exact,windows", show_default=True,
              help="exact (every target) and/or windows (sampled windows: exact_max_targets = 0).")
@click.option("--regimes", default="one_pass,memorize", show_default=True,
              help="one_pass (the suite trainer to D*) and/or memorize (multi-epoch on D ~ 2k).")
@click.option("--grid", default="rtn:4:16,gptq:4:16", show_default=True,
              help="The declared quantization grid (quantizer:bits:group_size,...).")
@click.option("--delta", type=float, default=0.01, show_default=True)
@click.option("--memorize-epochs", type=click.IntRange(1), default=None,
              help=f"Epochs of the memorize regime (default {REGIMES['memorize'].epochs}).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write every row, truth and control to this file.")
def validate(seeds, suite_sizes, seed_size, designs, regimes, grid, delta, memorize_epochs, json_path):
    """Check every certified bound against the exact risk it bounds (synthetic source, known p*).

    Exits 1 if any certified bound lies below its true risk."""
    def split(text):
        return [t.strip() for t in text.split(",") if t.strip()]

    try:
        rep = run_validation(seeds=seeds, suite_sizes=split(suite_sizes), seed_size=seed_size,
                             designs=split(designs), regimes=split(regimes), grid=grid, delta=delta,
                             memorize_epochs=memorize_epochs, echo=click.echo)
    except ValueError as e:
        click.echo(f"genbound: error: {e}", err=True)
        sys.exit(2)
    print_report(rep, click.echo)
    if json_path is not None:
        json_path.write_text(json.dumps(rep.as_dict(), indent=1, default=str))
        click.echo(f"validate: wrote {json_path}")
    if rep.violations:
        sys.exit(1)
