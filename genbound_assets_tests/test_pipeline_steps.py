"""The certificate steps the assets call, without Dagster (pipeline/): design, quantization and its
priced choice, window losses, certificates from stored arrays, settings."""

import math

import numpy as np
import pytest
import torch

from genbound_assets.bounds.choices import choice_cost_nats
from genbound_assets.families.registry import FamilySpec, open_family
from genbound_assets.families.suite import _step_batch, training_labels
from genbound_assets.measure.window_losses import window_losses
from genbound_assets.pipeline.bounds_step import (
    CodeChoice,
    ReferenceAccounting,
    certify_from_losses,
    split_seed,
)
from genbound_assets.pipeline.design import draw_uniforms, evaluation_design
from genbound_assets.pipeline.losses_step import evaluate_design
from genbound_assets.pipeline.quantize_step import packing_problems, quantize_checkpoint
from genbound_assets.pipeline.settings import (
    PROFILES,
    CertifySettings,
    QuantConfig,
    parse_quant_grid,
)

MICRO = PROFILES["micro"]


@pytest.fixture(scope="module")
def fam(micro_suite_root):
    return open_family(FamilySpec("micro", "suite", str(micro_suite_root)))


def _step(fam, model):
    """The model's D* checkpoint (its manifest says so)."""
    return next(r.step for r in fam.source.list_checkpoints(model)
                if fam.source.manifest(model, r.step).get("is_d_star"))


# -- design ------------------------------------------------------------------------------------


def test_design_exact_when_affordable_else_windows(fam):
    step = _step(fam, "m-a")
    u = draw_uniforms(300, 0)
    w = fam.order.trained_windows(step)
    d = fam.order.n_targets(w)
    exact = evaluation_design(fam.order, step, u, n_calibration_windows=4, calibration_seed=1,
                              exact_max_targets=d, n_windows=64, n_reference_pairs=300)
    assert exact.kind == "exact" and np.array_equal(exact.windows, np.arange(w))
    assert exact.n_train_tokens == d and exact.draws == 0
    win = evaluation_design(fam.order, step, u, n_calibration_windows=4, calibration_seed=1,
                            exact_max_targets=d - 1, n_windows=64, n_reference_pairs=300)
    assert win.kind == "windows" and win.draws == 64
    assert np.array_equal(win.exact_windows, win.calibration)
    assert not set(win.windows.tolist()) & set(win.calibration.tolist())   # disjoint from calibration
    assert win.windows.max() < w                                           # trained windows only
    # the reference pairs are targets (labels, not separators) outside the calibration windows
    b = fam.order.batch(win.reference_windows)
    assert (b.labels[np.arange(len(b)), win.reference_columns] != -100).all()
    # calibration depends on its own seed only, not on the sample's uniforms
    other = evaluation_design(fam.order, step, draw_uniforms(300, 9), n_calibration_windows=4,
                              calibration_seed=1, exact_max_targets=0, n_windows=64, n_reference_pairs=300)
    assert np.array_equal(other.calibration, win.calibration)
    assert not np.array_equal(other.windows, win.windows)


def test_split_seed_is_an_independent_stream():
    """Review: the sample and the subsample split must not share a generator seed."""
    assert split_seed(0) != 0 and split_seed(0) != split_seed(1)
    u = draw_uniforms(8, 0)
    assert not np.allclose(np.random.default_rng(split_seed(0)).random(8), u)


# -- window losses ------------------------------------------------------------------------------


def test_window_losses_are_the_trainers_losses(fam, micro_suite_root):
    """The context rule: one forward per training window, the trainer's mask and positions."""
    step = _step(fam, "m-b")
    model = fam.source.load_model("m-b", step, attn_implementation="sdpa")
    stream = fam.order.stream
    B, T = fam.order.windows_per_step, fam.order.context_length
    res = window_losses(model, fam.order, np.arange(B, 2 * B), alphas=(0.1,))
    inputs, labels, mask = _step_batch(stream.tokens, training_labels(stream.tokens, stream.doc_starts),
                                       stream.doc_starts, 1, B, T)
    with torch.no_grad():
        logits = model(input_ids=inputs, attention_mask=mask).logits
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(),
                                           labels.reshape(-1), ignore_index=-100, reduction="none")
    want = ce[labels.reshape(-1) != -100].numpy()
    np.testing.assert_allclose(res.loss, want, rtol=0, atol=1e-5)
    assert (res.smoothed_loss[0.1] <= -math.log(0.1 / model.config.vocab_size) + 1e-12).all()


def test_non_finite_model_raises_floating_point_error(fam):
    step = _step(fam, "m-a")
    model = fam.source.load_model("m-a", step, attn_implementation="sdpa")
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError):
        window_losses(model, fam.order, [0, 1])


# -- quantization and the priced choice ---------------------------------------------------------


def test_quantize_choice_is_priced_and_decided_on_calibration(fam):
    step = _step(fam, "m-a")
    model = fam.source.load_model("m-a", step, attn_implementation="sdpa")
    s = MICRO.replace(quant_grid=(QuantConfig("rtn", 4, 16), QuantConfig("gptq", 4, 16)))
    w = fam.order.trained_windows(step)
    d = fam.order.n_targets(w)
    cal = np.array([0, 3, 5, 9])
    res = quantize_checkpoint(model, fam.order, cal, d, "exact", s, log=lambda m: None)
    assert res.status == "ok" and res.chosen in res.outcomes
    for o in res.outcomes:
        if o.in_grid and o.status == "ok":
            assert o.choice_nats == pytest.approx(choice_cost_nats(2) + choice_cost_nats(len(o.codes)))
            assert o.code.bits == min(c.bits for c in o.codes.values())
            assert "entropy" in o.codes and o.predicted_bound is not None
    chosen_score = res.chosen.predicted_bound
    assert all(chosen_score <= o.predicted_bound for o in res.outcomes if o.predicted_bound)
    assert res.reference is not None and res.reference.code.method == "nominal"
    # the status is decided on the calibration windows: a tiny ceiling fails every configuration
    strict = quantize_checkpoint(model, fam.order, cal, d, "exact", s.replace(max_gap_nats=1e-9),
                                 log=lambda m: None)
    assert strict.status == "failed" and "calibration windows" in strict.failure_reason()


def test_three_bit_gptq_on_d16_is_refused_before_trying(fam):
    model = fam.source.load_model("m-a", 0)
    problems = packing_problems(model, QuantConfig("gptq", 3, 16))
    assert problems and "32" in problems[0]
    assert packing_problems(model, QuantConfig("rtn", 3, 16)) == []


# -- certificates from stored arrays ------------------------------------------------------------


@pytest.fixture(scope="module")
def certified(fam):
    """Quantize and evaluate m-b at its D* checkpoint in both designs."""
    step = _step(fam, "m-b")
    model = fam.source.load_model("m-b", step, attn_implementation="sdpa")
    w = fam.order.trained_windows(step)
    d = fam.order.n_targets(w)
    u = draw_uniforms(256, 0)
    out = {}
    for kind, emax in (("exact", d), ("windows", 0)):
        s = MICRO.replace(exact_max_targets=emax, n_windows=64, n_reference_pairs=256)
        design = evaluation_design(fam.order, step, u, n_calibration_windows=4, calibration_seed=1,
                                   exact_max_targets=emax, n_windows=64, n_reference_pairs=256)
        res = quantize_checkpoint(model, fam.order, design.calibration, d, design.kind, s, log=lambda m: None)
        ref = next(o for o in res.outcomes if o.is_reference)
        tl = evaluate_design(model, res.chosen.q.model, res.chosen.alpha, fam.order, design,
                             q_ref=ref.q.model, alpha_ref=res.reference.alpha)
        code = CodeChoice(res.chosen.config.quantizer, res.chosen.config.bits, res.chosen.config.group_size,
                          res.chosen.code.method, res.chosen.code.bits, res.chosen.choice_nats)
        refacc = ReferenceAccounting("gptq", 4, 16, res.reference.code.bits)
        out[kind] = (tl, code, refacc, s, sum(p.numel() for p in model.parameters()))
    return out


@pytest.mark.parametrize("kind", ["exact", "windows"])
def test_certificate_rows_and_their_invariants(certified, kind):
    tl, code, ref, s, n = certified[kind]
    rows = certify_from_losses(tl, code, ref, model="m-b", step=1, n_params=n, settings=s)
    by = {r["method"]: r for r in rows}
    assert set(by) == {"headline", "freedman_decomposed", "azuma", "paper_recipe"}
    head, dec = by["headline"], by["freedman_decomposed"]
    assert head["certified"] and head["role"] == "headline" and head["design"] == kind
    assert not by["paper_recipe"]["certified"] and by["paper_recipe"]["role"] == "reference"
    assert head["bound"] <= dec["bound"]            # the direct bound skips Lemma 3.3's worst case
    terms = ("empirical_risk", "random_guess_term", "loss_variation_term", "smoothing_term",
             "quantization_gap", "subsample_term")
    assert math.isclose(sum(dec[t] for t in terms), dec["bound"], rel_tol=1e-12)
    assert dec["subsample_term"] >= -1e-12 and head["subsample_term"] >= 0
    if kind == "exact":
        assert head["subsample_term"] == 0 and head["n_sample"] == 0
        assert head["delta_split"] == {"martingale": s.delta}
    else:
        assert head["subsample_term"] > 0 and head["n_sample"] == 64
    for r in rows:
        if r["certified"]:
            assert r["bound"] >= r["empirical_risk"]


def test_bounds_recomputed_at_another_delta_from_the_same_arrays(certified):
    tl, code, ref, s, n = certified["exact"]
    b01 = certify_from_losses(tl, code, ref, model="m-b", step=1, n_params=n, settings=s)
    b05 = certify_from_losses(tl, code, ref, model="m-b", step=1, n_params=n,
                              settings=s.replace(delta=0.05))
    assert b05[0]["bound"] < b01[0]["bound"] and b05[0]["delta"] == 0.05
    assert b05[0]["alpha"] == b01[0]["alpha"]        # the stored alpha: fixed before the sample


# -- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize("var, value, match", [
    ("GENBOUND_DELTA", "2", "GENBOUND_DELTA.*delta must lie in"),
    ("GENBOUND_DELTA", "abc", "GENBOUND_DELTA='abc': expected a number"),
    ("GENBOUND_N_WINDOWS", "1.5", "GENBOUND_N_WINDOWS='1.5': expected an integer"),
    ("GENBOUND_QUANT_GRID", "gptq:5:16", "GENBOUND_QUANT_GRID.*bits must be one of"),
    ("GENBOUND_QUANT_GRID", "gptq-4", "GENBOUND_QUANT_GRID.*quantizer:bits:group_size"),
    ("GENBOUND_SELECTION", "most", "GENBOUND_SELECTION.*selection must be one of"),
    ("GENBOUND_QUANTIZE_EMBEDDINGS", "maybe", "GENBOUND_QUANTIZE_EMBEDDINGS='maybe': expected true or false"),
    ("GENBOUND_PROFILE", "huge", "unknown settings profile 'huge'"),
])
def test_settings_from_env_refuse_bad_values_in_one_line(var, value, match):
    with pytest.raises(ValueError, match=match) as e:
        CertifySettings.from_env(environ={var: value})
    assert "\n" not in str(e.value)


def test_settings_from_env_precedence():
    s = CertifySettings.from_env(environ={"GENBOUND_PROFILE": "micro", "GENBOUND_DELTA": "0.05",
                                          "GENBOUND_QUANT_GRID": "rtn:4:-1,gptq:4:16"}, n_windows=8)
    assert s.delta == 0.05 and s.n_windows == 8 and s.n_reference_pairs == MICRO.n_reference_pairs
    assert s.quant_grid == parse_quant_grid("gptq:4:16,rtn:4:-1")
    assert s.configs == tuple(sorted(set(s.quant_grid) | {s.reference_config}))
