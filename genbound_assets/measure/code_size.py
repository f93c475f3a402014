"""Bit accounting for a stored quantized model h_q (see docs/quantization.md).

Only a real code length may back a certified bound.  The stored tensors of h_q are classified:

    codes   ``*.qweight``  int32 words holding b-bit weight codes (counted as stored: 32 per word,
            which is b per code plus any zero padding of the last word)
    zeros   ``*.qzeros``   int32 words holding b-bit zero points (counted as stored)
    scales  ``*.scales``   float16, 16 bits each
    g_idx   ``*.g_idx``    int32 group index per input column: *not counted* when it equals the
            canonical ``i // group_size`` (derivable from the shape and the group size, both fixed
            before quantization); counted at 32 bits otherwise
    float   everything else (embed_in, unquantized embed_out, LayerNorms, biases) at its stored
            width (16 or 32 bits).  A tied input/output embedding is one stored tensor, counted
            once (quantize.canonical_state keeps a single copy).

``stored_bits`` is the pure sum a test can check against a hand count; it is the length of a
fixed-length code given the architecture and the storage format.
"""

from __future__ import annotations

import json
import lzma
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

_DTYPE_BITS = {
    torch.float64: 64, torch.float32: 32, torch.float16: 16, torch.bfloat16: 16,
    torch.int64: 64, torch.int32: 32, torch.int16: 16, torch.int8: 8, torch.uint8: 8,
    torch.bool: 8,
}

ROLES = ("codes", "zeros", "scales", "g_idx", "float")


@dataclass(frozen=True)
class TensorSpec:
    """One stored tensor: its shape, bits per stored element, role, and whether it is part of
    the code length (``counted``; False only for derivable tensors such as a canonical g_idx)."""

    name: str
    shape: tuple[int, ...]
    bits_per_element: int
    role: str
    counted: bool = True

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        if self.bits_per_element <= 0:
            raise ValueError(f"{self.name}: bits_per_element must be positive")
        if any(int(d) != d or d < 0 for d in self.shape):
            raise ValueError(f"{self.name}: bad shape {self.shape!r}")

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def bits(self) -> int:
        return self.numel * self.bits_per_element


def stored_bits(tensor_specs: Iterable[TensorSpec]) -> int:
    """Sum of numel x bits_per_element over the counted stored tensors (the code length L(h_q)
    in bits, given the fixed architecture and storage format)."""
    specs = list(tensor_specs)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError("duplicate tensor names in tensor_specs")
    return sum(s.bits for s in specs if s.counted)


def bits_by_role(tensor_specs: Iterable[TensorSpec]) -> dict[str, int]:
    """Counted bits per role (codes, zeros, scales, g_idx, float)."""
    out = dict.fromkeys(ROLES, 0)
    for s in tensor_specs:
        if s.counted:
            out[s.role] += s.bits
    return out


def dtype_bits(dtype: torch.dtype) -> int:
    try:
        return _DTYPE_BITS[dtype]
    except KeyError:
        raise ValueError(f"no storage width known for {dtype}") from None


def role_of(name: str) -> str:
    for suffix, role in ((".qweight", "codes"), (".qzeros", "zeros"), (".scales", "scales"),
                         (".g_idx", "g_idx")):
        if name.endswith(suffix):
            return role
    return "float"


def specs_from_state(state: Mapping[str, torch.Tensor],
                     group_sizes: Mapping[str, int]) -> list[TensorSpec]:
    """TensorSpecs for every tensor of a stored state dict, at its stored dtype width.

    group_sizes: quantized-module prefix -> group size (-1 = per row), used to decide whether a
    ``prefix.g_idx`` is the canonical (derivable, uncounted) one.
    """
    from .rtn import group_index

    specs = []
    for name in sorted(state):
        t = state[name]
        role = role_of(name)
        counted = True
        if role == "g_idx":
            prefix = name[: -len(".g_idx")]
            if prefix not in group_sizes:
                raise ValueError(f"{name}: no group size known for {prefix!r}")
            canonical = group_index(t.numel(), group_sizes[prefix])
            counted = not torch.equal(t.to(torch.int32).flatten(), canonical)
        specs.append(TensorSpec(name, tuple(int(d) for d in t.shape), dtype_bits(t.dtype), role,
                                counted))
    return specs


def gptq_linear_specs(prefix: str, out_features: int, in_features: int, bits: int,
                      group_size: int, bias: bool) -> list[TensorSpec]:
    """The tensors GPTQ v2 stores for one quantized Linear [out, in] (GPTQModel's layout; the
    bias, if any, as float16), predicted from the shape alone."""
    gs = in_features if group_size == -1 else int(group_size)
    groups = -(-in_features // gs)
    specs = [
        TensorSpec(f"{prefix}.qweight", (-(-in_features * bits // 32), out_features), 32, "codes"),
        TensorSpec(f"{prefix}.qzeros", (groups, -(-out_features * bits // 32)), 32, "zeros"),
        TensorSpec(f"{prefix}.scales", (groups, out_features), 16, "scales"),
        TensorSpec(f"{prefix}.g_idx", (in_features,), 32, "g_idx", counted=False),
    ]
    if bias:
        specs.append(TensorSpec(f"{prefix}.bias", (out_features,), 16, "float"))
    return specs


def lzma_bits(payload: bytes) -> int:
    """8 x the size of ``payload`` compressed with lzma (xz container, preset 9 extreme)."""
    return 8 * len(lzma.compress(payload, preset=9 | lzma.PRESET_EXTREME))


def canonical_payload(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """A byte string that depends only on the quantized model: a JSON header (sorted keys:
    every tensor's dtype and shape, then the metadata) and the tensors' raw bytes in name order.

    The compressed code length must be a function of h_q.  A safetensors file is not: its
    ``__metadata__`` map is written in hash order, so the same model compresses to a few bytes
    more or less from run to run.  The format is self-describing, so a fixed decoder recovers
    every tensor (the length prefix makes the header parseable).
    """
    names = sorted(state)
    header = json.dumps({"tensors": [[n, str(state[n].dtype), list(state[n].shape)] for n in names],
                         "metadata": dict(sorted(metadata.items()))}, sort_keys=True).encode()
    # reshape(-1) first: a [k, 1] tensor can be "contiguous" with a last-dim stride != 1
    # (e.g. 2-bit qzeros of a 16-wide layer), which view(uint8) refuses.
    body = b"".join(state[n].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
                    .tobytes() for n in names)
    return len(header).to_bytes(8, "little") + header + body
