"""window_losses' float32 reduction (docs/bounds.md, "Rounding of the reduction"): X never below
the exact loss of the logits and at most 3e-6 above it; the entropy proxies inside their exact
ranges; and the controls: without the (1 + eta) inflation X falls below the exact loss, and an
unclamped float32 entropy leaves [H_min, log V]."""

import math

import numpy as np
import pytest
import torch

from genbound_assets.bounds.loss_range import smoothed_min_entropy
from genbound_assets.bounds.smoothing import smoothing_alpha
from genbound_assets.measure import window_losses as wl
from genbound_assets_tests.exact_reference import exact_reduction as _exact

V_PYTHIA = 50_304


def _logits(vocab: int, seed: int = 0, rows: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Ordinary rows (N(0, 3^2) logits), near-one-hot rows (one logit 15..60 above the rest)
    and near-uniform rows (logits ~ 1e-3 N(0, 1)): the middle and both ends of the ranges."""
    g = torch.Generator().manual_seed(seed)
    normal = 3.0 * torch.randn(rows, vocab, generator=g)
    onehot = torch.zeros(rows, vocab)
    onehot[torch.arange(rows), torch.randint(0, vocab, (rows,), generator=g)] = torch.linspace(15.0, 60.0, rows)
    unif = 1e-3 * torch.randn(rows, vocab, generator=g)
    tgt = torch.randint(0, vocab, (3 * rows,), generator=g)
    tgt[rows:rows + rows // 2] = onehot[: rows // 2].argmax(1)   # half the one-hot rows hit
    return torch.cat([normal, onehot, unif]), tgt


@pytest.mark.parametrize("kernels", ["numpy", "torch"])   # each CPU's exp and log (by CPU flags)
@pytest.mark.parametrize("vocab", [257, 2_048, V_PYTHIA])   # 2,048: einsum's longest rows
def test_loss_is_an_upper_bound_within_3e_6_and_proxies_stay_in_range(vocab, kernels, monkeypatch):
    """Either kernel set (numpy's exp and log2, chosen on AVX-512 CPUs; torch's exp and log,
    elsewhere) gives X within [X, X + 3e-6] and proxies within 1e-4 of the exact ones."""
    monkeypatch.setattr(wl, "EXP_KERNEL", kernels)
    monkeypatch.setattr(wl, "_NUMPY_SVML_LOG2", kernels == "numpy")
    logits, tgt = _logits(vocab)
    alphas = (smoothing_alpha(0.1386, vocab), 1e-3, 0.5)
    out = wl._reduce(logits, tgt, alphas, entropy=True)
    ref = _exact(logits, tgt, alphas)
    gap = out["loss"] - ref["x"]
    assert gap.min() >= 0.0, gap.min()
    assert gap.max() <= 3e-6, gap.max()
    log_v = math.log(vocab)
    assert out["entropy"].min() >= 0.0 and out["entropy"].max() <= log_v
    np.testing.assert_allclose(out["entropy"], ref["y"], atol=1e-4, rtol=0)
    for i, a in enumerate(alphas):
        xs, ys = out[f"sl{i}"], out[f"se{i}"]
        assert (xs - ref["xs"][a]).min() >= -1e-12               # follows X monotonically
        assert xs.max() <= math.log(vocab / a)                     # the range's top, exactly
        assert (xs - ref["xs"][a]).max() <= 3e-6
        assert ys.min() >= smoothed_min_entropy(a, vocab) and ys.max() <= log_v
        np.testing.assert_allclose(ys, ref["ys"][a], atol=1e-4, rtol=0)


@pytest.mark.parametrize("vocab", [257, V_PYTHIA])
def test_controls_without_inflation_and_without_clamp_fail(vocab, monkeypatch):
    """eta = 0 puts X below the exact loss on some rows (so the inflation is needed), and the
    float32 entropy before the clamp leaves [H_min, log V] on some rows (so the clamp is)."""
    logits, tgt = _logits(vocab)
    alpha = smoothing_alpha(0.1386, vocab)
    ref = _exact(logits, tgt, (alpha,))
    monkeypatch.setattr(wl, "ETA", 0.0)
    out = wl._reduce(logits, tgt, (alpha,), entropy=False)
    assert (out["loss"] < ref["x"]).any()
    # the unclamped float32 smoothed entropy, computed as _reduce does before clamping
    p = torch.softmax(logits, -1)
    q = (1 - alpha) * p + alpha / vocab
    ys32 = (-(torch.log(q) * q).sum(-1)).double().numpy()
    h_min, log_v = smoothed_min_entropy(alpha, vocab), math.log(vocab)
    assert ((ys32 < h_min) | (ys32 > log_v)).any()


def test_float64_logits_reduce_in_float64():
    logits, tgt = _logits(257)
    out = wl._reduce(logits.double(), tgt, (), entropy=True)
    gap = out["loss"] - _exact(logits, tgt, ())["x"]
    assert gap.min() >= 0.0 and gap.max() <= math.log1p(wl.ETA) + 1e-12


@pytest.mark.parametrize("vocab", [2, 257, 1000])
def test_loss_upper_bound_over_many_scales_and_ties(vocab):
    """2,000 rows at logit scales 1e-3..80 (ties, near-ties, saturated rows) and bf16-valued
    logits: X never below the exact loss, never more than 3.5e-6 above."""
    g = torch.Generator().manual_seed(vocab)
    scales = torch.logspace(-3, math.log10(80.0), 2000)[:, None]
    logits = torch.randn(2000, vocab, generator=g) * scales
    logits[::7] = logits[::7].bfloat16().float()          # coarse values: many exact ties
    logits[1::7, : vocab // 2] = logits[1::7, :1]          # a block of equal logits
    tgt = torch.randint(0, vocab, (2000,), generator=g)
    alpha = smoothing_alpha(0.2, vocab)
    out = wl._reduce(logits, tgt, (alpha,), entropy=False)
    ref = _exact(logits, tgt, (alpha,))
    gap = out["loss"] - ref["x"]
    assert gap.min() >= 0.0 and gap.max() <= 3.5e-6, (gap.min(), gap.max())
    assert (out["sl0"] - ref["xs"][alpha]).min() >= -1e-12
    assert out["se0"].min() >= smoothed_min_entropy(alpha, vocab)


@pytest.mark.parametrize("kernel", ["numpy", "torch"])
def test_both_cpu_exps_stay_inside_the_exp_allowance(kernel):
    """The reduction's Z uses numpy's or torch's float32 exp on a CPU (window_losses._exp_, by CPU
    flags); the rounding budget of docs/bounds.md allows each exp a relative error of 2^-22.  4M
    arguments spread over every binade of [-104, 0] plus numpy's documented worst case
    (x = -62.0295, error 2.1264e-7): none above the allowance for either kernel
    (scripts/check_exp.py checks every float32 in ~1 min)."""
    rng = np.random.default_rng(0)
    bits = rng.integers(0x80000000, 0xC2D00000, size=1 << 22, dtype=np.uint64).astype(np.uint32)
    x = np.concatenate([bits.view(np.float32), np.array([0xC2781E37], np.uint32).view(np.float32)])
    e = torch.from_numpy(x.copy())
    wl._exp_(e, kernel)
    ref = np.exp(x.astype(np.float64))
    ok = ref >= 2.0 ** -126
    rel = np.abs(e.numpy()[ok].astype(np.float64) - ref[ok]) / ref[ok]
    assert rel.max() <= 2.0 ** -22, rel.max()
    if kernel == "numpy":
        assert rel[-1] > 2.0 ** -23      # the worst case is there, and is above one ulp of 1
    assert wl.EXP_KERNEL in ("numpy", "torch")


def test_the_exp_allowance_control_fails_for_a_coarser_exp():
    """Control: an exp rounded to bfloat16 (relative error up to 2^-9) breaks the allowance, so
    the test above can fail."""
    x = -np.linspace(0.0, 80.0, 10_001, dtype=np.float32)
    coarse = torch.from_numpy(np.exp(x)).bfloat16().float().numpy()
    ref = np.exp(x.astype(np.float64))
    assert (np.abs(coarse - ref) / ref).max() > 2.0 ** -22
