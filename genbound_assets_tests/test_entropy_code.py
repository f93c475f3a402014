"""measure.entropy_code: the self-delimiting ANS code for h_q's stored tensors.

Round trips every tensor of real GPTQ (GPTQModel) and RTN checkpoints of a briefly trained tiny
GPT-NeoX bit for bit from the payload and the architecture + settings alone; checks that the
code is shorter than lzma on that trained model; property tests on random symbol tensors; the
Elias-delta prefix; corrupted and truncated payloads.  Speeds live in bench/bench_entropy_code.py.
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from genbound_assets.bounds.code_length import compressed_code_length, entropy_code_length
from genbound_assets.measure.entropy_code import (
    FLOAT_DTYPES,
    EntropyDecodeError,
    EntropyTemplate,
    codeword_length,
    elias_delta_bits,
    elias_delta_parse,
    entropy_code,
    entropy_decode,
)
from genbound_assets.measure.quantize import dequantize_state, quantize_model
from genbound_assets.measure.rtn import group_index, pack_fields

VOCAB, HIDDEN, LAYERS, INTER, T = 257, 32, 2, 128, 32


def _stream(n: int, seed: int) -> torch.Tensor:
    """A low-entropy synthetic token stream (4 likely successors per token)."""
    g = torch.Generator().manual_seed(seed)
    succ = torch.randint(0, VOCAB, (VOCAB, 4), generator=g)
    choice = torch.multinomial(torch.tensor([0.55, 0.25, 0.12, 0.08]), n, replacement=True,
                               generator=g)
    out = torch.empty(n, dtype=torch.long)
    cur = 0
    for i in range(n):
        cur = int(succ[cur, choice[i]])
        out[i] = cur
    return out


@pytest.fixture(scope="module")
def trained():
    """A tiny suite-shaped GPT-NeoX (V = 257, untied embeddings) after 120 AdamW steps."""
    cfg = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                        num_attention_heads=2, intermediate_size=INTER,
                        max_position_embeddings=64, rotary_pct=0.25, use_parallel_residual=True,
                        tie_word_embeddings=False, use_cache=False)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(cfg).float()
    stream = _stream(12_000, seed=1)
    train, calib_part = stream[:10_000], stream[10_000:]
    g = torch.Generator().manual_seed(2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(120):
        idx = torch.randint(0, len(train) - T - 1, (8,), generator=g)
        x = torch.stack([train[i:i + T] for i in idx])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, calib_part[: 32 * T].reshape(32, T)


CASES = {
    "gptq4_g16_emb": ("gptq", 4, 16, True),    # the demo suite's setting; head via GPTQModel
    "gptq3_g32_emb": ("gptq", 3, 32, True),    # 3-bit packing; head via the in-house GPTQ
    "rtn2_g16_emb": ("rtn", 2, 16, True),
    "gptq8_g32": ("gptq", 8, 32, False),       # fp32 embeddings stay float
}


@pytest.fixture(scope="module")
def quantized(trained):
    model, calib = trained
    cache = {}

    def get(case):
        if case not in cache:
            method, bits, gs, emb = CASES[case]
            with contextlib.redirect_stdout(io.StringIO()):
                q = quantize_model(model, method, bits, gs, calib, quantize_embeddings=emb, seed=0)
            cache[case] = (q, entropy_code(q))
        return cache[case]

    return get


# ------------------------------------------------------------------------- real checkpoints

@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_every_stored_tensor_from_architecture_and_settings(trained, quantized, case):
    model, _ = trained
    q, code = quantized(case)
    _method, bits, gs, emb = CASES[case]
    # the decoder gets the payload and what is known before data: config + declared settings
    template = EntropyTemplate.from_config(model.config, bits, gs, quantize_embeddings=emb)
    assert template == EntropyTemplate.of(q)
    state = entropy_decode(code.payload, template)
    assert list(state) == list(q.state)
    for name, t in q.state.items():
        got = state[name]
        assert got.dtype == t.dtype and got.shape == t.shape, name
        assert torch.equal(got, t), name
    # and h_q decodes from it: the same float model
    deq, _ = dequantize_state(model, state, q.metadata)
    for (n1, p1), (n2, p2) in zip(deq.named_parameters(), q.model.named_parameters(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2), n1


@pytest.mark.slow
@pytest.mark.parametrize("case", ["gptq4_g16_emb", "gptq3_g32_emb", "rtn2_g16_emb"])
def test_entropy_code_shorter_than_lzma_and_stored_on_a_trained_model(quantized, case):
    q, code = quantized(case)
    assert code.bits < q.compressed_bits, (code.bits, q.compressed_bits)
    assert code.bits < q.stored_bits, (code.bits, q.stored_bits)
    # the prefix-free lengths the bound compares
    lz = compressed_code_length(math.ceil(q.compressed_bits / 8))
    assert entropy_code_length(code.bits).bits < lz.bits


@pytest.mark.slow
def test_accounting_adds_up_and_is_deterministic(quantized):
    q, code = quantized("gptq4_g16_emb")
    assert code.bits == 8 * len(code.payload)
    assert set(code.per_tensor_bits) == set(q.state)
    assert all(v >= 0 for v in code.per_tensor_bits.values())
    assert code.header_bits + sum(code.per_tensor_bits.values()) == code.bits
    assert 0 < code.header_bits < 200      # length prefix + pad + CRC-32 + ANS flush
    # a canonical g_idx costs its 1-bit flag only
    g = [n for n in q.state if n.endswith(".g_idx")]
    assert g and all(code.per_tensor_bits[n] <= 2 and code.modes[n] == "canonical" for n in g)
    again = entropy_code(q)
    assert again.payload == code.payload    # a function of h_q alone


@pytest.mark.slow
def test_self_delimiting_and_corruption_detected(quantized):
    q, code = quantized("rtn2_g16_emb")
    template = code.template
    p = code.payload
    rng = np.random.default_rng(0)
    tail = bytes(rng.integers(0, 256, 50, dtype=np.uint8))
    assert codeword_length(p + tail) == len(p)          # the end is read from the prefix
    with pytest.raises(EntropyDecodeError, match="after the end"):
        entropy_decode(p + tail, template)
    for cut in (1, 4, len(p) // 2, len(p) - 1, len(p)):
        with pytest.raises(EntropyDecodeError, match="truncated"):
            entropy_decode(p[:-cut], template)
    for _ in range(60):                                    # any flipped bit is caught
        i = int(rng.integers(0, len(p)))
        bad = bytearray(p)
        bad[i] ^= 1 << int(rng.integers(8))
        with pytest.raises(EntropyDecodeError):
            entropy_decode(bytes(bad), template)
    # a template with other settings is refused, not silently decoded
    other = EntropyTemplate.from_model(q.model, 2, 32, quantize_embeddings=True)
    with pytest.raises(EntropyDecodeError):
        entropy_decode(p, other)


@pytest.mark.slow
def test_encoder_refuses_a_state_that_is_not_the_template(quantized):
    q, code = quantized("rtn2_g16_emb")
    state = dict(q.state)
    name = next(n for n in state if n.endswith("layernorm.weight"))
    with pytest.raises(ValueError, match="missing"):
        entropy_code({k: v for k, v in state.items() if k != name}, code.template)
    with pytest.raises(ValueError, match=name.replace(".", r"\.") + ": dtype"):
        entropy_code({**state, name: state[name].to(torch.int32)}, code.template)
    qw = next(n for n in state if n.endswith(".qweight"))
    with pytest.raises(ValueError, match=qw.replace(".", r"\.") + ": shape"):
        entropy_code({**state, qw: state[qw][:-1]}, code.template)
    with pytest.raises(ValueError, match="template"):
        entropy_code(state)


# ------------------------------------------------------------------------- Elias delta

def test_elias_delta_round_trip_prefix_free_and_kraft():
    words = {n: elias_delta_bits(n) for n in range(1, 600)}
    for n, w in words.items():
        assert elias_delta_parse(w + "1011") == (n, len(w))
    ws = sorted(words.values())
    assert not any(b.startswith(a) for a, b in zip(ws, ws[1:], strict=False))
    assert sum(2.0 ** -len(w) for w in ws) < 1
    big = 2 ** 40 + 12345
    assert elias_delta_parse(elias_delta_bits(big)) == (big, len(elias_delta_bits(big)))
    for bad in (0, -1, 1.0, True):
        with pytest.raises(ValueError, match="positive"):
            elias_delta_bits(bad)


def test_empty_or_garbage_header_is_an_error():
    t = _one_module_template(2, 32, 32, 8)
    for bad in (b"", b"\x00" * 16, b"\x01"):
        with pytest.raises(EntropyDecodeError):
            entropy_decode(bad, t)


# ------------------------------------------------------------------------- property tests

def _one_module_template(bits, in_f, out_f, gs, float_shape=(5,)):
    groups = 1 if gs == -1 else in_f // gs
    tensors = {
        "m.bias": (out_f,),
        "m.g_idx": (in_f,),
        "m.qzeros": (groups, -(-out_f * bits // 32)),
        "m.scales": (groups, out_f),
        "m.qweight": (-(-in_f * bits // 32), out_f),
        "norm.weight": tuple(float_shape),
    }
    order = ["m.bias", "m.g_idx", "m.qzeros", "m.scales", "m.qweight", "norm.weight"]
    return EntropyTemplate(bits, gs, ("m",), tuple((n, tensors[n]) for n in order))


def _draw_symbols(draw, rng, shape, K):
    kind = draw(st.sampled_from(["uniform", "skewed", "constant", "two"]))
    if kind == "uniform":
        return rng.integers(0, K, shape)
    if kind == "skewed":
        return np.minimum(rng.geometric(draw(st.floats(0.05, 0.9)), shape) - 1, K - 1)
    if kind == "constant":
        return np.full(shape, int(rng.integers(K)))
    return rng.choice(rng.integers(0, K, 2), shape)


def _draw_float_bits(draw, rng, n, width):
    """Arbitrary IEEE bit patterns (NaN payloads, -0.0, inf included) or a small pool."""
    kind = draw(st.sampled_from(["random", "pool", "gaussian"]))
    nbytes = n * width
    if kind == "random":
        return rng.integers(0, 256, nbytes, dtype=np.uint8)
    if kind == "pool":
        pool = rng.integers(0, 256, (int(rng.integers(1, 6)), width), dtype=np.uint8)
        return pool[rng.integers(0, len(pool), n)].reshape(-1)
    dtype = {2: torch.float16, 4: torch.float32, 8: torch.float64}[width]
    x = torch.from_numpy(rng.standard_normal(n) * 0.02).to(dtype)
    return x.reshape(-1).view(torch.uint8).numpy()


@st.composite
def stored_states(draw):
    bits = draw(st.sampled_from([2, 3, 4, 8]))
    gs = draw(st.sampled_from([8, 16, -1]))
    in_f = draw(st.sampled_from([8, 16, 24, 48]))
    if gs != -1 and in_f % gs:
        gs = 8
    out_f = draw(st.integers(1, 70))
    fdt = draw(st.sampled_from(FLOAT_DTYPES))
    n_float = draw(st.integers(0, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    t = _one_module_template(bits, in_f, out_f, gs, (n_float,))
    groups = dict(t.tensors)["m.scales"][0]
    K = 1 << bits
    codes = _draw_symbols(draw, rng, (in_f, out_f), K)
    zeros = _draw_symbols(draw, rng, (groups, out_f), K)
    qweight = pack_fields(torch.from_numpy(codes), bits)
    qzeros = pack_fields(torch.from_numpy(zeros.T.copy()), bits).T.contiguous()
    if draw(st.booleans()):            # junk in padding bits: only a raw code can carry it
        w = qweight.numpy().view(np.uint32).copy()
        w[-1] |= np.uint32(0x80000000)
        qweight = torch.from_numpy(w.view(np.int32))
    g_kind = draw(st.sampled_from(["canonical", "permuted", "junk"]))
    g_idx = group_index(in_f, gs)
    if g_kind == "permuted":
        g_idx = g_idx[torch.from_numpy(rng.permutation(in_f))]
    elif g_kind == "junk":
        g_idx = torch.from_numpy(rng.integers(-2 ** 31, 2 ** 31, in_f).astype(np.int32))
    scales = torch.from_numpy(_draw_float_bits(draw, rng, groups * out_f, 2).copy()
                              ).view(torch.float16).reshape(groups, out_f)
    bias = torch.from_numpy(_draw_float_bits(draw, rng, out_f, 2).copy()).view(torch.float16)
    width = torch.empty((), dtype=fdt).element_size()
    norm = torch.zeros(0, dtype=fdt)
    if n_float:
        norm = torch.from_numpy(_draw_float_bits(draw, rng, n_float, width).copy()).view(fdt)
    state = {"m.bias": bias, "m.g_idx": g_idx.to(torch.int32).contiguous(),
             "m.qzeros": qzeros, "m.scales": scales, "m.qweight": qweight.contiguous(),
             "norm.weight": norm}
    return t, state


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stored_states())
def test_property_round_trip_random_symbol_tensors(case):
    template, state = case
    code = entropy_code(state, template)
    assert code.bits == 8 * len(code.payload)
    got = entropy_decode(code.payload, template)
    assert set(got) == set(state)
    for name, t in state.items():
        assert got[name].dtype == t.dtype and got[name].shape == t.shape, name
        # compare bit patterns: NaN != NaN as floats
        if t.numel():
            assert torch.equal(got[name].reshape(-1).view(torch.uint8),
                               t.reshape(-1).view(torch.uint8)), name
    assert codeword_length(code.payload + b"\xff\x00") == len(code.payload)


def test_skewed_symbols_cost_about_their_entropy():
    """The table + ANS overhead is small: 20,000 4-bit codes of entropy H cost < H + 0.05
    bits each, and uniform codes never cost more than raw (b bits) + the mode flag."""
    rng = np.random.default_rng(3)
    t = _one_module_template(4, 200, 100, 8, (1,))
    groups = 25
    p = np.array([0.4, 0.2, 0.1, 0.1, 0.05, 0.05, 0.04, 0.03, 0.01, 0.01, 0.005, 0.005, 0, 0, 0, 0])
    p = p / p.sum()
    codes = rng.choice(16, size=(200, 100), p=p)
    hist = np.bincount(codes.ravel(), minlength=16) / codes.size
    h = float(-(hist[hist > 0] * np.log2(hist[hist > 0])).sum())
    state = {"m.bias": torch.zeros(100, dtype=torch.float16),
             "m.g_idx": group_index(200, 8),
             "m.qzeros": pack_fields(torch.full((100, groups), 3), 4).T.contiguous(),
             "m.scales": torch.ones(groups, 100, dtype=torch.float16),
             "m.qweight": pack_fields(torch.from_numpy(codes), 4),
             "norm.weight": torch.ones(1)}
    code = entropy_code(state, t)
    assert code.modes["m.qweight"] in ("cat", "catz")
    assert code.per_tensor_bits["m.qweight"] / codes.size < h + 0.05
    # constant tensors cost a few bits in all
    assert code.per_tensor_bits["m.scales"] < 64 and code.per_tensor_bits["m.qzeros"] < 64
    uni = rng.integers(0, 16, (200, 100))
    state["m.qweight"] = pack_fields(torch.from_numpy(uni), 4)
    code = entropy_code(state, t)
    assert code.per_tensor_bits["m.qweight"] <= 4 * uni.size + 4


def test_canonical_payload_accepts_a_k_by_1_packed_tensor():
    """2-bit qzeros of a 16-wide layer are [groups, 1] with a last-dim stride != 1 (pack_gptq's
    .T.contiguous()); the lzma payload and the entropy code both take them (regression: RTN at
    b = 2 on neox-12k crashed in code_size.canonical_payload)."""
    from genbound_assets.measure.code_size import canonical_payload

    z = pack_fields(torch.arange(3).repeat(16, 1) % 4, 2).T.contiguous()
    assert z.shape == (3, 1) and z.stride(-1) != 1
    body = canonical_payload({"z": z}, {})[-12:]
    assert body == z.reshape(-1).numpy().astype("<i4").tobytes()
