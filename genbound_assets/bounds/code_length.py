"""Code length L(h) of the bounded model (Lemma 3.2, App. A.2; Thm 3.4's C = (N/D) b log 2 + ...).

Lemma 3.2 needs a prefix-free code for every h in the class; L(h) enters C in nats.  Three ways
of measuring it are offered, and only two certify the evaluated model:

* ``nominal_code_length``: b*N, the paper's accounting (Thm 3.4).  It is a fixed-length code only
  if *every* tensor the evaluation uses is stored at b bits with no side information (scales,
  zero points, fp16 embeddings ...); otherwise it undercounts and certifies nothing.
* ``stored_code_length``: the bits the checkpoint actually stores (integer codes + scales + zero
  points + group indices + every tensor left in 16/32-bit).  Given the fixed architecture and
  storage format the length is known in advance, so no prefix overhead is due (App. A.2, last
  paragraph).
* ``compressed_code_length``: e.g. the lzma size of the stored model.  Its length is data
  dependent, so App. A.2's prefix-free conversion adds 2 log2(L) + 1 bits.
* ``entropy_code_length``: the length of measure/entropy_code.py's ANS code word for the stored
  tensors.  The code word carries its own Elias-delta length prefix (it is self-delimiting), so
  its length is used as is (docs/quantization.md, "Entropy-coded length").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ._validate import finite_scalar, positive, positive_int


@dataclass(frozen=True)
class CodeLength:
    """A code length in bits and whether it certifies the evaluated model (Lemma 3.2's L(h)).

    method: "nominal", "stored", "compressed" or "entropy"; certified: True iff the bits are the length of
    an actual prefix-free (or known-length) code decoding to the evaluated model.
    """

    method: str
    bits: float
    certified: bool
    note: str

    def bits_per_param(self, n_params: int) -> float:
        """bits / N, the b of Thm 3.4 that this code length corresponds to."""
        return self.bits / positive_int("n_params", n_params)

    @property
    def nats(self) -> float:
        return code_length_nats(self)


def nominal_code_length(n_params: int, bits: float, *, all_tensors_quantized: bool = False
                        ) -> CodeLength:
    """L(h) = b N bits, Thm 3.4 / Sec. 5.1 ("L(h) <= b N log 2").

    Certified only when the caller states that every tensor used in evaluation is stored at b
    bits per element with no side information (``all_tensors_quantized=True``): then the code is
    fixed-length given N and b (App. A.2).  For GPTQ/RTN checkpoints (scales, zero points, fp16
    embeddings) use ``stored_code_length``.
    """
    n = positive_int("n_params", n_params)
    b = positive("bits", bits)
    if not isinstance(all_tensors_quantized, bool):
        raise ValueError(f"all_tensors_quantized must be a bool, got {all_tensors_quantized!r}")
    note = (f"b*N = {b:g} x {n} bits (Thm 3.4 accounting)"
            + ("; caller states every evaluated tensor is stored at b bits" if all_tensors_quantized
               else "; side information and unquantized tensors not counted: not certified"))
    return CodeLength("nominal", b * n, all_tensors_quantized, note)


def stored_code_length(tensors: Iterable[tuple[str, int, float]]) -> CodeLength:
    """L(h) = sum over stored tensors of n_elements * bits_per_element (Lemma 3.2, App. A.2).

    ``tensors``: (name, n_elements, bits_per_element) for *everything* the evaluated model reads:
    integer weight codes, per-group scales and zero points, group-index tensors, and every tensor
    kept in 16/32-bit (embeddings, unembedding, biases, norms).  The architecture and format fix
    the length in advance, so this is a fixed-length code and certifies the stored model.  Any
    format choice made after seeing data (b, group size, GPTQ vs RTN) is paid for separately
    (``bounds.choices``).
    """
    rows = list(tensors)
    if not rows:
        raise ValueError("tensors is empty")
    total = 0.0
    names: set[str] = set()
    for i, row in enumerate(rows):
        if len(row) != 3:
            raise ValueError(f"tensors[{i}] must be (name, n_elements, bits_per_element), got {row!r}")
        name, n_el, b = row
        if not isinstance(name, str) or not name:
            raise ValueError(f"tensors[{i}] name must be a non-empty string, got {name!r}")
        if name in names:
            raise ValueError(f"tensors has duplicate name {name!r}")
        names.add(name)
        n_el = positive_int(f"tensors[{i}] ({name}) n_elements", n_el)
        b = positive(f"tensors[{i}] ({name}) bits_per_element", b)
        total += n_el * b
    return CodeLength("stored", total, True,
                      f"fixed-length code over {len(rows)} stored tensors (architecture fixed)")


def compressed_code_length(n_bytes: int, length_known_in_advance: bool = False) -> CodeLength:
    """L(h) for a compressed file of n_bytes (e.g. lzma of the stored model), App. A.2.

    L = 8 n_bytes bits.  A data-dependent length needs the prefix-free conversion
    l(L) = L + 2 log2(L) + 1 (Kraft sum pi^2/12 < 1), unless the length was fixed in advance.
    """
    n = positive_int("n_bytes", n_bytes)
    if not isinstance(length_known_in_advance, bool):
        raise ValueError(f"length_known_in_advance must be a bool, got {length_known_in_advance!r}")
    raw = 8.0 * n
    if length_known_in_advance:
        return CodeLength("compressed", raw, True, f"{n} bytes, length fixed in advance")
    overhead = 2.0 * math.log2(raw) + 1.0
    return CodeLength("compressed", raw + overhead, True,
                      f"{n} bytes + prefix-free overhead 2 log2(L) + 1 = {overhead:.3f} bits")


def entropy_code_length(bits: int) -> CodeLength:
    """L(h) for the entropy-coded stored model (``measure.entropy_code.EntropyCode.bits``),
    Lemma 3.2 with a prefix-free code.

    The code word begins with an Elias-delta code of its own length, so the decoder finds its
    end without looking past it: the code is prefix-free as it stands and App. A.2's
    2 log2(L) + 1 conversion is not added (it is already paid, inside ``bits``).  The decoder
    knows a priori only the architecture and the quantization settings; taking the shortest of
    {stored, compressed, entropy} is a data-dependent choice among 3 codes, paid separately
    (log 3 nats, ``bounds.choices``).
    """
    b = positive_int("bits", bits)
    return CodeLength("entropy", float(b), True,
                      f"{b} bits: self-delimiting ANS code word (Elias-delta length prefix "
                      "included), decoded given the architecture and quantization settings")


def code_length_nats(code_length: CodeLength | float) -> float:
    """L(h) in nats = bits * log 2 (Lemma 3.2 measures L(h) in nats)."""
    bits = code_length.bits if isinstance(code_length, CodeLength) else code_length
    bits = finite_scalar("code_length", bits)
    if bits < 0:
        raise ValueError(f"code_length must be >= 0 bits, got {bits!r}")
    return bits * math.log(2.0)
