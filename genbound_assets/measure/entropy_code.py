"""Entropy-coded code length of a stored quantized model h_q (Lemma 3.2's prefix code L(h_q)).

The stored tensors of h_q (GPTQ v2 layout, measure/quantize.py; GPTQModel's GPTQ and our RTN
write the same layout) are encoded into ONE self-delimiting bit string with an ANS entropy coder
(``constriction.stream.stack.AnsCoder``).  Its length ``EntropyCode.bits`` is a code length for
the prefix-code prior of Lemma 3.2: the decoder ``entropy_decode`` rebuilds the stored state
dict bit for bit from the bytes and the a-priori knowledge below.  Derivation and accounting:
docs/quantization.md, section "Entropy-coded length".

What the decoder knows a priori (``EntropyTemplate``; all fixed before any data is seen):

* the architecture config (hence the name and shape of every stored tensor, via
  ``quantize.predicted_specs``) and the quantization settings: bits b, group size, and which
  modules are quantized (``quantize_embeddings``);
* the storage format: qweight / qzeros / g_idx are int32, scales are float16, the packing rule
  of ``rtn.pack_fields``;
* this program (format ``FORMAT``, constriction 0.5's ANS coder and its Categorical/Uniform
  model quantization).

Everything else is in the stream and counted: the dtype of every float tensor, each tensor's
coding mode, every frequency table (alphabet subset, counts), every symbol, a CRC-32 of the
decoded tensors, and the stream length (Elias-delta coded, first).

Byte layout of the payload::

    EliasDelta(n_words + 1), zero-padded to a byte boundary  |  n_words little-endian uint32 ANS words

so ``bits == 8 * len(payload)``.  The decoder parses the Elias-delta prefix (a prefix code),
learns n_words, and reads exactly 4 n_words more bytes: it finds the end of the code word
without looking past it, hence the set of code words is prefix-free (``codeword_length``).

Inside the ANS stream, in decoding order, for each tensor in template order (``stream order``:
a module's g_idx, qzeros, scales before its qweight; names sorted otherwise):

* float tensors (not scales): dtype code, Uniform(4) over (float16, bfloat16, float32, float64);
* g_idx: 1 flag; canonical ``i // group_size`` (0 further bits) or raw 32-bit;
* qzeros: mode Uniform(2): raw 32-bit words, or the unpacked b-bit symbols ("cat");
* qweight: mode Uniform(3): raw words, "cat", or "catz" (codes coded with one table per value of
  the code's zero point, which the decoder already has); Uniform(2) without "catz" when the
  decoded g_idx points outside the groups;
* scales and float tensors: mode Uniform(2): 16-bit planes or byte planes of the IEEE bits
  (little-endian); per plane a flag: raw (exactly 16 or 8 bits each) or "cat".

"cat" over an alphabet [0, K) of n symbols (n known from the template): m-1 ~ Uniform(K); if
m < K the set of present symbols (1 flag; a K-bit bitmap, or the m gaps as Elias-gamma-like
integers); a precision shift s ~ Uniform(bitlen n), then either (s = 0) the first m-1 exact
counts (Elias-gamma-like, bit length ~ Uniform(bitlen n)), the last implied by the sum n, or
(s > 0) all m counts at precision 2^s, max(1, round(c / 2^s)); then the symbols with the static
Categorical of those weights (nothing when m = 1).  The encoder picks s minimizing table +
symbol bits (two-part MDL).  Raw fields go through Uniform(2^k), k <= 16, which costs exactly k bits.
The encoder picks the shortest mode per tensor (and per plane) and sends the choice.

No Dagster, no database, no network here.
"""

from __future__ import annotations

import math
import sys
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .rtn import SUPPORTED_BITS, group_index, pack_fields, unpack_fields

__all__ = [
    "FORMAT", "FLOAT_DTYPES", "EntropyCode", "EntropyTemplate", "EntropyDecodeError", "entropy_code",
    "entropy_decode", "codeword_length", "elias_delta_bits", "elias_delta_parse",
]

FORMAT = "genbound-ec1"
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_FIXED_DTYPES = {"qweight": torch.int32, "qzeros": torch.int32, "g_idx": torch.int32,
                 "scales": torch.float16}
_SUFFIX_RANK = {"g_idx": 1, "qzeros": 2, "scales": 3, "qweight": 4}


class EntropyDecodeError(ValueError):
    """The bytes are not a valid code word for this template (truncated, corrupted, or coded
    for another architecture/settings)."""


def _need_constriction():
    try:
        import constriction
    except ImportError as e:  # pragma: no cover - installed with the package
        raise ImportError("entropy coding needs the 'constriction' package "
                          "(pip install constriction)") from e
    return constriction


# ----------------------------------------------------------------------------------- template

@dataclass(frozen=True)
class EntropyTemplate:
    """The decoder's a-priori knowledge: quantization settings and every stored tensor's name
    and shape, in stream order.  Built from the architecture alone (``from_model`` works on a
    meta-device model; ``from_config`` builds one), never from trained weights."""

    bits: int
    group_size: int
    quantized: tuple[str, ...]                           # quantized module prefixes, sorted
    tensors: tuple[tuple[str, tuple[int, ...]], ...]     # (name, shape) in stream order

    def __post_init__(self):
        if int(self.bits) != self.bits or int(self.bits) not in SUPPORTED_BITS:
            raise ValueError(f"template bits must be one of {SUPPORTED_BITS}, got {self.bits!r}")
        if self.group_size != -1 and (int(self.group_size) != self.group_size
                                      or self.group_size <= 0):
            raise ValueError(f"template group_size must be positive or -1, got {self.group_size!r}")
        names = [n for n, _ in self.tensors]
        if len(set(names)) != len(names):
            raise ValueError("template has duplicate tensor names")
        shapes = dict(self.tensors)
        for p in self.quantized:
            for s in ("qweight", "qzeros", "scales", "g_idx"):
                if f"{p}.{s}" not in shapes:
                    raise ValueError(f"template: quantized module {p!r} lacks {p}.{s}")
            groups, out_f = shapes[f"{p}.scales"]
            (in_f,) = shapes[f"{p}.g_idx"]
            if shapes[f"{p}.qweight"] != (-(-in_f * self.bits // 32), out_f) or \
                    shapes[f"{p}.qzeros"] != (groups, -(-out_f * self.bits // 32)):
                raise ValueError(f"template: packed shapes of {p!r} do not fit b={self.bits}")
        order = sorted(names, key=_stream_key)
        if order != names:
            raise ValueError("template tensors are not in stream order")

    @classmethod
    def from_model(cls, model: torch.nn.Module, bits: int, group_size: int,
                   quantize_embeddings: bool = False) -> EntropyTemplate:
        """From the architecture of ``model`` (its parameter names and shapes only)."""
        from .quantize import predicted_specs, quantized_module_names

        specs = predicted_specs(model, bits, group_size, quantize_embeddings)
        tensors = tuple(sorted(((s.name, tuple(int(d) for d in s.shape)) for s in specs),
                               key=lambda t: _stream_key(t[0])))
        quantized = tuple(sorted(quantized_module_names(model, quantize_embeddings)))
        return cls(int(bits), int(group_size), quantized, tensors)

    @classmethod
    def from_config(cls, config: Any, bits: int, group_size: int,
                    quantize_embeddings: bool = False) -> EntropyTemplate:
        """From a transformers config (a meta-device model is built: no weights, no memory)."""
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return cls.from_model(model, bits, group_size, quantize_embeddings)

    @classmethod
    def of(cls, q: Any) -> EntropyTemplate:
        """The template of a ``QuantizedModel``: its architecture and declared settings only."""
        return cls.from_model(q.model, q.bits, q.group_size, q.quantize_embeddings)

    def shape(self, name: str) -> tuple[int, ...]:
        return dict(self.tensors)[name]


def _stream_key(name: str) -> tuple[str, int, str]:
    prefix, _, suffix = name.rpartition(".")
    return prefix, _SUFFIX_RANK.get(suffix, 0), name


# ----------------------------------------------------------------------------------- Elias delta

def elias_delta_bits(n: int) -> str:
    """Elias-delta code word of a positive integer, as a '0'/'1' string (a prefix code:
    2 floor(log2 L) + L bits with L = bitlen(n), L's own length in unary-coded gamma)."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"Elias-delta codes positive integers, got {n!r}")
    n = int(n)
    length = n.bit_length()
    ll = length.bit_length()
    return "0" * (ll - 1) + format(length, "b") + format(n, "b")[1:]


def elias_delta_parse(bits: str, pos: int = 0) -> tuple[int, int]:
    """Decode one Elias-delta code word from ``bits`` at ``pos``: (value, position after it)."""
    zeros = 0
    while pos + zeros < len(bits) and bits[pos + zeros] == "0":
        zeros += 1
        if zeros > 6:          # lengths above 2^7 - 1 bits: not a stream this coder writes
            raise EntropyDecodeError("length prefix is not a valid Elias-delta code word")
    end = pos + 2 * zeros + 1
    if end > len(bits):
        raise EntropyDecodeError("payload truncated inside the length prefix")
    length = int(bits[pos + zeros:end], 2)
    if end + length - 1 > len(bits):
        raise EntropyDecodeError("payload truncated inside the length prefix")
    value = int("1" + bits[end:end + length - 1], 2)
    return value, end + length - 1


def _header(n_words: int) -> bytes:
    b = elias_delta_bits(n_words + 1)
    b += "0" * (-len(b) % 8)
    return int(b, 2).to_bytes(len(b) // 8, "big")


def _parse_header(payload: bytes) -> tuple[int, int]:
    """(header byte length, n_words) from the start of ``payload``."""
    head = payload[:16]
    bits = "".join(format(x, "08b") for x in head)
    value, pos = elias_delta_parse(bits)
    n_bytes = -(-pos // 8)
    if any(c != "0" for c in bits[pos:8 * n_bytes]):
        raise EntropyDecodeError("non-zero padding after the length prefix")
    return n_bytes, value - 1


def codeword_length(buffer: bytes) -> int:
    """Bytes of the code word at the start of ``buffer``, read from its own prefix only: the
    code is self-delimiting, whatever follows it."""
    n_hdr, n_words = _parse_header(bytes(buffer))
    return n_hdr + 4 * n_words


# ----------------------------------------------------------------------------------- coding ops

@dataclass
class _Op:
    kind: str            # "u" (Uniform with per-symbol sizes) or "c" (static Categorical)
    symbols: np.ndarray  # int32
    param: np.ndarray    # sizes (int32) or counts (float64)
    tag: str

    def cost(self) -> float:
        if self.kind == "u":
            return float(np.log2(self.param.astype(np.float64)).sum())
        w = self.param
        freq = np.bincount(self.symbols, minlength=len(w))
        return float(-(freq * np.log2(w / w.sum())).sum())


class _Enc:
    """Records the symbols to code, in decoding order (``ops``)."""

    enc = True

    def __init__(self, tag: str = ""):
        self.ops: list[_Op] = []
        self.tag = tag

    def uniform(self, values, sizes, n: int) -> np.ndarray:
        v = np.asarray(values, dtype=np.int64).reshape(-1)
        s = np.broadcast_to(np.asarray(sizes, dtype=np.int64), (n,))
        if v.shape != (n,):
            raise AssertionError("uniform: value count mismatch")
        if v.size and (v.min() < 0 or (v >= s).any()):
            raise AssertionError("uniform: value outside its alphabet")
        keep = s >= 2
        if keep.any():
            self.ops.append(_Op("u", v[keep].astype(np.int32), s[keep].astype(np.int32),
                                self.tag))
        return v

    def categorical(self, values, counts, n: int) -> np.ndarray:
        v = np.asarray(values, dtype=np.int64).reshape(-1)
        self.ops.append(_Op("c", v.astype(np.int32), np.asarray(counts, dtype=np.float64),
                            self.tag))
        return v

    def cost(self) -> float:
        return sum(op.cost() for op in self.ops)


class _Dec:
    enc = False

    def __init__(self, coder):
        self.coder = coder
        self.model = _need_constriction().stream.model

    def uniform(self, values, sizes, n: int) -> np.ndarray:
        s = np.broadcast_to(np.asarray(sizes, dtype=np.int64), (n,))
        out = np.zeros(n, dtype=np.int64)
        keep = s >= 2
        if keep.any():
            out[keep] = self.coder.decode(self.model.Uniform(), s[keep].astype(np.int32))
        return out

    def categorical(self, values, counts, n: int) -> np.ndarray:
        m = self.model.Categorical(np.asarray(counts, dtype=np.float64), perfect=False)
        return np.asarray(self.coder.decode(m, int(n)), dtype=np.int64)


def _push(coder, model_mod, op: _Op) -> None:
    if op.kind == "u":
        coder.encode_reverse(op.symbols, model_mod.Uniform(), op.param)
    else:
        coder.encode_reverse(op.symbols, model_mod.Categorical(op.param, perfect=False))


# ----------------------------------------------------------------------------------- primitives

def _fail(msg: str):
    raise EntropyDecodeError(msg)


def _raw_bits(io, values, nbits, n: int) -> np.ndarray:
    """Non-negative integers below 2^nbits (per element, nbits <= 64), coded as <= 16-bit
    Uniform chunks: exactly sum(nbits) bits."""
    nb = np.broadcast_to(np.asarray(nbits, dtype=np.int64), (n,))
    v = None if values is None else np.asarray(values, dtype=np.uint64).reshape(-1)
    out = np.zeros(n, dtype=np.uint64)
    top = int(nb.max()) if n else 0
    for j in range(0, top, 16):
        cb = np.clip(nb - j, 0, 16)
        sel = cb > 0
        k = int(sel.sum())
        chunk = None
        if v is not None:
            chunk = ((v[sel] >> np.uint64(j)) & ((np.uint64(1) << cb[sel].astype(np.uint64))
                                                  - np.uint64(1))).astype(np.int64)
        got = io.uniform(chunk, np.int64(1) << cb[sel], k)
        out[sel] |= got.astype(np.uint64) << np.uint64(j)
    return out


def _pos_ints(io, values, max_value: int, n: int) -> np.ndarray:
    """Integers in [1, max_value]: L = bitlen(v) ~ Uniform(bitlen(max_value)), then the L-1
    bits below the leading 1 (an Elias-gamma code with a bounded, uniformly coded length)."""
    lmax = int(max_value).bit_length()
    v = None if values is None else np.asarray(values, dtype=np.int64).reshape(-1)
    lens = None
    if v is not None:
        if v.size and (v.min() < 1 or v.max() > max_value):
            raise AssertionError("pos_ints: value out of range")
        lens = np.zeros(n, dtype=np.int64)
        if n:
            lens = np.floor(np.log2(v.astype(np.float64))).astype(np.int64) + 1
            lens += (np.int64(1) << lens) <= v          # float log2 guard
            lens -= (np.int64(1) << (lens - 1)) > v
    lens = io.uniform(None if lens is None else lens - 1, lmax, n) + 1
    mant = None if v is None else v - (np.int64(1) << (lens - 1))
    mant = _raw_bits(io, mant, lens - 1, n).astype(np.int64)
    out = (np.int64(1) << (lens - 1)) + mant
    if not io.enc and n and out.max() > max_value:
        _fail(f"decoded integer {int(out.max())} exceeds its bound {max_value}")
    return out


def _table(io, x: np.ndarray | None, K: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Present symbols (sorted) and the weights of their Categorical, for n symbols over
    [0, K), n >= 1: the exact counts (shift 0, the last one implied by n) or the counts at a
    coarser precision 2^shift (the encoder picks the shift minimizing table + symbol bits: the
    two-part MDL trade-off between the table's precision and the symbols' code length)."""
    if x is not None:
        hist = np.bincount(x, minlength=K)
        present = np.flatnonzero(hist)
        counts = hist[present]
        m = len(present)
    else:
        present = counts = None
        m = None
    m = int(io.uniform(None if m is None else [m - 1], K, 1)[0]) + 1
    if m > n:
        _fail(f"table claims {m} distinct symbols among {n}")
    if m < K:
        gaps = None
        use_gaps = None
        if present is not None:
            gaps = np.diff(np.concatenate([[-1], present])) - 1
            probe = _Enc()
            _pos_ints(probe, gaps + 1, K, m)
            use_gaps = int(probe.cost() + 1e-9 < K)
        use_gaps = int(io.uniform(None if use_gaps is None else [use_gaps], 2, 1)[0])
        if use_gaps:
            g = _pos_ints(io, None if gaps is None else gaps + 1, K, m)
            present = np.cumsum(g) - 1
            if present[-1] >= K:
                _fail(f"table symbol {int(present[-1])} outside the alphabet [0, {K})")
        else:
            bitmap = None
            if present is not None:
                bitmap = np.zeros(K, dtype=np.int64)
                bitmap[present] = 1
            bitmap = io.uniform(bitmap, 2, K)
            present = np.flatnonzero(bitmap)
            if len(present) != m:
                _fail(f"table bitmap has {len(present)} symbols, header says {m}")
    else:
        present = np.arange(K)
    if m == 1:
        return present, np.array([n], dtype=np.int64)
    lmax = n.bit_length()
    shift = None
    if counts is not None:
        shift = min(range(lmax), key=lambda sh: (_weights_cost(counts, sh, n), sh))
    shift = int(io.uniform(None if shift is None else [shift], lmax, 1)[0])
    if shift == 0:
        head = _pos_ints(io, None if counts is None else counts[:-1], n, m - 1)
        last = n - int(head.sum())
        if last < 1:
            _fail(f"table counts sum to more than the {n} symbols")
        return present, np.concatenate([head, [last]])
    return present, _pos_ints(io, None if counts is None else _coarse(counts, shift),
                              _coarse_max(n, shift), m)


def _coarse(counts: np.ndarray, shift: int) -> np.ndarray:
    """Counts at a precision of 2^shift: max(1, round(c / 2^shift))."""
    return np.maximum(1, (counts + (1 << (shift - 1))) >> shift)


def _coarse_max(n: int, shift: int) -> int:
    return max(1, (n + (1 << (shift - 1))) >> shift)


def _weights_cost(counts: np.ndarray, shift: int, n: int) -> float:
    """Bits of the table's counts at precision 2^shift plus the symbols coded with them."""
    if shift == 0:
        w = counts
        vals, vmax = counts[:-1], n
    else:
        w = vals = _coarse(counts, shift)
        vmax = _coarse_max(n, shift)
    lens = np.floor(np.log2(vals.astype(np.float64))) + 1
    table = len(vals) * math.log2(max(1, vmax.bit_length())) + float((lens - 1).sum())
    return table + float(-(counts * np.log2(w / w.sum())).sum())


def _symbols(io, x: np.ndarray | None, K: int, n: int) -> np.ndarray:
    """n symbols over [0, K) with an explicit frequency table and a static Categorical."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    present, counts = _table(io, x, K, n)
    if len(present) == 1:
        return np.full(n, present[0], dtype=np.int64)
    idx = None
    if x is not None:
        lut = np.zeros(K, dtype=np.int64)
        lut[present] = np.arange(len(present))
        idx = lut[x]
    idx = io.categorical(idx, counts, n)
    return present[idx]


def _dispatch(io, n_modes: int, choice: int | None) -> int:
    return int(io.uniform(None if choice is None else [choice], n_modes, 1)[0])


# ----------------------------------------------------------------------------------- packing

def _unpack(words: np.ndarray, bits: int, n: int) -> np.ndarray:
    """uint32 words [R, m] holding n b-bit fields along axis 0 -> int64 [n, m]."""
    if 32 % bits == 0:
        per = 32 // bits
        shifts = (bits * np.arange(per, dtype=np.uint32))[None, :, None]
        f = (words.astype(np.uint32)[:, None, :] >> shifts) & np.uint32((1 << bits) - 1)
        return f.reshape(-1, words.shape[1])[:n].astype(np.int64)
    return unpack_fields(torch.from_numpy(words.view(np.int32)), bits, n).numpy()


def _pack(values: np.ndarray, bits: int) -> np.ndarray:
    """int [n, m] b-bit fields -> uint32 words [ceil(n b / 32), m] (rtn.pack_fields' rule)."""
    n, m = values.shape
    if 32 % bits == 0:
        per = 32 // bits
        rows = -(-n // per)
        v = np.zeros((rows * per, m), dtype=np.uint32)
        v[:n] = values
        shifts = (bits * np.arange(per, dtype=np.uint32))[None, :, None]
        return np.bitwise_or.reduce(v.reshape(rows, per, m) << shifts, axis=1).astype(np.uint32)
    return pack_fields(torch.from_numpy(values), bits).numpy().view(np.uint32)


# ----------------------------------------------------------------------------------- tensor codecs

def _code_words_raw(io, words: np.ndarray | None, n: int) -> np.ndarray:
    return _raw_bits(io, None if words is None else words.reshape(-1), 32, n).astype(np.uint32)


def _code_packed(io, words: np.ndarray | None, shape: tuple[int, int], bits: int, n_fields: int,
                 axis: int, context: np.ndarray | None) -> tuple[np.ndarray, str]:
    """A packed int32 tensor, as uint32 words of ``shape`` (qweight: fields along axis 0;
    qzeros: along axis 1).

    Modes: 0 "raw" words; 1 "cat" (the unpacked b-bit fields, one table); 2 "catz" (one table
    per value of ``context``, an int array shaped like the fields [n_fields, m]; offered only
    when the decoder has one).  The symbol modes are offered only when the padding bits of the
    words are zero (the fields then determine the words)."""
    names = ["raw", "cat"] + (["catz"] if context is not None else [])
    fields = None
    choice = None
    if words is not None:
        w = words if axis == 0 else words.T
        fields = _unpack(w, bits, n_fields)
        exact = np.array_equal(_pack(fields, bits), w)
        best = None
        for i, name in enumerate(names):
            if name != "raw" and not exact:
                continue
            probe = _Enc()
            _packed_mode(probe, i, words, fields, shape, bits, n_fields, axis, context)
            c = probe.cost()
            if best is None or c < best[0]:
                best = (c, i)
        choice = best[1]
    mode = _dispatch(io, len(names), choice)
    out = _packed_mode(io, mode, words, fields, shape, bits, n_fields, axis, context)
    return out, names[mode]


def _packed_mode(io, mode: int, words, fields, shape: tuple[int, int], bits: int, n_fields: int,
                 axis: int, context) -> np.ndarray:
    if mode == 0:
        return _code_words_raw(io, words, math.prod(shape)).reshape(shape)
    K = 1 << bits
    m = shape[1] if axis == 0 else shape[0]
    src = None if fields is None else fields.reshape(-1)
    if mode == 1:
        got = _symbols(io, src, K, n_fields * m)
    else:
        if context is None:
            _fail("codes coded against zero points, but the decoder has none")
        ctx = context.reshape(-1)
        got = np.zeros(ctx.size, dtype=np.int64)
        for v in np.unique(ctx):
            sel = ctx == v
            got[sel] = _symbols(io, None if src is None else src[sel], K, int(sel.sum()))
    w = _pack(got.reshape(n_fields, m), bits)
    return w if axis == 0 else np.ascontiguousarray(w.T)


def _code_float(io, raw: np.ndarray | None, n: int, width: int) -> tuple[np.ndarray, str]:
    """n IEEE values of ``width`` bytes (uint8 [n, width], little-endian).  Mode 0: 16-bit
    planes, mode 1: byte planes; per plane raw or "cat"."""
    plane_bytes = (2, 1) if width % 2 == 0 else (1,)
    names = [f"p{8 * pb}" for pb in plane_bytes]

    def planes_of(pb):
        dt = np.uint16 if pb == 2 else np.uint8
        return np.ascontiguousarray(raw).view(dt).reshape(n, width // pb).astype(np.int64)

    def code_planes(io2, pb, planes):
        K = 1 << (8 * pb)
        out = np.zeros((n, width // pb), dtype=np.int64)
        for k in range(width // pb):
            col = None if planes is None else planes[:, k]
            flag = None
            if col is not None:
                probe = _Enc()
                _symbols(probe, col, K, n)
                flag = int(probe.cost() < 8 * pb * n)
            flag = int(io2.uniform(None if flag is None else [flag], 2, 1)[0])
            if flag:
                out[:, k] = _symbols(io2, col, K, n)
            else:
                out[:, k] = io2.uniform(col, K, n)
        return out

    choice = None
    cache = {}
    if raw is not None:
        best = None
        for i, pb in enumerate(plane_bytes):
            cache[pb] = planes_of(pb)
            probe = _Enc()
            code_planes(probe, pb, cache[pb])
            if best is None or probe.cost() < best[0]:
                best = (probe.cost(), i)
        choice = best[1]
    mode = _dispatch(io, len(plane_bytes), choice)
    pb = plane_bytes[mode]
    out = code_planes(io, pb, cache.get(pb))
    dt = np.uint16 if pb == 2 else np.uint8
    back = np.ascontiguousarray(out.astype(dt)).view(np.uint8).reshape(n, width)
    return back, names[mode]


# ----------------------------------------------------------------------------------- encode/decode

@dataclass
class EntropyCode:
    """An entropy-coded, self-delimiting code word for h_q's stored tensors.

    bits: total code length (= 8 len(payload)), what the bound uses; per_tensor_bits: the
    share of the ANS stream each tensor took (its flags, dtype, tables and symbols);
    header_bits: the rest (length prefix and its padding, CRC-32, ANS start/flush), so
    ``header_bits + sum(per_tensor_bits.values()) == bits``."""

    bits: int
    payload: bytes
    per_tensor_bits: dict[str, int]
    header_bits: int
    modes: dict[str, str] = field(default_factory=dict)
    template: EntropyTemplate | None = None

    def bits_per_param(self, n_params: int) -> float:
        return self.bits / int(n_params)


def _check_state(state: Mapping[str, torch.Tensor], template: EntropyTemplate) -> None:
    want = dict(template.tensors)
    missing, extra = set(want) - set(state), set(state) - set(want)
    if missing or extra:
        raise ValueError(f"stored state does not match the template: missing {sorted(missing)}, "
                         f"unexpected {sorted(extra)}")
    qset = set(template.quantized)
    for name, shape in template.tensors:
        t = state[name]
        if tuple(t.shape) != shape:
            raise ValueError(f"{name}: shape {tuple(t.shape)} != template {shape}")
        prefix, _, suffix = name.rpartition(".")
        if prefix in qset and suffix in _FIXED_DTYPES:
            if t.dtype != _FIXED_DTYPES[suffix]:
                raise ValueError(f"{name}: dtype {t.dtype}, the GPTQ v2 layout stores "
                                 f"{_FIXED_DTYPES[suffix]}")
        elif t.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{name}: dtype {t.dtype} is not a float dtype the coder knows "
                             f"({', '.join(str(d) for d in FLOAT_DTYPES)})")


def _crc(items: list[tuple[str, torch.Tensor]]) -> int:
    h = 0
    for name, t in items:
        h = zlib.crc32(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode(), h)
        h = zlib.crc32(_tensor_bytes(t).tobytes(), h)
    return h


def _tensor_bytes(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu().contiguous().reshape(-1)
    if t.numel() == 0:
        return np.zeros(0, dtype=np.uint8)
    return t.view(torch.uint8).numpy()


def _code_all(io, template: EntropyTemplate, state: Mapping[str, torch.Tensor] | None
              ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The whole stream (minus the length prefix), shared by encoder and decoder."""
    if sys.byteorder != "little":  # pragma: no cover
        raise RuntimeError("entropy_code assumes a little-endian machine")
    out: dict[str, torch.Tensor] = {}
    modes: dict[str, str] = {}
    shapes = dict(template.tensors)
    qset = set(template.quantized)
    b = template.bits
    for name, shape in template.tensors:
        if io.enc:
            io.tag = name
        t = None if state is None else state[name]
        n = math.prod(shape)
        prefix, _, suffix = name.rpartition(".")
        quant = prefix in qset and suffix in _FIXED_DTYPES
        if quant and suffix == "g_idx":
            canon = group_index(shape[0], template.group_size).numpy()
            arr = None if t is None else t.numpy().astype(np.int64)
            flag = None if arr is None else int(not np.array_equal(arr, canon))
            flag = int(io.uniform(None if flag is None else [flag], 2, 1)[0])
            if flag:
                got = _code_words_raw(io, None if arr is None else arr.astype(np.int32)
                                      .view(np.uint32), n).view(np.int32)
            else:
                got = canon.astype(np.int32)
            out[name] = torch.from_numpy(got.astype(np.int32).reshape(shape).copy())
            modes[name] = "raw" if flag else "canonical"
        elif quant and suffix in ("qzeros", "qweight"):
            groups, out_f = shapes[f"{prefix}.scales"]
            (in_f,) = shapes[f"{prefix}.g_idx"]
            words = None if t is None else t.numpy().view(np.uint32)
            context = None
            if suffix == "qzeros":
                n_fields, axis = out_f, 1
            else:
                n_fields, axis = in_f, 0
                g = out[f"{prefix}.g_idx"].numpy().astype(np.int64)
                if g.size == 0 or (g.min() >= 0 and g.max() < groups):
                    zw = out[f"{prefix}.qzeros"].numpy().view(np.uint32)
                    zeros = _unpack(zw.T, b, out_f).T          # [groups, out]
                    context = zeros[g]                         # [in, out]
            got, mode = _code_packed(io, words, shape, b, n_fields, axis, context)
            out[name] = torch.from_numpy(got.astype(np.uint32).view(np.int32).copy())
            modes[name] = mode
        else:
            if quant:                                          # scales: float16 by format
                dtype = torch.float16
            else:
                code = None if t is None else FLOAT_DTYPES.index(t.dtype)
                dtype = FLOAT_DTYPES[int(io.uniform(None if code is None else [code],
                                                    len(FLOAT_DTYPES), 1)[0])]
            width = torch.empty((), dtype=dtype).element_size()
            raw = None if t is None else _tensor_bytes(t).reshape(n, width)
            if n:
                got, mode = _code_float(io, raw, n, width)
            else:
                got, mode = np.zeros((0, width), dtype=np.uint8), "empty"
            if n:
                buf = torch.from_numpy(np.ascontiguousarray(got).reshape(-1).copy())
                out[name] = buf.view(dtype).reshape(shape)
            else:
                out[name] = torch.zeros(shape, dtype=dtype)
            modes[name] = mode
    return out, modes


def entropy_code(q: Any, template: EntropyTemplate | None = None) -> EntropyCode:
    """Encode the stored tensors of ``q`` (a ``QuantizedModel``, or a stored state dict with
    an explicit ``template``) into one self-delimiting bit string.  L(h_q) = ``.bits``."""
    cx = _need_constriction()
    if isinstance(q, Mapping):
        state = q
        if template is None:
            raise ValueError("entropy_code(state) needs the template (architecture + settings)")
    else:
        state = q.state
        template = template or EntropyTemplate.of(q)
    _check_state(state, template)
    enc = _Enc()
    out, modes = _code_all(enc, template, state)
    for name, _ in template.tensors:                      # the codec is exact by construction
        a, b = out[name], state[name].detach().cpu()
        if a.dtype != b.dtype or a.shape != b.shape or not np.array_equal(
                _tensor_bytes(a), _tensor_bytes(b)):                 # bits: NaN != NaN
            raise AssertionError(f"entropy coder does not reproduce {name}")
    crc = _crc([(n, state[n]) for n, _ in template.tensors])
    enc.tag = "__header__"
    _raw_bits(enc, [crc], 32, 1)
    coder = cx.stream.stack.AnsCoder()
    per: dict[str, int] = {n: 0 for n, _ in template.tensors}
    per["__header__"] = 0
    for op in reversed(enc.ops):
        before = coder.num_valid_bits()
        _push(coder, cx.stream.model, op)
        per[op.tag] += coder.num_valid_bits() - before
    words = np.asarray(coder.get_compressed(), dtype=np.uint32)
    payload = _header(len(words)) + words.astype("<u4").tobytes()
    bits = 8 * len(payload)
    per.pop("__header__")
    header_bits = bits - sum(per.values())
    return EntropyCode(bits=bits, payload=payload, per_tensor_bits=per, header_bits=header_bits,
                       modes=modes, template=template)


def entropy_decode(payload: bytes, template: EntropyTemplate | Any) -> dict[str, torch.Tensor]:
    """Rebuild the stored state dict (every tensor, dtype and shape) from ``payload`` and the
    a-priori ``template`` (an ``EntropyTemplate``; a ``QuantizedModel`` is reduced to its
    template, i.e. architecture and settings only).  Raises ``EntropyDecodeError`` on a
    truncated, extended or corrupted payload."""
    cx = _need_constriction()
    if not isinstance(template, EntropyTemplate):
        template = EntropyTemplate.of(template)
    payload = bytes(payload)
    n_hdr, n_words = _parse_header(payload)
    if len(payload) < n_hdr + 4 * n_words:
        raise EntropyDecodeError(f"payload truncated: {len(payload)} bytes, the length prefix "
                                 f"announces {n_hdr + 4 * n_words}")
    if len(payload) > n_hdr + 4 * n_words:
        raise EntropyDecodeError(f"payload has {len(payload) - n_hdr - 4 * n_words} bytes after "
                                 "the end of its code word")
    words = np.frombuffer(payload, dtype="<u4", offset=n_hdr, count=n_words).astype(np.uint32)
    try:
        coder = cx.stream.stack.AnsCoder(words.copy())
        dec = _Dec(coder)
        out, _ = _code_all(dec, template, None)
        crc = int(_raw_bits(dec, None, 32, 1)[0])
        empty = coder.is_empty()
    except EntropyDecodeError:
        raise
    except Exception as e:  # constriction or numpy on garbage input
        raise EntropyDecodeError(f"payload does not decode under this template: {e}") from e
    if not empty:
        raise EntropyDecodeError("ANS stream not exhausted after the last tensor (corrupted "
                                 "payload or a different template)")
    if crc != _crc([(n, out[n]) for n, _ in template.tensors]):
        raise EntropyDecodeError("CRC-32 of the decoded tensors does not match (corrupted "
                                 "payload or a different template)")
    return {k: out[k] for k in sorted(out)}
