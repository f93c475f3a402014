"""Sensor, declarative automation and the catch-up schedule on the micro suite (real instance).

* a new complete checkpoint: one sensor evaluation registers and requests exactly it; running
  the requests and then the automation updates that model's bounds, loss curve and
  compute-optimal row; a half-written folder and a quarantined checkpoint get no run and a
  recorded reason; a lost cursor requests nothing twice;
* the schedule requests a checkpoint whose token losses failed once (and only the missing
  assets), never a phantom model × step combination.
"""

import json
import logging
import shutil
from pathlib import Path

import dagster as dg
import pytest
import torch

from genbound_assets.storage import read_frame
from genbound_assets_tests.micro import FAMILY, copy_suite, micro_env

pytestmark = pytest.mark.slow


def _apply(instance, result):
    """What the daemon does with a sensor result besides launching runs."""
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    for ev in result.asset_events or []:
        instance.report_runless_asset_event(ev)


def _tick(defs, instance, cursor=None):
    sensor = defs.get_sensor_def("new_checkpoints")
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                  resources=defs.get_repository_def().get_top_level_resources())
    result = sensor(ctx)
    _apply(instance, result)
    return result


def _run_all(defs, instance, requests):
    from genbound_assets.demo import _execute

    for r in requests:
        res = _execute(defs, instance, r.asset_selection, tags=r.tags)
        assert res.success, r.tags


def _covered(requests) -> set[tuple[str, int, str]]:
    """(model, step, asset) every request covers, expanding its range over the step order."""
    out = set()
    for r in requests:
        lo = r.tags["dagster/asset_partition_range_start"].split("|")
        hi = r.tags["dagster/asset_partition_range_end"].split("|")
        assert lo[0] == hi[0]
        for a in r.tags["genbound/assets"].split(","):
            out.add((lo[0], int(lo[1]), a))
            out.add((hi[0], int(hi[1]), a))
    return out


def _new_checkpoint(root: Path, model: str, step: int, from_step: int, total: int, noise=1e-3) -> Path:
    """A genuinely new checkpoint (perturbed weights) written the trainer's atomic way."""
    from genbound_assets.families import suite as S
    from genbound_assets.families.sources import LocalCheckpointSource

    src = LocalCheckpointSource(root)
    m = src.load_model(model, from_step)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(noise * torch.randn_like(p, generator=torch.Generator().manual_seed(step)))
    man = dict(src.manifest(model, from_step))
    order = S.load_data_order(root)
    bt = order["tokens_per_step"]
    from genbound_assets.data.stream import load_stream

    stream = load_stream(root / "stream.npz")
    for k in ("files", "format", "model", "step", "config_hash"):
        man.pop(k, None)
    man.update(tokens_seen=step * bt, n_targets_seen=stream.n_targets(step * bt + 1),
               trained_prefix_len=step * bt + 1, total_steps=total, is_d_star=False, frontier=[])
    return S.write_checkpoint(root, model, step, m, man)


@pytest.fixture
def watched(micro_suite_root, pg_clean, tmp_path, monkeypatch):
    root = copy_suite(micro_suite_root, tmp_path / "suite")
    micro_env(monkeypatch, root, tmp_path)
    from genbound_assets.definitions import build_defs

    defs = build_defs()
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        yield root, defs, instance, pg_clean


def _bring_up(defs, instance):
    """The first tick and its runs, the model-level assets, and the automation's first look."""
    from genbound_assets.demo import _execute

    first = _tick(defs, instance)
    _run_all(defs, instance, first.run_requests)
    for model in instance.get_dynamic_partitions(f"{FAMILY}__model"):
        keys = [dg.AssetKey([FAMILY, a]) for a in ("loss_curve", "compute_optimal",
                                                   "prequential_complexity", "hessian_spectrum", "model_bounds")]
        assert _execute(defs, instance, keys, partition_key=model).success
    auto = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    return first, auto


def test_sensor_then_automation_update_the_model(watched, caplog):
    root, defs, instance, engine = watched
    first, auto = _bring_up(defs, instance)
    steps0 = instance.get_dynamic_partitions(f"{FAMILY}__step")
    assert first.cursor and json.loads(first.cursor)[FAMILY]
    before = {
        "points": read_frame(engine, "SELECT count(*) AS n FROM checkpoint_losses WHERE model = 'm-a' "
                             "AND eval_kind = 'next_tokens'")["n"][0],
        "co": read_frame(engine, "SELECT computed_at FROM compute_optimal WHERE model = 'm-a'")["computed_at"][0],
    }

    last = int(steps0[-1])
    new_step, bad_step = last + 40, last + 60
    # training was extended to new_step (the manifests' total_steps): it is the final checkpoint
    _new_checkpoint(root, "m-a", new_step, last, total=new_step)
    bad = _new_checkpoint(root, "m-a", bad_step, last, total=new_step)
    weights = next(bad.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-8:] = b"\x00" * 8                      # damage after the manifest was written
    weights.write_bytes(bytes(data))
    (root / "m-a" / f"step{last + 70}").mkdir()  # half-written: no manifest yet
    (root / "m-a" / f".tmp-step{last + 75}-x").mkdir()

    with caplog.at_level(logging.INFO):
        second = _tick(defs, instance, first.cursor)
    covered = _covered(second.run_requests)
    assert {(m, s) for m, s, _ in covered} == {("m-a", new_step)}
    # a new final checkpoint is bounded too: every checkpoint-level asset
    assert {a for _, _, a in covered} == {"checkpoint", "checkpoint_loss", "quantized_model",
                                          "token_losses", "checkpoint_bounds"}
    assert str(new_step) in instance.get_dynamic_partitions(f"{FAMILY}__step")
    q = read_frame(engine, "SELECT status, quarantine_reason FROM checkpoints WHERE model = 'm-a' "
                           "AND step = :s", {"s": bad_step})
    assert q["status"][0] == "quarantined" and "sha256" in q["quarantine_reason"][0]
    assert any(ev.partition and f"{bad_step}" in str(ev.partition) for ev in second.asset_events)
    logged = caplog.text
    assert f"step{last + 70}" in logged and "checkpoint.json" in logged
    assert f".tmp-step{last + 75}" in logged

    _run_all(defs, instance, second.run_requests)
    auto2 = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=auto.cursor)
    wanted = {k.path[-1] for k in auto2._requested_partitions_by_asset_key}  # noqa: SLF001
    assert {"loss_curve", "compute_optimal", "model_bounds"} <= wanted
    for key, parts in auto2._requested_partitions_by_asset_key.items():  # noqa: SLF001
        assert parts == {"m-a"}, (key, parts)
    from genbound_assets.demo import _execute

    for key in sorted(auto2._requested_partitions_by_asset_key, key=lambda k: ["loss_curve",  # noqa: SLF001
                      "compute_optimal", "prequential_complexity", "hessian_spectrum",
                      "model_bounds"].index(k.path[-1])):
        assert _execute(defs, instance, [key], partition_key="m-a").success
    pts = read_frame(engine, "SELECT count(*) AS n FROM checkpoint_losses WHERE model = 'm-a' "
                     "AND eval_kind = 'next_tokens'")["n"][0]
    assert pts == before["points"] + 1
    co = read_frame(engine, "SELECT computed_at FROM compute_optimal WHERE model = 'm-a'")["computed_at"][0]
    assert co > before["co"]
    b = read_frame(engine, "SELECT method FROM bounds WHERE model = 'm-a' AND step = :s", {"s": new_step})
    assert "headline" in b["method"].to_list()

    # the same cursor again, and a lost cursor: nothing is requested twice
    assert _tick(defs, instance, second.cursor).run_requests == []
    assert _tick(defs, instance, None).run_requests == []


def test_schedule_catches_up_failures_and_never_requests_a_phantom(watched):
    root, defs, instance, engine = watched
    from genbound_assets.defs.families.automation import backfill_requests
    from genbound_assets.defs.families.resources import GenboundResource
    from genbound_assets.demo import _execute

    first, _ = _bring_up(defs, instance)
    assert backfill_requests(instance, engine, GenboundResource()) == []
    # a ragged grid: a new step for m-a only (m-b|step is a phantom cell)
    last = int(instance.get_dynamic_partitions(f"{FAMILY}__step")[-1])
    step = last + 40
    _new_checkpoint(root, "m-a", step, last, total=step)
    second = _tick(defs, instance, first.cursor)
    (req,) = second.run_requests
    # quantize it, then lose the artifact before the token losses: they fail
    key = dg.MultiPartitionKey({"model": "m-a", "step": str(step)})
    assert _execute(defs, instance, [dg.AssetKey([FAMILY, a]) for a in
                                     ("checkpoint", "checkpoint_loss", "quantized_model")],
                    partition_key=key).success
    art = Path(read_frame(engine, "SELECT artifact_path FROM quantized_models WHERE model = 'm-a' "
                                  "AND step = :s AND chosen", {"s": step})["artifact_path"][0])
    saved = art.with_suffix(".bak")
    shutil.move(art, saved)
    assert not _execute(defs, instance, [dg.AssetKey([FAMILY, "token_losses"])], partition_key=key).success

    reqs = backfill_requests(instance, engine, GenboundResource())
    covered = _covered(reqs)
    assert covered == {("m-a", step, "token_losses"), ("m-a", step, "checkpoint_bounds")}
    assert not any(m == "m-b" and s == step for m, s, _ in covered)   # the phantom cell
    shutil.move(saved, art)                                            # the fault is fixed
    _run_all(defs, instance, reqs)
    assert backfill_requests(instance, engine, GenboundResource()) == []
