"""Hessian operator and SLQ checked against an exact Hessian (docs/hessian.md).

The fixture is a full 1-layer GPT-NeoX (hidden 8, one head, vocab 16, parallel residual,
rotary_pct 0.25, untied embeddings: 872 parameters) in float64, initialized wide (std 0.5) so the
Hessian is indefinite with a spread spectrum.  Its exact Hessian is built *independently* of
HessianOperator: a functional loss of the flat parameter vector, differentiated twice with all
unit vectors at once (batched backward), spot-checked row by row.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from genbound_assets.measure.hessian import (
    NATIVE_EAGER,
    DenseOperator,
    EagerAttentionRequired,
    HessianOperator,
    hessian_spectrum,
    hutchinson_trace,
    load_model_for_hessian,
    rademacher,
    slq,
)

VOCAB = 16




def tiny_config(attn: str = "eager") -> GPTNeoXConfig:
    return GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=16,
        max_position_embeddings=32,
        rotary_pct=0.25,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        initializer_range=0.5,
        attn_implementation=attn,
    )


def tiny_model(attn: str = "eager", seed: int = 0) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(tiny_config(attn)).eval()


def batch(b: int = 4, t: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, t), generator=torch.Generator().manual_seed(seed))


def reference_hessian(model, ids) -> torch.Tensor:
    """d^2/dtheta^2 of mean next-token NLL, theta = all parameters flattened in model order."""
    model = model.double()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(x):
        chunks = torch.split(x, [s.numel() for s in shapes])
        params = {n: c.view(s) for n, c, s in zip(names, chunks, shapes, strict=True)}
        model.config._attn_implementation = NATIVE_EAGER  # eager math, float64 softmax
        try:
            logits = functional_call(model, params, (), {"input_ids": ids}).logits
        finally:
            model.config._attn_implementation = "eager"
        return F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))

    x = flat.clone().requires_grad_(True)
    g = torch.autograd.grad(loss(x), x, create_graph=True)[0]
    eye = torch.eye(len(flat), dtype=torch.float64)
    h = torch.autograd.grad(g, x, grad_outputs=eye, is_grads_batched=True, retain_graph=True)[0]
    for i in (0, 200, 441, 733, len(flat) - 1):  # batched (vmap) backward vs plain rows
        row = torch.autograd.grad(g[i], x, retain_graph=True)[0]
        torch.testing.assert_close(h[i], row, rtol=1e-12, atol=1e-12)
    return h


@pytest.fixture(scope="module")
def exact():
    model, ids = tiny_model(), batch()
    h = reference_hessian(tiny_model(), ids)
    evals = np.linalg.eigvalsh(((h + h.T) / 2).numpy())
    op = HessianOperator(
        model, ids, dtype=torch.float64, method="double_backward", cache_graph=True
    )
    fwd_rev = HessianOperator(model, ids, dtype=torch.float64, method="fwd_rev")
    return {"model": model, "ids": ids, "H": h, "evals": evals, "op": op, "fwd_rev": fwd_rev}


# ---- the operator ----------------------------------------------------------------------------


def test_fixture_is_small_indefinite_and_exact(exact):
    h, ev = exact["H"], exact["evals"]
    assert exact["op"].dim == h.shape[0] == 872
    assert torch.allclose(h, h.T, rtol=0, atol=1e-12)
    assert ev[0] < -0.1 * ev[-1] < 0  # genuinely indefinite: the PSD shift matters


@pytest.mark.parametrize("which", ["op", "fwd_rev"])
def test_hvp_equals_exact_hessian_times_v(exact, which):
    op, h = exact[which], exact["H"]
    gen = torch.Generator().manual_seed(7)
    for _ in range(3):
        v = torch.randn(op.dim, generator=gen, dtype=torch.float64)
        hv = op.matvec(v)
        assert hv.dtype == torch.float64 and hv.shape == v.shape
        err = torch.linalg.vector_norm(hv - h @ v) / torch.linalg.vector_norm(h @ v)
        assert err < 1e-12, float(err)
    # numpy in -> numpy out, same numbers
    v = torch.randn(op.dim, generator=gen, dtype=torch.float64)
    np.testing.assert_allclose(op.matvec(v.numpy()), (h @ v).numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("which", ["op", "fwd_rev"])
def test_operator_is_symmetric(exact, which):
    op = exact[which]
    gen = torch.Generator().manual_seed(11)
    u, v = (torch.randn(op.dim, generator=gen, dtype=torch.float64) for _ in range(2))
    uhv, vhu = float(u @ op.matvec(v)), float(v @ op.matvec(u))
    assert abs(uhv - vhu) <= 1e-12 * max(abs(uhv), 1.0)


def test_loss_is_mean_next_token_nll(exact):
    model, ids, op = exact["model"], exact["ids"], exact["op"]
    with torch.no_grad():
        hf = (
            copy.deepcopy(model).double()(input_ids=ids, labels=ids).loss
        )  # HF's own shift-and-mean
    assert op.n_targets == ids.shape[0] * (ids.shape[1] - 1)
    assert op.loss() == pytest.approx(float(hf), rel=1e-6)  # HF upcasts logits via float32


def test_micro_batches_and_graph_cache_give_the_same_hvp(exact):
    model, ids, op = exact["model"], exact["ids"], exact["op"]
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    split = HessianOperator(model, ids, dtype=torch.float64, micro_batch_size=1)
    uneven = HessianOperator(model, ids, dtype=torch.float64, micro_batch_size=3, method="fwd_rev")
    ref = op.matvec(v)
    for other in (split, uneven):
        torch.testing.assert_close(other.matvec(v), ref, rtol=1e-11, atol=1e-12)
    assert split.n_matvecs == 1 and uneven.n_matvecs == 1


def test_parameter_subset_is_the_principal_submatrix(exact):
    model, ids, h = exact["model"], exact["ids"], exact["H"]
    full = HessianOperator(model, ids, dtype=torch.float64)
    names = ["gpt_neox.layers.0.attention.dense.weight", "gpt_neox.final_layer_norm.bias"]
    sub = HessianOperator(model, ids, dtype=torch.float64, params=names)
    idx = torch.cat(
        [
            torch.arange(o, o + k)
            for n, o, k in zip(full.param_names, full.offsets, full.numels, strict=True)
            if n in names
        ]
    )
    assert sub.dim == len(idx) == 64 + 8
    torch.testing.assert_close(sub.dense(), h[idx][:, idx], rtol=1e-10, atol=1e-12)
    by_predicate = HessianOperator(
        model, ids, dtype=torch.float64, params=lambda n, p: n.startswith("gpt_neox.final_layer")
    )
    assert by_predicate.param_names == [
        "gpt_neox.final_layer_norm.weight",
        "gpt_neox.final_layer_norm.bias",
    ]
    with pytest.raises(KeyError):
        HessianOperator(model, ids, params=["no.such.param"])


def test_float32_operator_agrees_and_leaves_the_callers_model_alone():
    model, ids = tiny_model(), batch()
    model.train()
    model.gpt_neox.embed_in.weight.requires_grad_(False)
    op32 = HessianOperator(model, ids, dtype=torch.float32)
    op64 = HessianOperator(model, ids, dtype=torch.float64)  # deep copy, cast
    v = torch.randn(op32.dim, generator=torch.Generator().manual_seed(5))
    hv32, hv64 = op32.matvec(v), op64.matvec(v.double())
    assert hv32.dtype == torch.float32
    rel = torch.linalg.vector_norm(hv32.double() - hv64) / torch.linalg.vector_norm(hv64)
    assert rel < 1e-4
    # op32 ran on the caller's model in place: mode, flags, dtype and attention restored
    assert model.training
    assert not model.gpt_neox.embed_in.weight.requires_grad
    assert model.lm_head.weight.requires_grad
    assert model.config._attn_implementation == "eager"
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_sdpa_is_rejected_with_a_clear_error():
    model, ids = tiny_model("sdpa"), batch()
    with pytest.raises(EagerAttentionRequired, match="attn_implementation='eager'"):
        HessianOperator(model, ids)


def test_load_model_for_hessian_gives_eager(tmp_path):
    tiny_model("sdpa").save_pretrained(tmp_path)
    model = load_model_for_hessian(str(tmp_path), dtype=torch.float64)
    assert model.config._attn_implementation == "eager"
    assert next(model.parameters()).dtype == torch.float64
    op = HessianOperator(model, batch(2, 6), dtype=torch.float64)
    assert torch.isfinite(op.matvec(torch.ones(op.dim, dtype=torch.float64))).all()


def test_bad_inputs_are_rejected(exact):
    model = exact["model"]
    with pytest.raises(ValueError):
        HessianOperator(model, batch()[:, :1])  # no targets
    with pytest.raises(ValueError):
        HessianOperator(model, batch() + VOCAB)  # ids outside the vocabulary
    with pytest.raises(ValueError):
        HessianOperator(model, batch(), dtype=torch.float16)
    with pytest.raises(ValueError):
        HessianOperator(model, batch(), cache_graph=True, method="fwd_rev")
    with pytest.raises(ValueError):
        HessianOperator(model, batch(), method="finite_differences")
    with pytest.raises(ValueError):
        exact["op"].matvec(torch.ones(3, dtype=torch.float64))


# ---- SLQ and Hutchinson on the exact fixture -------------------------------------------------


def test_slq_matches_exact_spectrum_quantities(exact):
    h, ev = exact["H"], exact["evals"]
    n = len(ev)
    res = slq(DenseOperator(h), n_steps=250, n_vectors=3, seed=0, dtype=torch.float64)
    assert res.steps == (250, 250, 250) and res.dim == n
    width = ev[-1] - ev[0]
    assert abs(res.lambda_min - ev[0]) <= 0.05 * width
    assert abs(res.lambda_max - ev[-1]) <= 0.05 * width
    shift = max(0.0, -ev[0])  # same rule, exact eigenvalues
    exact_sqrt = np.sqrt(np.maximum(ev + shift, 0)).sum()
    assert res.shift == pytest.approx(-res.lambda_min)
    assert res.trace_sqrt_shifted() == pytest.approx(exact_sqrt, rel=0.05)
    # Tr|H|^1/2 and Tr H_+^1/2 have no shift to swamp the probe noise, which is large on a
    # small low-rank-ish matrix: check them against the exact Rademacher standard error,
    # sd(v^T F v) = sqrt(2 (||F||_F^2 - sum_i F_ii^2)), F = f(H) from the eigendecomposition
    w, q = np.linalg.eigh(((h + h.T) / 2).numpy())
    for est, f in (
        (res.trace_sqrt_abs(), lambda x: np.sqrt(np.abs(x))),
        (res.trace_sqrt_positive(), lambda x: np.sqrt(np.maximum(x, 0))),
    ):
        fm = (q * f(w)) @ q.T
        sd = np.sqrt(2 * (np.sum(fm**2) - np.sum(np.diag(fm) ** 2)))
        assert abs(est - f(ev).sum()) <= 4 * sd / np.sqrt(res.n_vectors)
    assert res.trace_sqrt_positive() < res.trace_sqrt_abs() < res.trace_sqrt_shifted()
    # the pooled quadrature is what storage keeps and bounds.hessian_bits consumes
    nodes, weights = res.pooled()
    assert weights.sum() == pytest.approx(1.0)
    from genbound_assets.bounds.hessian_bits import trace_sqrt_from_spectrum

    pooled = trace_sqrt_from_spectrum(nodes, weights, dim=n)
    assert pooled == pytest.approx(res.trace_sqrt_shifted(), rel=1e-12)


def test_slq_on_the_hvp_operator_is_slq_on_the_exact_matrix(exact):
    op, h = exact["op"], exact["H"]
    before = op.n_matvecs
    on_op = slq(op, n_steps=40, n_vectors=2, seed=3, dtype=torch.float64)
    on_h = slq(DenseOperator(h), n_steps=40, n_vectors=2, seed=3, dtype=torch.float64)
    assert op.n_matvecs - before == on_op.n_matvecs == 80  # cost: m * n_v HVPs
    for a, b in zip(on_op.nodes, on_h.nodes, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)
    assert on_op.trace_sqrt_shifted() == pytest.approx(on_h.trace_sqrt_shifted(), rel=1e-10)


def test_hutchinson_trace_within_four_standard_errors(exact):
    op, ev = exact["op"], exact["evals"]
    res = hutchinson_trace(op, n_vectors=30, seed=1, dtype=torch.float64)
    assert res.n_vectors == 30 and res.stderr > 0
    assert abs(res.estimate - ev.sum()) <= 4 * res.stderr


def test_hessian_spectrum_summary_end_to_end():
    model, ids = tiny_model(seed=2), batch(2, 8, seed=4)
    out = hessian_spectrum(
        model, ids, n_steps=12, n_vectors=2, seed=0, dtype=torch.float64, hutchinson_vectors=4
    )
    s = out["summary"]
    assert s["n_matvecs"] == 24 and s["n_params"] == 872 and s["hutchinson_vectors"] == 4
    assert s["n_batch_tokens"] == 16 and s["n_targets"] == 14
    assert s["lambda_min"] <= s["lambda_max"] and s["shift"] >= 0
    assert s["trace_sqrt_shifted"] > 0 and np.isfinite(s["loss"])


# ---- Lanczos / SLQ as pure linear algebra -----------------------------------------------------


def random_symmetric(evals, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((len(evals), len(evals))))
    a = (q * np.asarray(evals)) @ q.T
    return (a + a.T) / 2


def test_breakdown_on_invariant_subspace_gives_exact_quadrature():
    evals = np.repeat([-2.0, -0.5, 0.0, 1.0, 3.0], 40)  # 5 distinct values in dimension 200
    a = random_symmetric(evals)
    res = slq(a, n_steps=50, n_vectors=3, seed=9)
    assert res.steps == (5, 5, 5) and all(res.breakdown) and res.n_matvecs == 15
    gen = torch.Generator().manual_seed(9)  # the same probes slq drew
    w, q = np.linalg.eigh(a)
    sqrt_shift = (q * np.sqrt(w + 2.5)) @ q.T
    quad = res.quadratic_forms(lambda t: np.sqrt(t + 2.5))  # smooth on the spectrum
    for k in range(3):
        v = rademacher(200, gen, torch.float64).numpy()
        assert quad[k] == pytest.approx(v @ sqrt_shift @ v, rel=1e-10)
    for t, wt in zip(res.nodes, res.weights, strict=True):
        np.testing.assert_allclose(t, [-2.0, -0.5, 0.0, 1.0, 3.0], atol=1e-10)
        assert wt.sum() == pytest.approx(1.0) and (wt > 0).all()


def test_full_reorthogonalization_recovers_every_eigenvalue():
    evals = np.concatenate([np.geomspace(1e-3, 1.0, 115), [5.0, 10.0, 20.0, 50.0, 100.0]])
    a = random_symmetric(evals, seed=1)
    good = slq(a, n_steps=120, n_vectors=1, seed=0)
    np.testing.assert_allclose(good.nodes[0], np.sort(evals), atol=1e-10)
    # without it, converged Ritz values come back as ghosts and small ones are lost
    bad = slq(a, n_steps=120, n_vectors=1, seed=0, reorthogonalize=False)
    assert not np.allclose(bad.nodes[0], np.sort(evals), atol=1e-3)


def test_zero_operator_breaks_down_at_once():
    res = slq(np.zeros((20, 20)), n_steps=10, n_vectors=2, seed=0)
    assert res.steps == (1, 1) and all(res.breakdown)
    assert res.lambda_min == res.lambda_max == 0.0 and res.trace_sqrt_shifted() == 0.0
    grid, phi = res.density()
    assert np.isfinite(phi).all()


def test_density_is_normalized_and_peaks_at_the_clusters():
    evals = np.concatenate([np.full(150, -1.0), np.full(50, 4.0)])
    res = slq(random_symmetric(evals, seed=2), n_steps=10, n_vectors=4, seed=0)
    grid, phi = res.density(sigma=0.1, n_points=4001)
    assert np.trapezoid(phi, grid) == pytest.approx(1.0, abs=1e-6)
    left, right = phi[grid < 1.5], phi[grid >= 1.5]
    assert grid[grid < 1.5][left.argmax()] == pytest.approx(-1.0, abs=0.01)
    assert grid[grid >= 1.5][right.argmax()] == pytest.approx(4.0, abs=0.01)
    # mass of each cluster ~ its share of the spectrum (3:1), up to probe noise
    assert np.trapezoid(left, grid[grid < 1.5]) == pytest.approx(0.75, abs=0.1)
    with pytest.raises(ValueError):
        res.density(sigma=0.0)


def test_probes_are_seeded_and_extend_with_n_vectors():
    a = random_symmetric(np.linspace(-1, 2, 50), seed=3)
    r2 = slq(a, 8, 2, seed=4)
    r3 = slq(a, 8, 3, seed=4)
    for x, y in zip(r2.nodes, r3.nodes[:2], strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(slq(a, 8, 1, seed=5).nodes[0], r2.nodes[0])


def test_breakdown_on_the_model_hessian(exact):
    # softmax ignores a per-query constant, so the non-rotary key-bias entries have zero
    # gradient and zero Hessian rows: the qkv-bias Hessian is singular with a repeated 0
    model, ids, h = exact["model"], exact["ids"], exact["H"]
    name = "gpt_neox.layers.0.attention.query_key_value.bias"
    op = HessianOperator(
        model, ids, dtype=torch.float64, params=[name], method="double_backward", cache_graph=True
    )
    full = HessianOperator(model, ids, dtype=torch.float64)
    off = full.offsets[full.param_names.index(name)]
    hs = h[off : off + op.dim, off : off + op.dim].numpy()
    ev = np.linalg.eigvalsh(hs)
    assert op.dim == 24 and np.sum(np.abs(ev) < 1e-12) >= 6
    res = slq(op, n_steps=op.dim, n_vectors=2, seed=0, dtype=torch.float64)
    assert all(res.breakdown) and max(res.steps) <= op.dim - 5
    assert res.lambda_min == pytest.approx(ev[0], abs=1e-9)
    assert res.lambda_max == pytest.approx(ev[-1], abs=1e-9)
    shift = max(0.0, -ev[0])
    assert res.trace_sqrt_shifted() == pytest.approx(np.sqrt(ev + shift).sum(), rel=0.05)
