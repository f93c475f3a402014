"""token_losses against a direct per-pair float64 computation on a tiny GPTNeoX."""

import numpy as np
import pytest
import torch

from genbound_assets.bounds.smoothing import smoothing_alpha
from genbound_assets.data.stream import TokenStream
from genbound_assets.families.models import resolve_device_dtype, tiny_gpt_neox
from genbound_assets.measure.token_losses import plan_windows, token_losses
from genbound_assets_tests.exact_reference import exact_reduction

V = 211
T = 12
SEP = 0


def make_stream(seed=0, n_docs=25, max_len=40):
    rng = np.random.default_rng(seed)
    lens = rng.integers(2, max_len, size=n_docs)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    toks = rng.integers(1, V, size=int(lens.sum()))
    toks[starts] = SEP
    return TokenStream(toks, starts, SEP)


def sharp_model(seed=0):
    """Tiny model with a scaled-up head so the predictive distributions are far from uniform."""
    m = tiny_gpt_neox(V, seed=seed)
    with torch.no_grad():
        m.lm_head.weight.mul_(20.0)
    return m


def reference(model, stream, positions, context_length):
    """Plain forward on each pair's own context, float64 log-softmax of the upcast logits."""
    starts = stream.context_starts(positions, context_length)
    logps = []
    with torch.no_grad():
        for p, s in zip(positions, starts, strict=True):
            ids = torch.as_tensor(stream.tokens[s:p])[None]
            logps.append(torch.log_softmax(model(input_ids=ids).logits[0, -1].double(), -1))
    logp = torch.stack(logps)
    tgt = torch.as_tensor(stream.tokens[np.asarray(positions)])
    return logp, -logp.gather(1, tgt[:, None])[:, 0].numpy()


def entropy(logp):
    return -(logp.exp() * logp).sum(-1).numpy()




@pytest.fixture(scope="module")
def stream():
    return make_stream()


@pytest.fixture(scope="module")
def model():
    return sharp_model()


@pytest.fixture(scope="module")
def positions(stream):
    rng = np.random.default_rng(1)
    tp = stream.target_positions()
    pos = rng.choice(tp, size=40)
    return np.concatenate([pos, pos[:5], tp[:8]])  # exact duplicates and same-start runs


@pytest.fixture(scope="module")
def ref(model, stream, positions):
    return reference(model, stream, positions, T)


def test_plan_shares_windows_only_for_equal_context_starts(stream, positions):
    plan = plan_windows(stream, positions, T)
    cs = stream.context_starts(positions, T)
    assert len(plan.start) < len(np.unique(positions)) < len(positions)
    np.testing.assert_array_equal(plan.start[plan.pair_window], cs)
    np.testing.assert_array_equal(plan.start[plan.pair_window] + plan.pair_offset + 1, positions)
    assert plan.lengths.max() <= T and plan.lengths.min() >= 1


def test_loss_and_entropy_match_direct_float64(model, stream, positions, ref):
    res = token_losses(model, stream, positions, T, batch_size=7)
    logp, x_ref = ref
    y_ref = entropy(logp)
    assert res.loss.dtype == np.float64 and res.loss.shape == positions.shape
    np.testing.assert_array_equal(res.positions, positions)
    assert res.vocab_size == V and res.context_length == T
    np.testing.assert_allclose(res.loss, x_ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(res.entropy, y_ref, atol=1e-5, rtol=0)
    assert res.entropy.std() > 0.1 and res.loss.std() > 0.5  # a non-degenerate check


def test_smoothed_values_match_closed_form(model, stream, positions, ref):
    alphas = (0.01, 0.3, smoothing_alpha(0.1, V))
    res = token_losses(model, stream, positions, T, alphas=alphas, batch_size=16)
    logp, x_ref = ref
    for a in alphas:
        xs = -np.log((1 - a) * np.exp(-x_ref) + a / V)
        q = (1 - a) * logp.exp() + a / V
        ys = -(q * q.log()).sum(-1).numpy()
        np.testing.assert_allclose(res.smoothed_loss[a], xs, atol=1e-5, rtol=0)
        np.testing.assert_allclose(res.smoothed_entropy[a], ys, atol=1e-5, rtol=0)
        assert np.all(res.smoothed_loss[a] <= np.log(V / a) + 1e-9)  # Delta_s = log(V / alpha)


def test_batched_equals_one_pair_at_a_time(model, stream, positions):
    batched = token_losses(model, stream, positions, T, alphas=(0.2,), batch_size=64)
    single = [token_losses(model, stream, [p], T, alphas=(0.2,), batch_size=1) for p in positions]
    np.testing.assert_allclose(batched.loss, [s.loss[0] for s in single], atol=1e-5, rtol=0)
    np.testing.assert_allclose(batched.entropy, [s.entropy[0] for s in single], atol=1e-5, rtol=0)
    np.testing.assert_allclose(batched.smoothed_entropy[0.2],
                               [s.smoothed_entropy[0.2][0] for s in single], atol=1e-5, rtol=0)
    dup = positions[:5]
    np.testing.assert_array_equal(batched.loss[40:45], batched.loss[:5])
    assert np.all(positions[40:45] == dup)


def test_bad_token_id_is_a_clear_error(model, stream, positions):
    toks = stream.tokens.copy()
    p = int(positions[3])
    bad_at = p - 1  # inside the context of positions[3]
    toks[bad_at] = V + 5
    bad = TokenStream(toks, stream.doc_starts, SEP)
    with pytest.raises(ValueError, match=rf"token id {V + 5} at stream position {bad_at}"):
        token_losses(model, bad, positions, T, batch_size=8)
    toks[bad_at] = stream.tokens[bad_at]
    toks[p] = V  # as a target
    bad = TokenStream(toks, stream.doc_starts, SEP)
    with pytest.raises(ValueError, match=rf"stream position {p}\b"):
        token_losses(model, bad, positions, T, batch_size=8)
    # a bad id that no sampled pair reads is not an error
    far = int(stream.doc_starts[-1]) + 1
    toks = stream.tokens.copy()
    toks[far:] = V
    ok = TokenStream(toks, stream.doc_starts, SEP)
    token_losses(model, ok, positions[positions < stream.doc_starts[-1]], T)


def test_invalid_positions_and_alphas(model, stream):
    for bad in ([0], [len(stream)], [-3], [int(stream.doc_starts[3])]):
        with pytest.raises(ValueError):
            token_losses(model, stream, bad, T)
    with pytest.raises(ValueError):
        token_losses(model, stream, [5], T, alphas=(0.0,))
    with pytest.raises(ValueError):
        token_losses(model, stream, [5.5], T)
    assert len(token_losses(model, stream, np.array([], dtype=np.int64), T)) == 0


def test_bf16_uses_float64_log_softmax_of_bf16_logits(stream, positions):
    """Final LayerNorm -> constant integer hidden state and an integer head: the bf16 logits are
    exact integers whatever the kernel, so the only error left is the log-softmax's."""
    m = tiny_gpt_neox(V, seed=3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        m.gpt_neox.final_layer_norm.weight.zero_()
        m.gpt_neox.final_layer_norm.bias.copy_(torch.randint(-2, 3, (m.config.hidden_size,),
                                                             generator=g).float())
        m.lm_head.weight.copy_(torch.randint(-2, 3, m.lm_head.weight.shape, generator=g).float())
    m = m.to(torch.bfloat16)
    res = token_losses(m, stream, positions, T, batch_size=16)
    with torch.no_grad():
        logits = m(input_ids=torch.tensor([[1, 2, 3]])).logits[0, -1]
    assert logits.dtype == torch.bfloat16
    logp = torch.log_softmax(logits.double(), -1)
    x_ref = -logp[stream.tokens[positions]].numpy()
    np.testing.assert_allclose(res.loss, x_ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(res.entropy, entropy(logp), atol=1e-5, rtol=0)
    lp16 = torch.log_softmax(logits, -1).double()  # what a bf16 log-softmax would give
    assert np.abs(-lp16[stream.tokens[positions]].numpy() - x_ref).max() > 1e-3


def test_bf16_model_end_to_end_close_to_its_own_logits(stream, positions):
    m = tiny_gpt_neox(V, seed=1).to(torch.bfloat16)
    res = token_losses(m, stream, positions[:8], T, batch_size=4)
    logp, x_ref = reference(m, stream, positions[:8], T)
    # bf16 logits differ by an ulp between matmul shapes; |logit| < 1 here, so ulp <= 2^-8
    np.testing.assert_allclose(res.loss, x_ref, atol=2e-2, rtol=0)
    np.testing.assert_allclose(res.entropy, entropy(logp), atol=2e-2, rtol=0)


def test_device_dtype_resolution_and_model_state(stream, positions):
    assert resolve_device_dtype("cpu", "bf16") == (torch.device("cpu"), torch.bfloat16)
    assert resolve_device_dtype("cpu", None) == (torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError):
        resolve_device_dtype("cpu", "int8")
    m = sharp_model()
    m.train()
    ref = token_losses(m, stream, positions[:10], T)
    assert m.training  # restored
    res = token_losses(m, stream, positions[:10], T, device="cpu", dtype="float64")
    assert next(m.parameters()).dtype == torch.float64  # cast in place, as documented
    np.testing.assert_allclose(res.loss, ref.loss, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- float64 at Pythia's V

V_PYTHIA = 50_304


def _extreme_logits(seed=0, rows=24):
    """float32 logits at V = 50,304: near-one-hot rows (one logit 15..60 above the rest) and
    near-uniform rows (logits ~ 1e-3 N(0, 1)): the two ends of the proxy's range."""
    g = torch.Generator().manual_seed(seed)
    onehot = torch.zeros(rows, V_PYTHIA)
    onehot[torch.arange(rows), torch.randint(0, V_PYTHIA, (rows,), generator=g)] = \
        torch.linspace(15.0, 60.0, rows)
    unif = 1e-3 * torch.randn(rows, V_PYTHIA, generator=g)
    tgt = torch.randint(0, V_PYTHIA, (2 * rows,), generator=g)
    tgt[:rows] = onehot.argmax(1)  # half the one-hot rows predict their target, half miss it
    tgt[: rows // 2] = (tgt[: rows // 2] + 1) % V_PYTHIA
    return torch.cat([onehot, unif]), tgt


def _float32_reduction(logits, tgt, alpha):
    """The former float32 path (log-softmax and per-term products in float32): the control."""
    import math

    logp = torch.log_softmax(logits.float(), -1)
    logq = torch.logaddexp(logp + math.log1p(-alpha), torch.tensor(math.log(alpha / V_PYTHIA)))
    ys = -(logq.exp() * logq).sum(-1, dtype=torch.float64)
    y = -(logp.exp() * logp).sum(-1, dtype=torch.float64)
    return y.numpy(), ys.numpy()


def test_float64_reductions_keep_the_exact_proxy_ranges_at_pythia_vocab():
    """Review finding: float32 reductions put Y_s below H_min (near-one-hot) and above log V
    (near-uniform) by more than the bound's 1e-9 tolerance; float64 ones match an exact reference."""
    import math

    from genbound_assets.bounds.loss_range import smoothed_min_entropy
    from genbound_assets.bounds.subsample import BOUNDS_TOLERANCE
    from genbound_assets.measure.token_losses import _reduce_logits

    logits, tgt = _extreme_logits()
    alphas = (smoothing_alpha(0.1386, V_PYTHIA), 1e-3, 0.5)
    x, y, xs, ys = _reduce_logits(logits, tgt, alphas)
    ref = exact_reduction(logits, tgt, alphas)
    assert x.dtype == y.dtype == torch.float64
    np.testing.assert_allclose(x.numpy(), ref["x"], atol=1e-11, rtol=0)
    np.testing.assert_allclose(y.numpy(), ref["y"], atol=1e-11, rtol=0)
    log_v = math.log(V_PYTHIA)
    assert y.min() >= -BOUNDS_TOLERANCE and y.max() <= log_v + BOUNDS_TOLERANCE
    float32_misses = 0
    for k, a in enumerate(alphas):
        np.testing.assert_allclose(xs[k].numpy(), ref["xs"][a], atol=1e-11, rtol=0)
        np.testing.assert_allclose(ys[k].numpy(), ref["ys"][a], atol=1e-11, rtol=0)
        h_min = smoothed_min_entropy(a, V_PYTHIA)
        assert ys[k].min() >= h_min - BOUNDS_TOLERANCE, (a, float(ys[k].min()) - h_min)
        assert ys[k].max() <= log_v + BOUNDS_TOLERANCE, (a, float(ys[k].max()) - log_v)
        assert xs[k].max() <= math.log(V_PYTHIA / a) + BOUNDS_TOLERANCE
        _, ys32 = _float32_reduction(logits, tgt, a)
        float32_misses += (ys32 < h_min - BOUNDS_TOLERANCE).sum() + (ys32 > log_v + BOUNDS_TOLERANCE).sum()
    # the inputs do exercise the failure: the float32 path leaves the range on some rows
    assert float32_misses > 0
    y32, _ = _float32_reduction(logits, tgt, alphas[0])
    assert (y32 > log_v + BOUNDS_TOLERANCE).any()


def _constant_logit_model(logit_vector: torch.Tensor):
    """Tiny GPTNeoX at V = 50,304 whose logits are `logit_vector` at every position: the final
    LayerNorm outputs e_0 (weight 0, bias e_0) and the head's column 0 is the vector."""
    m = tiny_gpt_neox(V_PYTHIA, hidden=16, layers=1, heads=2, context=T, seed=0)
    with torch.no_grad():
        m.gpt_neox.final_layer_norm.weight.zero_()
        m.gpt_neox.final_layer_norm.bias.zero_()
        m.gpt_neox.final_layer_norm.bias[0] = 1.0
        m.lm_head.weight.zero_()
        m.lm_head.weight[:, 0] = logit_vector
    return m


def test_token_losses_at_pythia_vocab_pass_the_bound_range_checks(stream, positions):
    """End to end: near-one-hot and near-uniform models at V = 50,304 through token_losses, then
    the subsample certificate with the exact ranges the pipeline declares does not raise."""
    import math

    from genbound_assets.bounds.loss_range import smoothed_min_entropy, tight_loss_range
    from genbound_assets.bounds.subsample import subsampled_freedman_bound

    g = torch.Generator().manual_seed(1)
    hot = torch.zeros(V_PYTHIA)
    hot[7] = 40.0
    flat = 1e-3 * torch.randn(V_PYTHIA, generator=g)
    alpha = smoothing_alpha(0.1386, V_PYTHIA)
    pos = positions[:24]
    for vec in (hot, flat):
        res = token_losses(_constant_logit_model(vec), stream, pos, T, alphas=(alpha,),
                           batch_size=8)
        ref = exact_reduction(vec[None].expand(len(pos), -1),
                               torch.as_tensor(stream.tokens[pos]), (alpha,))
        np.testing.assert_allclose(res.loss, ref["x"], atol=1e-11, rtol=0)
        np.testing.assert_allclose(res.entropy, ref["y"], atol=1e-11, rtol=0)
        np.testing.assert_allclose(res.smoothed_loss[alpha], ref["xs"][alpha], atol=1e-11, rtol=0)
        np.testing.assert_allclose(res.smoothed_entropy[alpha], ref["ys"][alpha], atol=1e-11,
                                   rtol=0)
        b = subsampled_freedman_bound(
            res.smoothed_loss[alpha], res.smoothed_entropy[alpha],
            tight_loss_range(alpha, V_PYTHIA), 0.01, 10**6,
            loss_bounds=(0.0, math.log(V_PYTHIA / alpha)),
            proxy_bounds=(smoothed_min_entropy(alpha, V_PYTHIA), math.log(V_PYTHIA)),
            grid_size=20)
        assert math.isfinite(b.bound)
