"""Checkpoint sources: the local suite layout and Pythia (hub id, local hub layout, HF cache)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genbound_assets.families import suite as S
from genbound_assets.families.sources import (
    PYTHIA_MODELS,
    PYTHIA_STEPS,
    PYTHIA_TOKENS_PER_STEP,
    CheckpointSource,
    FileDigest,
    LocalCheckpointSource,
    PythiaHubSource,
    hub_file_digests,
    select_weight_files,
)

V, T = 40, 16
STEPS = (0, 5, 10)


def tiny_model(seed: int, hidden=32, layers=1, vocab=V):
    from transformers import GPTNeoXForCausalLM

    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(S.neox_config(S.SizeSpec("m", hidden, layers), vocab, T))


def write_tiny_suite(root: Path, model="m", steps=STEPS, hidden=32) -> None:
    for s in steps:
        model_obj = tiny_model(s, hidden=hidden)
        n, n_ne = S.count_params(model_obj.config)
        S.write_checkpoint(root, model, s, model_obj, {
            "tokens_seen": s * 128, "n_targets_seen": s * 120, "tokens_per_step": 128,
            "context_length": T, "n_params": n, "n_params_non_embedding": n_ne,
        })


@pytest.fixture(scope="module")
def suite_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("local")
    write_tiny_suite(root)
    write_tiny_suite(root, model="big", steps=(0, 3), hidden=64)
    return root


# -- local ------------------------------------------------------------------------------------


def test_local_source_lists_models_checkpoints_and_info(suite_root):
    src = LocalCheckpointSource(suite_root)
    assert isinstance(src, CheckpointSource)
    assert src.list_models() == ["m", "big"]  # smallest first
    info = src.model_info("m")
    n, n_ne = S.count_params(tiny_model(0).config)
    assert (info.n_params, info.n_params_non_embedding) == (n, n_ne)
    assert n - n_ne == 2 * V * 32
    assert (info.vocab_size, info.context_length, info.tokens_per_step) == (V, T, 128)
    refs = src.list_checkpoints("m")
    assert [r.step for r in refs] == list(STEPS)
    assert [r.tokens_seen for r in refs] == [s * 128 for s in STEPS]
    assert Path(refs[1].location) == suite_root / "m" / "step5"
    assert src.manifest("m", 10)["n_targets_seen"] == 1200


def test_incomplete_checkpoints_are_invisible(suite_root, tmp_path):
    root = tmp_path / "r"
    shutil.copytree(suite_root, root)
    m = root / "m"
    # a killed write: temp folder with weights, no manifest
    shutil.copytree(m / "step10", m / ".tmp-step15-abc")
    (m / ".tmp-step15-abc" / S.MANIFEST_NAME).unlink()
    # a step folder without checkpoint.json, one with a broken one, one for another step
    shutil.copytree(m / "step10", m / "step20")
    (m / "step20" / S.MANIFEST_NAME).unlink()
    shutil.copytree(m / "step10", m / "step25")
    (m / "step25" / S.MANIFEST_NAME).write_text('{"format": "genbound.checkpoint/1", "fil')
    shutil.copytree(m / "step10", m / "step30")
    # a model folder with nothing complete is no model
    (root / "ghost" / ".tmp-step0-x").mkdir(parents=True)
    src = LocalCheckpointSource(root)
    assert [r.step for r in src.list_checkpoints("m")] == list(STEPS)
    assert src.list_models() == ["m", "big"]
    with pytest.raises(ValueError, match=r"no complete checkpoint at step 20; steps: 0, 5, 10"):
        src.load_model("m", 20)
    with pytest.raises(ValueError, match="no model 'ghost'"):
        src.list_checkpoints("ghost")


def test_local_load_model_returns_saved_weights_in_eval_mode(suite_root):
    src = LocalCheckpointSource(suite_root)
    model = src.load_model("m", 5)
    assert type(model).__name__ == "GPTNeoXForCausalLM"
    assert not model.training and model.dtype == torch.float32
    assert model.config._attn_implementation == "eager"
    saved = load_file(str(suite_root / "m" / "step5" / "model.safetensors"))
    torch.testing.assert_close(model.get_output_embeddings().weight, saved["embed_out.weight"])
    torch.testing.assert_close(model.gpt_neox.embed_in.weight, saved["gpt_neox.embed_in.weight"])
    half = src.load_model("m", 5, dtype=torch.bfloat16, attn_implementation="sdpa")
    assert half.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="floating torch.dtype"):
        src.load_model("m", 5, dtype=torch.int8)
    with pytest.raises(ValueError, match="attn_implementation"):
        src.load_model("m", 5, attn_implementation="fast")


def test_local_source_bad_input(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        LocalCheckpointSource(tmp_path / "nope")
    src = LocalCheckpointSource(tmp_path)
    assert src.list_models() == []
    with pytest.raises(ValueError, match="model must be a model folder name"):
        src.list_checkpoints("../etc")


# -- Pythia -------------------------------------------------------------------------------------


def _reference_pythia() -> dict | None:
    for base in (Path(__file__).resolve().parents[2], Path(__file__).resolve().parents[1], Path("/work")):
        p = base / "shared" / "reference" / "pythia.json"
        if p.is_file():
            return json.loads(p.read_text())
    return None


def test_pythia_revisions_and_tokens_seen():
    src = PythiaHubSource()
    assert src.list_models() == [f"pythia-{s}" for s in
                                 ("70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b")]
    for model in src.list_models():
        refs = src.list_checkpoints(model)
        assert len(refs) == 154
        steps = [r.step for r in refs]
        assert steps[:12] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
        assert steps[-1] == 143000 and steps[11:] == list(range(1000, 143001, 1000))
        assert all(r.tokens_seen == r.step * 2_097_152 for r in refs)
        assert refs[-1].location == f"EleutherAI/{model}@step143000"
    assert src.list_checkpoints("pythia-70m")[-1].tokens_seen == 299_892_736_000


def test_pythia_model_info_matches_reference():
    src = PythiaHubSource()
    ref = _reference_pythia()
    rows = {m["size"]: m for m in ref["models"]} if ref else None
    if ref:
        assert ref["tokens_per_step"] == PYTHIA_TOKENS_PER_STEP
        assert ref["revisions"]["count"] == len(PYTHIA_STEPS) == 154
        assert ref["total_training_tokens"] == 143000 * PYTHIA_TOKENS_PER_STEP
        assert set(rows) == set(PYTHIA_MODELS)
    for size, row in PYTHIA_MODELS.items():
        info = src.model_info(f"pythia-{size}")
        assert info.n_params == row["total_params"]
        assert info.n_params_non_embedding == row["non_embedding_params"]
        assert info.vocab_size == row["padded_vocab"]
        assert (info.context_length, info.tokens_per_step) == (2048, 2_097_152)
        # Pythia's non-embedding convention: total - 2·V·d
        assert row["total_params"] - row["non_embedding_params"] == 2 * row["padded_vocab"] * row["d_model"]
        if rows:
            for k in ("total_params", "non_embedding_params", "padded_vocab", "layers", "d_model", "heads"):
                assert rows[size][k] == row[k], (size, k)
    assert src.model_info("pythia-6.9b").vocab_size == 50432
    assert src.model_info("pythia-12b").vocab_size == 50688
    assert PythiaHubSource(deduped=True).model_info("pythia-70m-deduped").n_params == 70426624


def test_pythia_bad_names_and_steps():
    src = PythiaHubSource()
    with pytest.raises(ValueError, match="unknown Pythia model 'pythia-7b'.*pythia-70m"):
        src.model_info("pythia-7b")
    with pytest.raises(ValueError, match="no revision step1500"):
        src.checkpoint("pythia-70m", 1500)
    with pytest.raises(ValueError, match="unknown Pythia model 'pythia-70m-deduped'"):
        src.model_info("pythia-70m-deduped")


def test_pythia_loads_from_local_hub_layout(tmp_path):
    model = tiny_model(7)
    folder = tmp_path / "EleutherAI" / "pythia-160m" / "step2000"
    model.save_pretrained(str(folder))
    src = PythiaHubSource(local_root=tmp_path)
    ref = src.checkpoint("pythia-160m", 2000)
    assert src.local_dir(ref) == folder
    loaded = src.load_model("pythia-160m", 2000)
    assert not loaded.training
    torch.testing.assert_close(loaded.gpt_neox.embed_in.weight, model.gpt_neox.embed_in.weight)


def test_pythia_loads_through_from_pretrained_and_hf_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    commit = "a" * 40
    repo = tmp_path / "models--EleutherAI--pythia-70m"
    snap = repo / "snapshots" / commit
    model = tiny_model(11)
    model.save_pretrained(str(snap))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "step1000").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    src = PythiaHubSource(cache_dir=tmp_path)
    ref = src.checkpoint("pythia-70m", 1000)
    assert src.local_dir(ref) == snap
    assert src.local_dir(src.checkpoint("pythia-70m", 2000)) is None  # not cached
    loaded = src.load_model("pythia-70m", 1000)  # from_pretrained("EleutherAI/pythia-70m", revision="step1000")
    torch.testing.assert_close(loaded.get_output_embeddings().weight, model.get_output_embeddings().weight)
    assert not loaded.training


def test_hub_file_digests_from_metadata_forms():
    from huggingface_hub.hf_api import BlobLfsInfo, ModelInfo, RepoSibling

    raw = [
        {"rfilename": "config.json", "size": 570},
        {"rfilename": "model.safetensors", "size": 166,
         "lfs": {"sha256": "ab" * 32, "size": 166_000_000, "pointerSize": 135}},
        {"rfilename": "pytorch_model.bin", "lfs": {"sha256": "cd" * 32, "size": 1, "pointerSize": 134}},
    ]
    info = ModelInfo(id="EleutherAI/pythia-70m", siblings=raw)
    for meta in (info, raw, {"siblings": raw}, info.siblings):
        d = hub_file_digests(meta)
        assert d["model.safetensors"] == FileDigest("ab" * 32, 166_000_000)
        assert d["config.json"] == FileDigest(None, 570)
    sib = [RepoSibling("model.safetensors", lfs=BlobLfsInfo(size=3, sha256="ef" * 32, pointer_size=1))]
    assert hub_file_digests(sib)["model.safetensors"].sha256 == "ef" * 32
    assert select_weight_files(hub_file_digests(raw)) == ["model.safetensors"]
    assert select_weight_files(["pytorch_model.bin", "config.json"]) == ["pytorch_model.bin"]
    with pytest.raises(ValueError, match="files_metadata=True"):
        hub_file_digests(ModelInfo(id="x"))
