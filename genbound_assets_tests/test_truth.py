"""The truth test of the pipeline: certified bounds vs the exact risk they bound.

On ``SyntheticMarkovSource`` (p*(.|past) known exactly) the pipeline's steps (design ->
quantize_checkpoint -> evaluate_design -> certify_from_losses) certify small GPT-NeoX checkpoints,
and ``genbound validate``'s truth, computed independently of those steps, is the mean over all D
training targets (training-window contexts) of E_{x~p*}[-log p_sq(x|ctx)] at each row's alpha.
Replaces test_certify.py (which exercised pipeline/certify.py): every certified row >= truth, in
both designs and in both regimes; the decomposed terms sum to the bound; headline < decomposed; a
too-long code is reported vacuous; bad settings are refused; and negative controls that must fail
do (the headline without the code length, and a mutated bound, are caught).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from genbound_assets import cli_validate as cv
from genbound_assets.pipeline.settings import CertifySettings, parse_quant_grid

TERMS = ("empirical_risk", "random_guess_term", "loss_variation_term", "smoothing_term",
         "quantization_gap", "subsample_term")


@pytest.fixture(scope="module")
def report():
    """One seed of each regime at the tiny size, both designs, the GPTQ+RTN grid."""
    return cv.run_validation(seeds=1, suite_sizes=("tiny",), designs=("exact", "windows"),
                             regimes=("one_pass", "memorize"), grid="rtn:4:16,gptq:4:16",
                             echo=lambda s: None)


@pytest.mark.slow
def test_every_certified_row_is_above_its_exact_truth(report):
    ok = [r for r in report.results if r.status == "ok"]
    assert {(r.regime, r.design) for r in ok} == {
        (g, d) for g in ("one_pass", "memorize") for d in ("exact", "windows")}
    for r in ok:
        methods = {(row["method"], row["certified"]) for row in r.rows}
        assert {("headline", True), ("freedman_decomposed", True), ("azuma", True),
                ("paper_recipe", False)} <= methods, methods
        for row in r.rows:
            assert math.isfinite(row["true_risk"]) and row["true_risk"] > 0
            if row["certified"]:
                assert row["bound"] >= row["true_risk"], (r.regime, r.design, row["method"],
                                                           row["bound"], row["true_risk"])
    assert report.violations == [] and report.certified_rows == 3 * len(ok)


@pytest.mark.slow
def test_truth_uses_the_pipelines_contexts_and_the_regimes_differ(report):
    by = {(r.regime, r.design): r for r in report.results}
    for regime in ("one_pass", "memorize"):
        exact, windows = by[(regime, "exact")], by[(regime, "windows")]
        # same targets and contexts: our empirical smoothed risk over all D targets equals the
        # pipeline's mean X_sq in the exact design, up to the pipeline's rounding up of X
        # (docs/bounds.md, "Rounding of the reduction": never below, < 3.5e-6 above)
        assert 0.0 <= exact.context_check < 3.5e-6, exact.context_check
        assert exact.n_train_tokens == windows.n_train_tokens
        headline = next(x for x in exact.rows if x["method"] == "headline")
        assert headline["row"]["n_train_tokens"] == exact.n_train_tokens
    # the memorizing model generalizes measurably worse than its training loss says; the
    # one-pass model hardly at all
    assert by[("memorize", "exact")].generalization_gap > 0.05
    assert abs(by[("one_pass", "exact")].generalization_gap) < 0.02


@pytest.mark.slow
def test_decomposed_terms_sum_and_headline_is_tighter(report):
    for r in report.results:
        by = {row["method"]: row for row in r.rows}
        dec, head = by["freedman_decomposed"]["row"], by["headline"]["row"]
        assert math.isclose(sum(dec[t] for t in TERMS), dec["bound"], rel_tol=1e-12)
        assert dec["subsample_term"] >= -1e-12
        if r.design == "exact":
            assert dec["subsample_term"] == pytest.approx(0.0, abs=1e-12)
        assert head["alpha"] == dec["alpha"]
        assert head["bound"] < dec["bound"]
        # the headline's decomposition: R̂_sq + Delta C + Sigma sqrt(C) + subsample correction
        assert math.isclose(head["empirical_risk"] + head["loss_range"] * head["complexity"]
                            + head["loss_variation_term"] + head["subsample_term"], head["bound"],
                            rel_tol=1e-9)


@pytest.mark.slow
def test_negative_controls_fail_on_the_same_models(report):
    """Without the code length (L(h) = 0: the trained model treated as fixed in advance), the
    headline is violated on the memorizing model, and so is C/100; the real rows are not."""
    mem = next(r for r in report.results if (r.regime, r.design) == ("memorize", "exact"))
    ctrl = {c["control"]: c for c in mem.controls}
    assert ctrl["L=0"]["violated"] and ctrl["C/100"]["violated"]
    assert ctrl["L=0"]["bound"] < ctrl["C/100"]["bound"] < ctrl["C/20"]["bound"]
    head = next(x for x in mem.rows if x["method"] == "headline")
    assert not head["violated"] and head["bound"] > ctrl["C/20"]["bound"]
    v, n = report.control_violations("L=0", "memorize")
    assert v >= 1 and n == 2


def test_too_long_a_code_is_reported_vacuous_not_bounded():
    """C >= V - 1 (a 15k-parameter model certified on D ~ 250 targets): no smoothing weight
    exists; every configuration fails with the reason and nothing is chosen."""
    import torch
    from transformers import GPTNeoXForCausalLM

    from genbound_assets.data.order import StreamWindows
    from genbound_assets.families.suite import neox_config
    from genbound_assets.pipeline.design import calibration_windows
    from genbound_assets.pipeline.quantize_step import quantize_checkpoint

    regime = cv.REGIMES["memorize"]
    source = cv._source(regime, 0, 600)
    order = StreamWindows(source.stream(), regime.context_length, regime.batch_size)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(neox_config(cv._sizes()["small"], regime.model_vocab,
                                           regime.context_length, regime.vocab)).eval()
    step = 1
    d = order.n_targets(order.trained_windows(step))
    s = cv.validation_settings("exact", grid="rtn:4:16")
    res = quantize_checkpoint(model, order, calibration_windows(order.trained_windows(step), 2, 1),
                              d, "exact", s.replace(n_calibration_windows=2), log=lambda m: None)
    assert res.status == "failed" and res.chosen is None
    grid = [o for o in res.outcomes if o.in_grid]
    assert grid and all(o.status == "failed" and "vacuous" in o.failure_reason
                        and "V - 1" in o.failure_reason for o in grid)
    assert all(o.complexity >= regime.model_vocab - 1 for o in grid)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="delta"):
        CertifySettings(delta=1.5)
    with pytest.raises(ValueError, match="n_calibration_windows"):
        CertifySettings(n_calibration_windows=0)
    with pytest.raises(ValueError, match="n_windows"):
        CertifySettings(n_windows=2)
    with pytest.raises(ValueError, match="quantizer:bits:group_size"):
        parse_quant_grid("gptq-4-16")
    with pytest.raises(ValueError, match="design"):
        cv.validation_settings("both")
    with pytest.raises(ValueError, match="unknown size"):
        cv.run_validation(seeds=1, suite_sizes=("huge",), echo=lambda s: None)
    with pytest.raises(ValueError, match="unknown regime"):
        cv.run_validation(seeds=1, regimes=("twice",), echo=lambda s: None)
    res = CliRunner().invoke(cv.validate, ["--grid", "gptq:5:16"])
    assert res.exit_code == 2 and "bits must be one of" in res.output
    assert len(res.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_exits_zero_on_valid_bounds_and_one_on_a_mutated_bound(tmp_path, monkeypatch):
    """The command's verdict: 0 on the pipeline's bounds; 1 when a mutant drops every term but
    the empirical risk (bound = R̂_sq), which the memorizing model's gap exposes."""
    from genbound_assets.cli import main

    args = ["validate", "--seeds", "1", "--regimes", "memorize", "--designs", "exact",
            "--grid", "rtn:4:16", "--memorize-epochs", "200"]
    out = tmp_path / "v.json"
    res = CliRunner().invoke(main, args + ["--json", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["violations"] == 0 and doc["certified_rows"] == 3
    assert "0 violation(s) in 3 certified rows" in res.output

    from genbound_assets.pipeline import bounds_step

    real = bounds_step.certify_from_losses

    def mutant(*a, **k):
        rows = real(*a, **k)
        for r in rows:
            if r["method"] == "headline":
                r["bound"] = r["empirical_risk"]
        return rows

    monkeypatch.setattr(bounds_step, "certify_from_losses", mutant)
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1, res.output
    assert "VIOLATION memorize seed 0" in res.output and "headline" in res.output


def test_true_risks_matches_a_direct_sum():
    """true_risks against a per-target loop over p* from ``conditional`` (the context's own
    document past, independent of states_at)."""
    regime = cv.REGIMES["one_pass"]
    source = cv._source(regime, 3, 400)
    stream = source.stream()
    rng = np.random.default_rng(0)
    pos = stream.target_positions()[:300]
    probs = rng.dirichlet(np.ones(regime.model_vocab), size=len(pos))
    dist = cv.TargetDistributions(probs, pos, stream.tokens[pos])
    alpha = 0.2
    truth, emp = cv.true_risks(dist, source, stream, alpha)
    q = (1 - alpha) * probs + alpha / regime.model_vocab
    want = []
    for i, p in enumerate(pos):
        past = stream.tokens[stream.doc_start_of(p):p]
        pstar = source.conditional(past)
        want.append(-(pstar * np.log(q[i])).sum())
    assert truth == pytest.approx(float(np.mean(want)), rel=1e-12)
    assert emp == pytest.approx(float(np.mean(-np.log(q[np.arange(len(pos)), stream.tokens[pos]]))), rel=1e-12)
