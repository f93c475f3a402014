"""`genbound demo`: the asset graph at work on the local suite (docs/dagster.md, "The demo").

Nothing here computes a bound: the demo drives the same Dagster definitions the UI, the sensor
and the schedule use, on a persistent instance under the data dir, so that `genbound ui`
afterwards shows every asset materialized with its metadata and plots:

1. register the family's partitions (the sensor's scan: integrity, quarantines, keys);
2. the checkpoint-level runs, batched per model (inventory and loss curve for every checkpoint;
   quantization, token losses and certificates for the selected ones);
3. the model-level assets of each model (loss curve, compute-optimal, prequential, Hessian,
   model bounds);
4. the cross-model assets (when present), then a table per size.

A second run re-materializes everything and gives the same numbers (the pipeline is
deterministic).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from genbound_assets.families.sources import LocalCheckpointSource
from genbound_assets.families.suite import load_data_order

__all__ = ["suite_ready", "run_demo", "demo_instance", "summary_rows"]


def suite_ready(root: Path, models: list[str]) -> bool:
    """True when root holds a data order and a complete D* checkpoint for every model."""
    if not (root / "data_order.json").exists():
        return False
    order = load_data_order(root)
    source = LocalCheckpointSource(root)
    have = set(source.list_models())
    for name in models:
        info = order.get("models", {}).get(name)
        if name not in have or info is None:
            return False
        if info["d_star_step"] not in {r.step for r in source.list_checkpoints(name)}:
            return False
    return True


def demo_instance(home: Path):
    """The persistent Dagster instance at ``home`` (what `genbound ui` uses as DAGSTER_HOME;
    telemetry off)."""
    import dagster as dg

    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text("telemetry:\n  enabled: false\n")
    return dg.DagsterInstance.from_config(str(home))


def _execute(defs, instance, selection, tags=None, partition_key=None):
    import dagster as dg

    repo = defs.get_repository_def()
    assets = list(repo.assets_defs_by_key.values())
    result = dg.materialize(assets, instance=instance, selection=selection, tags=tags,
                            partition_key=partition_key,
                            raise_on_error=False)
    return result


def run_demo(engine, instance, echo: Callable[[str], None] = print, *, families=None, defs=None) -> dict:
    """Materialize the whole graph for every registered family (module docstring).  Returns
    {family: [per-size summary rows]}."""
    from genbound_assets.definitions import build_defs
    from genbound_assets.defs.families.partitions import (
        BOUND_ASSETS,
        CHECKPOINT_ASSETS,
        MODEL_ASSETS,
        all_family_parts,
    )
    from genbound_assets.defs.families.requests import requests_for_needs
    from genbound_assets.defs.families.resources import GenboundResource
    from genbound_assets.defs.families.watch import plan_tick
    from genbound_assets.families.inventory import selected_steps, train_tokens

    defs = defs or build_defs()
    genbound = GenboundResource()
    out = {}
    for parts in all_family_parts():
        if families is not None and parts.name not in families:
            continue
        settings = genbound.settings(parts.spec)
        fam = parts.name
        family = genbound.family(parts.spec)
        t0 = time.perf_counter()
        plan = plan_tick(instance, parts, family, engine, settings, seen=set(), limit=100_000,
                         key_prefix=None)
        if plan.add_models:
            instance.add_dynamic_partitions(parts.model.name, plan.add_models)
        if plan.add_steps:
            instance.add_dynamic_partitions(parts.step.name, plan.add_steps)
        for ev in plan.events:
            instance.report_runless_asset_event(ev)
        for line in plan.log:
            echo(f"demo: {line}")
        order = instance.get_dynamic_partitions(parts.step.name)
        models = instance.get_dynamic_partitions(parts.model.name)
        quarantined = {(e.asset_key, e.partition) for e in plan.events}
        needs, n_bounded = {}, 0
        for model in models:
            refs = family.source.list_checkpoints(model)
            ok = [r.step for r in refs if (parts.key("checkpoint"), parts.partition_key(model, r.step))
                  not in quarantined and str(r.step) in order]
            d = {s: train_tokens(family.order, s) for s in ok}
            info = family.source.model_info(model)
            chosen = selected_steps(info.n_params, d, settings.selection, settings.tokens_per_param,
                                    family.source.final_step(model))
            n_bounded += len(chosen)
            for s in ok:
                needs[(model, s)] = CHECKPOINT_ASSETS + (BOUND_ASSETS if s in chosen else ())
        echo(f"demo: [1/4] {fam}: {len(models)} models, {len(order)} steps registered, "
             f"{len(needs)} intact checkpoints, {len(quarantined)} quarantined, {n_bounded} to bound "
             f"(selection = {settings.selection}) ({time.perf_counter() - t0:.1f} s)")

        requests = requests_for_needs(parts, order, needs, tags={"genbound/trigger": "demo"})
        requests.sort(key=lambda r: (len(r.asset_selection), r.tags["genbound/model"]))
        failed = []
        for i, req in enumerate(requests, 1):
            t1 = time.perf_counter()
            res = _execute(defs, instance, req.asset_selection, tags=req.tags)
            names = req.tags["genbound/assets"].replace(",", ", ")
            rng = f"{req.tags['dagster/asset_partition_range_start']} .. " \
                  f"{req.tags['dagster/asset_partition_range_end'].split('|')[1]}"
            status = "ok" if res.success else "FAILED"
            echo(f"demo: [2/4] run {i}/{len(requests)} {rng}: {names}: {status} "
                 f"({time.perf_counter() - t1:.1f} s)")
            if not res.success:
                failed.append(rng)
        t2 = time.perf_counter()
        model_keys = [parts.key(a) for a in MODEL_ASSETS]
        for model in models:
            t3 = time.perf_counter()
            res = _execute(defs, instance, model_keys, partition_key=model)
            echo(f"demo: [3/4] {fam}/{model}: {', '.join(MODEL_ASSETS)}: "
                 f"{'ok' if res.success else 'FAILED'} ({time.perf_counter() - t3:.1f} s)")
            if not res.success:
                failed.append(model)
        echo(f"demo: [3/4] model-level assets: {time.perf_counter() - t2:.1f} s")
        out[fam] = summary_rows(engine, models)
        if failed:
            echo(f"demo: {len(failed)} run(s) failed: {failed}; see `genbound ui` for the logs")
    # unpartitioned assets: the store's schema, SQL views, cross-model fits
    repo = defs.get_repository_def()
    others = [k for k, a in repo.assets_defs_by_key.items()
              if a.partitions_def is None and a.is_executable]
    t4 = time.perf_counter()
    res = _execute(defs, instance, others)
    echo(f"demo: [4/4] unpartitioned assets ({', '.join(k.to_user_string() for k in others)}): "
         f"{'ok' if res.success else 'FAILED'} ({time.perf_counter() - t4:.1f} s)")
    return out


def summary_rows(engine, models: list[str]) -> list[dict]:
    """Per size at its compute-optimal checkpoint: N, D, R̂_h, the Thm 3.4 terms and the bounds."""
    from genbound_assets.storage import read_frame

    rows = []
    for model in models:
        co = read_frame(engine, "SELECT step FROM compute_optimal WHERE model = :m", {"m": model})
        if co.height == 0 or co["step"][0] is None:
            continue
        step = int(co["step"][0])
        b = read_frame(engine, "SELECT method, bound, empirical_risk, random_guess_term, "
                       "loss_variation_term, smoothing_term, quantization_gap, subsample_term, "
                       "n_params, n_train_tokens, bits, group_size, quantizer, code_length_method, "
                       "code_length_bits FROM bounds WHERE model = :m AND step = :s AND NOT interpolated",
                       {"m": model, "s": step})
        by = {r["method"]: r for r in b.iter_rows(named=True)}
        if "headline" not in by:
            continue
        h, dec = by["headline"], by.get("freedman_decomposed", {})
        paper = by.get("paper_recipe")
        r_h = dec.get("empirical_risk")
        row = {"model": model, "step": step, "N": h["n_params"], "D": h["n_train_tokens"],
               "R_h": r_h, "C_logV": dec.get("random_guess_term"), "Sigma_sqrtC": dec.get("loss_variation_term"),
               "sqrt_2C": dec.get("smoothing_term"), "quant_gap": dec.get("quantization_gap"),
               "headline": h["bound"], "decomposed": dec.get("bound"),
               "azuma": by.get("azuma", {}).get("bound"),
               "paper_recipe": paper["bound"] if paper else None,
               "config": f"{h['quantizer']} {h['bits']}-bit g{h['group_size']} ({h['code_length_method']}, "
                         f"{h['code_length_bits'] / h['n_params']:.2f} bits/param)"}
        if paper and r_h is not None:
            row["ratio"] = (h["bound"] - r_h) / (paper["bound"] - r_h)
        rows.append(row)
    return rows


def print_summary(summary: dict, echo: Callable[[str], None] = print) -> None:
    """The per-size table of the demo (nats/token; gap ratio = headline gap / paper-recipe gap)."""
    cols = ["model", "N", "D", "R_h", "C_logV", "Sigma_sqrtC", "sqrt_2C", "quant_gap",
            "headline", "decomposed", "azuma", "paper_recipe", "ratio"]
    for fam, rows in summary.items():
        if not rows:
            echo(f"demo: {fam}: no compute-optimal checkpoint bounded")
            continue
        echo(f"demo: {fam}: at each size's compute-optimal checkpoint (D* = 20 N), nats/token, "
             "delta = each row's; ratio = (headline - R_h) / (paper recipe - R_h)")

        def fmt(v):
            if v is None:
                return "-"
            if isinstance(v, float):
                return f"{v:.3f}"
            if isinstance(v, int):
                return f"{v:,}"
            return str(v)

        cells = [[fmt(r.get(c)) for c in cols] for r in rows]
        widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
        echo("  " + "  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)))
        for x in cells:
            echo("  " + "  ".join(v.rjust(w) for v, w in zip(x, widths, strict=True)))
        for r in rows:
            echo(f"  {r['model']}: step {r['step']}, headline config {r['config']}")
