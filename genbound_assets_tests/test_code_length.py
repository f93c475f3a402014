import json
import math
from pathlib import Path

import pytest

from genbound_assets.bounds.code_length import (
    CodeLength,
    code_length_nats,
    compressed_code_length,
    entropy_code_length,
    nominal_code_length,
    stored_code_length,
)

PYTHIA = Path("/work/shared/reference/pythia.json")


def _pythia_70m():
    ref = json.loads(PYTHIA.read_text()) if PYTHIA.exists() else None
    if ref is None:  # numbers from the shared reference, kept here so the test runs anywhere
        return dict(total_params=70426624, non_embedding_params=18915328, layers=6,
                    d_model=512, padded_vocab=50304)
    return next(m for m in ref["models"] if m["size"] == "70m")


def _gptq_tensors(m, bits=4, group=128, keep_g_idx=True):
    """Stored tensors of a GPT-NeoX (Pythia) model with linear weights GPTQ-quantized."""
    d, layers, vocab = m["d_model"], m["layers"], m["padded_vocab"]
    ff = 4 * d
    # (out_features, in_features) of each quantized linear layer in one block
    linears = {"qkv": (3 * d, d), "attn_out": (d, d), "h_to_4h": (ff, d), "4h_to_h": (d, ff)}
    biases = 3 * d + d + ff + d
    norms = 2 * (2 * d)
    rows = [("embed_in", vocab * d, 16), ("embed_out", vocab * d, 16),
            ("final_layer_norm", 2 * d, 16)]
    for i in range(layers):
        for name, (out_f, in_f) in linears.items():
            assert in_f % group == 0
            rows.append((f"l{i}.{name}.qweight", out_f * in_f, bits))
            rows.append((f"l{i}.{name}.scales", out_f * in_f // group, 16))
            rows.append((f"l{i}.{name}.qzeros", out_f * in_f // group, bits))
            if keep_g_idx:
                rows.append((f"l{i}.{name}.g_idx", in_f, 32))
        rows.append((f"l{i}.biases", biases, 16))
        rows.append((f"l{i}.norms", norms, 16))
    return rows


def test_pythia70m_shapes_reproduce_reference_counts():
    m = _pythia_70m()
    rows = _gptq_tensors(m)
    n_params = sum(n for name, n, _ in rows
                   if not name.endswith((".scales", ".qzeros", ".g_idx")))
    assert n_params == m["total_params"]
    non_emb = n_params - 2 * m["padded_vocab"] * m["d_model"]
    assert non_emb == m["non_embedding_params"]


def test_pythia70m_gptq4_group128_is_about_12p8_bits_per_param():
    m = _pythia_70m()
    n = m["total_params"]
    stored = stored_code_length(_gptq_tensors(m))
    assert stored.certified and stored.method == "stored"
    bpp = stored.bits_per_param(n)
    assert 12.75 < bpp < 12.9, bpp
    # independent check: fp16 embeddings dominate, quantized part costs 4 + 20/128 bits
    emb = 2 * m["padded_vocab"] * m["d_model"]
    quantized = 6 * 12 * m["d_model"] ** 2
    in_cols = 6 * (3 * m["d_model"] + 4 * m["d_model"])
    other = n - emb - quantized
    expected = 16 * emb + quantized * (4 + 20 / 128) + 32 * in_cols + 16 * other
    assert stored.bits == pytest.approx(expected, rel=1e-12)
    # the paper's accounting would claim 4 bits/param and certify nothing
    nominal = nominal_code_length(n, 4)
    assert not nominal.certified
    assert nominal.bits_per_param(n) == 4
    assert stored.bits > 3 * nominal.bits


def test_dropping_g_idx_changes_little():
    m = _pythia_70m()
    a = stored_code_length(_gptq_tensors(m)).bits
    b = stored_code_length(_gptq_tensors(m, keep_g_idx=False)).bits
    assert b < a
    assert (a - b) / m["total_params"] < 0.02


def test_nominal_certified_only_when_stated():
    assert nominal_code_length(10, 3, all_tensors_quantized=True).certified
    assert nominal_code_length(10, 3).bits == 30
    with pytest.raises(ValueError, match="all_tensors_quantized"):
        nominal_code_length(10, 3, all_tensors_quantized="yes")


def test_compressed_prefix_overhead():
    c = compressed_code_length(1000)
    L = 8000
    assert c.bits == pytest.approx(L + 2 * math.log2(L) + 1)
    assert c.certified
    assert compressed_code_length(1000, length_known_in_advance=True).bits == L
    # Kraft: sum over lengths L of 2^L strings * 2^-(L + 2 log2 L + 1) = sum 1/(2 L^2) < 1
    kraft = sum(2.0 ** -(2 * math.log2(L) + 1) for L in range(1, 100000))
    assert kraft < 1


def test_nats():
    c = CodeLength("stored", 8.0, True, "")
    assert code_length_nats(c) == pytest.approx(8 * math.log(2))
    assert c.nats == code_length_nats(8.0)
    with pytest.raises(ValueError, match="code_length"):
        code_length_nats(float("nan"))
    with pytest.raises(ValueError, match="code_length"):
        code_length_nats(-1.0)


@pytest.mark.parametrize("bad, match", [
    ([], "tensors is empty"),
    ([("w", 0, 4)], "n_elements"),
    ([("w", 10, 0)], "bits_per_element"),
    ([("w", 10, float("inf"))], "bits_per_element"),
    ([("w", 10, 4), ("w", 5, 16)], "duplicate"),
    ([("w", 10)], "tensors\\[0\\]"),
    ([("", 10, 4)], "name"),
])
def test_stored_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        stored_code_length(bad)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_params=0, bits=4), "n_params"),
    (dict(n_params=10, bits=0), "bits"),
    (dict(n_params=10, bits=float("nan")), "bits"),
])
def test_nominal_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nominal_code_length(**kwargs)


def test_compressed_validation():
    with pytest.raises(ValueError, match="n_bytes"):
        compressed_code_length(0)


def test_entropy_code_length_is_the_self_delimiting_length_as_is():
    e = entropy_code_length(8000)
    assert e.method == "entropy" and e.certified
    assert e.bits == 8000                       # no 2 log2 L + 1: the length prefix is inside
    assert e.bits < compressed_code_length(1000).bits
    assert e.bits_per_param(1000) == 8
    assert e.nats == pytest.approx(8000 * math.log(2))


@pytest.mark.parametrize("bad", [0, -8, 1.5, float("nan"), True, "8"])
def test_entropy_code_length_validation(bad):
    with pytest.raises(ValueError, match="bits"):
        entropy_code_length(bad)
