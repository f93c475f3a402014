"""The "pythia" family kind: a tiny mirror in the hub layout + a tiny Megatron dataset, opened
through the registry, and one window's loss evaluated through WindowBatch.

Layout built here, as docs/pythia.md says to mirror the real thing:
    <mirror>/EleutherAI/pythia-<size>/step<N>/{config.json, model.safetensors}   (save_pretrained)
    <data>/document.bin + document.idx                                            (Megatron)
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from genbound_assets.data.megatron import MegatronWindows, write_mmap_dataset
from genbound_assets.families.registry import (
    FAMILY_KINDS,
    PYTHIA_HUB,
    FamilySpec,
    add_family,
    load_families,
    open_family,
)
from genbound_assets.families.sources import PYTHIA_MODELS, PYTHIA_STEPS, PythiaHubSource

V, T, B = 64, 16, 4          # vocab, sequence_length (targets per window), sequences per step
STEPS = (0, 1, 2)
N_SEQ = 3 * B                # enough for step 3 at most
SIZES = {"t2": 48, "t1": 32}  # size name -> hidden (t1 is the smaller)


def tiny_neox(hidden: int, seed: int):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=V, hidden_size=hidden, num_hidden_layers=1,
                        num_attention_heads=hidden // 16, intermediate_size=4 * hidden,
                        max_position_embeddings=T, rotary_pct=0.25, use_parallel_residual=True,
                        tie_word_embeddings=False, hidden_dropout=0.0, attention_dropout=0.0,
                        bos_token_id=0, eos_token_id=0)
    return GPTNeoXForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def tiny_pythia(tmp_path_factory):
    root = tmp_path_factory.mktemp("pythia")
    mirror = root / "mirror"
    models = {}
    for i, (size, hidden) in enumerate(SIZES.items()):
        for s in STEPS:
            m = tiny_neox(hidden, seed=100 * i + s)
            m.save_pretrained(str(mirror / "EleutherAI" / f"pythia-{size}" / f"step{s}"))
            models[size, s] = m
    # not checkpoints of the standard family: a deduped model, a folder without config.json
    tiny_neox(32, 7).save_pretrained(str(mirror / "EleutherAI" / "pythia-t1-deduped" / "step0"))
    (mirror / "EleutherAI" / "pythia-t1" / "step3").mkdir()
    rng = np.random.default_rng(0)
    docs = [rng.integers(1, V, size=int(rng.integers(5, 30))) for _ in range(40)]
    stream = np.concatenate([np.concatenate([d, [0]]) for d in docs])      # EOD = 0
    seqs = [stream[i * (T + 1):(i + 1) * (T + 1)] for i in range(N_SEQ)]
    prefix = write_mmap_dataset(root / "pile" / "document", seqs)
    return mirror, prefix, models, seqs


def spec_for(mirror, prefix, **options) -> FamilySpec:
    opts = {"sequence_length": T, "sequences_per_step": B, **options}
    return FamilySpec(name="pythia_tiny", kind="pythia", checkpoints=str(mirror), data=str(prefix),
                      options=opts)


def test_registered_pythia_family_opens_and_lists_checkpoints(tiny_pythia, tmp_path, monkeypatch):
    monkeypatch.setenv("GENBOUND_CACHE_DIR", str(tmp_path / "cache"))
    mirror, prefix, models, seqs = tiny_pythia
    assert "pythia" in FAMILY_KINDS
    reg = tmp_path / "families.json"
    add_family(spec_for(mirror, prefix), reg)
    (spec,) = [s for s in load_families(reg) if s.name == "pythia_tiny"]
    assert json.loads(reg.read_text())["families"][-1]["kind"] == "pythia"
    fam = open_family(spec)
    src, order = fam.source, fam.order
    assert isinstance(src, PythiaHubSource) and src.mirror_only
    assert isinstance(order, MegatronWindows) and order.n_windows == N_SEQ
    assert src.list_models() == ["pythia-t1", "pythia-t2"]            # smallest first, no -deduped
    for size in SIZES:
        refs = src.list_checkpoints(f"pythia-{size}")
        assert [r.step for r in refs] == list(STEPS)                   # step3 has no config.json
        assert [r.tokens_seen for r in refs] == [s * T * B for s in STEPS]
        assert all(Path(r.location) == mirror / "EleutherAI" / f"pythia-{size}" / f"step{r.step}"
                   for r in refs)
        info = src.model_info(f"pythia-{size}")
        m = models[size, 0]
        assert info.n_params == sum(p.numel() for p in m.parameters())
        assert info.n_params - info.n_params_non_embedding == 2 * V * SIZES[size]
        assert (info.vocab_size, info.context_length, info.tokens_per_step) == (V, T, T * B)
        # the checkpoint's D from the order equals its tokens_seen (every label is a target)
        for r in refs:
            assert order.n_targets(order.trained_windows(r.step)) == r.tokens_seen
    with pytest.raises(ValueError, match=r"pythia-t1 has no complete checkpoint at step 3; steps: 0, 1, 2"):
        src.load_model("pythia-t1", 3)
    with pytest.raises(ValueError, match=r"unknown Pythia model 'pythia-70m'; models: pythia-t1, pythia-t2"):
        src.model_info("pythia-70m")
    assert len(order.content_hash()) == 64


def test_one_window_loss_through_window_batch(tiny_pythia):
    """Plain torch forward on WindowBatch.inputs, cross-entropy against WindowBatch.labels, equals
    the loss computed from the sequence read from document.bin by hand -- and HF's own shifted
    loss on the same inputs."""
    mirror, prefix, models, seqs = tiny_pythia
    fam = open_family(spec_for(mirror, prefix))
    step, c = 2, 5
    assert c < fam.order.trained_windows(step)                        # a window step2 trained on
    model = fam.source.load_model("pythia-t1", step)
    assert not model.training
    torch.testing.assert_close(model.get_output_embeddings().weight, models["t1", step].get_output_embeddings().weight)
    b = fam.order.batch([c])
    assert b.segments is None
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(b.inputs)).logits   # plain causal attention
    per_token = torch.nn.functional.cross_entropy(
        logits[0].double(), torch.from_numpy(b.labels[0]), reduction="none")

    raw = prefix.with_suffix(".bin").read_bytes()
    seq = struct.unpack_from(f"<{T + 1}H", raw, c * (T + 1) * 2)      # pointers are c·(T+1)·2
    assert list(seq) == seqs[c].tolist()
    with torch.no_grad():
        ref_logits = models["t1", step](input_ids=torch.tensor([seq[:-1]])).logits[0].double()
    ref = -torch.log_softmax(ref_logits, -1)[torch.arange(T), torch.tensor(seq[1:])]
    torch.testing.assert_close(per_token, ref)
    assert torch.isfinite(per_token).all() and per_token.mean() > 0
    with torch.no_grad():   # HF shifts labels itself: its loss covers targets 0..T-2
        hf = model(input_ids=torch.from_numpy(b.inputs), labels=torch.from_numpy(b.inputs)).loss
    torch.testing.assert_close(hf.double(), per_token[:-1].mean(), rtol=1e-5, atol=1e-6)


def test_pythia_family_options(tiny_pythia, tmp_path):
    mirror, prefix, models, seqs = tiny_pythia
    fam = open_family(spec_for(mirror, prefix, sizes=["t2"]))
    assert fam.source.list_models() == ["pythia-t2"]
    ded = open_family(spec_for(mirror, prefix, deduped=True)).source
    assert ded.list_models() == ["pythia-t1-deduped"]
    assert [r.step for r in ded.list_checkpoints("pythia-t1-deduped")] == [0]
    bad = [
        (dict(sizes=["t3"]), r"Pythia size\(s\) \['t3'\] not in the mirror .*; sizes: t1, t2"),
        (dict(colour="red"), r"family pythia_tiny: unknown pythia option\(s\) \['colour'\]"),
        (dict(deduped="yes"), r"option deduped must be true or false"),
        (dict(sequence_length=T + 1), rf"sequence 0 has {T + 1} tokens, but windows of sequence_length={T + 1} need {T + 2}"),
    ]
    for options, match in bad:
        with pytest.raises(ValueError, match=match):
            open_family(spec_for(mirror, prefix, **options))
    with pytest.raises(ValueError, match=r"kind pythia needs data = the preshuffled Pile's Megatron prefix"):
        open_family(FamilySpec(name="p", kind="pythia", checkpoints=str(mirror)))
    with pytest.raises(ValueError, match=r"Pythia mirror .*nowhere: no EleutherAI/ folder"):
        open_family(spec_for(tmp_path / "nowhere", prefix))
    # a step the data is too short for names the file and the counts
    with pytest.raises(ValueError, match=rf"document.bin: checkpoint step 4 trained on sequences \[0, 16\) \(4 per step\) but the dataset holds {N_SEQ}"):
        open_family(spec_for(mirror, prefix)).order.trained_windows(4)


def test_pythia_family_on_the_live_hub_lists_the_real_grid(tmp_path):
    """checkpoints = "hf://EleutherAI": the hub source (listing needs no network); its data rule
    must be Pythia's."""
    p = write_mmap_dataset(tmp_path / "document", [np.arange(2049) % 50000])
    spec = FamilySpec(name="pythia", kind="pythia", checkpoints=PYTHIA_HUB, data=str(p),
                      options={"sizes": ["70m", "1b"], "deduped": True})
    fam = open_family(spec)
    assert not fam.source.mirror_only
    assert fam.source.list_models() == ["pythia-70m-deduped", "pythia-1b-deduped"]
    refs = fam.source.list_checkpoints("pythia-1b-deduped")
    assert [r.step for r in refs] == list(PYTHIA_STEPS)
    assert refs[-1].location == "EleutherAI/pythia-1b-deduped@step143000"
    assert refs[-1].tokens_seen == 143000 * 2_097_152
    assert fam.source.model_info("pythia-1b-deduped").n_params == PYTHIA_MODELS["1b"]["total_params"]
    with pytest.raises(ValueError, match=r"trained on 1024 sequences of 2048 targets per step, got sequence_length=16"):
        open_family(FamilySpec(name="pythia", kind="pythia", checkpoints=PYTHIA_HUB, data=str(p),
                               options={"sequence_length": 16}))
