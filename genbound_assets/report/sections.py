"""The report's sections: each ``(engine, models=None) -> Section`` reads views with SQL and
draws one figure or table.  A section whose inputs are absent returns a note ("no data yet:
materialize X") instead of failing.  ``SECTIONS`` is the report's order (registration order of
the ``@section`` functions below); ``models`` restricts a section to some models (e.g. one
asset's figure for Dagster metadata).

Across sizes, every figure shows each model at its compute-optimal selection (view ``frontier``,
table ``compute_optimal``: the certified checkpoint with D ≈ D* = 20 N, or rows interpolated
between two checkpoints, drawn hollow because they are not certified).  The bound to quote is
the ``headline`` row; the other rows are diagnostics (certified at their own δ) or references
(not certified).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence

import numpy as np
import polars as pl
from sqlalchemy.engine import Engine

from genbound_assets.fits import fit_offset_power_law, fit_power_law

from . import figures
from .core import PNG_DPI, NoData, Section, Table, fmt, human, only_models, png_bytes, query

FRONTIER_NOTE = ("no model has bounds at its compute-optimal checkpoint yet: materialize the "
                 "family's checkpoint_bounds and compute_optimal assets (e.g. `genbound demo`)")
FIT_SELECTION = "compute_optimal"
FIT_LABELS = {"sigma": "Σ", "prequential_bits": "K(h)", "empirical_risk": "R̂_h",
              "headline": "headline bound", "quantization_gap": "quantization gap",
              "random_guess_term": "C·log V", "loss_variation_term": "Σ√C",
              "smoothing_term": "√(2C)", "subsample_term": "subsample term"}

SectionFn = Callable[..., Section]
SECTIONS: list[SectionFn] = []  # the report's order


def section(key: str, title: str, sources: Sequence[str]):
    """Register ``fn(engine, sec, models)`` (which fills ``sec``) as a section
    ``(engine, models=None) -> Section``; NoData raised inside becomes the section's note."""

    def deco(fn):
        @functools.wraps(fn)
        def run(engine: Engine, models: Sequence[str] | None = None) -> Section:
            sec = Section(key, title, sources=list(sources))
            try:
                fn(engine, sec, models)
            except NoData as e:
                sec.png, sec.table, sec.note = None, None, str(e)
                sec.caption = _doc_caption(fn)
            return sec

        run.key, run.title = key, title
        SECTIONS.append(run)
        return run

    return deco


# ----------------------------------------------------------------------------- helpers


def _frontier(engine: Engine, models: Sequence[str] | None) -> pl.DataFrame:
    df = query(engine, "SELECT * FROM frontier WHERE headline IS NOT NULL AND n_params IS NOT NULL",
               empty=FRONTIER_NOTE)
    df = only_models(df, models)
    if df.height == 0:
        raise NoData(f"no data yet: {FRONTIER_NOTE}")
    return df


def _selection_text(df: pl.DataFrame) -> str:
    """How the sizes' checkpoints were chosen, from the frontier rows."""
    targets = sorted({round(v, 6) for v in df["target_tokens_per_param"].drop_nulls().to_list()})
    target = (f"D* = {targets[0]:g}·N" if len(targets) == 1 else "D* = (its family's ratio)·N")
    ratio = df["tokens_per_param"].drop_nulls()
    span = (f"; D/N = {ratio.min():.3g}–{ratio.max():.3g}" if ratio.len() and
            ratio.max() / ratio.min() > 1.01 else (f"; D/N = {ratio[0]:.3g}" if ratio.len() else ""))
    interp = df.filter(pl.col("interpolated"))["model"].to_list()
    extra = (f" {', '.join(interp)}: interpolated in N/D between the two checkpoints around D* "
             "(hollow markers: not certified)." if interp else "")
    return (f"Each size is shown at its compute-optimal checkpoint, the bounded checkpoint "
            f"within 5% of {target} training tokens (table compute_optimal){span}.{extra}")


def _delta_text(df: pl.DataFrame) -> str:
    deltas = sorted(set(df["delta"].drop_nulls().to_list()))
    if not deltas:
        return ""
    return ("δ = " + ", ".join(f"{d:g}" for d in deltas) + " per certified bound")


def _count_text(counts: pl.Series) -> str:
    lo, hi = counts.min(), counts.max()
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def _families_of(engine: Engine, models: Sequence[str] | None) -> list[str] | None:
    if models is None:
        return None
    df = query(engine, "SELECT DISTINCT family FROM models WHERE model = ANY(:m)",
               {"m": list(models)})
    return df["family"].to_list()


def _fit_rows(engine: Engine, models: Sequence[str] | None, quantity: str | None = None
              ) -> pl.DataFrame:
    """Rows of power_law_fits with the scaling_fits view's text (empty when none)."""
    sql = ("SELECT f.family, f.quantity, f.form, f.status, f.note, f.unit, f.x, f.y, "
           "f.extrapolation::text AS extrapolation, s.formula, s.params_95ci, f.r2, f.n_points "
           "FROM power_law_fits AS f JOIN scaling_fits AS s ON s.family = f.family "
           "AND s.quantity = f.quantity AND s.form = f.form AND s.selection = f.selection "
           "WHERE f.selection = :sel" + (" AND f.quantity = :q" if quantity else "")
           + " ORDER BY f.family, f.quantity, f.form")
    params = {"sel": FIT_SELECTION, **({"q": quantity} if quantity else {})}
    df = query(engine, sql, params)
    fams = _families_of(engine, models)
    return df if fams is None else df.filter(pl.col("family").is_in(fams))


def _refit(form: str, x, y):
    return fit_power_law(x, y) if form == "power" else fit_offset_power_law(x, y)


def _curves(fits: pl.DataFrame, form: str, n_max: float | None = None) -> list[dict]:
    """Drawable curves (with 95% confidence bands) of the 'ok' fits of one form: refitted from
    the stored points with the same code, which reproduces the stored parameters."""
    out = []
    ok = fits.filter((pl.col("status") == "ok") & (pl.col("form") == form))
    many = ok["family"].n_unique() > 1
    for r in ok.iter_rows(named=True):
        x = np.asarray(r["x"], dtype=float)
        fit = _refit(form, x, np.asarray(r["y"], dtype=float))
        hi = max(x.max() * 1.3, n_max or 0.0)
        grid = np.geomspace(x.min() / 1.3, hi, 120)
        pr = fit.predict(grid)
        out.append({"n": grid, "y": pr.y, "lo": pr.ci_low, "hi": pr.ci_high, "form": form,
                    "label": f"fit {r['formula']} (R² = {fmt(r['r2'], 3)}, {r['n_points']} sizes)"
                             + (f", {r['family']}" if many else ""),
                    "fit": fit, "row": r})
    return out


def _fit_text(fits: pl.DataFrame, what: str) -> str:
    if fits.height == 0:
        return (f" No fit is stored yet: materialize the family's scaling_fits asset "
                f"(table power_law_fits) to draw {what}.")
    parts = []
    for r in fits.iter_rows(named=True):
        if r["status"] == "ok":
            parts.append(f"{r['formula']}, 95% intervals {r['params_95ci']}, R² = "
                         f"{fmt(r['r2'], 3)}, from {r['n_points']} sizes")
        else:
            parts.append(f"no {r['form'].replace('_', ' ')} fit: {r['note']}")
    return " Fit: " + "; ".join(parts) + "."


def _optional_fits(engine, models, quantity) -> pl.DataFrame:
    try:
        return _fit_rows(engine, models, quantity)
    except NoData:
        return pl.DataFrame()


# ----------------------------------------------------------------------------- sections


@section("frontier", "The compute-optimal frontier: every bound at each size",
         sources=["sql/frontier"])
def frontier_table(engine: Engine, sec: Section, models: Sequence[str] | None) -> None:
    """One row per size at its compute-optimal checkpoint: the headline bound beside the
    diagnostics and the paper's recipe (view frontier)."""
    df = _frontier(engine, models).sort("n_params")
    cols = ["model", "N", "D", "N/D", "step", "R̂_h", "headline (direct Freedman)", "Thm 3.4",
            "Azuma", "paper recipe (not certified)", "headline gap", "recipe gap", "gap ratio",
            "code bits/param", "certified"]
    rows = []
    for r in df.iter_rows(named=True):
        step = str(r["step"]) if r["step"] is not None else f"{r['step_lo']}–{r['step_hi']}"
        rows.append([
            r["model"], human(r["n_params"]), human(r["n_train_tokens"]),
            fmt(r["n_over_d"], 4) if r["n_over_d"] is not None else "–", step,
            fmt(r["empirical_risk_h"]), fmt(r["headline"]), fmt(r["decomposed"]),
            fmt(r["azuma"]), fmt(r["paper_recipe"]), fmt(r["headline_gap"]),
            fmt(r["paper_recipe_gap"]), fmt(r["gap_ratio"], 2), fmt(r["bits_per_param"], 2),
            "yes" if r["certified"] else "no (interpolated)" if r["interpolated"] else "no",
        ])
    sec.table = Table(cols, rows)
    sec.caption = (
        "Bounds on the expected per-token loss (nats per token) of each model size. "
        + _selection_text(df) + " N: parameters; D: training tokens; R̂_h: the float model's "
        "empirical risk on its D training tokens. The headline is the one certified bound to "
        "quote (the direct Freedman bound, Lemma 3.2, on the smoothed quantized model); Thm 3.4 "
        "and Azuma are diagnostics, each certified on its own at the same δ (quoting the "
        "smallest would cost log(number of bounds) nats of complexity). The paper's recipe "
        "(nominal b·N bits, 10,000 sampled tokens) is shown for comparison and certifies "
        "nothing. Gaps are bound − R̂_h; gap ratio = headline gap / recipe gap (below 1: the "
        "headline adds less to the empirical risk). Code bits/param: the certified code length "
        f"of the headline's quantized model per parameter. {_delta_text(df)}."
    )


@section("bound_vs_n", "Bounds and empirical risk across model sizes (Fig. 2, left)",
         sources=["sql/frontier"])
def bound_vs_n(engine: Engine, sec: Section, models: Sequence[str] | None) -> None:
    """Fig. 2 (left): the headline bound, the diagnostics, the paper's recipe and the empirical
    risk vs model size."""
    df = _frontier(engine, models)
    sec.png = png_bytes(figures.bound_vs_n(df))
    sec.caption = (
        f"Upper bounds on the expected per-token loss (nats per token) of {df.height} model "
        "size(s), against the number of parameters N (log scale). " + _selection_text(df)
        + " The thick blue line is the headline bound, the one to quote; the thin green and red "
        "lines are diagnostics (Theorem 3.4 and the Azuma baseline), each certified with "
        "probability ≥ 1 − δ; the dashed orange line is the paper's recipe, which uses a nominal "
        "code length and certifies nothing. The black dashed line is the float model's "
        "empirical risk R̂_h, the dotted grey line the loss of guessing uniformly. "
        f"{_delta_text(df)}."
    )


@section("term_breakdown", "What the bounds are made of (Fig. 2, right)",
         sources=["sql/bound_breakdown"])
def term_breakdown(engine: Engine, sec: Section, models: Sequence[str] | None) -> None:
    """Fig. 2 (right): the Thm 3.4 bound and the headline bound, each stacked from its
    additive terms, per size."""
    df = query(engine, """
        SELECT model, n_params, step, tokens_per_param, method, term, term_order, value, bound,
               interpolated, delta
        FROM bound_breakdown
        WHERE method IN ('freedman_decomposed', 'headline') AND at_compute_optimal AND additive
          AND n_params IS NOT NULL
    """, empty=FRONTIER_NOTE)
    df = only_models(df, models)
    if df.height == 0:
        raise NoData("no data yet: no bounds at the compute-optimal checkpoint for the selected "
                     "models")
    sec.png = png_bytes(figures.term_breakdown(df))
    interp = sorted(set(df.filter(pl.col("interpolated"))["model"].to_list()))
    sec.caption = (
        "Each size's bounds at its compute-optimal checkpoint (nats per token), stacked from "
        "their terms. Plain bars: Theorem 3.4 (the paper's decomposition), the float model's "
        "empirical risk R̂_h + the random-guess term C·log V + the loss variation Σ√C + the "
        "smoothing cost √(2C) + the quantization gap R̂_q − R̂_h + the price of certifying all D "
        "training tokens from a sample (0 when every token is evaluated). Hatched bars: the "
        "headline, the direct Freedman bound on the smoothed quantized model: its empirical "
        "risk R̂_sq (already including the quantization and smoothing losses) + the range term "
        "Δ·C with the tight loss range Δ + Σ√C + the subsample price. C is the complexity (code "
        "length in nats plus log(|grid|/δ), divided by D). Left: the whole bound (black tick, "
        "value above it). Right: the same without each bound's own empirical risk (R̂_h for "
        "Theorem 3.4, R̂_sq for the headline): the part that pays for generalizing. " + (f"Interpolated, not certified: {', '.join(interp)}. " if interp else "")
        + f"{_delta_text(df)}."
    )


@section("sigma_vs_n", "Loss variation Σ across model sizes, with its fit (Fig. 2, centre)",
         sources=["sql/frontier", "sql/scaling_fits", "power_law_fits"])
def sigma_vs_n(engine: Engine, sec: Section, models: Sequence[str] | None) -> None:
    """Fig. 2 (centre): Σ per size and its fit Σ(N) = a + b·N^−c with a 95% band."""
    df = _frontier(engine, models).filter(pl.col("sigma").is_not_null())
    if df.height == 0:
        raise NoData("no data yet: no Σ values at the compute-optimal checkpoints (Thm 3.4 "
                     "rows): materialize the bound assets")
    fits = _optional_fits(engine, models, "sigma")
    curves = _curves(fits, "offset_power")
    sec.png = png_bytes(figures.sigma_vs_n(df, curves))
    sec.caption = (
        "Σ, the loss-variation factor of the Freedman bound (its term is Σ√C; here Theorem 3.4's "
        "Σ, at the worst-case loss range, as in the paper), at each model size's compute-optimal "
        "checkpoint, against N (log scale). The paper finds Σ ≈ 0.27 + 8337·N^−0.54 on Pythia: "
        "the loss varies less from token to token as models grow, towards a floor. "
        + _selection_text(df) + _fit_text(fits, "the curve Σ(N) = a + b·N^−c")
        + (" The grey band is the 95% confidence band of the fitted curve; fits are "
           "descriptive (not certified)." if curves else "")
    )


@section("headline_vs_recipe", "Our headline bound vs the paper's recipe",
         sources=["sql/frontier"])
def headline_vs_recipe(engine: Engine, sec: Section, models: Sequence[str] | None) -> None:
    """The headline bound per size next to the paper's recipe (nominal b·N bits, 10,000 pairs,
    worst-case loss range), and the ratio of what each adds to the empirical risk."""
    df = _frontier(engine, models).filter(pl.col("paper_recipe").is_not_null())
    if df.height == 0:
        raise NoData("no data yet: no paper-recipe rows at the compute-optimal checkpoints "
                     "(the reference configuration did not quantize, or no bounds yet)")
    sec.png = png_bytes(figures.headline_vs_recipe(df))
    ratios = [r for r in df.sort("n_params")["gap_ratio"].to_list() if r is not None]
    ratio_text = (f" The headline's gap is {min(ratios):.2f}–{max(ratios):.2f}× the recipe's."
                  if ratios else "")
    sec.caption = (
        "Left: the headline bound (certified) and the paper's recipe (not certified) at each "
        "size's compute-optimal checkpoint, with the float model's empirical risk R̂_h, in nats "
        "per token against N (log scale). Right: how much each adds to R̂_h, and their ratio "
        "(×). The recipe is Theorem 3.4 computed the paper's way: the code length counted as b "
        "bits per parameter (b·N, which ignores the scales and unquantized tensors a real code "
        "must store, so it is not a code length), 10,000 sampled tokens, the worst-case loss "
        "range. The headline uses the certified code length of the chosen quantization (the "
        "choice paid in nats), every training token when D is small enough (else sampled "
        "windows with a certified subsample step) and the tight range Δ = log(V/α) − H_min."
        + ratio_text + f" {_delta_text(df)}."
    )


@section("freedman_vs_azuma", "Freedman vs Azuma: the price of generalization",
         sources=["sql/frontier"])
def freedman_vs_azuma(engine: Engine, sec: Section, models: Sequence[str] | None) -> None:
    """How much tighter Freedman's variance-sensitive bounds are than the Azuma baseline."""
    df = _frontier(engine, models)
    if df.filter(pl.col("azuma").is_not_null()).height == 0:
        raise NoData("no data yet: needs Azuma rows at the compute-optimal checkpoints")
    sec.png = png_bytes(figures.gap_vs_n(df))
    d = df.filter(pl.col("azuma").is_not_null() & pl.col("empirical_risk_h").is_not_null()).sort("n_params")
    ratios = [(n, (a - r) / (h - r)) for n, a, h, r in
              d.select("n_params", "azuma", "headline", "empirical_risk_h").rows() if h - r > 0]
    ratio_text = ""
    if ratios:
        lo, hi = min(r for _, r in ratios), max(r for _, r in ratios)
        ratio_text = (f" Azuma's gap is {lo:.2f}–{hi:.2f}× the headline's across sizes (at "
                      f"N = {human(ratios[-1][0])}: {ratios[-1][1]:.2f}×).")
    sec.caption = (
        "Bound minus the float model's empirical risk R̂_h (nats per token, log scale) for the "
        "certified bounds at each size's compute-optimal checkpoint, against N (log scale): "
        "the part of each bound that pays for generalizing from D training tokens. Freedman's "
        "bounds (headline, Theorem 3.4) scale with the loss variation Σ; Azuma's (Lotfi et al. "
        "2024) with the worst-case loss range, so it should be the larger." + ratio_text
        + f" {_delta_text(df)}."
    )


@section("scaling_laws", "Scaling laws across sizes, and the headline bound extrapolated",
         sources=["sql/frontier", "sql/scaling_fits", "power_law_fits"])
def scaling_laws(engine: Engine, sec: Section, models: Sequence[str] | None) -> None:
    """The headline bound and the empirical risk across sizes with their fitted scaling laws,
    the headline extrapolated to 10× the largest size, and every stored fit in a table."""
    df = _frontier(engine, models)
    fits = _optional_fits(engine, models, None)
    if fits.height == 0:
        raise NoData("no data yet: no scaling-law fits stored: materialize the family's "
                     "scaling_fits asset (table power_law_fits)")
    ex_rows = fits.filter((pl.col("quantity") == "headline") & (pl.col("status") == "ok"))
    extrapolations = [{**json.loads(e), "form": f} for e, f in
                      ex_rows.select("extrapolation", "form").rows() if e]
    n_max = max((e["n_params"] for e in extrapolations), default=None)
    curves = {q: [c for form in ("offset_power", "power")
                  for c in _curves(fits.filter(pl.col("quantity") == q), form, n_max)]
              for q in ("headline", "empirical_risk")}
    sec.png = png_bytes(figures.scaling_laws(df, curves, extrapolations))
    many = fits["family"].n_unique() > 1
    cols = (["family"] if many else []) + ["quantity", "form", "fit", "95% intervals", "R²",
                                           "sizes", "extrapolated to 10× N (95% CI; PI)"]
    rows = []
    for r in fits.iter_rows(named=True):
        ex = json.loads(r["extrapolation"]) if r["extrapolation"] else None
        ex_text = (f"N = {human(ex['n_params'])}: {fmt(ex['y'])} [{fmt(ex['ci_low'])}, "
                   f"{fmt(ex['ci_high'])}]; [{fmt(ex['pi_low'])}, {fmt(ex['pi_high'])}]"
                   if ex and ex.get("y") is not None else "–")
        rows.append(([r["family"]] if many else []) + [
            FIT_LABELS.get(r["quantity"], r["quantity"]) + (f" ({r['unit']})" if r["unit"] else ""),
            "a·N^c" if r["form"] == "power" else "a + b·N^−c",
            r["formula"] or f"none: {r['note']}", r["params_95ci"] or "–",
            fmt(r["r2"], 3) if r["r2"] is not None else "–", str(r["n_points"] or 0), ex_text])
    sec.table = Table(cols, rows)
    names = {"offset_power": "a + b·N^−c", "power": "a·N^c"}
    ex_text = "".join(
        f" Extrapolated to N = {human(e['n_params'])} (10× the largest size) by the "
        f"{names[e['form']]} fit, the headline is {fmt(e['y'])} nats per token, 95% interval of "
        f"the curve [{fmt(e['ci_low'])}, {fmt(e['ci_high'])}], of a new size's bound "
        f"[{fmt(e['pi_low'])}, {fmt(e['pi_high'])}] (thick and thin bars)."
        for e in extrapolations)
    if len(extrapolations) > 1:
        ex_text += (" Both forms were declared before fitting; where they disagree, the data "
                    "cannot tell them apart and the extrapolation is that uncertain.")
    sec.caption = (
        "Figure: the headline bound (blue) and the float model's empirical risk R̂_h (black) at "
        "each size's compute-optimal checkpoint, in nats per token against N (log scale), with "
        "their fitted curves (a + b·N^−c solid, a·N^c dashed) and 95% confidence bands."
        + ex_text + " Table: every "
        "stored fit (table power_law_fits, one form fixed in advance per quantity; "
        "a·N^c is fitted on log-log axes, a + b·N^−c by nonlinear least squares). Terms are "
        "Theorem 3.4's at the compute-optimal checkpoints; K(h) is the prequential estimate. "
        "A fit needs 3 sizes (a·N^c) or 4 (a + b·N^−c) for its intervals; with fewer, a record "
        "says so instead. Fits and extrapolations describe the measured bounds; they are not "
        "certified, and the intervals are the regression's, not the bounds' δ."
    )


@section("prequential_vs_counting", "Prequential complexity vs parameter counting (Fig. 3)",
         sources=["sql/frontier", "sql/scaling_fits", "power_law_fits"])
def prequential_vs_counting(engine: Engine, sec: Section, models: Sequence[str] | None) -> None:
    """Fig. 3: the prequential K(h) (eq. 5) vs parameter counting b·N and the certified code
    length, with the fit K(h) = a·N^c and where it would cross b·N."""
    df = _frontier(engine, models).filter(pl.col("prequential_bits").is_not_null())
    if df.height == 0:
        raise NoData("no data yet: no prequential K(h) at the compute-optimal checkpoints: "
                     "materialize the family's prequential_complexity assets")
    fits = _optional_fits(engine, models, "prequential_bits")
    nominal = df.filter(pl.col("nominal_bits").is_not_null())
    b = float(np.median(nominal["nominal_bits"] / nominal["n_params"])) if nominal.height else None
    cross_text, n_cross = "", None
    ok = fits.filter(pl.col("status") == "ok") if fits.height else fits
    if b and ok.height:
        r = ok.row(0, named=True)
        fit = _refit("power", r["x"], r["y"])
        a, c = fit.params["a"], fit.params["c"]
        if c < 1:
            n_cross = (a / b) ** (1.0 / (1.0 - c))
            cross_text = (f" The fitted K(h) = a·N^c grows more slowly than b·N (c < 1) and would "
                          f"cross it at N ≈ {human(n_cross)} parameters; that crossing is an "
                          "extrapolation of the fit, as in the paper (≈ 20–30B for Pythia).")
    curves = _curves(fits, "power", n_cross * 1.5 if n_cross and n_cross < 1e4 * df["n_params"].max()
                     else None) if fits.height else []
    sec.png = png_bytes(figures.prequential_vs_counting(df, curves))
    sec.caption = (
        "Information content of each model, in bits (log scale) against N (log scale), at its "
        "compute-optimal checkpoint. Purple: the prequential estimate K(h) of eq. 5 (the area "
        "between the loss curve and the final loss over training; an estimate, not "
        "certified). Orange: parameter counting, b bits for each of the N parameters (the "
        "paper's b·N). Blue: the certified code length of the quantized model the headline "
        "bound uses." + _fit_text(fits, "K(h) = a·N^c") + cross_text
    )


@section("bound_over_training", "The headline bound over training",
         sources=["sql/bound_over_training"])
def bound_over_training(engine: Engine, sec: Section, models: Sequence[str] | None) -> None:
    """The headline bound at every bounded checkpoint and the loss curve, per model."""
    df = query(engine, """
        SELECT model, n_params, step, tokens_seen, headline, headline_certified,
               next_tokens_loss, at_compute_optimal, delta
        FROM bound_over_training
        WHERE tokens_seen > 0
    """, empty="no bounds or losses with tokens_seen yet: materialize the bound and loss-curve "
               "assets (tables bounds, checkpoint_losses, checkpoints)")
    df = only_models(df, models)
    if df.filter(pl.col("headline").is_not_null()).height == 0:
        raise NoData("no data yet: no headline bounds with tokens_seen (materialize the bound "
                     "assets)")
    sec.png = png_bytes(figures.bound_over_training(df))
    per_model = df.filter(pl.col("headline").is_not_null()).group_by("model").len()["len"]
    sec.caption = (
        "For each model, the headline bound at each checkpoint that has one (solid, markers; "
        "hollow: not certified) and the mean loss on the tokens each checkpoint is about to "
        "train on (dotted: the loss curve), in nats per token against tokens seen (log scale). "
        "The star is the compute-optimal checkpoint. A bound at D training tokens covers the "
        "expected loss over those D tokens' contexts; each point is its own statement at its "
        f"own δ. {_count_text(per_model)} bounded checkpoint(s) per model (setting "
        "`selection`: the D* bracket and the final checkpoint by default, `all` for every "
        f"checkpoint). {_delta_text(df)}."
    )


@section("loss_curves", "Loss curves",
         sources=["checkpoint_losses"])
def loss_curves(engine: Engine, sec: Section, models: Sequence[str] | None) -> None:
    df = query(engine, """
        SELECT l.model, m.n_params, l.step, l.tokens_seen, l.eval_kind, l.mean_loss, l.n_tokens
        FROM checkpoint_losses AS l LEFT JOIN models AS m ON m.model = l.model
        WHERE l.tokens_seen > 0
    """, empty="table checkpoint_losses has no rows with tokens_seen > 0: materialize the "
               "loss-curve assets")
    df = only_models(df, models)
    if df.height == 0:
        raise NoData("no data yet: no loss curves for the selected models")
    sec.png = png_bytes(figures.loss_curves(df))
    kinds = sorted(set(df["eval_kind"]))
    sec.caption = (
        "Mean per-token loss (nats) of each checkpoint against the number of tokens it has "
        "trained on (log scale; step 0 is left out), one colour per model size. "
        + ("Solid: loss on the tokens the checkpoint is about to train on (next_tokens, the "
           "prequential estimate's input). " if "next_tokens" in kinds else "")
        + ("Dashed: loss on a fixed held sample of positions (held_sample). "
           if "held_sample" in kinds else "")
        + f"{df.height} points, "
        + (f"{df['n_tokens'].min()}" if df["n_tokens"].min() == df["n_tokens"].max()
           else f"{df['n_tokens'].min()}–{df['n_tokens'].max()}")
        + " scored tokens each."
    )


@section("hessian_spectra", "Hessian spectral densities (Fig. 4)",
         sources=["hessian_spectra"])
def hessian_spectra(engine: Engine, sec: Section, models: Sequence[str] | None) -> None:
    """Fig. 4 style: the Hessian's eigenvalue density per model (its latest measured step)."""
    df = query(engine, """
        SELECT DISTINCT ON (h.model) h.model, m.n_params, h.step, h.n_lanczos, h.n_vectors,
               h.n_batch_tokens, h.lambda_min, h.lambda_max, h.bits_needed, h.density_grid,
               h.density
        FROM hessian_spectra AS h LEFT JOIN models AS m ON m.model = h.model
        WHERE h.density IS NOT NULL AND h.density_grid IS NOT NULL
        ORDER BY h.model, h.step DESC, h.n_lanczos DESC, h.n_vectors DESC
    """, empty="table hessian_spectra has no densities: materialize the Hessian assets")
    df = only_models(df, models)
    if df.height == 0:
        raise NoData("no data yet: no Hessian spectra for the selected models")
    sec.png = png_bytes(figures.hessian_densities(df))
    r = df.row(0, named=True)
    bits = [(m, b) for m, b in df.sort("n_params").select("model", "bits_needed").rows() if b]
    bits_text = (" App. B's estimate of the bits per parameter that suffice for the measured "
                 "quantization gap (an estimate, not certified): "
                 + ", ".join(f"{m} {b:.2f}" for m, b in bits) + "." if bits else "")
    sec.caption = (
        "Estimated eigenvalue density φ(λ) of the training-loss Hessian (log scale) for each "
        "model at its latest measured checkpoint, from stochastic Lanczos quadrature "
        f"({r['n_lanczos']} Lanczos steps, {r['n_vectors']} probe vector(s), "
        f"{human(r['n_batch_tokens'])} tokens for the first model), Gaussian-smoothed, per "
        "unit λ. As in the paper's Fig. 4, look for the bulk near λ = 0 and the few large "
        "outliers; mass below zero means the checkpoint is not at a local minimum of the "
        "training loss (or is SLQ noise)." + bits_text
    )


def section_keys() -> list[str]:
    return [fn.key for fn in SECTIONS]


def run_section(key: str, engine: Engine, models: Sequence[str] | None = None) -> Section:
    """Run one section by key (see ``section_keys()``)."""
    for fn in SECTIONS:
        if fn.key == key:
            return fn(engine, models)
    raise KeyError(f"unknown report section {key!r}; sections: {section_keys()}")


def _doc_caption(fn: SectionFn) -> str:
    doc = (fn.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split())


def build_sections(engine: Engine, models: Sequence[str] | None = None) -> list[Section]:
    """Every section, in the report's order."""
    return [fn(engine, models) for fn in SECTIONS]


METADATA_DPI = 64


def figure_png(key: str, engine: Engine, models: Sequence[str] | None = None,
               dpi: float | None = None) -> bytes | None:
    """The PNG of one section's figure (None when its data is absent or it is a table): for
    Dagster metadata, e.g. ``dg.MetadataValue.md(md_image(figure_png("loss_curves", engine,
    [model], dpi=METADATA_DPI)))``.  ``dpi`` lowers the resolution (smaller events)."""
    token = PNG_DPI.set(dpi)
    try:
        return run_section(key, engine, models).png
    finally:
        PNG_DPI.reset(token)
