"""Fault drills through the asset graph (docs/reliability.md, "Drills").

Each drill damages a fresh copy of the micro suite (4 steps per model) the way the fault would,
runs only the assets the fault touches, through the real definitions on a real Dagster
instance and the session's Postgres, and checks:

* the affected partition is quarantined (or its run fails) with a message naming the cause;
* the other partitions complete;
* no table holds partial rows: the row count of every table before and after is what the
  completed partitions account for, and nothing else;
* after the fault is fixed, a rerun completes.

Inventory faults run ``checkpoint`` + ``checkpoint_loss`` over a range of one model's steps (as
the sensor batches them); quantization and artifact faults run the bound chain of one
partition.  Each drill's outcome and message must match docs/reliability.md's drill table
(test_drills_doc.py).  Database faults: test_drills_db.py.
"""

import errno
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import torch

from genbound_assets.storage import read_frame, table_counts
from genbound_assets_tests.micro import FAMILY, micro_env
from genbound_assets_tests.test_drills_doc import DRILL_KEYS, check_row, normalize

KEEP = (32, 64, 65, 116)          # steps copied per model (one shared step grid)
FAULT = 64                        # the damaged step
CKPT = ("checkpoint", "checkpoint_loss")
CHAIN = ("quantized_model", "token_losses", "checkpoint_bounds")


def fresh_suite(src: Path, dst: Path, keep=KEEP) -> Path:
    """Copy the trained micro suite with only the ``keep`` steps of each model."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file():
            shutil.copy2(f, dst / f.name)
        elif f.is_dir():
            for s in keep:
                shutil.copytree(f / f"step{s}", dst / f.name / f"step{s}")
    return dst


@dataclass
class Drill:
    root: Path
    src: Path
    defs: dg.Definitions
    instance: dg.DagsterInstance
    engine: object
    tmp: Path

    # -- the graph -----------------------------------------------------------------------------
    def register(self):
        """Register every listed checkpoint's partition keys (what the sensor does when the
        checkpoints were intact at discovery; the fault comes after)."""
        from genbound_assets.families.sources import LocalCheckpointSource

        src = LocalCheckpointSource(self.root)
        models = src.list_models()
        steps = sorted({r.step for m in models for r in src.list_checkpoints(m)})
        self.instance.add_dynamic_partitions(f"{FAMILY}__model", models)
        self.instance.add_dynamic_partitions(f"{FAMILY}__step", [str(s) for s in steps])

    def run(self, assets, model, steps):
        """One run of ``assets`` over ``model``'s steps lo..hi (a range, as the sensor batches)."""
        from genbound_assets.demo import _execute

        keys = [dg.AssetKey([FAMILY, a]) for a in assets]
        if len(steps) == 1:
            return _execute(self.defs, self.instance, keys,
                            partition_key=dg.MultiPartitionKey({"model": model, "step": str(steps[0])}))
        tags = {"dagster/asset_partition_range_start": f"{model}|{min(steps)}",
                "dagster/asset_partition_range_end": f"{model}|{max(steps)}"}
        return _execute(self.defs, self.instance, keys, tags=tags)

    def counts(self) -> dict[str, int]:
        return table_counts(self.engine)

    def status(self, model, step):
        df = read_frame(self.engine, "SELECT status, quarantine_reason FROM checkpoints "
                                     "WHERE model = :m AND step = :s", {"m": model, "s": step})
        return tuple(df.row(0)) if df.height else (None, None)

    def losses(self, model, step) -> int:
        return read_frame(self.engine, "SELECT count(*) AS n FROM checkpoint_losses WHERE model = :m "
                          "AND step = :s", {"m": model, "s": step})["n"][0]

    def norm(self, text) -> str:
        from genbound_assets.storage import data_dir

        return normalize(text, suite=self.root, data=data_dir(), tmp=self.tmp)

    # -- files -----------------------------------------------------------------------------------
    def folder(self, model, step) -> Path:
        return self.root / model / f"step{step}"

    def restore(self, model, step):
        """The fix: the checkpoint as the trainer wrote it."""
        dst = self.folder(model, step)
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(self.src / model / f"step{step}", dst)


def reseal(folder: Path) -> None:
    """Rewrite the manifest's sha256/size of every file and its config_hash from the files now in
    ``folder``: a trainer that saved bad weights or a bad config.json honestly."""
    from genbound_assets.families.sources import causal_lm_config
    from genbound_assets.families.suite import MANIFEST_NAME, config_hash, sha256_file

    p = folder / MANIFEST_NAME
    man = json.loads(p.read_text())
    for name in man["files"]:
        f = folder / name
        man["files"][name] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
    man["config_hash"] = config_hash(causal_lm_config(json.loads((folder / "config.json").read_text())))
    p.write_text(json.dumps(man, indent=2, sort_keys=True))


def _edit_tensors(folder: Path, fn) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    fn(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


def failures(result) -> list[str]:
    """One line per failed step: the Failure's description (or the error message)."""
    out = []
    for ev in result.all_events:
        if ev.event_type_value == "STEP_FAILURE":
            data = ev.step_failure_data
            desc = data.user_failure_data.description if data.user_failure_data else None
            out.append(desc or data.error.message)
    return out


def check_result(result, name: str) -> dg.AssetCheckEvaluation | None:
    for ev in result.all_events:
        if ev.event_type_value == "ASSET_CHECK_EVALUATION" and ev.event_specific_data.check_name == name:
            return ev.event_specific_data
    return None


@pytest.fixture(scope="module")
def drill_defs(micro_suite_root, pg_engine, tmp_path_factory):
    """Definitions built once for a registry pointing at one root; each drill refills it."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("drills")
    try:   # undone even when building the definitions fails (no setting leaks to other tests)
        root = fresh_suite(micro_suite_root, tmp / "suite")
        micro_env(mp, root, tmp, selection="none")   # the sensor requests inventory + loss only
        from genbound_assets.definitions import build_defs

        yield root, build_defs(), tmp
    finally:
        mp.undo()


@pytest.fixture
def drill(drill_defs, micro_suite_root, pg_clean, tmp_path):
    from genbound_assets.defs.families import resources

    root, defs, tmp = drill_defs
    fresh_suite(micro_suite_root, root)
    resources._open.cache_clear()
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        yield Drill(root, micro_suite_root, defs, instance, pg_clean, tmp_path)


def _doc(key, fault, assets, outcome, message, d: Drill):
    check_row("drills", [key, fault, assets, outcome, d.norm(message)], DRILL_KEYS)


# --------------------------------------------------------------------------------------------
# inventory faults: quarantined, the rest of the range completes

def _wrong_sha256(d: Drill, folder: Path):
    p = folder / "model.safetensors"
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF                     # silent corruption of the last weight byte
    p.write_bytes(bytes(data))


def _truncated(d: Drill, folder: Path):
    p = folder / "model.safetensors"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])   # an interrupted copy


def _shape_mismatch(d: Drill, folder: Path):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] = 48        # config.json says 48, the weights are 64 wide
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    reseal(folder)


def _nan_weights(d: Drill, folder: Path):
    def poison(t):
        t["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"][3, 5] = float("nan")

    _edit_tensors(folder, poison)
    reseal(folder)


def _duplicate(d: Drill, folder: Path):
    shutil.copy2(d.folder("m-b", 32) / "model.safetensors", folder / "model.safetensors")
    reseal(folder)                       # the trainer saved step 32's weights again


def _vocab_mismatch(d: Drill, folder: Path):
    V = 16                               # another tokenizer: the data's ids reach 23

    def shrink(t):
        for k in ("gpt_neox.embed_in.weight", "embed_out.weight"):
            t[k] = t[k][:V].clone()

    _edit_tensors(folder, shrink)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(vocab_size=V, bos_token_id=V - 1, eos_token_id=V - 1)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    reseal(folder)


INVENTORY_FAULTS = {
    "wrong_sha256": (_wrong_sha256, "one flipped byte in model.safetensors", "sha256 mismatch"),
    "truncated_safetensors": (_truncated, "model.safetensors cut to half its size", "truncated file"),
    "shape_mismatch": (_shape_mismatch, "config.json intermediate_size 48, weights 64 (manifest resealed)",
                       "shape mismatch"),
    "nan_weights": (_nan_weights, "one NaN in a weight (manifest resealed)", "non-finite weights"),
    "duplicate_weights": (_duplicate, "step 64 holds step 32's weights (manifest resealed)",
                          "byte-identical to step32"),
    "vocab_mismatch": (_vocab_mismatch, "vocab_size 16 < the data's token id 23 (embeddings cut, "
                       "manifest resealed)", "tokenizer/vocabulary mismatch"),
}


@pytest.mark.parametrize("key", list(INVENTORY_FAULTS))
def test_inventory_fault_is_quarantined_and_the_range_completes(drill, key):
    damage, fault, cause = INVENTORY_FAULTS[key]
    d = drill
    d.register()
    assert d.counts() == dict.fromkeys(d.counts(), 0)
    damage(d, d.folder("m-b", FAULT))

    res = d.run(CKPT, "m-b", list(KEEP))
    assert res.success, failures(res)
    status, reason = d.status("m-b", FAULT)
    assert status == "quarantined" and cause in reason, reason
    check = check_result(res, "integrity_clean")
    assert check is not None and not check.passed
    assert f"m-b@{FAULT}" in str(check.metadata["quarantined"].value)
    others = [s for s in KEEP if s != FAULT]
    assert all(d.status("m-b", s) == ("ok", None) for s in others)
    # no partial rows: one inventory row per checkpoint, two loss points per intact one, none
    # for the quarantined one, nothing anywhere else
    counts = d.counts()
    assert counts["models"] == 1 and counts["checkpoints"] == len(KEEP)
    assert counts["checkpoint_losses"] == 2 * len(others) and d.losses("m-b", FAULT) == 0
    assert sum(counts.values()) == 1 + len(KEEP) + 2 * len(others)

    d.restore("m-b", FAULT)                       # the fix
    res2 = d.run(CKPT, "m-b", [FAULT])
    assert res2.success, failures(res2)
    assert d.status("m-b", FAULT) == ("ok", None) and d.losses("m-b", FAULT) == 2
    assert d.counts()["checkpoint_losses"] == 2 * len(KEEP)
    _doc(key, fault, "checkpoint + checkpoint_loss, m-b steps 32..116",
         "quarantined; other 3 steps complete; rerun after fix ok", reason, d)


# --------------------------------------------------------------------------------------------
# discovery: half-written folders and folders that vanish


def _tick(d: Drill, cursor=None):
    from genbound_assets_tests.test_automation import _tick as tick

    return tick(d.defs, d.instance, cursor)


def _run_requests(d: Drill, requests):
    from genbound_assets.demo import _execute

    results = [_execute(d.defs, d.instance, r.asset_selection, tags=r.tags) for r in requests]
    return results


def test_folder_without_manifest_is_not_registered_until_complete(drill, caplog):
    d = drill
    from genbound_assets.families.suite import MANIFEST_NAME

    man = d.folder("m-a", 65) / MANIFEST_NAME
    saved = man.read_bytes()
    man.unlink()                                  # an interrupted write: no manifest yet
    with caplog.at_level(logging.INFO):
        first = _tick(d)
    line = next(ln for ln in caplog.text.splitlines() if "step65" in ln and "skipped" in ln)
    assert MANIFEST_NAME in line
    covered = {(r.tags["genbound/model"], r.tags["dagster/asset_partition_range_start"],
                r.tags["dagster/asset_partition_range_end"]) for r in first.run_requests}
    assert ("m-a", "m-a|32", "m-a|64") in covered and ("m-a", "m-a|116", "m-a|116") in covered
    assert all(r.success for r in _run_requests(d, first.run_requests))
    assert d.status("m-a", 65) == (None, None) and d.losses("m-a", 65) == 0
    counts = d.counts()
    assert counts["checkpoints"] == 2 * len(KEEP) - 1
    assert counts["checkpoint_losses"] == 2 * (2 * len(KEEP) - 1)

    man.write_bytes(saved)                        # the write completes
    second = _tick(d, first.cursor)
    (req,) = second.run_requests
    assert req.tags["dagster/asset_partition_range_start"] == "m-a|65" == \
        req.tags["dagster/asset_partition_range_end"]
    assert all(r.success for r in _run_requests(d, second.run_requests))
    assert d.status("m-a", 65) == ("ok", None) and d.losses("m-a", 65) == 2
    assert d.counts()["checkpoint_losses"] == 2 * 2 * len(KEEP)
    _doc("manifest_missing", "step65/ of m-a without checkpoint.json (interrupted write)",
         "sensor tick, then its requests (checkpoint + checkpoint_loss)",
         "not registered, logged, nothing requested; the other 7 complete; registered and "
         "completed on the tick after the manifest lands", line.split("skipped ", 1)[-1], d)


def test_folder_removed_between_discovery_and_load(drill):
    d = drill
    first = _tick(d)                              # discovered intact, requested
    assert len(first.run_requests) == 2
    gone = d.tmp / "moved-away"
    shutil.move(d.folder("m-a", FAULT), gone)     # removed before the run loads it
    results = _run_requests(d, first.run_requests)
    assert all(r.success for r in results), [failures(r) for r in results]
    status, reason = d.status("m-a", FAULT)
    assert status == "quarantined" and "no complete checkpoint" in reason
    counts = d.counts()
    assert counts["checkpoints"] == 2 * len(KEEP) and d.losses("m-a", FAULT) == 0
    assert counts["checkpoint_losses"] == 2 * (2 * len(KEEP) - 1)

    shutil.move(gone, d.folder("m-a", FAULT))     # the fix: the folder is back
    res = d.run(CKPT, "m-a", [FAULT])
    assert res.success, failures(res)
    assert d.status("m-a", FAULT) == ("ok", None) and d.losses("m-a", FAULT) == 2
    _doc("removed_after_discovery", "m-a step64/ removed after the sensor requested it",
         "the sensor's requests (checkpoint + checkpoint_loss)",
         "quarantined by checkpoint, skipped by checkpoint_loss; the other 7 complete; rerun "
         "after fix ok", reason, d)


def test_folder_removed_between_inventory_and_loss(drill):
    d = drill
    d.register()
    res = d.run(("checkpoint",), "m-b", list(KEEP))
    assert res.success
    before = d.counts()
    gone = d.tmp / "moved-away"
    shutil.move(d.folder("m-b", 65), gone)        # gone after the inventory said ok
    res = d.run(("checkpoint_loss",), "m-b", list(KEEP))
    assert not res.success
    (msg,) = failures(res)
    assert "m-b step 65" in msg and "no complete checkpoint" in msg and "\n" not in msg
    assert d.counts() == before                   # nothing written for the range
    shutil.move(gone, d.folder("m-b", 65))
    res = d.run(("checkpoint_loss",), "m-b", list(KEEP))
    assert res.success and d.counts()["checkpoint_losses"] == 2 * len(KEEP)
    _doc("removed_between_assets", "m-b step65/ removed after checkpoint ran, before "
         "checkpoint_loss", "checkpoint_loss, m-b steps 32..116",
         "run fails (one line), no row written; rerun after fix ok (checkpoint reruns "
         "quarantine it while it stays gone)", msg, d)


# --------------------------------------------------------------------------------------------
# the bound chain: artifact writes and quantization


def _chain_rows(d: Drill, model, step) -> dict[str, int]:
    out = {}
    for t in ("quantized_models", "token_loss_sets", "token_loss_arrays", "token_losses", "bounds"):
        out[t] = read_frame(d.engine, f"SELECT count(*) AS n FROM {t} WHERE model = :m AND step = :s",
                            {"m": model, "s": step})["n"][0]
    return out


@pytest.mark.slow
def test_artifact_write_failing_leaves_previous_rows_and_no_file(drill, monkeypatch):
    d = drill
    d.register()
    for m in ("m-a", "m-b"):
        assert d.run(("checkpoint",), m, [FAULT]).success
    assert d.run(("quantized_model",), "m-b", [FAULT]).success        # the previous state
    q_before = read_frame(d.engine, "SELECT quantizer, bits, artifact_path, artifact_sha256, computed_at "
                          "FROM quantized_models WHERE model = 'm-b' ORDER BY quantizer, bits")
    art_dir = Path(q_before["artifact_path"][0]).parents[1]
    files_before = {p: p.read_bytes() for p in art_dir.rglob("*") if p.is_file()}
    counts_before = d.counts()

    import safetensors.torch as st

    real = st.save_file

    def disk_full(tensors, filename, metadata=None):
        """The disk fills up half way through m-b's artifact (m-a's still has room)."""
        if f"/m-b/step{FAULT}/" not in str(filename):
            return real(tensors, filename, metadata=metadata)
        blob = st.save(tensors, metadata=metadata)
        with open(filename, "wb") as f:
            f.write(blob[: len(blob) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))

    monkeypatch.setattr(st, "save_file", disk_full)
    res = d.run(("quantized_model",), "m-b", [FAULT])
    assert not res.success
    (msg,) = failures(res)
    assert "No space left on device" in msg and str(art_dir) in msg
    assert d.counts() == counts_before
    q_after = read_frame(d.engine, "SELECT quantizer, bits, artifact_path, artifact_sha256, computed_at "
                         "FROM quantized_models WHERE model = 'm-b' ORDER BY quantizer, bits")
    assert q_after.equals(q_before)               # the previous rows, untouched
    files_after = {p: p.read_bytes() for p in art_dir.rglob("*") if p.is_file()}
    assert files_after == files_before            # no temp file, no half artifact
    events = [r for r in d.instance.all_logs(res.run_id) if r.dagster_event and
              r.dagster_event.event_type_value == "STEP_UP_FOR_RETRY"]
    assert not events                             # disk full is not retried

    res_a = d.run(CHAIN, "m-a", [FAULT])          # another partition, same disk: completes
    assert res_a.success, failures(res_a)
    assert _chain_rows(d, "m-a", FAULT)["bounds"] > 0

    monkeypatch.setattr(st, "save_file", real)    # the fix: space again
    res_b = d.run(CHAIN, "m-b", [FAULT])
    assert res_b.success, failures(res_b)
    assert _chain_rows(d, "m-b", FAULT)["bounds"] > 0
    assert not list(art_dir.rglob(".tmp-*"))
    _doc("artifact_write_fails", "ENOSPC half way through m-b's hq.safetensors (a failing writer "
         "injected: no tiny filesystem without mount rights)", "quantized_model, then the bound "
         "chain of m-a and m-b step 64", "run fails once (not retried); previous rows and "
         "artifacts unchanged, no temp file; m-a completes; rerun after fix ok", msg, d)


@pytest.mark.slow
def test_quantization_producing_nan_fails_the_partition_with_the_cause(drill, monkeypatch):
    d = drill
    d.register()
    for m in ("m-a", "m-b"):
        assert d.run(("checkpoint",), m, [FAULT]).success
    from genbound_assets.pipeline import quantize_step

    real = quantize_step.quantize_model

    def nan_scales(model, *a, **k):
        q = real(model, *a, **k)
        if model.config.num_hidden_layers == 2:                     # m-b only
            with torch.no_grad():
                q.model.gpt_neox.layers[0].mlp.dense_h_to_4h.weight[0, 0] = float("nan")
        return q

    monkeypatch.setattr(quantize_step, "quantize_model", nan_scales)
    before = d.counts()
    res = d.run(CHAIN, "m-b", [FAULT])
    assert not res.success
    (msg,) = failures(res)
    assert "no chosen quantization" in msg and "non-finite loss" in msg
    rows = read_frame(d.engine, "SELECT status, failure_reason FROM quantized_models WHERE model = 'm-b'")
    assert rows.height and set(rows["status"]) == {"failed"}
    assert all("non-finite loss" in r for r in rows["failure_reason"])
    after = d.counts()
    # the quantization record (status failed, one row per configuration), the family's sample
    # of uniforms (drawn once for every checkpoint, complete), nothing else
    sample = read_frame(d.engine, "SELECT count(*) AS n, max(i) AS top FROM token_samples")
    assert sample["n"][0] == sample["top"][0] + 1
    assert {t: after[t] - before[t] for t in after if after[t] != before[t]} == \
        {"quantized_models": rows.height, "token_samples": sample["n"][0]}
    assert _chain_rows(d, "m-b", FAULT)["token_loss_sets"] == 0

    res_a = d.run(CHAIN, "m-a", [FAULT])          # the other partition completes
    assert res_a.success, failures(res_a)

    monkeypatch.setattr(quantize_step, "quantize_model", real)      # the fix
    res_b = d.run(CHAIN, "m-b", [FAULT])
    assert res_b.success, failures(res_b)
    ok = read_frame(d.engine, "SELECT count(*) AS n FROM quantized_models WHERE model = 'm-b' AND chosen")
    assert ok["n"][0] == 1 and _chain_rows(d, "m-b", FAULT)["bounds"] > 0
    _doc("quantization_nan", "NaN in m-b's quantized weights (injected after quantize_model)",
         "bound chain of m-b, then of m-a, step 64", "every configuration recorded failed with "
         "the reason; token_losses fails the run; no loss or bound rows; m-a completes; rerun "
         "after fix ok", msg, d)
