"""Group-wise asymmetric min-max integer grid, round-to-nearest (RTN), and the GPTQ packed layout.

The grid is the one GPTQ (Frantar et al. 2023) and GPTQModel's ``Quantizer.find_params`` use
with ``sym=False, mse=0``: for each group of ``group_size`` consecutive input columns of a weight
``W[out, in]`` and each output row,

    xmin = min(min(w), 0),  xmax = max(max(w), 0)      (the range always contains 0)
    (xmin, xmax) = (-1, 1) if both are 0
    scale = (xmax - xmin) / (2^b - 1),  zero = round(-xmin / scale)
    code  = clamp(round(w / scale) + zero, 0, 2^b - 1),   w_hat = scale * (code - zero)

RTN is this rounding applied column by column with no error feedback (GPTQ with H = I).

Stored layout (GPTQ "v2" checkpoint layout, as GPTQModel writes it with ``format="gptq_v2"``):

    qweight  int32 [ceil(in * b / 32), out]   codes, packed along the input dimension
    qzeros   int32 [n_groups, ceil(out * b / 32)]  zero points, packed along the output dimension
    scales   float16 [n_groups, out]
    g_idx    int32 [in]                       group of each input column (i // group_size)

Packing rule (every b in {2, 3, 4, 8}): the int32 words along the packed axis, read as one
little-endian bit stream, hold the b-bit fields back to back: field k occupies stream bits
[b k, b k + b).  For b = 3 this is GPTQ's 10/11/11 split of 32 codes over 3 words.  Trailing
bits of the last word are zero.

Decoding (the evaluated model h_q): ``w_hat = float32(scale_fp16) * (code - zero)``, computed in
float32, where it is exact (an 11-bit significand times an integer below 2^9 needs < 24 bits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SUPPORTED_BITS = (2, 3, 4, 8)


def _check_bits(bits: int) -> int:
    if int(bits) != bits or int(bits) not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits!r}")
    return int(bits)


def group_index(in_features: int, group_size: int) -> torch.Tensor:
    """Canonical g_idx (no activation reordering): column i is in group i // group_size;
    group_size -1 means one group per row (g_idx all zeros)."""
    if group_size == -1:
        return torch.zeros(in_features, dtype=torch.int32)
    if group_size <= 0:
        raise ValueError(f"group_size must be positive or -1, got {group_size!r}")
    return (torch.arange(in_features, dtype=torch.int64) // group_size).to(torch.int32)


def minmax_grid(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero) per row of ``w`` [rows, cols] on the asymmetric min-max grid.

    The scale is rounded to float16 (the stored value, floored at 2^-24, the smallest float16)
    *before* the zero point and the codes are computed, so rounding is to the nearest point of
    the grid that is actually stored.  (GPTQModel rounds with the float32 scale and stores its
    float16 rounding: the grids differ by at most 2^-11 relative.)
    """
    maxq = 2 ** _check_bits(bits) - 1
    w = w.float()
    zero_t = torch.zeros(w.shape[0], dtype=torch.float32, device=w.device)
    xmin = torch.minimum(w.min(dim=1).values, zero_t)
    xmax = torch.maximum(w.max(dim=1).values, zero_t)
    both = (xmin == 0) & (xmax == 0)
    xmin[both] = -1.0
    xmax[both] = 1.0
    scale = ((xmax - xmin) / maxq).to(torch.float16).float().clamp_min(2.0 ** -24)
    zero = torch.clamp(torch.round(-xmin / scale), 0, maxq)
    return scale, zero


def quantize_to_grid(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes clamp(round(w / scale) + zero, 0, maxq); scale/zero broadcast per row."""
    maxq = 2 ** _check_bits(bits) - 1
    return torch.clamp(torch.round(w.float() / scale[:, None]) + zero[:, None], 0, maxq)


@dataclass
class IntWeight:
    """Integer representation of one weight matrix W[out, in] (what h_q stores, unpacked)."""

    codes: torch.Tensor   # uint8 [out, in]
    zeros: torch.Tensor   # uint8 [n_groups, out]
    scales: torch.Tensor  # float16 [n_groups, out]
    g_idx: torch.Tensor   # int32 [in]
    bits: int

    def dequantize(self) -> torch.Tensor:
        """float32 W_hat[out, in] = scale[g(i)] * (code - zero[g(i)]), exact in float32."""
        g = self.g_idx.long()
        s = self.scales.float()[g].T          # [out, in]
        z = self.zeros.float()[g].T
        return s * (self.codes.float() - z)


def rtn_quantize(weight: torch.Tensor, bits: int, group_size: int) -> IntWeight:
    """Round-to-nearest on the group-wise asymmetric min-max grid (see ``minmax_grid``)."""
    bits = _check_bits(bits)
    w = weight.detach().float().cpu()
    if w.ndim != 2:
        raise ValueError(f"weight must be 2-D [out, in], got shape {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError("weight has non-finite entries")
    out_f, in_f = w.shape
    gs = in_f if group_size == -1 else int(group_size)
    g_idx = group_index(in_f, group_size)
    n_groups = int(g_idx.max()) + 1
    codes = torch.empty(out_f, in_f, dtype=torch.uint8)
    scales = torch.empty(n_groups, out_f, dtype=torch.float32)
    zeros = torch.empty(n_groups, out_f, dtype=torch.float32)
    for g in range(n_groups):
        cols = slice(g * gs, min((g + 1) * gs, in_f))
        s, z = minmax_grid(w[:, cols], bits)
        codes[:, cols] = quantize_to_grid(w[:, cols], s, z, bits).to(torch.uint8)
        scales[g], zeros[g] = s, z
    return IntWeight(codes=codes, zeros=zeros.to(torch.uint8), scales=scales.to(torch.float16),
                     g_idx=g_idx, bits=bits)


# ----------------------------------------------------------------------------------- packing

def pack_fields(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack non-negative b-bit integers along dim 0 into int32 words (little-endian bit stream).

    values: integer tensor [n, m] with entries in [0, 2^b); returns int32 [ceil(n b / 32), m].
    """
    bits = _check_bits(bits)
    v = values.to(torch.int64).cpu().numpy()
    if v.ndim != 2:
        raise ValueError("values must be 2-D")
    if v.size and (v.min() < 0 or v.max() >= 2 ** bits):
        raise ValueError(f"values out of range for {bits}-bit fields")
    n, m = v.shape
    n_words = -(-n * bits // 32)
    acc = np.zeros((n_words + 1, m), dtype=np.uint64)
    word, shift = np.divmod(bits * np.arange(n), 32)
    field = v.astype(np.uint64) << shift.astype(np.uint64)[:, None]
    np.bitwise_or.at(acc, word, field & np.uint64(0xFFFFFFFF))
    np.bitwise_or.at(acc, word + 1, field >> np.uint64(32))
    words = acc[:n_words].astype(np.uint32).view(np.int32)
    return torch.from_numpy(words.copy())


def unpack_fields(words: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of ``pack_fields``: int32 [n_words, m] -> int64 [n, m]."""
    bits = _check_bits(bits)
    w = words.cpu().numpy().view(np.uint32).astype(np.uint64)
    if w.shape[0] != -(-n * bits // 32):
        raise ValueError(f"{w.shape[0]} words cannot hold exactly {n} {bits}-bit fields")
    w = np.concatenate([w, np.zeros((1, w.shape[1]), dtype=np.uint64)], axis=0)
    k = np.arange(n)
    word, shift = np.divmod(bits * k, 32)
    both = w[word] | (w[word + 1] << np.uint64(32))          # 64-bit window starting at `word`
    out = (both >> shift.astype(np.uint64)[:, None]) & np.uint64(2 ** bits - 1)
    return torch.from_numpy(out.astype(np.int64))


def pack_gptq(iw: IntWeight) -> dict[str, torch.Tensor]:
    """IntWeight -> GPTQ v2 tensors {qweight, qzeros, scales, g_idx}."""
    return {
        "qweight": pack_fields(iw.codes.T.contiguous(), iw.bits),   # codes [in, out] along in
        "qzeros": pack_fields(iw.zeros.T.contiguous(), iw.bits).T.contiguous(),  # along out
        "scales": iw.scales.to(torch.float16).contiguous(),
        "g_idx": iw.g_idx.to(torch.int32).contiguous(),
    }


def unpack_gptq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                g_idx: torch.Tensor, bits: int) -> IntWeight:
    """GPTQ v2 tensors -> IntWeight (codes [out, in], zeros [n_groups, out])."""
    bits = _check_bits(bits)
    in_f = int(g_idx.numel())
    n_groups, out_f = scales.shape
    codes = unpack_fields(qweight, bits, in_f).T.contiguous()
    zeros = unpack_fields(qzeros.T.contiguous(), bits, out_f).T.contiguous()
    if zeros.shape != (n_groups, out_f):
        raise ValueError(f"qzeros decode to {tuple(zeros.shape)}, scales are {tuple(scales.shape)}")
    if g_idx.numel() and (int(g_idx.min()) < 0 or int(g_idx.max()) >= n_groups):
        raise ValueError("g_idx refers to a group with no scale")
    return IntWeight(codes=codes.to(torch.uint8), zeros=zeros.to(torch.uint8),
                     scales=scales.to(torch.float16), g_idx=g_idx.to(torch.int32), bits=bits)
