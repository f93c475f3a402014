"""Step (a): calibration windows -> every configuration of the declared grid quantized -> code
lengths -> the priced choice (docs/pipeline.md).

Nothing here looks at the bound's data.  Everything is decided on the calibration windows:

* each configuration c of the grid (declared before data) is quantized on them (GPTQ
  calibration) and gets its code lengths (stored, lzma, and the entropy code when available);
  its code L_c is the shortest of those, chosen after seeing h_q: log(#codes) nats;
* choosing c among the grid after seeing the calibration losses costs log|grid| nats (weighted
  union bound, bounds/choices.py; the union covers *any* selection rule);
* with both prices in the code, C_c = (L_c ln 2 + log|grid| + log #codes + log(|K|/δ_m)) / D and
  α_c = α*(C_c, V) (eq. 20), so the bound's smoothing weight is fixed before the sample;
* the selection rule: the predicted headline bound on the calibration windows (Thm 3.1 with the
  tight range on the calibration targets, n = D); the status rule (review item: a status decided
  on the bound's own sample is a choice): the quantization gap on the calibration windows
  against ``max_gap_nats``.
* the reference configuration (the paper's recipe, b = 4) is quantized too, with the nominal b·N
  accounting and its own α (not certified: b·N is not a code length here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from genbound_assets.bounds.choices import choice_cost_nats
from genbound_assets.bounds.code_length import (
    CodeLength,
    compressed_code_length,
    nominal_code_length,
    stored_code_length,
)
from genbound_assets.bounds.freedman import freedman_bound, freedman_complexity
from genbound_assets.bounds.loss_range import tight_loss_range
from genbound_assets.bounds.smoothing import smoothing_alpha
from genbound_assets.data.order import WindowOrder
from genbound_assets.measure.quantize import QuantizationFailed, QuantizedModel, quantize_model
from genbound_assets.measure.window_losses import window_losses

from .settings import CertifySettings, QuantConfig

__all__ = ["ConfigOutcome", "QuantizeResult", "quantize_checkpoint", "code_lengths_of",
           "statement_delta", "complexity_nats"]


def statement_delta(settings: CertifySettings, design_kind: str) -> float:
    """δ of the martingale statement: all of δ when every target is evaluated, else the split."""
    return settings.delta if design_kind == "exact" else settings.delta * settings.delta_split


def complexity_nats(code_bits: float, choice_nats: float) -> float:
    """L(h) in nats with the prices of the choices made after seeing data."""
    return code_bits * math.log(2.0) + choice_nats


def code_lengths_of(q: QuantizedModel) -> dict[str, CodeLength]:
    """Every code length we can certify for h_q (shortest wins, log(#codes) paid)."""
    out = {"stored": stored_code_length(q.code_length_rows()),
           "compressed": compressed_code_length(math.ceil(q.compressed_bits / 8))}
    try:   # the entropy coder (measure/entropy_code.py) when it is installed
        from genbound_assets.bounds.code_length import entropy_code_length
        from genbound_assets.measure.entropy_code import entropy_code
    except ImportError:
        return out
    out["entropy"] = entropy_code_length(entropy_code(q).bits)
    return out


@dataclass
class ConfigOutcome:
    """One configuration (of the grid, or the paper-recipe reference) on one checkpoint."""

    config: QuantConfig
    in_grid: bool
    is_reference: bool
    status: str = "ok"                          # "ok" | "failed"
    failure_reason: str | None = None
    q: QuantizedModel | None = None
    codes: dict[str, CodeLength] = field(default_factory=dict)
    code: CodeLength | None = None              # the certified code the bound uses (grid only)
    choice_nats: float = 0.0                    # log|grid| + log #codes
    complexity: float | None = None             # C with every price paid
    alpha: float | None = None
    calibration_float_loss: float | None = None
    calibration_loss: float | None = None       # unsmoothed h_q on the calibration targets
    predicted_bound: float | None = None        # the selection score
    wall_s: float = 0.0

    @property
    def gap(self) -> float | None:
        if self.calibration_loss is None or self.calibration_float_loss is None:
            return None
        return self.calibration_loss - self.calibration_float_loss

    def fail(self, reason: str) -> None:
        self.status, self.failure_reason = "failed", reason

    def row(self, model: str, step: int, settings: CertifySettings, chosen: bool,
            n_calibration: int, artifact_path: str | None, reference_alpha: float | None = None
            ) -> dict[str, Any]:
        """Row of ``quantized_models``."""
        q, codes = self.q, self.codes
        return {
            "model": model, "step": int(step), "quantizer": self.config.quantizer,
            "bits": self.config.bits, "group_size": self.config.group_size,
            "quantize_embeddings": (settings.quantize_embeddings if q is None
                                    else bool(q.quantize_embeddings)),   # as applied
            "calibration_sample": f"calibration-windows:seed={settings.calibration_seed}:n={n_calibration}",
            "n_params": None if q is None else int(q.n_params),
            "nominal_bits": None if q is None else int(q.nominal_bits),
            "stored_bits": None if q is None else int(q.stored_bits),
            "compressed_bits": None if q is None else int(q.compressed_bits),
            "entropy_bits": int(codes["entropy"].bits) if "entropy" in codes else None,
            "code_length_method": None if self.code is None else self.code.method,
            "code_length_bits": None if self.code is None else float(self.code.bits),
            "bits_per_param": None if q is None else q.effective_bits_per_param,
            "status": self.status, "failure_reason": self.failure_reason,
            "quantization_gap": self.gap, "in_grid": self.in_grid,
            "is_reference": self.is_reference, "chosen": chosen,
            "choice_nats": self.choice_nats if self.in_grid else None, "alpha": self.alpha,
            "complexity": self.complexity, "predicted_bound": self.predicted_bound,
            "reference_alpha": reference_alpha if self.is_reference else None,
            "wall_s": self.wall_s, "artifact_path": artifact_path,
        }


@dataclass(frozen=True)
class Reference:
    """The paper's recipe at the reference configuration: nominal b·N bits (not a code length
    here), its C and α.  None of it is certified."""

    config: QuantConfig
    code: CodeLength
    complexity: float
    alpha: float


@dataclass
class QuantizeResult:
    outcomes: list[ConfigOutcome]
    chosen: ConfigOutcome | None
    reference: Reference | None
    calibration: np.ndarray
    n_train_tokens: int
    design_kind: str
    grid_nats: float

    @property
    def status(self) -> str:
        return "ok" if self.chosen is not None else "failed"

    def failure_reason(self) -> str | None:
        if self.chosen is not None:
            return None
        return "; ".join(f"{o.config}: {o.failure_reason}" for o in self.outcomes if o.in_grid)

    def outcome(self, config: QuantConfig) -> ConfigOutcome:
        return next(o for o in self.outcomes if o.config == config)


def packing_problems(model: torch.nn.Module, cfg: QuantConfig) -> list[str]:
    """Shapes GPTQModel cannot pack at this configuration (GPT-NeoX blocks), before trying."""
    if cfg.quantizer != "gptq" or getattr(model.config, "model_type", "") != "gpt_neox":
        return []
    from genbound_assets.families.suite import gptq_compatible

    gs = cfg.group_size if cfg.group_size != -1 else model.config.hidden_size
    return gptq_compatible(model.config, gs, cfg.bits)


def tied_embeddings(model: torch.nn.Module) -> bool:
    """True when one matrix serves as input and output embedding (GPT-2, tied Llama)."""
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    return out is not None and getattr(out, "weight", None) is inp.weight


def _calibration_inputs(order: WindowOrder, windows: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(order.batch(windows).inputs)


def quantize_checkpoint(model: torch.nn.Module, order: WindowOrder, calibration: np.ndarray,
                        n_train_tokens: int, design_kind: str, settings: CertifySettings,
                        *, log=print, work_dirs: dict[QuantConfig, Any] | None = None) -> QuantizeResult:
    """Quantize ``model`` at every configuration and make the priced choice (module docstring).

    ``work_dirs``: where each configuration's hq.safetensors is written (the artifact)."""
    s = settings
    vocab = int(model.config.vocab_size)
    n_params = sum(p.numel() for p in model.parameters())
    d = int(n_train_tokens)
    delta_m = statement_delta(s, design_kind)
    grid_nats = choice_cost_nats(len(s.quant_grid))
    calib_ids = _calibration_inputs(order, calibration)
    # quantize_embeddings covers untied embed_in / embed_out (measure/quantize.py); a tied matrix
    # stays at 16 bits and is stored once in the code length.  Decided by the architecture alone
    # (no data), so it costs nothing; the quantized_models row records what was applied.
    quant_emb = s.quantize_embeddings and not tied_embeddings(model)
    if s.quantize_embeddings and not quant_emb:
        log("  tied input/output embedding: kept at 16 bits (quantize_embeddings applies to "
            "untied embeddings)")
    float_cal = float(window_losses(model, order, calibration, batch_size=s.batch_size,
                                    entropy=False).loss.mean())
    outcomes: list[ConfigOutcome] = []
    reference = None
    for cfg in s.configs:
        out = ConfigOutcome(cfg, cfg in s.quant_grid, cfg == s.reference_config,
                            calibration_float_loss=float_cal)
        outcomes.append(out)
        problems = packing_problems(model, cfg)
        if problems:
            out.fail(f"cannot pack {cfg}: {problems[0]}")
            log(f"  {cfg}: skipped: {out.failure_reason}")
            continue
        try:
            q = quantize_model(model, cfg.quantizer, cfg.bits, cfg.group_size, calib_ids,
                               quantize_embeddings=quant_emb, seed=s.calibration_seed,
                               device=s.device,
                               work_dir=None if work_dirs is None else work_dirs[cfg])
        except (QuantizationFailed, ValueError, RuntimeError, IndexError) as e:
            # IndexError: GPTQModel 7.6's packer on shapes it cannot pack (3-bit, d % 32 != 0)
            out.fail(f"{type(e).__name__}: {e}".splitlines()[0])
            log(f"  {cfg}: quantization failed: {out.failure_reason}")
            continue
        p0 = next(model.parameters())
        q.model.to(device=p0.device, dtype=p0.dtype)   # h_q evaluated where h is
        out.q, out.wall_s = q, q.wall_s
        alphas = []
        if out.in_grid:
            out.codes = code_lengths_of(q)
            out.code = min(out.codes.values(), key=lambda c: c.bits)
            out.choice_nats = grid_nats + choice_cost_nats(len(out.codes))
            nats = complexity_nats(out.code.bits, out.choice_nats)
            out.complexity = freedman_complexity(delta_m, d, s.grid_size, nats)
            if out.complexity >= vocab - 1:
                out.fail(f"vacuous: complexity C = {out.complexity:.4g} >= V - 1 = {vocab - 1} "
                         f"({out.code.bits:.0f}-bit code for D = {d})")
            else:
                out.alpha = smoothing_alpha(out.complexity, vocab)
                alphas.append(out.alpha)
        if out.is_reference:
            nominal = nominal_code_length(n_params, cfg.bits)
            c_ref = freedman_complexity(delta_m, d, s.grid_size, complexity_nats(nominal.bits, 0.0))
            if c_ref < vocab - 1:
                reference = Reference(cfg, nominal, c_ref, smoothing_alpha(c_ref, vocab))
        try:
            cal = window_losses(q.model, order, calibration, alphas=alphas, batch_size=s.batch_size,
                                entropy=False)
            out.calibration_loss = float(cal.loss.mean())
        except FloatingPointError as e:   # NaN/inf weights or scales give non-finite logits
            out.calibration_loss = math.nan
            log(f"  {cfg}: {e}")
        gap = out.gap
        if not math.isfinite(out.calibration_loss):
            out.fail(f"quantized model gives a non-finite loss ({out.calibration_loss}) on the "
                     "calibration windows (NaN/inf weights or scales)")
            if out.is_reference:
                reference = None
        elif gap > s.max_gap_nats:
            out.fail(f"quantization gap {gap:.4g} nats on the calibration windows exceeds "
                     f"max_gap_nats = {s.max_gap_nats:g}")
            if out.is_reference:
                reference = None
        elif out.alpha is not None and out.status == "ok":
            fb = freedman_bound(cal.smoothed_loss[out.alpha], cal.smoothed_entropy[out.alpha],
                                tight_loss_range(out.alpha, vocab), delta_m, nats, s.grid_size, d)
            out.predicted_bound = fb.bound
        log(f"  {cfg}{' (grid)' if out.in_grid else ''}{' (reference)' if out.is_reference else ''}: "
            f"{out.status}" + (f"; {out.code.method} code {out.code.bits / n_params:.2f} bits/param"
                               if out.code else "")
            + f"; gap {gap:+.3f} nats on calibration"
            + (f"; predicted bound {out.predicted_bound:.3f}" if out.predicted_bound else "")
            + (f" ({out.failure_reason})" if out.status != "ok" else ""))
    ok = [o for o in outcomes if o.in_grid and o.status == "ok" and o.predicted_bound is not None]
    chosen = min(ok, key=lambda o: (o.predicted_bound, o.config)) if ok else None
    return QuantizeResult(outcomes, chosen, reference, calibration, d, design_kind, grid_nats)
