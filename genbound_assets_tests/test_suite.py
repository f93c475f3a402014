"""The local suite trainer: configs, the data-order rules, D* checkpoints, atomic writes, CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from genbound_assets.data.stream import TokenStream, training_chunks
from genbound_assets.families import suite as S
from genbound_assets_tests.micro import micro_stream

# Brown as the demo tokenizes it (byte-level, V = 257): 5,965,970 tokens in 500 documents.
BROWN_TOKENS, BROWN_DOCS, DEMO_V = 5_965_970, 500, 257


def markov_stream(n_docs=120, vocab=23, seed=0, lo=40, hi=260) -> TokenStream:
    """A small stream with learnable structure (a random sparse bigram chain); separator = vocab."""
    return micro_stream(n_docs=n_docs, vocab=vocab, seed=seed, lo=lo, hi=hi)


def fake_brown_stream() -> TokenStream:
    starts = np.linspace(0, BROWN_TOKENS, BROWN_DOCS, endpoint=False).astype(np.int64)
    tokens = np.ones(BROWN_TOKENS, dtype=np.int64)
    tokens[starts] = 0
    return TokenStream(tokens, starts, 0)


TINY = S.TrainConfig(context_length=16, batch_size=8, tokens_per_param=0.25,
                                regular_every=16, warmup_frac=0.05)
TINY_SIZES = [S.SizeSpec("t-a", 32, 1, lr=1e-2), S.SizeSpec("t-b", 32, 2, lr=1e-2)]


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory):
    stream = markov_stream()
    root = tmp_path_factory.mktemp("suite")
    res = S.train_suite(stream, root, TINY_SIZES, TINY, progress=False)
    return stream, root, res


# -- configs --------------------------------------------------------------------------------


def test_demo_sizes_are_pythia_like_gptq_compatible_and_fit_brown():
    assert len(S.DEMO_SIZES) >= 4
    plan = S.plan_suite(fake_brown_stream(), S.DEMO_SIZES, vocab_size=DEMO_V)
    ns = [m.n_params for m in plan.models]
    assert ns == [11_536, 29_216, 54_624, 80_032, 132_992]  # the numbers docs/suite.md records
    assert ns == sorted(ns) and ns[-1] / ns[0] >= 8
    for m in plan.models:
        cfg = plan.config(m.name)
        assert cfg.use_parallel_residual and not cfg.tie_word_embeddings
        assert cfg.rope_parameters["partial_rotary_factor"] == 0.25
        assert cfg.hidden_act == "gelu" and cfg.intermediate_size == 4 * cfg.hidden_size
        assert S.gptq_compatible(cfg, S.DEMO_GPTQ_GROUP_SIZE, bits=4) == []
        assert S.gptq_compatible(cfg, S.DEMO_GPTQ_GROUP_SIZE, bits=3) == [] or cfg.hidden_size < 32
        assert m.n_params - m.n_params_non_embedding == 2 * DEMO_V * cfg.hidden_size
        # one epoch, past 2·D*, with the D* checkpoint and the 2·D* checkpoint
        assert m.tokens_needed <= BROWN_TOKENS
        assert m.total_targets >= 2.2 * 20 * m.n_params
        assert m.d_star == 20 * m.n_params and m.d_star_step in m.checkpoint_steps
        assert m.frontier_steps["2xD*"] in m.checkpoint_steps
    # the model non-embedding counts follow Pythia's convention (checked against pythia-70m)
    from genbound_assets.families.sources import PYTHIA_MODELS
    row = PYTHIA_MODELS["70m"]
    assert row["total_params"] - row["non_embedding_params"] == 2 * row["padded_vocab"] * row["d_model"]


def test_gptq_check_flags_widths_group_size_does_not_divide():
    cfg = S.neox_config(S.SizeSpec("w48", 48, 1), DEMO_V, 128)
    problems = S.gptq_compatible(cfg, 32, bits=3)
    assert "attention.dense: in_features 48 is not a multiple of group_size 32" in problems
    assert ("attention.query_key_value: out_features 144 does not pack 3-bit codes into 32-bit "
            "words (needs a multiple of 32)") in problems
    assert not any("group_size" in p for p in S.gptq_compatible(cfg, 16))
    assert S.gptq_compatible(cfg, 16, bits=4) == []  # 48·4 and 144·4 bits fill whole words


def test_pythia_architecture_loads_in_transformers_model():
    from transformers import GPTNeoXForCausalLM

    cfg = S.neox_config(S.SIZES["neox-29k"], DEMO_V, 128)
    model = GPTNeoXForCausalLM(cfg)
    assert sum(p.numel() for p in model.parameters()) == S.count_params(cfg)[0] == 29_216
    assert model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    assert isinstance(model.gpt_neox.layers[0].input_layernorm, torch.nn.LayerNorm)


@pytest.mark.parametrize("bad, match", [
    (dict(hidden_size=40, num_layers=1), "multiple of 16"),
    (dict(hidden_size=32, num_layers=0), "num_layers"),
    (dict(hidden_size=32, num_layers=1, lr=float("nan")), "lr"),
])
def test_size_spec_rejects_bad_shapes(bad, match):
    with pytest.raises(ValueError, match=match):
        S.SizeSpec("x", **bad)


@pytest.mark.parametrize("bad, match", [
    (dict(batch_size=0), "batch_size"),
    (dict(train_multiple=0.5), "train_multiple"),
    (dict(tokens_per_param=-1.0), "tokens_per_param"),
    (dict(seed=-3), "seed"),
])
def test_train_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        S.TrainConfig(**bad)


# -- planning rules -----------------------------------------------------------------------


def test_plan_d_star_step_is_the_step_containing_d_star():
    stream = markov_stream()
    own = dataclasses.replace(TINY, common_schedule=False)   # each size stops at its own 2.2·D*
    plan = S.plan_suite(stream, TINY_SIZES, own)
    bt = TINY.tokens_per_step
    for m in plan.models:
        d_star = math.ceil(TINY.tokens_per_param * m.n_params)
        assert m.d_star == d_star
        at = stream.n_targets(S.trained_prefix_len(m.d_star_step, bt))
        before = stream.n_targets(S.trained_prefix_len(m.d_star_step - 1, bt))
        assert at == m.d_star_targets >= d_star > before
        assert m.d_star_targets - d_star < bt
        assert m.total_targets >= TINY.train_multiple * d_star
        assert stream.n_targets(S.trained_prefix_len(m.total_steps - 1, bt)) < TINY.train_multiple * d_star
        steps = m.checkpoint_steps
        assert steps[:5] == (0, 1, 2, 4, 8) and steps[-1] == m.total_steps
        assert all(s % 16 == 0 for s in steps if s > 8 and s not in m.frontier_steps.values()
                   and s != m.total_steps)


def test_common_schedule_every_size_saves_the_same_steps():
    """Pythia's rule (the default): one length and one step grid for every size, holding each
    size's own D* and 2·D* steps, so a family's model x step grid has no phantom checkpoint."""
    stream = markov_stream()
    own = S.plan_suite(stream, TINY_SIZES, dataclasses.replace(TINY, common_schedule=False))
    common = S.plan_suite(stream, TINY_SIZES, TINY)
    grids = {m.checkpoint_steps for m in common.models}
    assert len(grids) == 1
    (grid,) = grids
    longest = max(m.total_steps for m in own.models)
    assert all(m.total_steps == longest == grid[-1] for m in common.models)
    for o, c in zip(own.models, common.models, strict=True):
        assert (c.d_star_step, c.frontier_steps) == (o.d_star_step, o.frontier_steps)
        assert set(o.frontier_steps.values()) <= set(grid)
        assert set(o.checkpoint_steps) - {o.total_steps} <= set(grid)


def test_plan_refuses_more_tokens_than_one_pass():
    stream = markov_stream(n_docs=10)
    with pytest.raises(S.InsufficientTokensError, match=r"t-b .*needs 2\.2·D\*.*one pass over the stream holds"):
        S.plan_suite(stream, TINY_SIZES, TINY)
    with pytest.raises(S.InsufficientTokensError, match="neox-233k"):
        S.plan_suite(fake_brown_stream(), ["neox-29k", "neox-233k"], vocab_size=DEMO_V)


def test_plan_rejects_unknown_size_and_bad_vocab():
    stream = markov_stream()
    with pytest.raises(ValueError, match="unknown size 'neox-1b'"):
        S.plan_suite(stream, ["neox-1b"], TINY)
    with pytest.raises(ValueError, match="token id 23 >= vocab_size 10"):
        S.plan_suite(stream, TINY_SIZES, TINY, vocab_size=10)


def test_step_batches_follow_the_recorded_rule():
    stream = markov_stream()
    B, T = 8, 16
    labels_all = S.training_labels(stream.tokens, stream.doc_starts)
    assert np.all(labels_all[stream.doc_starts] == -100)
    assert np.array_equal(labels_all[stream.target_positions()], stream.tokens[stream.target_positions()])
    chunks = list(training_chunks(stream, T, 0, 3 * B))
    saw_mask = saw_plain = False
    for s in range(3):
        x, y, mask = S._step_batch(stream.tokens, labels_all, stream.doc_starts, s, B, T)
        lo, hi = S.step_token_range(s, B * T)
        assert (lo, hi) == (s * B * T, (s + 1) * B * T + 1)
        for i in range(B):
            off, inp, lab, seg = chunks[s * B + i]
            assert off == lo + i * T
            np.testing.assert_array_equal(x[i].numpy(), inp)
            np.testing.assert_array_equal(y[i].numpy(), lab)
        if mask is None:
            saw_plain = True
        else:
            saw_mask = True
            assert mask.shape == (B, 1, T, T)
    assert saw_plain or saw_mask
    # targets trained by steps 0..k-1 are exactly the targets among tokens[: k·B·T + 1]
    k = 3
    labs = np.concatenate([c[2] for c in chunks])
    assert int((labs != -100).sum()) == stream.n_targets(S.trained_prefix_len(k, B * T))


def test_block_mask_keeps_contexts_inside_documents():
    from transformers import GPTNeoXForCausalLM

    torch.manual_seed(0)
    cfg = S.neox_config(S.SizeSpec("m", 32, 1), 30, 16, separator_id=0)
    cfg._attn_implementation = "sdpa"
    model = GPTNeoXForCausalLM(cfg).eval()
    tokens = np.array([0, 5, 6, 7, 8, 9, 0, 3, 4, 5, 6, 7, 8, 9, 1, 2, 0], dtype=np.int64)
    stream = TokenStream(tokens, np.array([0, 6, 16]), 0)
    labels_all = tokens.copy()
    labels_all[stream.doc_starts] = -100
    x, y, mask = S._step_batch(tokens, labels_all, stream.doc_starts, 0, 1, 16)
    assert mask is not None
    with torch.no_grad():
        joint = model(input_ids=x, attention_mask=mask).logits[0, 6:]
        alone = model(input_ids=x[:, 6:]).logits[0]
        leaky = model(input_ids=x).logits[0, 6:]
    torch.testing.assert_close(joint, alone, atol=1e-5, rtol=1e-5)
    assert (leaky - alone).abs().max() > 1e-3  # without the mask, the previous doc leaks in
    assert y[0, 5] == -100  # the separator at position 6 is never a target


def test_lr_schedule_warms_up_then_decays_to_floor():
    lrs = [S.lr_at(u, 100, 1e-3, 0.05, 0.1) for u in range(100)]
    assert 0 < lrs[0] < lrs[4] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:], strict=False))
    assert lrs[-1] == pytest.approx(1e-4)


# -- training and checkpoints ---------------------------------------------------------------


def test_tiny_suite_writes_atomic_manifested_checkpoints(tiny_suite):
    stream, root, res = tiny_suite
    bt = TINY.tokens_per_step
    order = S.load_data_order(root)
    assert order["stream_sha256"] == stream.content_hash()
    assert order["tokens_per_step"] == bt and order["context_length"] == 16
    assert "tokens[s*B*T : (s+1)*B*T + 1]" in order["rule"] and order["one_epoch"] is True
    for m, r in zip(res.plan.models, res.models, strict=True):
        folder = root / m.name
        assert not [p for p in folder.iterdir() if p.name.startswith(".tmp")]
        steps = sorted(int(p.name[4:]) for p in folder.iterdir())
        assert steps == list(m.checkpoint_steps)
        assert order["models"][m.name]["d_star_step"] == m.d_star_step
        for s in steps:
            man = json.loads((folder / f"step{s}" / S.MANIFEST_NAME).read_text())
            assert man["model"] == m.name and man["step"] == s
            assert man["tokens_seen"] == s * bt
            assert man["n_targets_seen"] == stream.n_targets(S.trained_prefix_len(s, bt))
            assert man["is_d_star"] == (s == m.d_star_step)
            for name, d in man["files"].items():
                p = folder / f"step{s}" / name
                assert p.stat().st_size == d["bytes"] and S.sha256_file(p) == d["sha256"]
        dstar = json.loads((folder / f"step{m.d_star_step}" / S.MANIFEST_NAME).read_text())
        assert dstar["n_targets_seen"] >= m.d_star and "1xD*" in dstar["frontier"]
        # it learned: the loss over the last steps is well below the first steps' loss
        first = json.loads((folder / "step1" / S.MANIFEST_NAME).read_text())["train_loss"]
        assert r.final_loss < first - 0.5
    suite_doc = json.loads((root / S.SUITE_NAME).read_text())
    assert set(suite_doc["models"]) == {"t-a", "t-b"}


def test_step1_differs_from_step0(tiny_suite):
    _, root, _ = tiny_suite
    a = json.loads((root / "t-a" / "step0" / S.MANIFEST_NAME).read_text())["files"]["model.safetensors"]
    b = json.loads((root / "t-a" / "step1" / S.MANIFEST_NAME).read_text())["files"]["model.safetensors"]
    assert a["sha256"] != b["sha256"]


def test_existing_checkpoints_are_not_overwritten_silently(tiny_suite, tmp_path):
    stream, root, _ = tiny_suite
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        S.train_suite(stream, root, TINY_SIZES[:1], TINY, progress=False)
    other = markov_stream(seed=1)
    (tmp_path / "t-z").mkdir()
    (tmp_path / S.DATA_ORDER_NAME).write_text(json.dumps({"stream_sha256": "x", "tokens_per_step": 1}))
    with pytest.raises(FileExistsError, match="different stream"):
        S.train_suite(other, tmp_path, [S.SizeSpec("t-y", 32, 1)], TINY, progress=False)


def test_overwrite_semantics_merge_same_stream_and_replace_other_stream(tmp_path):
    stream = markov_stream()
    small = [S.SizeSpec("t-a", 32, 1, lr=1e-2)]
    S.train_suite(stream, tmp_path, small, TINY, progress=False)
    S.train_suite(stream, tmp_path, [S.SizeSpec("t-c", 16, 1, lr=1e-2)], TINY, progress=False)
    assert set(S.load_data_order(tmp_path)["models"]) == {"t-a", "t-c"}  # same data order: merged
    other = markov_stream(seed=5)
    S.train_suite(other, tmp_path, small, TINY, progress=False, overwrite=True)
    order = S.load_data_order(tmp_path)
    assert set(order["models"]) == {"t-a"} and order["stream_sha256"] == other.content_hash()
    assert not (tmp_path / "t-c").exists()  # trained on the replaced stream: removed
    assert set(json.loads((tmp_path / S.SUITE_NAME).read_text())["models"]) == {"t-a"}


def test_write_checkpoint_leaves_nothing_when_interrupted(tmp_path, monkeypatch):
    from transformers import GPTNeoXForCausalLM

    model = GPTNeoXForCausalLM(S.neox_config(S.SizeSpec("m", 32, 1), 30, 16))

    def dying_save(folder, **kw):
        (Path(folder) / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(model, "save_pretrained", dying_save)
    with pytest.raises(KeyboardInterrupt):
        S.write_checkpoint(tmp_path, "m", 7, model, {"tokens_seen": 0, "n_targets_seen": 0})
    assert list((tmp_path / "m").iterdir()) == []
    monkeypatch.undo()
    S.write_checkpoint(tmp_path, "m", 7, model, {"tokens_seen": 0, "n_targets_seen": 0})
    with pytest.raises(FileExistsError, match="step7 already exists"):
        S.write_checkpoint(tmp_path, "m", 7, model, {"tokens_seen": 0, "n_targets_seen": 0})


# -- CLI ------------------------------------------------------------------------------------

_REAL_TRAIN_CONFIG = S.TrainConfig


def tiny_cli_config(**kw):
    return _REAL_TRAIN_CONFIG(**{**dict(context_length=16, batch_size=8, tokens_per_param=0.5,
                                        regular_every=32), **kw})



def test_cli_rejects_unknown_sizes_and_conflicting_flags(tmp_path):
    from click.testing import CliRunner

    from genbound_assets.cli_suite import suite

    r = CliRunner().invoke(suite, ["train", "--root", str(tmp_path), "--sizes", "neox-29k,nope"])
    assert r.exit_code == 2 and "unknown size(s) nope" in r.output
    r = CliRunner().invoke(suite, ["train", "--root", str(tmp_path), "--sizes", "neox-29k", "--quick"])
    assert r.exit_code == 2 and "exclusive" in r.output


def test_cli_trains_a_synthetic_suite(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from genbound_assets import cli_suite

    monkeypatch.setitem(S.SIZES, "t16", S.SizeSpec("t16", 16, 1, lr=1e-2))
    monkeypatch.setattr(S, "QUICK_SIZES", ("t16",))
    monkeypatch.setattr(S, "TrainConfig", tiny_cli_config)
    monkeypatch.setattr(cli_suite, "SYNTHETIC_DOC_LEN", 128)
    r = CliRunner().invoke(cli_suite.suite, ["train", "--root", str(tmp_path), "--corpus",
                                             "synthetic", "--quick", "--no-progress", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "t16" in r.output and "D*" in r.output and "trained 1 sizes" in r.output
    order = S.load_data_order(tmp_path)
    assert order["source"]["corpus"].startswith("synthetic-markov")
    assert (tmp_path / "stream.npz").is_file() and order["stream_file"] == "stream.npz"
    assert any((tmp_path / "t16").iterdir())
    # a second run without --overwrite is refused with a clear message
    r = CliRunner().invoke(cli_suite.suite, ["train", "--root", str(tmp_path), "--corpus",
                                             "synthetic", "--quick", "--no-progress"])
    assert r.exit_code == 1 and "already holds checkpoints of t16" in r.output


def test_default_data_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("GENBOUND_DATA_DIR", str(tmp_path))
    assert S.default_data_dir() == tmp_path.resolve()
    monkeypatch.delenv("GENBOUND_DATA_DIR")
    assert S.default_data_dir() == Path.home() / ".local" / "share" / "genbound"
    assert os.fspath(S.default_data_dir())
