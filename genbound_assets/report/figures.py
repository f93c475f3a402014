"""Figures drawn from frames (no database access here): each takes a polars frame with the
columns of the view it is drawn from and returns a matplotlib Figure.

Conventions: losses and bounds in nats per token; model size N in parameters; x on a log scale
where it spans sizes or tokens; one colour per model size (viridis, small to large).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from .core import human, new_figure

METHOD_LABELS = {
    "freedman_direct": "Freedman, direct (Lemma 3.2)",
    "freedman_decomposed": "Freedman, Thm 3.4 terms",
    "azuma": "Azuma (Lotfi et al. baseline)",
    "prequential": "prequential K(h)",
}
METHOD_ORDER = ["freedman_direct", "freedman_decomposed", "azuma", "prequential"]
TERM_LABELS = {
    "empirical_risk": "empirical risk R̂_h",
    "random_guess_term": "random guess C·log V",
    "loss_variation_term": "loss variation Σ√C",
    "smoothing_term": "smoothing √(2C)",
    "quantization_gap": "quantization gap R̂_q − R̂_h",
    "subsample_term": "subsampling",
    "remainder": "remainder",
}
TERM_COLORS = {
    "empirical_risk": "#4c72b0",
    "random_guess_term": "#dd8452",
    "loss_variation_term": "#55a868",
    "smoothing_term": "#c44e52",
    "quantization_gap": "#8172b3",
    "subsample_term": "#937860",
    "remainder": "#8c8c8c",
}
METHOD_STYLE = {
    "freedman_direct": ("#1f77b4", "o"),
    "freedman_decomposed": ("#2ca02c", "s"),
    "azuma": ("#d62728", "^"),
    "prequential": ("#9467bd", "D"),
}


def method_label(method: str, code_length_method: str | None = None,
                 certified: bool = True) -> str:
    label = METHOD_LABELS.get(method, method)
    if code_length_method == "nominal":
        label += ", nominal b·N code"
    if not certified:
        label += " (not certified)"
    return label


def _method_rank(m: str) -> int:
    return METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER)


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


def bound_vs_n(df: pl.DataFrame):
    """Fig. 2 (left): bound per method and empirical risk vs N.  Columns: model, n_params,
    method, code_length_method, certified, empirical_risk, bound, random_guess_loss."""
    fig = new_figure()
    ax = fig.add_subplot()
    series = df.group_by(["method", "code_length_method", "certified"]).agg(pl.len()).rows()
    series.sort(key=lambda r: (_method_rank(r[0]), not r[2], r[1] or ""))
    for method, clm, certified, _ in series:
        s = df.filter((pl.col("method") == method) & (pl.col("code_length_method") == clm)
                      & (pl.col("certified") == certified)).sort("n_params")
        color, marker = METHOD_STYLE.get(method, ("#17becf", "v"))
        ax.plot(s["n_params"].to_numpy(), s["bound"].to_numpy(), marker=marker, color=color,
                ls="-" if certified else "--", alpha=1.0 if certified else 0.6,
                mfc=color if certified else "white", label=method_label(method, clm, certified))
    risk = _empirical_risk_series(df)
    if risk is not None:
        label, r = risk
        ax.plot(r["n_params"].to_numpy(), r["empirical_risk"].to_numpy(), color="black",
                ls="--", marker=".", label=label)
    _log_v_lines(ax, df)
    ax.set_xscale("log")
    ax.set_xlabel("model size N (parameters, log scale)")
    ax.set_ylabel("nats per token")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def _empirical_risk_series(df: pl.DataFrame):
    """The float model's empirical risk R̂_h (freedman_decomposed rows carry it)."""
    dec = df.filter((pl.col("method") == "freedman_decomposed") & pl.col("certified"))
    if dec.height == 0:
        dec = df.filter(pl.col("method") == "freedman_decomposed")
    if dec.height:
        r = dec.group_by("n_params").agg(pl.col("empirical_risk").first()).sort("n_params")
        return "empirical risk R̂_h (float model)", r
    direct = df.filter(pl.col("method") == "freedman_direct")
    if direct.height:
        r = direct.group_by("n_params").agg(pl.col("empirical_risk").first()).sort("n_params")
        return "empirical risk R̂ (smoothed quantized model)", r
    return None


def term_breakdown(df: pl.DataFrame):
    """Fig. 2 (right): stacked additive terms of one bound per size (left panel), and the same
    without the empirical risk, i.e. the generalization gap bound − R̂, zoomed (right panel).
    Columns: model, n_params, tokens_per_param, term, term_order, value, bound (additive terms
    only)."""
    fig = new_figure(10.5, 4.6)
    full, gap = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1]})
    models = (df.group_by("model").agg(pl.col("n_params").first(), pl.col("bound").first(),
                                       pl.col("tokens_per_param").first())
              .sort("n_params"))
    terms = (df.group_by("term").agg(pl.col("term_order").first()).sort("term_order")["term"]
             .to_list())
    values = {}
    for term in terms:
        vals = []
        for m in models["model"]:
            v = df.filter((pl.col("model") == m) & (pl.col("term") == term))["value"]
            vals.append(float(v[0]) if len(v) else 0.0)
        values[term] = np.asarray(vals)
    x = np.arange(models.height)
    labels = [f"N = {human(n)}\nD/N = {r:.0f}" if r else f"N = {human(n)}"
              for n, r in zip(models["n_params"], models["tokens_per_param"], strict=True)]
    bounds = models["bound"].to_numpy()
    risk = values.get("empirical_risk", np.zeros(models.height))
    for ax, shown, tops in ((full, terms, bounds),
                            (gap, [t for t in terms if t != "empirical_risk"], bounds - risk)):
        pos_base = np.zeros(models.height)
        neg_base = np.zeros(models.height)
        for term in shown:
            vals = values[term]
            base = np.where(vals >= 0, pos_base, neg_base)
            ax.bar(x, vals, 0.6, bottom=base, color=TERM_COLORS.get(term, "#cccccc"),
                   label=TERM_LABELS.get(term, term), edgecolor="white", linewidth=0.5)
            pos_base = pos_base + np.where(vals >= 0, vals, 0)
            neg_base = neg_base + np.where(vals < 0, vals, 0)
        ax.scatter(x, tops, marker="_", s=500, color="black", zorder=5)
        for xi, t in zip(x, tops, strict=True):
            ax.annotate(f"{t:.3f}", (xi, t), xytext=(0, 4), textcoords="offset points",
                        ha="center", fontsize=8)
        ax.set_xticks(x, labels, fontsize=8)
        ax.axhline(0, color="black", lw=0.6)
        ax.grid(True, axis="y", alpha=0.3)
        ax.margins(y=0.12)
    full.set_title("the bound, stacked from its terms", fontsize=9)
    gap.set_title("without R̂_h: what the bound adds to the empirical risk", fontsize=9)
    full.set_ylabel("nats per token")
    gap.set_ylabel("bound − R̂_h (nats per token)")
    fig.supxlabel("model size (parameters N; training tokens per parameter D/N)", fontsize=9)
    handles, names = full.get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right upper", fontsize=8)
    return fig


def gap_vs_n(df: pl.DataFrame):
    """Freedman vs Azuma: bound - empirical risk per method vs N, log-log.  Columns: n_params,
    method, code_length_method, certified, gap."""
    fig = new_figure()
    ax = fig.add_subplot()
    methods = sorted(set(df["method"]), key=_method_rank)
    for method in methods:
        s = df.filter(pl.col("method") == method).sort("n_params")
        color, marker = METHOD_STYLE.get(method, ("#17becf", "v"))
        gap = s["gap"].to_numpy()
        ok = gap > 0
        ax.plot(s["n_params"].to_numpy()[ok], gap[ok], marker=marker, color=color,
                label=method_label(method))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("model size N (parameters, log scale)")
    ax.set_ylabel("bound − empirical risk (nats per token, log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def sigma_vs_n(points: pl.DataFrame, fit: dict | None):
    """Fig. 2 (centre): Σ per size, and the fitted Σ(N) = a + b·N^−c when a fit is given
    (dict with a, b, c and optional ci arrays)."""
    fig = new_figure()
    ax = fig.add_subplot()
    p = points.sort("n_params")
    ax.plot(p["n_params"].to_numpy(), p["sigma"].to_numpy(), "o", color="#55a868",
            label="Σ at each size's compute-optimal checkpoint")
    if fit is not None:
        n = np.geomspace(p["n_params"].min() / 1.5, p["n_params"].max() * 1.5, 200)
        y = fit["a"] + fit["b"] * n ** (-fit["c"])
        ax.plot(n, y, color="black", label=fit["label"])
    ax.set_xscale("log")
    ax.set_xlabel("model size N (parameters, log scale)")
    ax.set_ylabel("loss variation Σ (nats per token)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
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
            label = f"{model} (N = {human(n)})" + (f", {kind}" if len(kinds) > 1 else "")
            ax.plot(s["tokens_seen"].to_numpy(), s["mean_loss"].to_numpy(),
                    ls=styles.get(kind, ":"), marker="." if s.height < 40 else None,
                    color=colors[n or 0], label=label)
    ax.set_xscale("log")
    ax.set_xlabel("tokens seen in training (log scale)")
    ax.set_ylabel("mean loss (nats per token)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if order.height > 5 else 1)
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
    ax.set_xlabel("Hessian eigenvalue λ")
    ax.set_ylabel("spectral density φ(λ) (per unit λ, log scale)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def bound_over_training(df: pl.DataFrame, method: str):
    """Bound of one method and the measured loss vs tokens seen, per model.  Columns: model,
    n_params, tokens_seen, bound, empirical_risk, next_tokens_loss."""
    fig = new_figure()
    ax = fig.add_subplot()
    colors = size_colors(df["n_params"].fill_null(0).to_list())
    order = df.group_by("model").agg(pl.col("n_params").first()).sort("n_params", nulls_last=True)
    for model, n in order.rows():
        s = df.filter(pl.col("model") == model).sort("tokens_seen")
        c = colors[n or 0]
        b = s.filter(pl.col("bound").is_not_null())
        if b.height:
            ax.plot(b["tokens_seen"].to_numpy(), b["bound"].to_numpy(), "-o", ms=3, color=c,
                    label=f"{model}: bound")
        loss = s.filter(pl.col("next_tokens_loss").is_not_null())
        if loss.height:
            ax.plot(loss["tokens_seen"].to_numpy(), loss["next_tokens_loss"].to_numpy(), ":",
                    color=c, label=f"{model}: next-tokens loss")
    ax.set_xscale("log")
    ax.set_xlabel("tokens seen in training (log scale)")
    ax.set_ylabel("nats per token")
    ax.set_title(method_label(method), fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if order.height > 4 else 1)
    return fig


def finite(values) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]
