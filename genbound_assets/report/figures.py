"""Figures drawn from frames (no database access here): each takes polars frames with the
columns of the view it is drawn from and returns a matplotlib Figure.

Conventions: losses and bounds in nats per token; model size N in parameters; x on a log scale
where it spans sizes or tokens; one colour per model size (viridis, small to large); the
headline bound (the certified one to quote) is the thick blue line everywhere, diagnostics are
thin, and what is not certified is dashed with hollow markers.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from .core import human, new_figure

# bound columns of the frontier view -> (label, colour, marker, line style, line width)
BOUND_STYLE = {
    "headline": ("headline: direct Freedman (Lemma 3.2), certified", "#1f77b4", "o", "-", 2.4),
    "decomposed": ("Thm 3.4, five terms (diagnostic, certified)", "#2ca02c", "s", "-", 1.2),
    "azuma": ("Azuma, Lotfi et al. (diagnostic, certified)", "#d62728", "^", "-", 1.2),
    "paper_recipe": ("paper's recipe: nominal b·N bits, 10⁴ pairs (not certified)", "#ff7f0e",
                     "x", "--", 1.4),
}
METHOD_COLUMN = {"headline": "headline", "freedman_decomposed": "decomposed", "azuma": "azuma",
                 "paper_recipe": "paper_recipe"}
TERM_LABELS = {
    "empirical_risk": "empirical risk (R̂_h; R̂_sq on the headline)",
    "random_guess_term": "random guess C·log V",
    "range_term": "range Δ·C (headline)",
    "loss_variation_term": "loss variation Σ√C",
    "smoothing_term": "smoothing √(2C)",
    "quantization_gap": "quantization gap R̂_q − R̂_h",
    "subsample_term": "subsampling",
    "remainder": "remainder",
}
TERM_COLORS = {
    "empirical_risk": "#4c72b0",
    "random_guess_term": "#dd8452",
    "range_term": "#da8bc3",
    "loss_variation_term": "#55a868",
    "smoothing_term": "#c44e52",
    "quantization_gap": "#8172b3",
    "subsample_term": "#937860",
    "remainder": "#8c8c8c",
}


def size_colors(sizes) -> dict:
    """A viridis colour per distinct size, small (dark) to large (yellow-green)."""
    from matplotlib import colormaps

    uniq = sorted(set(sizes))
    cmap = colormaps["viridis"]
    n = max(len(uniq) - 1, 1)
    return {s: cmap(0.05 + 0.85 * i / n) for i, s in enumerate(uniq)}


def _log_v_lines(ax, df: pl.DataFrame) -> None:
    if "random_guess_loss" not in df.columns:
        return
    values = sorted({round(v, 6) for v in df["random_guess_loss"].drop_nulls().to_list()})
    for v in values[:3]:
        ax.axhline(v, color="0.55", lw=1, ls=":", zorder=0)
        ax.annotate(f"random guess log V = {v:.2f}", (0.01, v), xycoords=("axes fraction", "data"),
                    xytext=(0, 3), textcoords="offset points", fontsize=8, color="0.35")


def _size_axis(ax, log_y: bool = False, sizes=None) -> None:
    """Log-scale model-size axis; with ``sizes`` (at most 10), ticks at those sizes labelled
    like 11.5k, 133k (the minor decade ticks of a short range overlap otherwise)."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
        lo, hi = ax.get_ylim()
        if 0 < lo and hi / lo < 10:   # less than a decade: plain numbers, not 2×10^0
            from matplotlib.ticker import FuncFormatter

            plain = FuncFormatter(lambda v, _: human(v) if abs(v) >= 1000 else f"{v:.3g}")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("model size N (parameters, log scale)")
    if sizes is not None:
        ticks = sorted({float(v) for v in sizes if v})
        if 0 < len(ticks) <= 10:
            ax.set_xticks(ticks, [human(v) for v in ticks])
            ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="major", alpha=0.3)


def _series(ax, x, y, certified, *, color, marker, ls, lw, label):
    """A line through all points; certified points filled, the others hollow."""
    x, y, cert = np.asarray(x, float), np.asarray(y, float), np.asarray(certified, bool)
    ok = np.isfinite(y)
    if not ok.any():
        return
    if ls != "none":
        ax.plot(x[ok], y[ok], ls=ls, lw=lw, color=color, label=label, marker=marker, ms=0)
        label = None
    filled = (ok & cert).any()
    ax.plot(x[ok & cert], y[ok & cert], ls="none", marker=marker, color=color, ms=6,
            label=label if filled else None)
    ax.plot(x[ok & ~cert], y[ok & ~cert], ls="none", marker=marker, color=color, mfc="white", ms=6,
            label=None if filled else label)


def bound_vs_n(df: pl.DataFrame):
    """Fig. 2 (left): the bounds and the empirical risk at each size's compute-optimal
    checkpoint vs N.  Columns (view frontier): n_params, certified, headline, decomposed, azuma,
    paper_recipe, empirical_risk_h, random_guess_loss."""
    fig = new_figure(7.6, 4.8)
    ax = fig.add_subplot()
    d = df.filter(pl.col("n_params").is_not_null()).sort("n_params")
    x = d["n_params"].to_numpy()
    cert = d["certified"].to_numpy()
    for col, (label, color, marker, ls, lw) in BOUND_STYLE.items():
        y = d[col].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        c = cert if col != "paper_recipe" else np.zeros_like(cert)
        _series(ax, x, y, c, color=color, marker=marker, ls=ls, lw=lw, label=label)
    r = d["empirical_risk_h"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
    ax.plot(x, r, color="black", ls="--", marker=".", label="empirical risk R̂_h (float model)")
    _log_v_lines(ax, d)
    _size_axis(ax, sizes=x)
    ax.set_ylabel("loss or bound (nats per token)")
    fig.legend(loc="outside lower center", ncol=2, fontsize=7.5, frameon=False)
    ax.margins(y=0.08)
    return fig


def term_breakdown(df: pl.DataFrame):
    """Fig. 2 (right): for each size, two stacked bars: Thm 3.4's terms (freedman_decomposed)
    and the headline's (R̂_sq + Δ·C + Σ√C + subsample); left panel whole, right panel without the
    empirical risk.  Columns (view bound_breakdown, additive terms): model, n_params,
    tokens_per_param, method, term, term_order, value, bound."""
    fig = new_figure(10.5, 5.2)
    full, gap = fig.subplots(1, 2)
    methods = [m for m in ("freedman_decomposed", "headline") if m in set(df["method"])]
    models = (df.group_by("model").agg(pl.col("n_params").first(), pl.col("tokens_per_param").first())
              .sort("n_params"))
    terms = (df.group_by("term").agg(pl.col("term_order").first()).sort("term_order")["term"]
             .to_list())
    width = 0.38 if len(methods) == 2 else 0.6
    offsets = {m: (i - (len(methods) - 1) / 2) * (width + 0.04) for i, m in enumerate(methods)}
    hatch = {"freedman_decomposed": "", "headline": "//"}
    x0 = np.arange(models.height)
    seen: set[str] = set()
    for ax, drop_risk in ((full, False), (gap, True)):
        for method in methods:
            sub = df.filter(pl.col("method") == method)
            pos = np.zeros(models.height)
            neg = np.zeros(models.height)
            tops = np.full(models.height, np.nan)
            for i, m in enumerate(models["model"]):
                b = sub.filter(pl.col("model") == m)["bound"]
                r = sub.filter((pl.col("model") == m) & (pl.col("term") == "empirical_risk"))["value"]
                if len(b):
                    tops[i] = float(b[0]) - (float(r[0]) if drop_risk and len(r) else 0.0)
            for term in terms:
                if drop_risk and term == "empirical_risk":
                    continue
                vals = np.zeros(models.height)
                for i, m in enumerate(models["model"]):
                    v = sub.filter((pl.col("model") == m) & (pl.col("term") == term))["value"]
                    vals[i] = float(v[0]) if len(v) and v[0] is not None else 0.0
                if not vals.any():
                    continue
                base = np.where(vals >= 0, pos, neg)
                label = TERM_LABELS.get(term, term) if term not in seen else None
                seen.add(term)
                ax.bar(x0 + offsets[method], vals, width, bottom=base,
                       color=TERM_COLORS.get(term, "#cccccc"), label=label, edgecolor="white",
                       linewidth=0.5, hatch=hatch.get(method, ""))
                pos = pos + np.where(vals >= 0, vals, 0)
                neg = neg + np.where(vals < 0, vals, 0)
            ax.scatter(x0 + offsets[method], tops, marker="_", s=300, color="black", zorder=5)
            for xi, t in zip(x0 + offsets[method], tops, strict=True):
                if math.isfinite(t):
                    ax.annotate(f"{t:.2f}", (xi, t), xytext=(0, 3), textcoords="offset points",
                                ha="center", fontsize=7)
        labels = [f"N = {human(n)}" + (f"\nD/N = {r:.0f}" if r else "")
                  for n, r in zip(models["n_params"], models["tokens_per_param"], strict=True)]
        ax.set_xticks(x0, labels, fontsize=8)
        ax.axhline(0, color="black", lw=0.6)
        ax.grid(True, axis="y", alpha=0.3)
    full.set_title("the whole bound", fontsize=9)
    gap.set_title("without the empirical risk: what each bound adds to it", fontsize=9)
    for ax in (full, gap):
        top = np.nanmax([p.get_y() + p.get_height() for p in ax.patches] or [1.0])
        ax.set_ylim(top=top * 1.1)
    full.set_ylabel("nats per token")
    gap.set_ylabel("bound − empirical risk (nats per token)")
    for ax in (full, gap):
        ax.set_xlabel("model size (N parameters; D/N training tokens per parameter)", fontsize=8)
    from matplotlib.patches import Patch

    by_label = {}
    for ax in (full, gap):
        for h, n in zip(*ax.get_legend_handles_labels(), strict=True):
            by_label.setdefault(n, h)
    order = [TERM_LABELS.get(t, t) for t in sorted(TERM_LABELS, key=list(TERM_LABELS).index)]
    names = [n for n in order if n in by_label] + [n for n in by_label if n not in order]
    handles = [by_label[n] for n in names]
    for m in methods:
        handles.append(Patch(facecolor="white", edgecolor="0.3", hatch=hatch[m]))
        names.append({"headline": "hatched bar: headline (direct Freedman)",
                      "freedman_decomposed": "plain bar: Theorem 3.4 (decomposed)"}[m])
    fig.legend(handles, names, loc="outside lower center", ncol=4, fontsize=7.5, frameon=False)
    return fig


def _fit_band(ax, curve: dict, color: str = "black") -> None:
    """Draw a fitted curve (dict: n, y, lo, hi, label) with its 95% confidence band."""
    ax.plot(curve["n"], curve["y"], color=color, lw=1.3, label=curve["label"])
    if curve.get("lo") is not None:
        ax.fill_between(curve["n"], curve["lo"], curve["hi"], color=color, alpha=0.12, lw=0,
                        label="95% confidence band of the fit")


def sigma_vs_n(points: pl.DataFrame, curves: list[dict]):
    """Fig. 2 (centre): Σ per size, and the fitted Σ(N) = a + b·N^−c curves (with 95% bands).
    points: n_params, sigma, certified."""
    fig = new_figure()
    ax = fig.add_subplot()
    p = points.sort("n_params")
    _series(ax, p["n_params"].to_numpy(), p["sigma"].to_numpy(), p["certified"].to_numpy(),
            color="#55a868", marker="o", ls="none", lw=0,
            label="Σ at each size's compute-optimal checkpoint")
    for c in curves:
        _fit_band(ax, c)
    _size_axis(ax, sizes=p["n_params"].to_list())
    ax.set_ylabel("loss variation Σ (nats per token)")
    ax.margins(y=0.15)
    ax.legend(fontsize=8, loc="best")
    return fig


def scaling_laws(points: pl.DataFrame, curves: dict[str, list[dict]], extrapolations: list[dict]):
    """The headline bound and R̂_h per size with their fitted curves (a + b·N^−c solid, a·N^c
    dashed; 95% bands), drawn out to the extrapolated size, where each headline fit's
    extrapolation has its 95% intervals (fitted curve: thick bar; a new size's bound: thin
    bar).  points: n_params, headline, empirical_risk_h, certified, random_guess_loss; curves:
    {"headline": [...], "empirical_risk": [...]} (dicts with form); extrapolations: dicts with
    form, n_params, y, ci_low, ci_high, pi_low, pi_high."""
    fig = new_figure()
    ax = fig.add_subplot()
    p = points.sort("n_params")
    x, cert = p["n_params"].to_numpy(), p["certified"].to_numpy()
    _, color, marker, _, _ = BOUND_STYLE["headline"]
    _series(ax, x, p["headline"].cast(pl.Float64).fill_null(float("nan")).to_numpy(), cert,
            color=color, marker=marker, ls="none", lw=0, label="headline bound")
    _series(ax, x, p["empirical_risk_h"].cast(pl.Float64).fill_null(float("nan")).to_numpy(), cert,
            color="black", marker=".", ls="none", lw=0, label="empirical risk R̂_h")
    styles = {"offset_power": "-", "power": "--"}
    for key, col in (("headline", color), ("empirical_risk", "black")):
        for c in curves.get(key, []):
            ax.plot(c["n"], c["y"], color=col, lw=1.1, ls=styles.get(c.get("form"), "-"),
                    alpha=0.85, label=c["label"])
            if c.get("lo") is not None:
                ax.fill_between(c["n"], c["lo"], c["hi"], color=col, alpha=0.08, lw=0)
    shift = {"offset_power": 0.94, "power": 1.06}
    names = {"offset_power": "a + b·N^−c", "power": "a·N^c"}
    for e in extrapolations:
        n, y = e["n_params"] * shift.get(e.get("form"), 1.0), e["y"]
        if y is None:
            continue
        if e.get("pi_low") is not None:
            ax.errorbar([n], [y], yerr=[[y - e["pi_low"]], [e["pi_high"] - y]], color=color,
                        lw=0.8, capsize=3)
        if e.get("ci_low") is not None:
            ax.errorbar([n], [y], yerr=[[y - e["ci_low"]], [e["ci_high"] - y]], color=color,
                        lw=2.5, capsize=0, marker="D" if e.get("form") != "power" else "s",
                        mfc="white", label=f"headline at N = {human(e['n_params'])}, "
                        f"{names.get(e.get('form'), '')} fit: {y:.2f} (95% intervals)")
    _log_v_lines(ax, p)
    _size_axis(ax, sizes=[*x, *(e["n_params"] for e in extrapolations)])
    ax.set_ylabel("nats per token")
    ax.legend(fontsize=7, loc="lower left")
    return fig


def prequential_vs_counting(df: pl.DataFrame, curves: list[dict]):
    """Fig. 3 (left): the prequential K(h) (eq. 5, an estimate) vs parameter counting b·N and
    the certified code length of the headline's model, in bits, log-log; the K(h) = a·N^c fit
    with its 95% band, extended to where it would cross b·N.  Columns: n_params,
    prequential_bits, nominal_bits, code_length_bits, certified."""
    fig = new_figure()
    ax = fig.add_subplot()
    d = df.sort("n_params")
    x = d["n_params"].to_numpy()
    cert = d["certified"].to_numpy()

    def col(name):
        return d[name].cast(pl.Float64).fill_null(float("nan")).to_numpy()

    pre = col("prequential_bits")
    _series(ax, x, pre, np.zeros_like(cert), color="#9467bd", marker="D", ls="none", lw=0,
            label="prequential K(h), eq. 5 (an estimate)")
    nominal = col("nominal_bits")
    bits = np.nanmedian(nominal / x) if np.isfinite(nominal).any() else None
    x_hi = max([x.max(), *[c["n"][-1] for c in curves]]) if len(x) else 1.0
    if bits:
        grid = np.geomspace(x.min() / 1.5, x_hi, 50)
        ax.plot(grid, bits * grid, color="#ff7f0e", ls="--",
                label=f"parameter counting b·N, b = {bits:.3g} bits")
    _series(ax, x, col("code_length_bits"), cert, color="#1f77b4", marker="o", ls="-", lw=1.2,
            label="certified code length L(h_q) of the headline")
    for c in curves:
        _fit_band(ax, c, color="#9467bd")
    _size_axis(ax, log_y=True, sizes=x if x_hi <= 3 * x.max() else None)
    ax.set_ylabel("information content (bits, log scale)")
    ax.legend(fontsize=7.5, loc="upper left")
    return fig


def headline_vs_recipe(df: pl.DataFrame):
    """Left: the headline bound and the paper's recipe (and R̂_h) vs N; right: their gaps
    above R̂_h and the ratio headline gap / recipe gap per size.  Columns (view frontier):
    model, n_params, certified, headline, paper_recipe, empirical_risk_h, headline_gap,
    paper_recipe_gap, gap_ratio."""
    fig = new_figure(10.5, 4.6)
    left, right = fig.subplots(1, 2)
    d = df.filter(pl.col("headline").is_not_null()).sort("n_params")
    x, cert = d["n_params"].to_numpy(), d["certified"].to_numpy()
    for c in ("headline", "paper_recipe"):
        label, color, marker, ls, lw = BOUND_STYLE[c]
        _series(left, x, d[c].cast(pl.Float64).fill_null(float("nan")).to_numpy(),
                cert if c == "headline" else np.zeros_like(cert),
                color=color, marker=marker, ls=ls, lw=lw, label=label)
    left.plot(x, d["empirical_risk_h"].to_numpy(), color="black", ls="--", marker=".",
              label="empirical risk R̂_h")
    _size_axis(left, sizes=x)
    left.set_ylabel("nats per token")
    left.set_title("bounds", fontsize=9)
    pos = np.arange(d.height)
    w = 0.38
    right.bar(pos - w / 2, d["headline_gap"].fill_null(float("nan")).to_numpy(), w,
              color=BOUND_STYLE["headline"][1], label="headline − R̂_h")
    right.bar(pos + w / 2, d["paper_recipe_gap"].fill_null(float("nan")).to_numpy(), w,
              color=BOUND_STYLE["paper_recipe"][1], label="paper recipe − R̂_h")
    for i, r in enumerate(d["gap_ratio"].to_list()):
        if r is not None and math.isfinite(r):
            top = max(v for v in (d["headline_gap"][i], d["paper_recipe_gap"][i]) if v is not None)
            right.annotate(f"×{r:.2f}", (i, top), xytext=(0, 3), textcoords="offset points",
                           ha="center", fontsize=8)
    right.set_xticks(pos, [f"N = {human(n)}" for n in x], fontsize=8)
    right.set_ylabel("bound − R̂_h (nats per token)")
    right.set_title("what each adds to R̂_h (×: headline / recipe)", fontsize=9)
    right.grid(True, axis="y", alpha=0.3)
    right.set_ylim(top=1.3 * max(finite([*d["headline_gap"].to_list(),
                                         *d["paper_recipe_gap"].to_list()]) or [1.0]))
    fig.legend(loc="outside lower center", ncol=3, fontsize=7.5, frameon=False)
    return fig


def gap_vs_n(df: pl.DataFrame):
    """Freedman vs Azuma: bound − empirical risk per certified bound vs N, log-log.  Columns
    (view frontier): n_params, certified, headline, decomposed, azuma, empirical_risk_h,
    empirical_risk_sq."""
    fig = new_figure()
    ax = fig.add_subplot()
    d = df.sort("n_params")
    x, cert = d["n_params"].to_numpy(), d["certified"].to_numpy()
    for c in ("headline", "decomposed", "azuma"):
        label, color, marker, ls, lw = BOUND_STYLE[c]
        y = (d[c] - d["empirical_risk_h"]).cast(pl.Float64).fill_null(float("nan")).to_numpy()
        y = np.where(y > 0, y, np.nan)
        _series(ax, x, y, cert, color=color, marker=marker, ls=ls, lw=lw, label=label)
    _size_axis(ax, log_y=True, sizes=x)
    ax.set_ylabel("bound − R̂_h (nats per token, log scale)")
    fig.legend(loc="outside lower center", ncol=2, fontsize=7.5, frameon=False)
    return fig


def loss_curves(df: pl.DataFrame):
    """Loss vs tokens seen per model.  Columns: model, n_params, tokens_seen, eval_kind,
    mean_loss (tokens_seen > 0)."""
    fig = new_figure()
    ax = fig.add_subplot()
    colors = size_colors(df["n_params"].fill_null(0).to_list())
    styles = {"next_tokens": "-", "held_sample": "--"}
    order = df.group_by("model").agg(pl.col("n_params").first()).sort("n_params", nulls_last=True)
    kinds = sorted(set(df["eval_kind"]))
    for model, n in order.rows():
        for kind in kinds:
            s = df.filter((pl.col("model") == model) & (pl.col("eval_kind") == kind)).sort("tokens_seen")
            if s.height == 0:
                continue
            label = f"{model} (N = {human(n)})" + (f", {kind.replace('_', ' ')}" if len(kinds) > 1 else "")
            ax.plot(s["tokens_seen"].to_numpy(), s["mean_loss"].to_numpy(),
                    ls=styles.get(kind, ":"), marker="." if s.height < 40 else None,
                    color=colors[n or 0], label=label)
    ax.set_xscale("log")
    ax.set_xlabel("tokens seen in training (log scale)")
    ax.set_ylabel("mean loss (nats per token)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if order.height > 3 else 1)
    return fig


def hessian_densities(df: pl.DataFrame):
    """Fig. 4 style: SLQ spectral density per model, log density vs eigenvalue.  Columns: model,
    n_params, step, density_grid (list), density (list)."""
    fig = new_figure()
    ax = fig.add_subplot()
    colors = size_colors(df["n_params"].fill_null(0).to_list())
    floor = None
    for row in df.sort("n_params", nulls_last=True).iter_rows(named=True):
        grid = np.asarray(row["density_grid"], dtype=float)
        dens = np.asarray(row["density"], dtype=float)
        pos = dens[dens > 0]
        if pos.size:
            floor = min(floor, pos.max() * 1e-8) if floor is not None else pos.max() * 1e-8
        ax.plot(grid, np.where(dens > 0, dens, np.nan), color=colors[row["n_params"] or 0],
                label=f"{row['model']} (N = {human(row['n_params'])}), step {row['step']}")
    ax.set_yscale("log")
    if floor is not None:
        ax.set_ylim(bottom=max(floor, ax.get_ylim()[0]))
    ax.set_xlabel("Hessian eigenvalue λ (of the mean training NLL)")
    ax.set_ylabel("spectral density φ(λ) (per unit λ, log scale)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def bound_over_training(df: pl.DataFrame):
    """The headline bound at each bounded checkpoint and the next-tokens loss curve vs tokens
    seen, per model; a star marks the compute-optimal checkpoint.  Columns (view
    bound_over_training): model, n_params, tokens_seen, headline, headline_certified,
    next_tokens_loss, at_compute_optimal."""
    from matplotlib.lines import Line2D

    fig = new_figure(8.4, 4.3)
    ax = fig.add_subplot()
    colors = size_colors(df["n_params"].fill_null(0).to_list())
    order = df.group_by("model").agg(pl.col("n_params").first()).sort("n_params", nulls_last=True)
    handles = []
    for model, n in order.rows():
        s = df.filter(pl.col("model") == model).sort("tokens_seen")
        c = colors[n or 0]
        handles.append(Line2D([], [], color=c, lw=3, label=f"{model} (N = {human(n)})"))
        b = s.filter(pl.col("headline").is_not_null())
        if b.height:
            _series(ax, b["tokens_seen"].to_numpy(), b["headline"].to_numpy(),
                    b["headline_certified"].to_numpy(), color=c, marker="o", ls="-", lw=1.8,
                    label=None)
            opt = b.filter(pl.col("at_compute_optimal"))
            if opt.height:
                ax.plot(opt["tokens_seen"].to_numpy(), opt["headline"].to_numpy(), ls="none",
                        marker="*", ms=14, color=c, mec="black", mew=0.6)
        loss = s.filter(pl.col("next_tokens_loss").is_not_null())
        if loss.height:
            ax.plot(loss["tokens_seen"].to_numpy(), loss["next_tokens_loss"].to_numpy(), ":",
                    color=c)
    handles += [
        Line2D([], [], color="0.3", ls="-", marker="o", label="headline bound (certified)"),
        Line2D([], [], color="0.3", ls="none", marker="o", mfc="white", label="not certified"),
        Line2D([], [], color="0.3", ls=":", label="next-tokens loss (loss curve)"),
        Line2D([], [], ls="none", marker="*", ms=12, color="0.6", mec="black", mew=0.6,
               label="compute-optimal checkpoint"),
    ]
    ax.set_xscale("log")
    ax.set_xlabel("tokens seen in training (log scale)")
    ax.set_ylabel("nats per token")
    ax.grid(True, which="major", alpha=0.3)
    fig.legend(handles=handles, loc="outside right upper", fontsize=7.5)
    return fig


def finite(values) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]
