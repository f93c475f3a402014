"""The measurement kernels on causal LMs other than GPT-NeoX: Llama (LlamaConfig: RMSNorm,
gated MLP, grouped-query attention) and GPT-2 (GPT2Config: Conv1D layers, learned positions,
TIED input/output embeddings), built locally at tiny size, next to a GPT-NeoX reference.

* token losses equal a plain forward's log-softmax, and the fast trunk/head split is used
  exactly when it is the model's own split (a soft-capped Gemma2 falls back);
* RTN decodes to the stored grid (the Conv1D orientation included); GPTQ (GPTQModel) beats RTN
  layer by layer and GPTQModel's own kernel decodes the same weights and logits; the stored
  file re-decodes bit for bit;
* a tied embedding is stored and counted once in the code length (hand count);
* an architecture GPTQModel cannot load is one line, and RTN still works;
* the Hessian operator on a tiny tied Llama matches an exact Hessian.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call
from transformers import LlamaConfig, LlamaForCausalLM

from genbound_assets.data.stream import TokenStream
from genbound_assets.measure import code_size
from genbound_assets.measure.hessian import NATIVE_EAGER, HessianOperator
from genbound_assets.measure.quantize import (
    load_quantized,
    predicted_specs,
    quantize_model,
    quantized_module_names,
    reconstruction_errors,
    weight_matrix,
)
from genbound_assets.measure.rtn import rtn_quantize
from genbound_assets.measure.token_losses import _split_model, token_losses
from genbound_assets_tests.tiny_models import tiny_causal_lm

VOCAB, HIDDEN, LAYERS, CTX = 96, 64, 2, 64


def build(arch: str, seed: int = 0):
    return tiny_causal_lm(arch, VOCAB, HIDDEN, LAYERS, CTX, seed)


def _stream(n: int = 600, seed: int = 3) -> TokenStream:
    rng = np.random.default_rng(seed)
    toks = rng.integers(1, VOCAB, n)
    starts = np.array([0, 150, 151 + 200])
    toks[starts] = 0
    return TokenStream(toks, starts, 0)


# ------------------------------------------------------------------------- token losses

@pytest.mark.parametrize("arch", ["gpt_neox", "llama", "gpt2"])
def test_token_losses_equal_plain_forward_log_softmax(arch):
    model = build(arch)
    stream = _stream()
    T = 24
    pos = np.array([1, 5, 30, 149, 151, 152, 160, 300, 352, 353, 500, 599])
    trunk, head = _split_model(model)
    assert trunk is not None and head is model.get_output_embeddings()  # the fast split is used
    res = token_losses(model, stream, pos, T, alphas=(0.1,), batch_size=3)
    for i, p in enumerate(pos):
        s = max(int(stream.doc_start_of(p)), p - T)
        ctx = torch.as_tensor(stream.tokens[s:p])[None]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ctx).logits[0, -1].double(), -1)
        x = int(stream.tokens[p])
        assert res.loss[i] == pytest.approx(-float(logp[x]), abs=2e-5), (arch, p)
        assert res.entropy[i] == pytest.approx(-float((logp.exp() * logp).sum()), abs=2e-5)
        q = 0.9 * logp.exp() + 0.1 / VOCAB
        assert res.smoothed_loss[0.1][i] == pytest.approx(-float(q[x].log()), abs=2e-5)


def test_split_falls_back_when_logits_are_post_processed():
    """Gemma2 soft-caps its logits after the LM head: the head alone would give wrong losses,
    so the model runs whole, and the losses still equal a plain forward."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    model = Gemma2ForCausalLM(Gemma2Config(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, intermediate_size=64, max_position_embeddings=CTX,
        final_logit_softcapping=1.0)).eval()
    assert _split_model(model) == (None, None)
    stream = _stream()
    pos = np.array([3, 40, 200])
    res = token_losses(model, stream, pos, 16)
    for i, p in enumerate(pos):
        s = max(int(stream.doc_start_of(p)), p - 16)
        with torch.no_grad():
            logits = model(input_ids=torch.as_tensor(stream.tokens[s:p])[None]).logits[0, -1]
        assert res.loss[i] == pytest.approx(
            -float(torch.log_softmax(logits.double(), -1)[stream.tokens[p]]), abs=2e-5)


# ------------------------------------------------------------------------- quantization

def _calib(n: int = 16, T: int = 32, seed: int = 5) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, T), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    cache = {}

    def get(arch, method):
        if (arch, method) not in cache:
            model = build(arch)
            wd = tmp_path_factory.mktemp(f"{arch}-{method}")
            cache[arch, method] = (model, quantize_model(model, method, 4, 32, _calib(),
                                                         work_dir=wd))
        return cache[arch, method]

    return get


EXPECTED_LAYERS = {
    "llama": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
              "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"],
    "gpt2": ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"],
}
BLOCKS = {"llama": "model.layers", "gpt2": "transformer.h"}


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_quantized_modules_are_the_block_linears(arch):
    model = build(arch)
    names = quantized_module_names(model)
    assert names == [f"{BLOCKS[arch]}.{i}.{m}" for i in range(LAYERS) for m in EXPECTED_LAYERS[arch]]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_rtn_decodes_to_the_stored_grid(quantized, arch):
    model, q = quantized(arch, "rtn")
    fm, qm = dict(model.named_modules()), dict(q.model.named_modules())
    for prefix in q.tensors:
        # the [out, in] matrix the layer applies (GPT-2's Conv1D stores it transposed)
        ref = rtn_quantize(weight_matrix(fm[prefix]), 4, 32).dequantize()
        assert torch.equal(weight_matrix(qm[prefix]), ref), prefix
        assert tuple(q.state[f"{prefix}.scales"].shape) == (ref.shape[1] // 32, ref.shape[0])
    x = _calib(4, 16, seed=9)
    with torch.no_grad():   # decoded model = the model with W_hat substituted, nothing else
        manual = build(arch)
        for prefix in q.tensors:
            mod = dict(manual.named_modules())[prefix]
            w = weight_matrix(qm[prefix])
            mod.weight.copy_(w if mod.weight.shape == w.shape and arch != "gpt2" else w.T)
        assert torch.allclose(manual(input_ids=x).logits, q.model(input_ids=x).logits, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_gptq_beats_rtn_per_layer_and_round_trips(quantized, arch):
    model, g = quantized(arch, "gptq")
    _, r = quantized(arch, "rtn")
    assert set(g.tensor_methods.values()) == {"gptq:gptqmodel"}
    assert set(g.tensors) == set(r.tensors) == set(quantized_module_names(model))
    eg = reconstruction_errors(model, g, _calib())
    er = reconstruction_errors(model, r, _calib())
    for name in eg:   # a transposed Conv1D would be far worse than RTN
        assert eg[name] <= er[name] * (1 + 1e-9), (name, eg[name], er[name])
    for q in (g, r):  # the stored file re-decodes bit for bit
        deq, tensors, state, _ = load_quantized(q.path, model)
        qp = dict(q.model.named_parameters())
        for name, p in deq.named_parameters():
            assert torch.equal(p, qp[name]), name
        assert set(state) == set(q.state)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_gptqmodel_kernel_decodes_the_same_model(quantized, arch, monkeypatch):
    from gptqmodel import BACKEND, GPTQModel
    from gptqmodel.nn_modules.qlinear.torch import TorchLinear

    _, q = quantized(arch, "gptq")
    monkeypatch.setattr(TorchLinear, "SUPPORTS_DTYPES",
                        [torch.float16, torch.bfloat16, torch.float32])
    gm = GPTQModel.load(str(q.path.parent / "gptqmodel"), device="cpu", backend=BACKEND.TORCH,
                        dtype=torch.float32)
    mods, ours = dict(gm.model.named_modules()), dict(q.model.named_modules())
    for prefix in q.tensors:
        assert isinstance(mods[prefix], TorchLinear)
        assert torch.equal(mods[prefix].dequantize_weight().T, weight_matrix(ours[prefix])), prefix
    x = _calib(4, 16, seed=11)
    with torch.no_grad():
        a = gm.model(input_ids=x).logits.float()
        b = q.model(input_ids=x).logits
    assert float((a - b).norm() / b.norm()) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gptq", "rtn"])
def test_tied_embedding_counted_once_in_the_code_length(quantized, method):
    """GPT-2: wte is also the LM head.  Hand count of the stored bits, from the shapes alone."""
    model, q = quantized("gpt2", method)
    assert model.lm_head.weight is model.transformer.wte.weight
    V, d, L, b, gs = VOCAB, HIDDEN, LAYERS, 4, 32

    def linear(out_f, in_f):   # qweight + qzeros (int32 words) + fp16 scales + fp16 bias
        groups = in_f // gs
        return (32 * (in_f * b // 32) * out_f + 32 * groups * (-(-out_f * b // 32))
                + 16 * groups * out_f + 16 * out_f)

    per_block = (linear(3 * d, d) + linear(d, d) + linear(4 * d, d) + linear(d, 4 * d)
                 + 32 * 4 * d)                          # ln_1, ln_2 weight + bias, float32
    hand = 32 * V * d + 32 * CTX * d + L * per_block + 32 * 2 * d   # wte ONCE, wpe, ln_f
    assert q.stored_bits == hand
    assert "lm_head.weight" not in q.state and "transformer.wte.weight" in q.state
    n = V * d + CTX * d + L * (4 * d * d + 4 * d * d + 4 * d * d + 3 * d + d + 4 * d + d + 4 * d) \
        + 2 * d
    assert q.n_params == n == sum(p.numel() for p in model.parameters())
    untied_would_be = hand + 32 * V * d
    assert q.stored_bits < untied_would_be
    pred = predicted_specs(model, 4, 32)
    assert code_size.stored_bits(pred) == hand
    assert [(s.name, s.shape) for s in pred] == [(s.name, s.shape) for s in q.specs]
    # the decoded model is still tied (one matrix serves both ends)
    assert q.model.lm_head.weight is q.model.transformer.wte.weight


def test_gptqmodel_unsupported_architecture_is_one_line_and_rtn_works():
    from transformers import BioGptConfig, BioGptForCausalLM

    torch.manual_seed(0)
    model = BioGptForCausalLM(BioGptConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=CTX)).eval()
    with pytest.raises(ValueError) as e:
        quantize_model(model, "gptq", 4, 32, _calib(4, 16))
    msg = str(e.value)
    assert "\n" not in msg and "biogpt" in msg and "method='rtn'" in msg
    q = quantize_model(model, "rtn", 4, 32)
    assert len(q.tensors) == 6 and all(v == "rtn" for v in q.tensor_methods.values())


# ------------------------------------------------------------------------- Hessian

def _tiny_llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=16, max_position_embeddings=32,
                      tie_word_embeddings=True, initializer_range=0.5, attn_implementation="eager")
    return LlamaForCausalLM(cfg).eval()


def _exact_hessian(model, ids) -> torch.Tensor:
    """d^2/dtheta^2 of the mean next-token NLL, theta = the distinct parameters (the tied
    embedding once) in model order, by a functional loss differentiated twice."""
    model = model.double()
    named = list(model.named_parameters())
    names, shapes = [n for n, _ in named], [p.shape for _, p in named]
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])

    def loss(x):
        chunks = torch.split(x, [s.numel() for s in shapes])
        params = {n: c.view(s) for n, c, s in zip(names, chunks, shapes, strict=True)}
        model.config._attn_implementation = NATIVE_EAGER
        try:
            logits = functional_call(model, params, (), {"input_ids": ids}).logits
        finally:
            model.config._attn_implementation = "eager"
        return F.cross_entropy(logits[:, :-1].reshape(-1, 16), ids[:, 1:].reshape(-1))

    x = flat.clone().requires_grad_(True)
    g = torch.autograd.grad(loss(x), x, create_graph=True)[0]
    eye = torch.eye(len(flat), dtype=torch.float64)
    return torch.autograd.grad(g, x, grad_outputs=eye, is_grads_batched=True)[0]


def test_hvp_matches_exact_hessian_on_tiny_tied_llama():
    model = _tiny_llama()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ids = torch.randint(0, 16, (3, 10), generator=torch.Generator().manual_seed(1))
    h = _exact_hessian(_tiny_llama(), ids)
    op = HessianOperator(model, ids, dtype=torch.float64)
    assert op.dim == h.shape[0] == sum(p.numel() for p in model.parameters())
    assert "lm_head.weight" not in op.param_names   # the tied matrix is one parameter
    gen = torch.Generator().manual_seed(7)
    for _ in range(3):
        v = torch.randn(op.dim, generator=gen, dtype=torch.float64)
        err = torch.linalg.vector_norm(op.matvec(v) - h @ v) / torch.linalg.vector_norm(h @ v)
        # Llama's RMSNorm computes in float32 inside a float64 model: ~1e-7, not 1e-12
        assert err < 1e-5, float(err)
    ev = np.linalg.eigvalsh(((h + h.T) / 2).numpy())
    assert ev[0] < 0 < ev[-1]   # indefinite: a real test of the operator, not of a PSD shortcut
    # the tied matrix selected by its other name is the same parameter
    sub = HessianOperator(model, ids, dtype=torch.float64, params=["lm_head.weight"])
    assert sub.param_names == ["model.embed_tokens.weight"]
    k = sub.dim
    u = torch.randn(k, generator=gen, dtype=torch.float64)
    ref = h[:k, :k] @ u
    assert torch.linalg.vector_norm(sub.matvec(u) - ref) / torch.linalg.vector_norm(ref) < 1e-5
