"""The report's sections: each ``(engine, models=None) -> Section`` reads views with SQL and
draws one figure or table.  A section whose inputs are absent returns a note ("no data yet:
materialize X") instead of failing.  ``SECTIONS`` is the report's order (registration order of
the ``@section`` functions below); ``models`` restricts a section to some models (e.g. one
asset's figure for Dagster metadata).

Sections that wait for tables or columns the pipeline does not write yet are *hooks*: they are
listed in the report with a note naming what they need, and their docstrings say what to draw.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence

import polars as pl
from sqlalchemy.engine import Engine

from . import figures
from .core import NoData, Section, Table, fmt, human, only_models, png_bytes, query

# the compute-optimal ratio the views' nearest_compute_optimal flag aims at (D/N = 1/G^2)
COMPUTE_OPTIMAL_TOKENS_PER_PARAM = 20
# HOOK (Fig. 2 centre): the power_law_fits row holding the fit Σ(N) = a + b·N^−c
SIGMA_FIT_QUANTITY = "sigma"
SIGMA_FIT_FORM = "offset_power"

BOUNDS_NOTE = ("table bounds has no rows with a model size; materialize the bound assets "
               "(e.g. `genbound demo`)")
CONFIG_COLS = ["quantizer", "bits", "group_size", "delta"]

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


def _config_text(row: dict) -> str:
    q = row.get("quantizer")
    quant = "float" if q in (None, "none") else f"{q} {row.get('bits')}-bit" + (
        f", groups of {row['group_size']}" if row.get("group_size") else "")
    return f"{quant}, δ = {row.get('delta')}"


def _main_config(df: pl.DataFrame) -> tuple[pl.DataFrame, str, int]:
    """Rows of the most common (quantizer, bits, group size, δ) configuration, its description,
    and how many configurations there were."""
    configs = Counter(tuple(r) for r in df.select(CONFIG_COLS).rows())
    if not configs:
        return df, "", 0
    best = max(configs, key=lambda c: (configs[c], str(c)))
    cond = pl.lit(True)
    for col, v in zip(CONFIG_COLS, best, strict=True):
        cond = cond & (pl.col(col) == v)
    return df.filter(cond), _config_text(dict(zip(CONFIG_COLS, best, strict=True))), len(configs)


def _compute_optimal_points(engine: Engine, models: Sequence[str] | None) -> pl.DataFrame:
    df = query(engine, """
        SELECT model, n_params, step, n_train_tokens, tokens_per_param, method,
               code_length_method, certified, quantizer, bits, group_size, delta, n_sample,
               empirical_risk, bound, gap, random_guess_loss
        FROM bound_vs_loss
        WHERE nearest_compute_optimal AND bound IS NOT NULL AND n_params IS NOT NULL
    """, empty=BOUNDS_NOTE)
    df = only_models(df, models)
    if df.height == 0:
        raise NoData(f"no data yet: {BOUNDS_NOTE}")
    return df


def _ratio_text(df: pl.DataFrame) -> str:
    rows = df.select("n_params", "tokens_per_param").unique().sort("n_params")
    r = [v for v in rows["tokens_per_param"].to_list() if v]
    if not r:
        return ""
    return (f"D/N ranges over {min(r):.3g}–{max(r):.3g}" if max(r) / min(r) > 1.05
            else f"D/N ≈ {r[0]:.3g}")


# ----------------------------------------------------------------------------- sections


@section("bound_vs_n", "Bounds and empirical risk across model sizes (Fig. 2, left)",
         sources=["sql/bound_vs_loss"])
def bound_vs_n(engine: Engine, sec: Section, models: Sequence[str] | None) -> None:
    """Fig. 2 (left): each method's bound and the empirical risk vs model size."""
    df, config, n_configs = _main_config(_compute_optimal_points(engine, models))
    sec.png = png_bytes(figures.bound_vs_n(df))
    sizes = df["model"].n_unique()
    sec.caption = (
        f"Upper bounds on the expected per-token loss (nats per token) at each of {sizes} model "
        f"size(s), against the number of parameters N (log scale). Each size is shown at its "
        f"checkpoint closest to the compute-optimal ratio D/N = {COMPUTE_OPTIMAL_TOKENS_PER_PARAM} "
        f"({_ratio_text(df)}). Solid lines are certified bounds (probability ≥ 1 − δ); dashed "
        f"coloured lines are shown for comparison only and certify nothing. The black dashed "
        f"line is the empirical risk the bounds start from; the dotted line is the loss of "
        f"guessing uniformly. Configuration: {config}"
        + (f" (the most common of {n_configs} stored)." if n_configs > 1 else ".")
    )


@section("term_breakdown", "What the Theorem 3.4 bound is made of (Fig. 2, right)",
         sources=["sql/bound_breakdown"])
def term_breakdown(engine: Engine, sec: Section, models: Sequence[str] | None) -> None:
    """Fig. 2 (right): the Thm 3.4 bound split into its additive terms, per size."""
    df = query(engine, """
        SELECT model, n_params, step, tokens_per_param, quantizer, bits, group_size, delta,
               term, term_order, value, bound
        FROM bound_breakdown
        WHERE method = 'freedman_decomposed' AND certified AND nearest_compute_optimal
          AND additive AND n_params IS NOT NULL
    """, empty="no certified Theorem 3.4 (freedman_decomposed) bounds yet: materialize the "
               "bound assets (table bounds), e.g. with `genbound demo`")
    df = only_models(df, models)
    if df.height == 0:
        raise NoData("no data yet: no Theorem 3.4 bounds for the selected models")
    df, config, n_configs = _main_config(df)
    sec.png = png_bytes(figures.term_breakdown(df))
    sec.caption = (
        "The certified Theorem 3.4 bound of each model size (nats per token), stacked from its "
        "terms: the float model's empirical risk R̂_h, the random-guess term C·log V, the loss "
        "variation Σ√C, the smoothing cost √(2C), the quantization gap R̂_q − R̂_h and the price "
        "of certifying all D training tokens from a sample. C is the complexity (code length "
        "plus log(|grid|/δ), divided by D); a term below zero is drawn below the axis. Left: "
        "the whole bound (black tick, value above it). Right: the same terms without R̂_h, on "
        "their own scale: the part of the bound that pays for generalization. Checkpoints "
        "closest to D/N = "
        f"{COMPUTE_OPTIMAL_TOKENS_PER_PARAM}; configuration: {config}"
        + (f" (the most common of {n_configs})." if n_configs > 1 else ".")
    )


@section("sigma_vs_n", "Loss variation Σ across model sizes, with its fit (Fig. 2, centre)",
         sources=["sql/bound_points", "sql/scaling_fits"])
def sigma_vs_n(engine: Engine, sec: Section, models: Sequence[str] | None) -> None:
    """Fig. 2 (centre): Σ per size and its fit Σ(N) = a + b·N^−c.

    HOOK: the points come from bound_points today; the curve appears once a
    ``power_law_fits`` row with quantity = SIGMA_FIT_QUANTITY and form = SIGMA_FIT_FORM exists
    (read through the scaling_fits view).  Adjust the two constants to the fit asset's names.
    """
    pts = query(engine, """
        SELECT model, n_params, sigma, quantizer, bits, group_size, delta
        FROM bound_points
        WHERE nearest_compute_optimal AND certified AND method = 'freedman_decomposed'
          AND sigma IS NOT NULL AND n_params IS NOT NULL
    """, empty="no Σ values yet (bounds.sigma on certified freedman_decomposed rows): "
               "materialize the bound assets")
    pts = only_models(pts, models)
    if pts.height == 0:
        raise NoData("no data yet: no Σ values for the selected models")
    pts, config, _ = _main_config(pts)
    fits = query(engine, "SELECT formula, params_95ci, a, b, c, r2, n_points FROM scaling_fits "
                         "WHERE quantity = :q AND form = :f",
                 {"q": SIGMA_FIT_QUANTITY, "f": SIGMA_FIT_FORM})
    fit = None
    if fits.height and None not in (fits["a"][0], fits["b"][0], fits["c"][0]):
        fit = {"a": fits["a"][0], "b": fits["b"][0], "c": fits["c"][0],
               "label": f"fit {fits['formula'][0]} (R² = {fmt(fits['r2'][0], 3)})"}
    sec.png = png_bytes(figures.sigma_vs_n(pts, fit))
    fit_text = (f"The curve is the stored fit {fits['formula'][0]}, 95% intervals "
                f"{fits['params_95ci'][0]}, from {fits['n_points'][0]} points." if fit else
                f"No fit is stored yet (power_law_fits with quantity '{SIGMA_FIT_QUANTITY}', form "
                f"'{SIGMA_FIT_FORM}'): materialize the scaling-fit asset to draw it.")
    sec.caption = (
        "Σ, the loss-variation factor of the Freedman bound (its term is Σ√C), for each model "
        "size at its checkpoint closest to D/N = "
        f"{COMPUTE_OPTIMAL_TOKENS_PER_PARAM}, against N (log scale); {config}. "
        + fit_text
    )


@section("freedman_vs_azuma", "Freedman vs Azuma: the price of generalization",
         sources=["sql/bound_vs_loss"])
def freedman_vs_azuma(engine: Engine, sec: Section, models: Sequence[str] | None) -> None:
    """How much tighter Freedman's variance-sensitive bounds are than the Azuma baseline."""
    df = _compute_optimal_points(engine, models).filter(
        pl.col("certified") & (pl.col("code_length_method") != "nominal"))
    if df.filter(pl.col("method") == "azuma").height == 0 or df.filter(
            pl.col("method").str.starts_with("freedman")).height == 0:
        raise NoData("no data yet: needs certified freedman_* and azuma rows at the same sizes "
                     "(materialize the bound assets)")
    df, config, _ = _main_config(df)
    sec.png = png_bytes(figures.gap_vs_n(df))
    ratios = []
    for model, n in df.select("model", "n_params").unique().sort("n_params").rows():
        m = df.filter(pl.col("model") == model)
        az = m.filter(pl.col("method") == "azuma")["gap"]
        fr = m.filter(pl.col("method").str.starts_with("freedman"))["gap"]
        if len(az) and len(fr) and fr.min() > 0:
            ratios.append((n, az[0] / fr.min()))
    ratio_text = ""
    if ratios:
        lo, hi = min(r for _, r in ratios), max(r for _, r in ratios)
        ratio_text = (f" The Azuma gap is {lo:.2f}–{hi:.2f}× the smaller Freedman gap across "
                      f"sizes (at N = {human(ratios[-1][0])}: {ratios[-1][1]:.2f}×).")
    sec.caption = (
        "Bound minus empirical risk (nats per token, log scale) for each certified method, "
        "against model size N (log scale): the part of each bound that pays for generalizing "
        "from the training tokens. Freedman's bound scales with the loss variation of the "
        "model, Azuma's with the worst-case loss range (Lotfi et al. 2024), so Freedman's gap "
        f"should be the smaller one.{ratio_text} Checkpoints closest to D/N = "
        f"{COMPUTE_OPTIMAL_TOKENS_PER_PARAM}; {config}."
    )


@section("frontier", "The compute-optimal frontier: every bound at each size",
         sources=["sql/bound_vs_loss"])
def frontier_table(engine: Engine, sec: Section, models: Sequence[str] | None) -> None:
    """One row per size at its compute-optimal checkpoint: every method's bound side by side."""
    df = _compute_optimal_points(engine, models)
    cols = ["model", "N", "step", "D", "D/N", "configuration", "R̂_h",
            "Freedman direct", "Thm 3.4", "Azuma", "Thm 3.4, b·N code (not certified)",
            "log V"]
    key = ["model", *CONFIG_COLS]
    rows = []
    for _keys, g in sorted(df.group_by(key), key=lambda kg: (kg[1]["n_params"][0], str(kg[0]))):
        def pick(method: str, nominal: bool = False, g=g) -> str:
            s = g.filter((pl.col("method") == method)
                         & ((pl.col("code_length_method") == "nominal") == nominal))
            if nominal:
                return fmt(s["bound"][0]) if s.height else "–"
            s = s.filter(pl.col("certified"))
            return fmt(s["bound"][0]) if s.height else "–"

        first = g.row(0, named=True)
        dec = g.filter(pl.col("method") == "freedman_decomposed")
        rows.append([
            first["model"], human(first["n_params"]), str(first["step"]),
            human(first["n_train_tokens"]),
            f"{first['tokens_per_param']:.3g}" if first["tokens_per_param"] else "–",
            _config_text(first),
            fmt(dec["empirical_risk"][0]) if dec.height else "–",
            pick("freedman_direct"), pick("freedman_decomposed"), pick("azuma"),
            pick("freedman_decomposed", nominal=True),
            fmt(first["random_guess_loss"]) if first["random_guess_loss"] is not None else "–",
        ])
    sec.table = Table(cols, rows)
    sec.caption = (
        "For each model size and configuration, at the checkpoint closest to D/N = "
        f"{COMPUTE_OPTIMAL_TOKENS_PER_PARAM}: N parameters, D training tokens, the float "
        "model's empirical risk R̂_h and each certified bound, in nats per token (each holds "
        "with probability ≥ 1 − δ on its own; reporting the smallest of them is a choice that "
        "costs log(number of bounds) nats of complexity). The b·N column uses the paper's "
        "nominal code length, which is not a valid code length here and certifies nothing. "
        "log V is the loss of guessing uniformly."
    )


@section("bound_over_training", "Bounds over training",
         sources=["sql/bound_over_training"])
def bound_over_training(engine: Engine, sec: Section, models: Sequence[str] | None) -> None:
    """Bound and measured loss over training, per model.

    HOOK: today it draws the certified rows of the most common method; once bounds carry a
    ``role`` column, draw the 'headline' rows here instead.
    """
    df = query(engine, """
        SELECT t.model, m.n_params, t.step, t.tokens_seen, t.method, t.code_length_method,
               t.certified, t.quantizer, t.bits, t.group_size, t.delta, t.empirical_risk,
               t.bound, t.next_tokens_loss
        FROM bound_over_training AS t LEFT JOIN models AS m ON m.model = t.model
        WHERE t.tokens_seen > 0
    """, empty="no bounds or losses with tokens_seen yet: materialize the bound and loss-curve "
               "assets (tables bounds, checkpoint_losses, checkpoints)")
    df = only_models(df, models)
    bounds = df.filter(pl.col("certified") & pl.col("bound").is_not_null())
    if bounds.height == 0:
        raise NoData("no data yet: no certified bounds with tokens_seen (materialize the bound "
                     "assets and register checkpoints)")
    counts = Counter(bounds["method"].to_list())
    method = max(counts, key=lambda m: (counts[m], -figures._method_rank(m)))
    bounds, config, _ = _main_config(bounds.filter(pl.col("method") == method))
    steps_per_model = bounds.group_by("model").agg(pl.len())["len"].max()
    if steps_per_model < 2:
        raise NoData("no data yet: every model has a bound at one step only; bounds over "
                     "training need several checkpoints per model")
    losses = (df.filter(pl.col("next_tokens_loss").is_not_null())
              .select("model", "n_params", "tokens_seen", "next_tokens_loss").unique())
    plot = pl.concat([
        bounds.select("model", "n_params", "tokens_seen", "bound",
                      pl.lit(None, dtype=pl.Float64).alias("next_tokens_loss")),
        losses.select("model", "n_params", "tokens_seen",
                      pl.lit(None, dtype=pl.Float64).alias("bound"), "next_tokens_loss"),
    ])
    sec.png = png_bytes(figures.bound_over_training(plot, method))
    sec.caption = (
        f"For each model, the certified bound ({figures.method_label(method)}; {config}) at each "
        "checkpoint that has one (solid), and the mean loss on the tokens the checkpoint is "
        "about to train on (dotted), in nats per token, against tokens seen (log scale). Each "
        "point is a separate statement at its own δ."
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
        + f"{df.height} checkpoints, "
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
               h.n_batch_tokens, h.lambda_min, h.lambda_max, h.density_grid, h.density
        FROM hessian_spectra AS h LEFT JOIN models AS m ON m.model = h.model
        WHERE h.density IS NOT NULL AND h.density_grid IS NOT NULL
        ORDER BY h.model, h.step DESC, h.n_lanczos DESC, h.n_vectors DESC
    """, empty="table hessian_spectra has no densities: materialize the Hessian assets")
    df = only_models(df, models)
    if df.height == 0:
        raise NoData("no data yet: no Hessian spectra for the selected models")
    sec.png = png_bytes(figures.hessian_densities(df))
    r = df.row(0, named=True)
    sec.caption = (
        "Estimated eigenvalue density φ(λ) of the training-loss Hessian (log scale) for each "
        "model at its latest measured checkpoint, from stochastic Lanczos quadrature "
        f"({r['n_lanczos']} Lanczos steps, {r['n_vectors']} probe vector(s), "
        f"{human(r['n_batch_tokens'])} tokens for the first model), Gaussian-smoothed, per "
        "unit λ. As in the paper's Fig. 4, look for the bulk near λ = 0 and the few large "
        "outliers; mass below zero means the checkpoint is not at a local minimum of the "
        "training loss (or is SLQ noise)."
    )


@section("prequential_vs_counting", "Prequential complexity vs parameter counting (Fig. 3)",
         sources=["bounds (method = 'prequential')", "sql/scaling_fits"])
def prequential_vs_counting(engine: Engine, sec: Section, models: Sequence[str] | None) -> None:
    """Fig. 3: prequential complexity K(h) vs parameter counting (N·b bits), with the fit
    K(h) = a·N^c.

    HOOK: needs the prequential rows (bounds.method = 'prequential', K(h) in code_length_bits)
    and the power_law_fits row for K(h).  Draw K(h) bits and N·b bits vs N (log-log), the fit
    with its 95% band, and mark the crossover.
    """
    raise NoData("not built yet: waits for the prequential K(h) rows and their power-law fit")


@section("headline_vs_recipe", "Our headline bound vs the paper's recipe",
         sources=["bounds.role", "compute-optimal selections"])
def headline_vs_recipe(engine: Engine, sec: Section, models: Sequence[str] | None) -> None:
    """The headline bound per size next to the paper's recipe (GPTQ 4-bit, nominal code length,
    m = 10,000, δ = 0.01).

    HOOK: needs the bounds.role column ('headline', 'reference', ...) and the compute-optimal
    selection table; then draw both bounds vs N and tabulate their difference.
    """
    raise NoData("not built yet: waits for bounds.role (headline / reference rows) and the "
                 "compute-optimal selection table")


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


def figure_png(key: str, engine: Engine, models: Sequence[str] | None = None) -> bytes | None:
    """The PNG of one section's figure (None when its data is absent or it is a table): for
    Dagster metadata, e.g. ``dg.MetadataValue.md(md_image(figure_png("loss_curves", engine,
    [model])))``."""
    return run_section(key, engine, models).png
