"""Integrity: each fault quarantines with a precise reason; duplicates of another step too."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from genbound_assets.families import suite as S
from genbound_assets.families.integrity import (
    IntegrityReport,
    check_checkpoint,
    check_model,
    files_fingerprint,
    tensor_fingerprint,
)
from genbound_assets.families.sources import CheckpointRef, LocalCheckpointSource, PythiaHubSource

V, T = 40, 16
W = "model.safetensors"


def tiny_model(seed: int):
    from transformers import GPTNeoXForCausalLM

    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(S.neox_config(S.SizeSpec("m", 32, 1), V, T))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    for s in (0, 5, 10):
        S.write_checkpoint(root, "m", s, tiny_model(s), {"tokens_seen": s * 128, "n_targets_seen": s * 100,
                                                         "tokens_per_step": 128, "context_length": T})
    return root


@pytest.fixture
def root(pristine, tmp_path):
    dst = tmp_path / "suite"
    shutil.copytree(pristine, dst)
    return dst


def refresh_manifest(folder: Path) -> None:
    """Re-hash the files into the manifest, so the file content itself is the only fault."""
    p = folder / S.MANIFEST_NAME
    man = json.loads(p.read_text())
    for name in man["files"]:
        f = folder / name
        man["files"][name] = {"sha256": S.sha256_file(f), "bytes": f.stat().st_size}
    p.write_text(json.dumps(man))


def rewrite_weights(folder: Path, edit) -> None:
    tensors = load_file(str(folder / W))
    edit(tensors)
    save_file(tensors, str(folder / W), metadata={"format": "pt"})
    refresh_manifest(folder)


def check(root, step, known=None):
    src = LocalCheckpointSource(root)
    return check_checkpoint(src.checkpoint("m", step), src, known)


def test_pristine_checkpoints_pass_with_distinct_fingerprints(root):
    reports = check_model(LocalCheckpointSource(root), "m")
    assert [(r.step, r.status, r.reason) for r in reports] == [(0, "ok", None), (5, "ok", None), (10, "ok", None)]
    assert len({r.fingerprint for r in reports}) == 3 and len({r.tensor_fingerprint for r in reports}) == 3
    r = reports[1]
    assert r.fingerprint.startswith("sha256:") and r.tensor_fingerprint.startswith("tensors:")
    man = json.loads((root / "m" / "step5" / S.MANIFEST_NAME).read_text())
    assert r.file_sha256 == {W: man["files"][W]["sha256"]}
    assert r.fingerprint == files_fingerprint(r.file_sha256)
    assert r.tensor_fingerprint == tensor_fingerprint(root / "m" / "step5")


def test_missing_weight_file(root):
    (root / "m" / "step5" / W).unlink()
    r = check(root, 5)
    assert not r.ok and r.status == "quarantined"
    assert r.reason.startswith(f"missing file {W}")


def test_truncated_weight_file(root):
    p = root / "m" / "step5" / W
    full = p.stat().st_size
    p.write_bytes(p.read_bytes()[: full // 2])
    r = check(root, 5)
    assert r.reason == f"truncated file {W}: {full // 2} of {full} bytes (manifest)"


def test_truncation_detected_from_safetensors_header_without_manifest_size(root):
    folder = root / "m" / "step5"
    p = folder / W
    full = p.stat().st_size
    p.write_bytes(p.read_bytes()[:-100])
    refresh_manifest(folder)  # the manifest now agrees with the damaged file
    r = check(root, 5)
    assert r.reason == f"truncated file {W}: {full - 100} of {full} bytes (its safetensors header)"


def test_sha256_mismatch_same_size(root):
    p = root / "m" / "step5" / W
    b = bytearray(p.read_bytes())
    b[-1] ^= 0xFF
    p.write_bytes(bytes(b))
    r = check(root, 5)
    assert r.reason.startswith(f"sha256 mismatch for {W}: expected ") and "(manifest)" in r.reason


def test_unreadable_weight_file(root):
    folder = root / "m" / "step5"
    (folder / W).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    refresh_manifest(folder)
    r = check(root, 5)
    assert r.reason.startswith(f"unreadable weight file {W}: ")


def test_nan_and_inf_weights(root):
    def poison(t):
        t["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"][0, :3] = float("nan")
        t["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"][1, 0] = float("inf")

    rewrite_weights(root / "m" / "step10", poison)
    r = check(root, 10)
    assert r.reason == ("non-finite weights: gpt_neox.layers.0.mlp.dense_h_to_4h.weight has 3 NaN "
                        f"and 1 inf values ({W})")


def test_shape_contradicting_config(root):
    def reshape(t):
        t["gpt_neox.layers.0.attention.dense.weight"] = torch.zeros(32, 16)

    rewrite_weights(root / "m" / "step10", reshape)
    r = check(root, 10)
    assert r.reason == ("shape mismatch: gpt_neox.layers.0.attention.dense.weight is [32, 16] in "
                        f"{W} but config.json implies [32, 32]")


def test_missing_and_unexpected_tensors(root):
    rewrite_weights(root / "m" / "step10", lambda t: t.pop("gpt_neox.final_layer_norm.bias"))
    assert check(root, 10).reason.startswith(
        "missing tensor gpt_neox.final_layer_norm.bias: config.json implies it")
    rewrite_weights(root / "m" / "step5", lambda t: t.update({"gpt_neox.layers.1.mlp.x.weight": torch.ones(2)}))
    assert check(root, 5).reason.startswith("unexpected tensor gpt_neox.layers.1.mlp.x.weight")


def test_config_changed_after_write(root):
    folder = root / "m" / "step5"
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] = 64
    (folder / "config.json").write_text(json.dumps(cfg))
    refresh_manifest(folder)
    assert check(root, 5).reason.startswith("config.json does not match the manifest's config_hash")


def test_missing_manifest_is_quarantined_when_asked_about_directly(root):
    (root / "m" / "step5" / S.MANIFEST_NAME).unlink()
    src = LocalCheckpointSource(root)
    assert [r.step for r in src.list_checkpoints("m")] == [0, 10]  # invisible to listing
    ref = CheckpointRef("m", 5, 640, str(root / "m" / "step5"))
    r = check_checkpoint(ref, src)
    assert not r.ok and r.reason.startswith("missing checkpoint.json in ")


def test_byte_identical_step_is_a_duplicate(root):
    shutil.copy(root / "m" / "step5" / W, root / "m" / "step10" / W)
    refresh_manifest(root / "m" / "step10")
    src = LocalCheckpointSource(root)
    r5 = check(root, 5)
    r10 = check(root, 10, known={("m", 0): check(root, 0), ("m", 5): r5})
    assert r5.ok and not r10.ok
    assert r10.reason.startswith("weights byte-identical to step5 of m (sha256:")
    assert r10.fingerprint == r5.fingerprint
    # a fingerprint string (as stored in the checkpoints table) is enough
    assert not check(root, 10, known={("m", 5): r5.fingerprint}).ok
    # another model's identical weights are not this model's duplicate
    assert check(root, 10, known={("other", 5): r5.fingerprint}).ok
    # check_model quarantines every member of the group
    reports = {r.step: r for r in check_model(src, "m")}
    assert reports[0].ok
    assert "step10" in reports[5].reason and "step5" in reports[10].reason
    with pytest.raises(ValueError, match="known_fingerprints keys"):
        check(root, 10, known={"m": "x"})


# -- hub (Pythia) checkpoints: LFS sha256 from the hub's metadata ---------------------------------


def siblings(sha: str | dict, size: int | None = 1000) -> list[dict]:
    shas = sha if isinstance(sha, dict) else {W: sha}
    out = [{"rfilename": "config.json", "size": 600}, {"rfilename": "tokenizer.json", "size": 9}]
    out += [{"rfilename": n, "lfs": {"sha256": s, "size": size, "pointerSize": 134}} for n, s in shas.items()]
    return out


@pytest.fixture
def hub_root(tmp_path):
    folder = tmp_path / "EleutherAI" / "pythia-70m" / "step1000"
    tiny_model(3).save_pretrained(str(folder))
    return tmp_path, folder


def test_hub_checkpoint_matches_lfs_sha256(hub_root):
    from huggingface_hub.hf_api import ModelInfo

    base, folder = hub_root
    src = PythiaHubSource(local_root=base)
    sha = S.sha256_file(folder / W)
    size = (folder / W).stat().st_size
    ref = src.checkpoint("pythia-70m", 1000)
    r = check_checkpoint(ref, src, hub_metadata=ModelInfo(id="EleutherAI/pythia-70m", siblings=siblings(sha, size)))
    assert r.ok and r.file_sha256 == {W: sha} and r.tensor_fingerprint
    bad = check_checkpoint(ref, src, hub_metadata=siblings("0" * 64, size))
    assert bad.reason == (f"sha256 mismatch for {W}: expected {'0' * 64} (hub LFS metadata), found {sha}")
    short = check_checkpoint(ref, src, hub_metadata=siblings(sha, size + 10))
    assert short.reason == f"truncated file {W}: {size} of {size + 10} bytes (hub LFS metadata)"


def test_hub_metadata_only_duplicates_and_missing_weights():
    src = PythiaHubSource()  # nothing downloaded: metadata-only checks
    meta = {1000: siblings("ab" * 32), 2000: siblings("cd" * 32), 3000: siblings("ab" * 32)}
    reports = {r.step: r for r in check_model(src, "pythia-2.8b", hub_metadata=meta, steps=meta)}
    assert reports[2000].ok and reports[2000].tensor_fingerprint is None
    assert not reports[1000].ok and "byte-identical to step3000 of pythia-2.8b" in reports[1000].reason
    assert "#205" in reports[3000].reason
    ref = src.checkpoint("pythia-70m", 1000)
    r = check_checkpoint(ref, src, hub_metadata=[{"rfilename": "config.json"}])
    assert r.reason == "the hub lists no weight files for EleutherAI/pythia-70m@step1000"


def test_hub_duplicated_shard_like_pythia_206():
    src = PythiaHubSource()
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    final = check_checkpoint(src.checkpoint("pythia-12b", 143000), src,
                             hub_metadata=siblings({shards[0]: "11" * 32, shards[1]: "22" * 32}))
    r = check_checkpoint(src.checkpoint("pythia-12b", 50000), src, known_fingerprints=[final],
                         hub_metadata=siblings({shards[0]: "11" * 32, shards[1]: "33" * 32}))
    assert r.reason.startswith(f"weight file {shards[0]} is byte-identical to {shards[0]} of step143000")
    assert "#206" in r.reason


def test_hub_unreachable_is_quarantined_unless_not_required(hub_root):
    class Offline:
        def model_info(self, *a, **k):
            raise ConnectionError("hub unreachable")

    base, _ = hub_root
    src = PythiaHubSource(local_root=base, hub_api=Offline())
    ref = src.checkpoint("pythia-70m", 1000)
    r = check_checkpoint(ref, src)
    assert r.reason == "no hub metadata for EleutherAI/pythia-70m@step1000: hub unreachable"
    assert check_checkpoint(ref, src, require_reference=False).ok


def test_report_is_a_plain_dataclass():
    import dataclasses

    r = IntegrityReport("m", 1, False, "why", None)
    assert dataclasses.asdict(r)["reason"] == "why" and r.status == "quarantined"
