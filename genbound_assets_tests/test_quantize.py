"""ml.quantize / ml.rtn / ml.code_size: GPTQ (GPTQModel) vs RTN, exact decoding, bit accounting,
failure rules.  One tiny trained GPT-NeoX (hidden 64, 2 layers, vocab 260) is shared by the
module; timings and end-to-end loss gaps live in bench/bench_gptq.py, not here."""

from __future__ import annotations

import json
import math
import struct

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from genbound_assets.measure import code_size, rtn
from genbound_assets.measure.code_size import TensorSpec, stored_bits
from genbound_assets.measure.quantize import (
    QuantizationFailed,
    check_quantization,
    gptq_quantize_weight,
    layer_input_hessians,
    load_quantized,
    predicted_specs,
    quantize_model,
    reconstruction_errors,
)

pytestmark = pytest.mark.slow

VOCAB, HIDDEN, LAYERS, INTER, CTX, T = 260, 64, 2, 256, 128, 32


def _stream(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    steps = torch.randint(0, 3, (n,), generator=g)
    return (torch.cumsum(steps, 0) * 7 + 11 * (torch.arange(n) % 5)) % VOCAB


@pytest.fixture(scope="module")
def trained():
    """A 'trained suite model': 150 AdamW steps on a synthetic stream, plus disjoint
    calibration and evaluation windows."""
    cfg = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                        num_attention_heads=4, intermediate_size=INTER,
                        max_position_embeddings=CTX, rotary_pct=0.25, use_parallel_residual=True,
                        tie_word_embeddings=False, use_cache=False)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(cfg).float()
    stream = _stream(20_000, seed=1)
    train, calib_part, eval_part = stream[:12_000], stream[12_000:16_000], stream[16_000:]
    g = torch.Generator().manual_seed(2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        idx = torch.randint(0, len(train) - T - 1, (8,), generator=g)
        x = torch.stack([train[i:i + T] for i in idx])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    calib = calib_part[: 32 * T].reshape(32, T)
    evals = eval_part[: 32 * T].reshape(32, T)
    return model, calib, evals


@pytest.fixture(scope="module")
def quantized(trained, tmp_path_factory):
    model, calib, _ = trained
    cache = {}

    def get(method, bits, quantize_embeddings=False):
        key = (method, bits, quantize_embeddings)
        if key not in cache:
            wd = tmp_path_factory.mktemp(f"{method}{bits}{'e' if quantize_embeddings else ''}")
            cache[key] = quantize_model(model, method, bits, 32, calib,
                                        quantize_embeddings=quantize_embeddings, seed=0,
                                        work_dir=wd)
        return cache[key]

    return get


def _nll(model, ids):
    with torch.no_grad():
        return float(model(input_ids=ids, labels=ids).loss)


# ------------------------------------------------------------------------- GPTQ vs RTN

@pytest.mark.parametrize("bits", [3, 4])
def test_gptq_layer_error_not_worse_than_rtn(trained, quantized, bits):
    model, calib, _ = trained
    g, r = quantized("gptq", bits), quantized("rtn", bits)
    assert set(g.tensor_methods.values()) == {"gptq:gptqmodel"}
    assert set(r.tensor_methods.values()) == {"rtn"}
    eg = reconstruction_errors(model, g, calib)
    er = reconstruction_errors(model, r, calib)
    assert set(eg) == set(er) and len(eg) == 4 * LAYERS
    for name in eg:
        assert eg[name] <= er[name] * (1 + 1e-9), (name, eg[name], er[name])
    assert sum(eg.values()) < sum(er.values())


def test_inhouse_gptq_beats_rtn_and_equals_rtn_for_identity_hessian():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(48, 64, generator=g)
    mix = torch.randn(64, 64, generator=g)
    x = torch.randn(64, 512, generator=g).T @ mix      # correlated inputs [tokens, in]
    h = (x.T @ x).double()
    iw_g = gptq_quantize_weight(w, h, 3, 32)
    iw_r = rtn.rtn_quantize(w, 3, 32)

    def err(iw):
        d = (w.double() - iw.dequantize().double())
        return float(torch.einsum("oi,ij,oj->", d, h, d))

    assert err(iw_g) < err(iw_r)
    # H = I: no cross-column error feedback, GPTQ is exactly RTN on the same grid.
    iw_i = gptq_quantize_weight(w, torch.eye(64), 3, 32, percdamp=0.0)
    assert torch.equal(iw_i.codes, iw_r.codes) and torch.equal(iw_i.zeros, iw_r.zeros)
    assert torch.equal(iw_i.scales, iw_r.scales)


def test_rtn_rounds_to_nearest_stored_grid_point():
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(3))
    for bits in (2, 3, 4, 8):
        iw = rtn.rtn_quantize(w, bits, 32)
        s = iw.scales.float()[iw.g_idx.long()].T
        z = iw.zeros.float()[iw.g_idx.long()].T
        grid = s[..., None] * (torch.arange(2 ** bits).float() - z[..., None])
        best = (grid - w[..., None]).abs().min(dim=-1).values
        assert torch.allclose((iw.dequantize() - w).abs(), best, atol=1e-6)
        assert int(iw.codes.max()) <= 2 ** bits - 1


# ------------------------------------------------------------------------- exact decoding

@pytest.mark.parametrize("method", ["gptq", "rtn"])
def test_redecoding_the_stored_file_reproduces_the_model(trained, quantized, method):
    model, _, _ = trained
    q = quantized(method, 3)
    deq, tensors, state, meta = load_quantized(q.path, model)
    qp = dict(q.model.named_parameters())
    for name, p in deq.named_parameters():
        assert torch.equal(p, qp[name]), name
    assert set(tensors) == set(q.tensors)
    for prefix, iw in tensors.items():
        assert torch.equal(iw.codes, q.tensors[prefix].codes)
        # the weight is literally scale * (code - zero) of the stored integers
        w = qp[f"{prefix}.weight"]
        g = iw.g_idx.long()
        manual = iw.scales.float()[g].T * (iw.codes.float() - iw.zeros.float()[g].T)
        assert torch.equal(w, manual)
        assert int(iw.codes.max()) < 2 ** 3
    # every non-quantized parameter is the stored tensor
    for name, t in state.items():
        if code_size.role_of(name) == "float":
            assert torch.equal(qp[name], t.float()), name


def test_decoded_model_matches_gptqmodel_own_kernel(trained, quantized, monkeypatch):
    """GPTQModel's TorchLinear (its own unpacking) decodes the same weights, bit for bit, and
    its quantized model gives the same logits as our plain float model."""
    from gptqmodel import BACKEND, GPTQModel
    from gptqmodel.nn_modules.qlinear.torch import TorchLinear

    model, _, evals = trained
    q = quantized("gptq", 3)
    gdir = q.path.parent / "gptqmodel"
    # GPTQModel's checkpoint and our h_q file hold the same quantized tensors
    from safetensors.torch import load_file
    gstate = {}
    for f in gdir.glob("*.safetensors"):
        gstate.update(load_file(str(f)))
    for name, t in q.state.items():
        if code_size.role_of(name) != "float":
            assert torch.equal(gstate[name], t), name
    # The torch kernel declares fp16/bf16 only; its dequantization runs fine in fp32.
    monkeypatch.setattr(TorchLinear, "SUPPORTS_DTYPES",
                        [torch.float16, torch.bfloat16, torch.float32])
    gm = GPTQModel.load(str(gdir), device="cpu", backend=BACKEND.TORCH, dtype=torch.float32)
    mods = dict(gm.model.named_modules())
    ours = dict(q.model.named_modules())
    for prefix in q.tensors:
        assert isinstance(mods[prefix], TorchLinear)
        assert torch.equal(mods[prefix].dequantize_weight().T, ours[prefix].weight), prefix
    with torch.no_grad():
        a = gm.model(input_ids=evals[:8]).logits.float()
        b = q.model(input_ids=evals[:8]).logits
    assert float((a - b).norm() / b.norm()) < 1e-4


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pack_unpack_roundtrip_any_length(bits):
    g = torch.Generator().manual_seed(bits)
    for n in (1, 7, 32, 45, 64, 260):
        v = torch.randint(0, 2 ** bits, (n, 5), generator=g)
        words = rtn.pack_fields(v, bits)
        assert words.dtype == torch.int32 and words.shape == (math.ceil(n * bits / 32), 5)
        assert torch.equal(rtn.unpack_fields(words, bits, n), v)
    with pytest.raises(ValueError):
        rtn.pack_fields(torch.full((4, 1), 2 ** bits), bits)


# ------------------------------------------------------------------------- accounting

def _hand_count(bits: int, quantize_embeddings: bool) -> tuple[int, int]:
    """(stored bits, N) from the architecture's shapes alone."""
    def packed(n, b):  # int32 words for n b-bit fields
        return math.ceil(n * b / 32) * 32

    def qlinear(out_f, in_f):  # codes + zeros + fp16 scales; g_idx canonical -> not counted
        groups = in_f // 32
        return out_f * packed(in_f, bits) + groups * packed(out_f, bits) + groups * out_f * 16

    total, n = 0, 0
    linears = [(3 * HIDDEN, HIDDEN), (HIDDEN, HIDDEN), (INTER, HIDDEN), (HIDDEN, INTER)]
    for _ in range(LAYERS):
        for out_f, in_f in linears:
            total += qlinear(out_f, in_f) + out_f * 16          # bias stored fp16
            n += out_f * in_f + out_f
        total += 4 * HIDDEN * 32                                # two LayerNorms, fp32
        n += 4 * HIDDEN
    total += 2 * HIDDEN * 32                                    # final LayerNorm
    n += 2 * HIDDEN
    for _ in ("embed_in", "embed_out"):
        total += qlinear(VOCAB, HIDDEN) if quantize_embeddings else VOCAB * HIDDEN * 32
        n += VOCAB * HIDDEN
    return total, n


@pytest.mark.parametrize("method,bits,emb", [("gptq", 3, False), ("rtn", 3, False),
                                             ("gptq", 4, False), ("rtn", 4, True),
                                             ("gptq", 3, True), ("gptq", 4, True)])
def test_stored_bits_equal_hand_count(trained, quantized, method, bits, emb):
    model, _, _ = trained
    q = quantized(method, bits, emb)
    hand, n = _hand_count(bits, emb)
    assert q.n_params == n == sum(p.numel() for p in model.parameters())
    assert q.stored_bits == hand
    # the length is fixed by the architecture before quantizing: predicted == stored, per tensor
    pred = predicted_specs(model, bits, 32, emb)
    assert [(s.name, s.shape, s.bits_per_element, s.counted) for s in pred] == \
        [(s.name, s.shape, s.bits_per_element, s.counted) for s in q.specs]
    assert q.nominal_bits == bits * n
    assert q.effective_bits_per_param == pytest.approx(hand / n)
    # g_idx is stored (int32 per input column) but derivable, so not in the code length
    g_idx_bits = sum(s.bits for s in q.specs if s.role == "g_idx")
    assert g_idx_bits > 0 and q.role_bits["g_idx"] == 0
    assert q.file_tensor_bits == q.stored_bits + g_idx_bits
    # ... and file_tensor_bits is exactly the tensor payload of the saved file
    raw = q.path.read_bytes()
    header_len = struct.unpack("<Q", raw[:8])[0]
    assert 8 * (len(raw) - 8 - header_len) == q.file_tensor_bits
    assert json.loads(raw[8:8 + header_len])["__metadata__"]["format"] == "gptq_v2"
    assert 0 < q.compressed_bits
    # the bounds module's certified stored length agrees
    from genbound_assets.bounds.code_length import stored_code_length
    assert stored_code_length(q.code_length_rows()).bits == q.stored_bits


def test_embeddings_quantized_lower_the_code_length(quantized):
    plain, emb3, emb4 = quantized("gptq", 3), quantized("gptq", 3, True), quantized("gptq", 4, True)
    assert emb3.stored_bits < plain.stored_bits
    assert emb3.effective_bits_per_param < 4.0 < plain.effective_bits_per_param
    assert emb3.tensor_methods["gpt_neox.embed_in"] == "rtn"
    # 3-bit zero points of a 260-wide head cannot be packed by GPTQModel 7.6: in-house GPTQ
    assert emb3.tensor_methods["lm_head"] == "gptq:genbound"
    assert emb4.tensor_methods["lm_head"] == "gptq:gptqmodel"
    assert "gpt_neox.embed_in.weight" not in emb3.state and "lm_head.weight" not in emb3.state


def test_stored_bits_pure_function():
    specs = [
        TensorSpec("a.qweight", (6, 192), 32, "codes"),
        TensorSpec("a.qzeros", (2, 18), 32, "zeros"),
        TensorSpec("a.scales", (2, 192), 16, "scales"),
        TensorSpec("a.g_idx", (64,), 32, "g_idx", counted=False),
        TensorSpec("a.bias", (192,), 16, "float"),
        TensorSpec("embed", (260, 64), 16, "float"),
    ]
    assert stored_bits(specs) == 6 * 192 * 32 + 2 * 18 * 32 + 2 * 192 * 16 + 192 * 16 + 260 * 64 * 16
    assert code_size.bits_by_role(specs)["g_idx"] == 0
    with pytest.raises(ValueError):
        stored_bits(specs + [specs[0]])
    with pytest.raises(ValueError):
        TensorSpec("x", (3,), 32, "weights")
    # a non-canonical g_idx (activation reordering) is not derivable and is counted
    state = {"m.g_idx": torch.tensor([1, 0, 1, 0], dtype=torch.int32),
             "n.g_idx": torch.tensor([0, 0, 1, 1], dtype=torch.int32)}
    sp = {s.name: s for s in code_size.specs_from_state(state, {"m": 2, "n": 2})}
    assert sp["m.g_idx"].counted and not sp["n.g_idx"].counted


# ------------------------------------------------------------------------- failures

def test_nan_weight_is_a_failure_with_reason(trained):
    model, calib, _ = trained
    import copy
    bad = copy.deepcopy(model)
    with torch.no_grad():
        bad.gpt_neox.layers[1].mlp.dense_h_to_4h.weight[3, 5] = float("nan")
    for method in ("gptq", "rtn"):
        with pytest.raises(QuantizationFailed) as exc:
            quantize_model(bad, method, 4, 32, calib)
        assert "non-finite" in exc.value.reason
        assert "layers.1.mlp.dense_h_to_4h.weight" in exc.value.reason


def test_gap_ceiling_and_nonfinite_loss_fail(trained, quantized):
    model, _, evals = trained
    q = quantized("rtn", 3)
    fl, ql = _nll(model, evals), _nll(q.model, evals)
    assert math.isfinite(ql) and ql > fl
    assert check_quantization(fl, ql, max_gap_nats=1.0) is None
    with pytest.raises(QuantizationFailed) as exc:
        check_quantization(fl, ql, max_gap_nats=1e-12)
    assert "exceeds" in exc.value.reason
    f = check_quantization(fl, float("nan"), 1.0, raise_on_failure=False)
    assert isinstance(f, QuantizationFailed) and "not finite" in f.reason
    assert check_quantization(float("inf"), 1.0, 1.0, raise_on_failure=False) is not None
    with pytest.raises(ValueError):
        check_quantization(fl, ql, float("nan"))


def test_calibration_recorded_and_validated(trained, quantized):
    model, calib, _ = trained
    q = quantized("gptq", 4)
    assert q.calibration["n_windows"] == 32 and q.calibration["n_tokens"] == 32 * T
    assert q.calibration["seed"] == 0 and len(q.calibration["sha256"]) == 64
    assert len(q.gptq_log) == 4 * LAYERS and all(float(r["damp"]) == 0.01 for r in q.gptq_log)
    with pytest.raises(ValueError, match="calibration"):
        quantize_model(model, "gptq", 4, 32, None)
    with pytest.raises(ValueError, match="outside"):
        quantize_model(model, "rtn", 4, 32, torch.full((2, 8), VOCAB))
    with pytest.raises(ValueError, match="bits"):
        quantize_model(model, "rtn", 5, 32, calib)


def test_layer_input_hessians_match_direct_computation(trained):
    model, calib, _ = trained
    name = "gpt_neox.layers.0.attention.dense"
    h = layer_input_hessians(model, [name], calib[:4])[name]
    xs = []
    hook = dict(model.named_modules())[name].register_forward_hook(
        lambda m, i, o: xs.append(i[0].reshape(-1, i[0].shape[-1]).double()))
    with torch.no_grad():
        model(input_ids=calib[:4])
    hook.remove()
    x = torch.cat(xs)
    assert torch.allclose(h, x.T @ x, rtol=1e-10, atol=1e-8)


def test_compressed_length_is_a_function_of_the_model_alone():
    """Same tensors and metadata, any dict order -> the same compressed code length."""
    from genbound_assets.measure.code_size import canonical_payload, lzma_bits

    gen = torch.Generator().manual_seed(0)
    state = {f"layer{i}.qweight": torch.randint(0, 2**31 - 1, (8, 16), generator=gen, dtype=torch.int32)
             for i in range(4)}
    state["layer0.scales"] = torch.rand(2, 16, generator=gen).half()
    meta = {"format": "x", "bits": '{"a": 4}', "group_size": '{"a": 16}', "method": "gptq"}
    reordered_state = dict(reversed(list(state.items())))
    reordered_meta = dict(reversed(list(meta.items())))
    a = canonical_payload(state, meta)
    assert a == canonical_payload(reordered_state, reordered_meta)
    assert lzma_bits(a) == lzma_bits(canonical_payload(reordered_state, reordered_meta))
    changed = dict(state, **{"layer0.scales": state["layer0.scales"] + 1})
    assert canonical_payload(changed, meta) != a  # and it does depend on the tensors
