"""Quantize a causal LM checkpoint to h_q and account for its code length (Thm 3.4's b and L(h)).

Primary path: GPTQ by GPTQModel 7.6 on CPU (``method="gptq"``), saved in the GPTQ v2 layout
(int32-packed codes and zero points, float16 scales, int32 g_idx).  Baseline: round-to-nearest
on the same group-wise asymmetric min-max grid (``method="rtn"``), written in the same layout.
The evaluated model h_q is *decoded from the stored tensors* into a plain float32 copy of the
model (same class); the code length is counted from the same tensors.  See
docs/quantization.md for the accounting rules and the failure rules.

Architectures: any transformers causal LM whose transformer blocks sit in one ``nn.ModuleList``
of ``num_hidden_layers`` blocks (GPT-NeoX, Llama/Mistral/Qwen, GPT-2, ...).  The quantized
modules are the ``nn.Linear`` and GPT-2-style ``Conv1D`` layers inside those blocks (a Conv1D
stores its weight as [in, out]; it is quantized and stored as the [out, in] matrix it applies,
the layout GPTQModel writes for it).  Tied input/output embeddings are one parameter: stored,
counted and decoded once.  GPTQ additionally needs GPTQModel to know the architecture.

Nothing here touches Dagster, a database or the network.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import io
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .code_size import (
    TensorSpec,
    bits_by_role,
    canonical_payload,
    dtype_bits,
    gptq_linear_specs,
    lzma_bits,
    specs_from_state,
    stored_bits,
)
from .rtn import (
    SUPPORTED_BITS,
    IntWeight,
    group_index,
    minmax_grid,
    pack_gptq,
    rtn_quantize,
    unpack_gptq,
)

HQ_FILENAME = "hq.safetensors"
STORAGE_FORMAT = "gptq_v2"
METHODS = ("gptq", "rtn")

__all__ = [
    "QuantizationFailed", "QuantizedModel", "check_quantization", "quantize_model",
    "dequantize_state", "load_quantized", "layer_input_hessians", "reconstruction_errors",
    "gptq_quantize_weight", "quantized_module_names", "predicted_specs", "HQ_FILENAME",
    "block_list_name", "canonical_state", "is_weight_layer", "tied_aliases", "weight_matrix",
]


# ----------------------------------------------------------------------------------- failures

class QuantizationFailed(Exception):
    """A quantization that must not be stored as a number (NaN/inf weights or loss, or a gap
    above the ceiling).  ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def check_quantization(float_loss: float, quant_loss: float, max_gap_nats: float, *,
                       raise_on_failure: bool = True) -> QuantizationFailed | None:
    """Accept or reject a quantization from its losses (nats/token on the same tokens).

    Fails when either loss is NaN/inf or the gap R_q - R_h exceeds ``max_gap_nats``.  Returns
    None when accepted; on failure raises ``QuantizationFailed`` (or returns it when
    ``raise_on_failure=False``).
    """
    ceiling = float(max_gap_nats)
    if math.isnan(ceiling):
        raise ValueError("max_gap_nats must be a number, got NaN")
    fl, ql = float(float_loss), float(quant_loss)
    failure = None
    if not math.isfinite(fl):
        failure = QuantizationFailed(f"float model loss is not finite ({fl})")
    elif not math.isfinite(ql):
        failure = QuantizationFailed(f"quantized model loss is not finite ({ql})")
    elif ql - fl > ceiling:
        failure = QuantizationFailed(
            f"quantization gap {ql - fl:.6g} nats (quantized {ql:.6g} - float {fl:.6g}) exceeds "
            f"the ceiling max_gap_nats={ceiling:g}")
    if failure is not None and raise_on_failure:
        raise failure
    return failure


# ----------------------------------------------------------------------------------- result

@dataclass
class QuantizedModel:
    """h_q: the decoded float model, its stored integer state, and its accounting (bits)."""

    model: nn.Module                      # plain float32 copy of the model with W_hat weights
    tensors: dict[str, IntWeight]         # module prefix -> codes/scales/zeros/g_idx (unpacked)
    state: dict[str, torch.Tensor]        # exactly the stored tensors (the file hq.safetensors)
    specs: list[TensorSpec]               # one per stored tensor, with its role and width
    metadata: dict[str, str]              # the file's header metadata (format, bits, groups)
    method: str
    bits: int
    group_size: int
    quantize_embeddings: bool
    n_params: int                         # N: every parameter, embeddings and head included
                                          # (tied embeddings once)
    nominal_bits: int                     # b * N (the paper's accounting; not a code length)
    stored_bits: int                      # counted stored bits: the fixed-length code L(h_q)
    file_tensor_bits: int                 # every stored tensor, derivable g_idx included
    compressed_bits: int                  # 8 x lzma(canonical_payload(state, metadata))
    role_bits: dict[str, int]
    tensor_methods: dict[str, str]        # module prefix -> "gptq:gptqmodel" | "gptq:genbound" | "rtn"
    calibration: dict[str, Any]           # n_windows, n_tokens, sha256 of the ids, seed
    backend: str
    wall_s: float
    path: Path | None = None              # hq.safetensors when work_dir was given
    gptq_log: list[dict[str, str]] = field(default_factory=list)

    @property
    def effective_bits_per_param(self) -> float:
        """stored bits / N."""
        return self.stored_bits / self.n_params

    @property
    def compressed_bits_per_param(self) -> float:
        return self.compressed_bits / self.n_params

    def code_length_rows(self) -> list[tuple[str, int, float]]:
        """(name, n_elements, bits_per_element) of every counted stored tensor, the input of
        ``genbound_assets.bounds.code_length.stored_code_length``."""
        return [(s.name, s.numel, float(s.bits_per_element)) for s in self.specs if s.counted]

    def summary(self) -> dict[str, Any]:
        """JSON-able accounting record."""
        return {
            "method": self.method, "bits": self.bits, "group_size": self.group_size,
            "quantize_embeddings": self.quantize_embeddings, "n_params": self.n_params,
            "nominal_bits": self.nominal_bits, "stored_bits": self.stored_bits,
            "file_tensor_bits": self.file_tensor_bits, "compressed_bits": self.compressed_bits,
            "effective_bits_per_param": self.effective_bits_per_param,
            "compressed_bits_per_param": self.compressed_bits_per_param,
            "role_bits": dict(self.role_bits), "tensor_methods": dict(self.tensor_methods),
            "calibration": dict(self.calibration), "backend": self.backend,
            "storage_format": STORAGE_FORMAT, "wall_s": self.wall_s,
        }


# ----------------------------------------------------------------------------------- helpers

def _module_name(model: nn.Module, module: nn.Module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name
    raise ValueError("module not found in model")


def _conv1d_type():
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers always has it
        return ()
    return Conv1D


def is_weight_layer(module: nn.Module) -> bool:
    """A layer GPTQ/RTN can quantize: ``nn.Linear`` or transformers' ``Conv1D`` (GPT-2)."""
    conv = _conv1d_type()
    return isinstance(module, nn.Linear) or (bool(conv) and isinstance(module, conv))


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The [out, in] matrix a Linear/Conv1D applies (a Conv1D stores it transposed: [in, out])."""
    conv = _conv1d_type()
    if conv and isinstance(module, conv):
        return module.weight.T
    if isinstance(module, nn.Linear | nn.Embedding):
        return module.weight
    raise ValueError(f"{type(module).__name__} is not a Linear, Conv1D or Embedding layer")


def _set_weight_matrix(module: nn.Module, w: torch.Tensor) -> torch.Tensor:
    """The parameter value that makes ``module`` apply the [out, in] matrix ``w``."""
    conv = _conv1d_type()
    return w.T.contiguous() if conv and isinstance(module, conv) else w


def block_list_name(model: nn.Module) -> str:
    """Name of the ``nn.ModuleList`` holding the transformer blocks: the one of length
    ``config.num_hidden_layers`` (``gpt_neox.layers``, ``model.layers``, ``transformer.h``)."""
    cfg = getattr(model, "config", None)
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    n_layers = getattr(cfg, "num_hidden_layers", None)
    found = [n for n, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) > 0 and (n_layers is None or len(m) == n_layers)
             and any(is_weight_layer(x) for x in m.modules())]
    if not found:
        raise ValueError(f"{type(model).__name__}: no nn.ModuleList of {n_layers} transformer blocks "
                         "with Linear/Conv1D layers found; genbound cannot quantize this architecture")
    return min(found, key=lambda n: n.count("."))   # the outermost such list


def tied_aliases(model: nn.Module) -> dict[str, str]:
    """Parameter names that share storage with an earlier one (tied embeddings): alias ->
    canonical name (the one ``named_parameters()`` reports)."""
    first: dict[int, str] = {}
    out: dict[str, str] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            out[n] = first[id(p)]
        else:
            first[id(p)] = n
    return out


def quantized_module_names(model: nn.Module, quantize_embeddings: bool = False) -> list[str]:
    """The Linear/Conv1D layers inside the transformer blocks (``block_list_name``; the modules
    GPTQModel's module trees list: GPT-NeoX query_key_value, dense, dense_h_to_4h, dense_4h_to_h;
    Llama q/k/v/o_proj, gate/up/down_proj; GPT-2 c_attn, c_proj, c_fc, c_proj), plus the output
    and input embeddings when ``quantize_embeddings``."""
    prefix = block_list_name(model) + "."
    names = [n for n, m in model.named_modules() if n.startswith(prefix) and is_weight_layer(m)]
    if quantize_embeddings:
        names += [_module_name(model, model.get_output_embeddings()),
                  _module_name(model, model.get_input_embeddings())]
    return names


def predicted_specs(model: nn.Module, bits: int, group_size: int = 32,
                    quantize_embeddings: bool = False,
                    float_dtype: torch.dtype | None = None) -> list[TensorSpec]:
    """The stored tensors of h_q predicted from the architecture alone (works on a meta-device
    model): what ``quantize_model`` will store, so ``stored_bits(predicted_specs(...))`` is the
    code length known before quantizing.  Unquantized tensors at ``float_dtype`` (default: each
    parameter's own dtype)."""
    names = quantized_module_names(model, quantize_embeddings)
    modules = dict(model.named_modules())
    specs: list[TensorSpec] = []
    covered: set[str] = set()
    for n in names:
        m = modules[n]
        out_f, in_f = weight_matrix(m).shape
        has_bias = is_weight_layer(m) and m.bias is not None
        specs += gptq_linear_specs(n, int(out_f), int(in_f), bits, group_size, has_bias)
        covered |= {f"{n}.weight", f"{n}.bias"}
    for name, p in model.named_parameters():
        if name not in covered:
            width = dtype_bits(float_dtype or p.dtype)
            specs.append(TensorSpec(name, tuple(int(d) for d in p.shape), width, "float"))
    return sorted(specs, key=lambda s: s.name)


def _windows(calibration_input_ids, vocab_size: int) -> list[torch.Tensor]:
    if calibration_input_ids is None:
        return []
    if isinstance(calibration_input_ids, torch.Tensor):
        t = calibration_input_ids
        rows = [t] if t.ndim == 1 else list(t)
    else:
        rows = [torch.as_tensor(r) for r in calibration_input_ids]
    out = []
    for i, r in enumerate(rows):
        r = torch.as_tensor(r).to(torch.long).flatten().cpu()
        if r.numel() < 2:
            raise ValueError(f"calibration window {i} has fewer than 2 tokens")
        if int(r.min()) < 0 or int(r.max()) >= vocab_size:
            raise ValueError(f"calibration window {i} has token ids outside [0, {vocab_size})")
        out.append(r)
    return out


def _calibration_record(windows: list[torch.Tensor], seed: int) -> dict[str, Any]:
    h = hashlib.sha256()
    for w in windows:
        h.update(w.numpy().astype("<i8").tobytes())
        h.update(b"|")
    return {"n_windows": len(windows), "n_tokens": int(sum(w.numel() for w in windows)),
            "sha256": h.hexdigest(), "seed": int(seed)}


def _check_finite_params(model: nn.Module, what: str) -> None:
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            bad = int((~torch.isfinite(p)).sum())
            raise QuantizationFailed(f"non-finite weights in {what}: {name} has {bad} NaN/inf entries")


@torch.no_grad()
def layer_input_hessians(model: nn.Module, names: list[str], calibration_input_ids,
                         batch_size: int = 8) -> dict[str, torch.Tensor]:
    """H = sum over calibration tokens of x x^T (float64, [in, in]) for the input x of each
    named Linear/Conv1D, collected with forward hooks (the GPTQ Hessian up to the factor 2)."""
    modules = dict(model.named_modules())
    windows = _windows(calibration_input_ids, model.config.vocab_size)
    if not windows:
        raise ValueError("calibration_input_ids is empty")
    hs: dict[str, torch.Tensor] = {}
    hooks = []

    def make_hook(name):
        def hook(_mod, inputs, _out):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double().cpu()
            hs[name] = hs.get(name, 0) + x.T @ x
        return hook

    for n in names:
        if not is_weight_layer(modules.get(n)):
            raise ValueError(f"{n!r} is not a Linear/Conv1D module of the model")
        hooks.append(modules[n].register_forward_hook(make_hook(n)))
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    try:
        by_len: dict[int, list[torch.Tensor]] = {}
        for w in windows:
            by_len.setdefault(w.numel(), []).append(w)
        for rows in by_len.values():
            for i in range(0, len(rows), batch_size):
                model(input_ids=torch.stack(rows[i:i + batch_size]).to(dev))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return hs


def reconstruction_errors(float_model: nn.Module, quantized: QuantizedModel,
                          calibration_input_ids, names: list[str] | None = None) -> dict[str, float]:
    """Per-layer ||(W - W_hat) X||_F^2 = tr(D H D^T) with X the layer inputs of the *float*
    model on the calibration windows (D = W - W_hat, H = X X^T)."""
    names = [n for n in (names or quantized.tensors)
             if is_weight_layer(dict(float_model.named_modules()).get(n))]
    hs = layer_input_hessians(float_model, names, calibration_input_ids)
    fm, qm = dict(float_model.named_modules()), dict(quantized.model.named_modules())
    out = {}
    for n in names:
        d = (weight_matrix(fm[n]).detach().double().cpu()
             - weight_matrix(qm[n]).detach().double().cpu())
        out[n] = float(torch.einsum("oi,ij,oj->", d, hs[n], d))
    return out


# ----------------------------------------------------------------------------------- GPTQ (in-house)

def gptq_quantize_weight(weight: torch.Tensor, hessian: torch.Tensor, bits: int, group_size: int,
                         *, percdamp: float = 0.01, blocksize: int = 128) -> IntWeight:
    """GPTQ (Frantar et al. 2023, Alg. 1) on the same grid as ``rtn.rtn_quantize``.

    hessian: X X^T of the layer inputs ([in, in]; the factor 2 cancels).  Dead inputs (zero
    diagonal) get H_ii = 1 and W[:, i] = 0; damping lambda = percdamp * mean(diag H); the upper
    Cholesky factor of H^-1 drives column-by-column rounding with error feedback, lazily applied
    in blocks of ``blocksize`` columns.  Group scales/zeros are fitted when a group starts, on the
    error-updated weights (``rtn.minmax_grid``: the scale is rounded to float16 before use, so
    the error feedback sees exactly the weight that decodes from the stored tensors).

    Used for embed_out when GPTQModel cannot pack it (3-bit with a vocabulary not a multiple of
    32); the transformer blocks always go through GPTQModel.
    """
    W = weight.detach().double().cpu().clone()
    out_f, in_f = W.shape
    H = hessian.detach().double().cpu().clone()
    if H.shape != (in_f, in_f):
        raise ValueError(f"hessian shape {tuple(H.shape)} does not match weight {tuple(W.shape)}")
    maxq = 2 ** bits - 1
    gs = in_f if group_size == -1 else int(group_size)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += percdamp * torch.mean(torch.diag(H)) * torch.eye(in_f, dtype=H.dtype)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    g_idx = group_index(in_f, group_size)
    n_groups = int(g_idx.max()) + 1
    codes = torch.zeros(out_f, in_f, dtype=torch.uint8)
    scales = torch.zeros(n_groups, out_f, dtype=torch.float16)
    zeros = torch.zeros(n_groups, out_f, dtype=torch.uint8)
    scale = zero = None
    for i1 in range(0, in_f, blocksize):
        i2 = min(i1 + blocksize, in_f)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if col % gs == 0:
                cur = torch.cat([W1[:, i:], W[:, i2:]], dim=1)[:, :gs]
                s, z = minmax_grid(cur, bits)
                scale, zero = s.double(), z.double()
                scales[col // gs], zeros[col // gs] = s.to(torch.float16), z.to(torch.uint8)
            w = W1[:, i]
            q = torch.clamp(torch.round(w / scale) + zero, 0, maxq)
            codes[:, col] = q.to(torch.uint8)
            err = (w - scale * (q - zero)) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return IntWeight(codes=codes, zeros=zeros, scales=scales, g_idx=g_idx, bits=bits)


# ----------------------------------------------------------------------------------- decode

def _parse_metadata(meta: dict[str, str]) -> tuple[dict[str, int], dict[str, int]]:
    if meta.get("format") != STORAGE_FORMAT:
        raise ValueError(f"stored format is {meta.get('format')!r}, expected {STORAGE_FORMAT!r}")
    bits = {k: int(v) for k, v in json.loads(meta["bits"]).items()}
    gs = {k: int(v) for k, v in json.loads(meta["group_size"]).items()}
    if set(bits) != set(gs):
        raise ValueError("metadata bits/group_size cover different modules")
    return bits, gs


@torch.no_grad()
def dequantize_state(template: nn.Module, state: dict[str, torch.Tensor],
                     metadata: dict[str, str]) -> tuple[nn.Module, dict[str, IntWeight]]:
    """Decode stored tensors into a plain float32 copy of ``template``: every quantized module's
    weight = scale * (code - zero) from its packed tensors; every other parameter is the stored
    tensor (cast to float32, exact).  Every parameter of the result comes from ``state``.  A
    tied parameter is stored once (under either name; a second, identical copy is accepted)."""
    bits, _ = _parse_metadata(metadata)
    model = copy.deepcopy(template).float().cpu().eval()
    params = dict(model.named_parameters())
    state = canonical_state(model, state)
    modules = dict(model.named_modules())
    new: dict[str, torch.Tensor] = {}
    tensors: dict[str, IntWeight] = {}
    for prefix, b in bits.items():
        try:
            iw = unpack_gptq(state[f"{prefix}.qweight"], state[f"{prefix}.qzeros"],
                             state[f"{prefix}.scales"], state[f"{prefix}.g_idx"], b)
        except KeyError as e:
            raise ValueError(f"stored state lacks {e} for quantized module {prefix!r}") from None
        w = iw.dequantize()
        mod = modules.get(prefix)
        if mod is None or not hasattr(mod, "weight") or tuple(weight_matrix(mod).shape) != tuple(w.shape):
            raise ValueError(f"quantized {prefix!r} decodes to {tuple(w.shape)}, which does not fit "
                             "the template")
        tensors[prefix] = iw
        new[f"{prefix}.weight"] = _set_weight_matrix(mod, w)
    for name, t in state.items():
        if name.rsplit(".", 1)[-1] in ("qweight", "qzeros", "scales", "g_idx"):
            continue
        new[name] = t.float()
    missing = set(params) - set(new)
    unexpected = set(new) - set(params)
    if missing or unexpected:
        raise ValueError(f"stored state does not match the model: missing {sorted(missing)}, "
                         f"unexpected {sorted(unexpected)}")
    for name, t in new.items():
        if tuple(params[name].shape) != tuple(t.shape):
            raise ValueError(f"{name}: stored shape {tuple(t.shape)} != model {tuple(params[name].shape)}")
        params[name].copy_(t)
    return model, tensors


def canonical_state(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with every tied alias (``tied_aliases``) under its canonical name, once.

    GPTQModel (like ``save_pretrained`` of some models) may write both names of a tied matrix;
    the copies must be identical (else ValueError), and only one is kept, so a tied embedding is
    stored, counted in the code length and decoded exactly once."""
    aliases = tied_aliases(model)
    if not any(k in aliases for k in state):
        return state
    out = {k: v for k, v in state.items() if k not in aliases}
    for k, v in state.items():
        if k not in aliases:
            continue
        canon = aliases[k]
        if canon in out:
            if out[canon].shape != v.shape or not torch.equal(out[canon], v):
                raise ValueError(f"{k} is tied to {canon} in the model but the stored tensors differ")
        else:
            out[canon] = v
    return out


def load_quantized(path: str | os.PathLike, template: nn.Module
                   ) -> tuple[nn.Module, dict[str, IntWeight], dict[str, torch.Tensor], dict[str, str]]:
    """Re-decode a stored h_q file (hq.safetensors): (float model, int tensors, state, metadata)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    state = load_file(str(path))
    model, tensors = dequantize_state(template, state, meta)
    return model, tensors, state, meta


# ----------------------------------------------------------------------------------- quantize

def _gptqmodel_can_pack(bits: int, in_f: int, out_f: int) -> bool:
    # GPTQModel 7.6's packer (pack_original) indexes past the end for 3-bit zero points when
    # out_features is not a multiple of 32 (and for 3-bit codes when in_features is not).
    return bits != 3 or (in_f % 32 == 0 and out_f % 32 == 0)


@contextlib.contextmanager
def _gptqmodel_log_level(level: int):
    """Raise the level of GPTQModel's loggers for the duration (restored after)."""
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
               if n.split(".")[0] in ("gptqmodel", "logbar", "tokenicer", "defuser")]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(level, lg.level))
    try:
        yield
    finally:
        for lg, lv in zip(loggers, saved, strict=True):
            lg.setLevel(lv)


def _save_placeholder_tokenizer(folder: Path, vocab_size: int) -> None:
    """A word-level tokenizer over ids 0..V-1 (PreTrainedTokenizerFast) next to the float export.

    GPTQModel.load always loads a tokenizer; with none saved, transformers picks the
    architecture's default class (LlamaTokenizer needs sentencepiece) and fails.  Calibration
    is given as token ids, so the tokenizer is never used to encode anything."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    vocab = {f"<{i}>": i for i in range(vocab_size)}
    Tokenizer(WordLevel(vocab, unk_token="<0>")).save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "<0>", "pad_token": "<0>",
        "eos_token": "<0>", "bos_token": "<0>", "model_max_length": 1 << 30}))


def _run_gptqmodel(model: nn.Module, windows: list[torch.Tensor], bits: int, group_size: int,
                   lm_head_name: str | None, device: str, seed: int, work: Path, *,
                   damp_percent: float, batch_size: int, pack_impl: str
                   ) -> tuple[dict[str, torch.Tensor], list[dict[str, str]], str]:
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(os.cpu_count() or 1))
    import gptqmodel
    from gptqmodel import GPTQModel, QuantizeConfig

    float_dir, gptq_dir = work / "float", work / "gptqmodel"
    model.save_pretrained(str(float_dir))
    _save_placeholder_tokenizer(float_dir, int(model.config.vocab_size))
    dynamic = None
    if lm_head_name is not None:
        # GPTQModel's lm_head default is 8-bit symmetric with an MSE grid search; override it to
        # the same b / group / asymmetric min-max grid as the blocks.
        dynamic = {lm_head_name: {"bits": bits, "group_size": group_size, "sym": False,
                                  "desc_act": False, "mse": 0.0}}
    qc = QuantizeConfig(
        bits=bits, group_size=group_size, sym=False, desc_act=False, act_group_aware=False,
        damp_percent=damp_percent, mse=0.0, true_sequential=True, fallback=None,
        lm_head=lm_head_name is not None, dynamic=dynamic, format=STORAGE_FORMAT,
        offload_to_disk=False, pack_impl=pack_impl, device=device,
    )
    dtype = next(model.parameters()).dtype
    torch.manual_seed(seed)
    # GPTQModel writes per-run logs to ./logs (relative to the CWD) and prints INFO tables: keep
    # the files in the work dir and the tables out of the user's terminal unless asked for.
    from gptqmodel.looper import loop_processor
    loop_processor._PROJECT_LOG_DIR = work / "logs"
    quiet = os.environ.get("GENBOUND_GPTQ_VERBOSE", "") in ("", "0")
    chatter = io.StringIO()
    with contextlib.ExitStack() as stack:
        if quiet:
            stack.enter_context(contextlib.redirect_stdout(chatter))
            stack.enter_context(_gptqmodel_log_level(logging.WARNING))
        try:
            qm = GPTQModel.load(str(float_dir), qc, dtype=dtype)
        except Exception as e:  # an architecture GPTQModel has no module tree for, etc.
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            first = first.split(" for model ")[0][:200]
            raise ValueError(
                f"GPTQModel {gptqmodel.__version__} cannot load {type(model).__name__} "
                f"(model_type {getattr(model.config, 'model_type', None)!r}): {first}; "
                "use method='rtn'") from None
        # transformers 5 names GPT-NeoX's unembedding `lm_head`; GPTQModel 7.6 says `embed_out`.
        qm.lm_head = _module_name(qm.model, qm.model.get_output_embeddings())
        calib = [{"input_ids": w.tolist(), "attention_mask": [1] * w.numel()} for w in windows]
        qm.quantize(calib, batch_size=batch_size, calibration_data_min_length=2)
        qm.save(str(gptq_dir))
    cfg = json.loads((gptq_dir / "quantize_config.json").read_text())
    if cfg.get("format") != STORAGE_FORMAT or cfg.get("sym") is not False:
        raise RuntimeError(f"GPTQModel saved format={cfg.get('format')!r} sym={cfg.get('sym')!r}")
    state: dict[str, torch.Tensor] = {}
    for f in sorted(gptq_dir.glob("*.safetensors")):
        state.update(load_file(str(f)))
    log_rows: list[dict[str, str]] = []
    log_path = gptq_dir / "quant_log.csv"
    if log_path.exists():
        with log_path.open() as fh:
            log_rows = list(csv.DictReader(fh))
    del qm
    return state, log_rows, f"gptqmodel {gptqmodel.__version__}"


def _rtn_into(state: dict[str, torch.Tensor], model: nn.Module, name: str, bits: int,
              group_size: int, iw: IntWeight | None = None) -> None:
    """Replace module ``name``'s float weight in ``state`` by its packed integer form (GPTQModel's
    layout: the bias of a quantized Linear is stored as float16, as GPTQModel does)."""
    mod = dict(model.named_modules())[name]
    if iw is None:
        iw = rtn_quantize(weight_matrix(mod), bits, group_size)
    state.pop(f"{name}.weight", None)
    for k, v in pack_gptq(iw).items():
        state[f"{name}.{k}"] = v
    bias = getattr(mod, "bias", None)
    if bias is not None and is_weight_layer(mod):
        state[f"{name}.bias"] = bias.detach().cpu().to(torch.float16)


def quantize_model(model: nn.Module, method: str = "gptq", bits: int = 4, group_size: int = 32,
                   calibration_input_ids=None, quantize_embeddings: bool = False,
                   device: str = "cpu", seed: int = 0, work_dir: str | os.PathLike | None = None,
                   *, damp_percent: float = 0.01, batch_size: int = 8,
                   pack_impl: str = "original") -> QuantizedModel:
    """Quantize ``model`` (a transformers causal LM, not modified) to b bits and decode h_q.

    method: "gptq" (GPTQModel, Hessians from ``calibration_input_ids``) or "rtn" (same grid,
    no calibration needed).  group_size: columns per scale/zero group, -1 = one group per row.
    calibration_input_ids: windows of token ids ([n, T] tensor or list of 1-D sequences) drawn
    from training data disjoint from the bound's sample (the caller's ``calibration_windows``);
    their sha256 and ``seed`` are recorded.  quantize_embeddings: also quantize embed_out (GPTQ,
    via GPTQModel's lm_head path when it can pack it, else the in-house GPTQ) and embed_in (RTN
    per row: with one-hot inputs GPTQ's Hessian is diagonal and GPTQ reduces to RTN); needs
    untied embeddings.
    work_dir: keep the float export, GPTQModel's checkpoint and hq.safetensors there (else a
    temporary directory is used and removed).

    Raises QuantizationFailed on non-finite float or decoded weights.
    """
    t0 = time.perf_counter()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if int(bits) != bits or int(bits) not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits!r}")
    bits = int(bits)
    if group_size != -1 and (int(group_size) != group_size or group_size <= 0):
        raise ValueError(f"group_size must be a positive integer or -1, got {group_size!r}")
    group_size = int(group_size)
    if quantize_embeddings and model.get_input_embeddings().weight is model.get_output_embeddings().weight:
        raise ValueError("quantize_embeddings needs untied embed_in / embed_out")
    _check_finite_params(model, "the float model")
    windows = _windows(calibration_input_ids, model.config.vocab_size)
    if method == "gptq" and not windows:
        raise ValueError("method='gptq' needs calibration_input_ids")
    names = quantized_module_names(model, quantize_embeddings)
    modules = dict(model.named_modules())
    for n in names:
        in_f = weight_matrix(modules[n]).shape[1]
        if group_size != -1 and in_f % group_size:
            raise ValueError(f"{n}: in_features {in_f} is not a multiple of group_size {group_size}")
    out_name = _module_name(model, model.get_output_embeddings()) if quantize_embeddings else None
    in_name = _module_name(model, model.get_input_embeddings()) if quantize_embeddings else None

    cpu_model = copy.deepcopy(model).cpu().eval()
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="genbound-quant-")
        work = Path(tmp.name)
    else:
        work = Path(work_dir)
        work.mkdir(parents=True, exist_ok=True)
    try:
        gptq_log: list[dict[str, str]] = []
        tensor_methods: dict[str, str] = {}
        block_names = [n for n in names if n not in (out_name, in_name)]
        if method == "gptq":
            head_via_gptqmodel = out_name is not None and _gptqmodel_can_pack(
                bits, *reversed(weight_matrix(modules[out_name]).shape))
            state, gptq_log, backend = _run_gptqmodel(
                model, windows, bits, group_size, out_name if head_via_gptqmodel else None,
                device, seed, work, damp_percent=damp_percent, batch_size=batch_size,
                pack_impl=pack_impl)
            state = canonical_state(cpu_model, state)
            tensor_methods.update(dict.fromkeys(block_names, "gptq:gptqmodel"))
            if head_via_gptqmodel:
                tensor_methods[out_name] = "gptq:gptqmodel"
            extra = sorted(k[: -len(".qweight")] for k in state
                           if k.endswith(".qweight") and k[: -len(".qweight")] not in tensor_methods)
            if extra:
                raise RuntimeError(f"GPTQModel quantized modules genbound does not list: {extra[:4]}")
        else:
            state = {k: v.detach().cpu().clone() for k, v in cpu_model.state_dict().items()
                     if k in dict(cpu_model.named_parameters())}
            for n in block_names:
                _rtn_into(state, cpu_model, n, bits, group_size)
                tensor_methods[n] = "rtn"
            backend = "genbound rtn"
        missing = [n for n in tensor_methods if f"{n}.qweight" not in state]
        if missing:
            raise RuntimeError(f"quantizer left modules unquantized: {missing}")
        # GPTQModel saves a plain-Linear bias / norm in the model dtype; nothing else to fix up.

        if quantize_embeddings:
            _rtn_into(state, cpu_model, in_name, bits, group_size)
            tensor_methods[in_name] = "rtn"
            if out_name not in tensor_methods:
                if method == "rtn":
                    _rtn_into(state, cpu_model, out_name, bits, group_size)
                    tensor_methods[out_name] = "rtn"
                else:
                    # Hessian of the unembedding's input on the model whose blocks (and embed_in)
                    # are already quantized, as GPTQModel's sequential lm_head step does.
                    partial_meta = _metadata(tensor_methods, bits, group_size, method)
                    partial, _ = dequantize_state(cpu_model, state, partial_meta)
                    h = layer_input_hessians(partial, [out_name], windows)[out_name]
                    iw = gptq_quantize_weight(weight_matrix(modules[out_name]), h, bits, group_size,
                                              percdamp=damp_percent)
                    _rtn_into(state, cpu_model, out_name, bits, group_size, iw=iw)
                    tensor_methods[out_name] = "gptq:genbound"
                    backend += " + genbound gptq (embed_out)"

        metadata = _metadata(tensor_methods, bits, group_size, method)
        state = {k: v.contiguous() for k, v in sorted(state.items())}
        deq, tensors = dequantize_state(cpu_model, state, metadata)
        for name, p in deq.named_parameters():
            if not torch.isfinite(p).all():
                raise QuantizationFailed(f"non-finite weights in the decoded quantized model: {name}")
        path = None
        if tmp is None:
            path = work / HQ_FILENAME
            save_file(state, str(path), metadata=metadata)
        gs_map = {n: group_size for n in tensor_methods}
        specs = specs_from_state(state, gs_map)
        n_params = sum(p.numel() for p in model.parameters())
        return QuantizedModel(
            model=deq, tensors=tensors, state=state, specs=specs, metadata=metadata,
            method=method, bits=bits, group_size=group_size,
            quantize_embeddings=bool(quantize_embeddings), n_params=n_params,
            nominal_bits=bits * n_params, stored_bits=stored_bits(specs),
            file_tensor_bits=sum(s.bits for s in specs), compressed_bits=lzma_bits(canonical_payload(state, metadata)),
            role_bits=bits_by_role(specs), tensor_methods=tensor_methods,
            calibration=_calibration_record(windows, seed), backend=backend,
            wall_s=time.perf_counter() - t0, path=path, gptq_log=gptq_log,
        )
    finally:
        if tmp is not None:
            tmp.cleanup()


def _metadata(tensor_methods: dict[str, str], bits: int, group_size: int, method: str
              ) -> dict[str, str]:
    return {
        "format": STORAGE_FORMAT,
        "method": method,
        "bits": json.dumps(dict.fromkeys(sorted(tensor_methods), bits)),
        "group_size": json.dumps(dict.fromkeys(sorted(tensor_methods), group_size)),
        "tensor_methods": json.dumps(dict(sorted(tensor_methods.items()))),
    }
