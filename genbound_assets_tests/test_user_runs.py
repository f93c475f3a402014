"""A researcher's own run as a family (families/user_runs.py, data/order.py ArrayWindows):
a real tiny Hugging Face Trainer run and plain step folders, their token counts, completeness,
integrity without an independent hash record, the safe reading of training_args.bin, and the
registry kinds hf_trainer / step_folders.

``train_hf_run`` and ``write_step_folders`` are also used by test_family_cli.py."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from genbound_assets.data.order import ArrayWindows, StreamWindows, load_token_array
from genbound_assets.data.stream import TokenStream
from genbound_assets.families.integrity import NO_HASH_RECORD, check_checkpoint, check_model
from genbound_assets.families.registry import FamilySpec, open_family
from genbound_assets.families.user_runs import (
    HFTrainerSource,
    RunError,
    StepFoldersSource,
    read_training_args,
    validate_user_run,
)

T, PER_DEVICE, GRAD_ACC = 16, 2, 2
B = PER_DEVICE * GRAD_ACC


def tiny_llama(vocab: int = 64, hidden: int = 32, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=2 * hidden, max_position_embeddings=64,
        bos_token_id=0, eos_token_id=0, pad_token_id=0))


def tiny_gpt2(vocab: int = 64, hidden: int = 32, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=1, n_head=2,
                                      n_positions=64, bos_token_id=0, eos_token_id=0))


def token_data(path: Path, n: int = 2000, vocab: int = 64, seed: int = 0) -> np.ndarray:
    toks = np.random.default_rng(seed).integers(0, vocab, n).astype(np.uint16)
    np.save(path, toks)
    return toks


def train_hf_run(out: Path, tokens: np.ndarray, model, max_steps: int = 6, save_steps: int = 2,
                 track_tokens: bool = True, sampling: str = "sequential") -> Path:
    """A real Trainer run on windows of T+1 tokens with stride T, in order, B = 2 x 2 per step."""
    from transformers import Trainer, TrainingArguments

    class Windows(torch.utils.data.Dataset):
        def __len__(self):
            return (len(tokens) - 1) // T

        def __getitem__(self, c):
            x = torch.as_tensor(tokens[c * T:c * T + T + 1].astype(np.int64))
            return {"input_ids": x, "labels": x}

    args = TrainingArguments(
        output_dir=str(out), max_steps=max_steps, save_steps=save_steps,
        per_device_train_batch_size=PER_DEVICE, gradient_accumulation_steps=GRAD_ACC,
        include_num_input_tokens_seen=track_tokens, train_sampling_strategy=sampling,
        learning_rate=1e-3, report_to=[], logging_steps=1, use_cpu=True, disable_tqdm=True,
        dataloader_num_workers=0, seed=0)
    Trainer(model=model, args=args, train_dataset=Windows()).train()
    return out


def write_step_folders(root: Path, model, steps=(0, 10, 20), sidecar: bool = True) -> Path:
    """save_pretrained at each step (weights nudged in between), with genbound.json sidecars."""
    for s in steps:
        with torch.no_grad():
            model.get_input_embeddings().weight.add_(0.01)
        d = root / f"step{s}"
        model.save_pretrained(str(d))
        if sidecar:
            (d / "genbound.json").write_text(json.dumps({"tokens_seen": s * B * T}))
    return root


# ---------------------------------------------------------------------------- ArrayWindows

def test_array_windows_are_consecutive_slices_of_t_plus_one(tmp_path):
    toks = token_data(tmp_path / "t.npy", n=101)
    arr = load_token_array(tmp_path / "t.npy")
    assert isinstance(arr, np.memmap) and arr.dtype == np.uint16   # not read into memory
    order = ArrayWindows(arr, 10, 3, source="t.npy")
    assert order.n_windows == 10 and order.tokens_per_step == 30
    b = order.batch([0, 9, 4])
    assert b.segments is None
    for row, c in enumerate([0, 9, 4]):
        assert np.array_equal(b.inputs[row], toks[c * 10:c * 10 + 10])
        assert np.array_equal(b.labels[row], toks[c * 10 + 1:c * 10 + 11])
    assert b.inputs.dtype == np.int64 and (b.n_targets == 10).all()
    assert order.n_targets(order.trained_windows(3)) == 90   # step 3 x B 3 windows x T 10
    with pytest.raises(ValueError, match="holds only 10"):
        order.trained_windows(4)
    with pytest.raises(ValueError, match="out of range"):
        order.batch([10])
    assert order.max_token_id() == int(toks.max())
    assert np.array_equal(order.target_position(np.array([2]), np.array([3])), [24])


def test_array_windows_match_stream_windows_of_one_document():
    rng = np.random.default_rng(1)
    toks = rng.integers(1, 50, 64)
    toks[0] = 0
    a = ArrayWindows(toks, 7, 2)
    s = StreamWindows(TokenStream(toks, np.array([0]), 0), 7, 2)
    idx = np.arange(a.n_windows)
    assert a.n_windows == s.n_windows
    ba, bs = a.batch(idx), s.batch(idx)
    assert np.array_equal(ba.inputs, bs.inputs) and np.array_equal(ba.labels, bs.labels)
    assert np.array_equal(a.target_counts(), s.target_counts())


def test_array_windows_hash_depends_on_tokens_and_rule_not_dtype():
    toks = np.arange(50) % 7
    h = ArrayWindows(toks.astype(np.int32), 5, 2).content_hash()
    assert h == ArrayWindows(toks.astype(np.int64), 5, 2).content_hash()
    assert h != ArrayWindows(toks, 6, 2).content_hash()
    assert h != ArrayWindows(toks, 5, 3).content_hash()
    other = toks.copy()
    other[-1] += 1
    assert h != ArrayWindows(other, 5, 2).content_hash()


def test_token_array_errors_are_one_line_naming_the_file(tmp_path):
    np.save(tmp_path / "two_d.npy", np.zeros((3, 4), dtype=np.int32))
    np.save(tmp_path / "floats.npy", np.zeros(10))
    np.savez(tmp_path / "two.npz", a=np.arange(5), b=np.arange(5))
    np.savez(tmp_path / "ok.npz", tokens=np.arange(9))
    (tmp_path / "t.txt").write_text("1 2 3")
    cases = {
        "two_d.npy": "must be one-dimensional, got shape (3, 4)",
        "floats.npy": "must hold integer token ids, got dtype float64",
        "two.npz": "no 'tokens' array (arrays: a, b)",
        "t.txt": "must be .npy or .npz",
        "missing.npy": "does not exist",
    }
    for name, needle in cases.items():
        with pytest.raises(ValueError) as e:
            load_token_array(tmp_path / name)
        assert name in str(e.value) and needle in str(e.value) and "\n" not in str(e.value)
    assert np.array_equal(load_token_array(tmp_path / "ok.npz"), np.arange(9))


# ---------------------------------------------------------------------------- HF Trainer

@pytest.fixture(scope="module")
def hf_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("hf")
    toks = token_data(base / "tokens.npy")
    run = train_hf_run(base / "gpt2-run", toks, tiny_gpt2())
    return base, run, toks


@pytest.mark.slow
def test_trainer_checkpoints_and_tokens_seen(hf_run):
    base, run, _ = hf_run
    src = HFTrainerSource(run, context_length=T)
    assert src.list_models() == ["gpt2-run"]   # the output dir is one model
    refs = src.list_checkpoints("gpt2-run")
    assert [r.step for r in refs] == [2, 4, 6]
    for r in refs:
        logged = json.loads((Path(r.location) / "trainer_state.json").read_text())
        # the Trainer counted T+1 input ids per window, B windows per step
        assert logged["num_input_tokens_seen"] == r.step * B * (T + 1)
        assert r.tokens_seen == r.step * B * T
    assert src.derive_windows_per_step("gpt2-run")[0] == B
    info = HFTrainerSource(run, T, B).model_info("gpt2-run")
    assert info.tokens_per_step == B * T and info.vocab_size == 64 and info.context_length == T
    m = tiny_gpt2()
    tied = m.transformer.wte.weight.numel()
    assert info.n_params == sum(p.numel() for p in m.parameters())    # tied wte counted once
    assert info.n_params_non_embedding == info.n_params - tied - m.transformer.wpe.weight.numel()
    # a B that contradicts the Trainer's count is refused, naming the file and the field
    with pytest.raises(RunError, match=r"checkpoint-2/trainer_state.json: num_input_tokens_seen = 136"):
        HFTrainerSource(run, T, B + 1).list_checkpoints("gpt2-run")


@pytest.mark.slow
def test_trainer_checkpoint_loads_and_passes_integrity_without_hash_record(hf_run):
    _, run, _ = hf_run
    src = HFTrainerSource(run, T, B)
    model = src.load_model("gpt2-run", 6)
    assert type(model).__name__ == "GPT2LMHeadModel" and model.config._attn_implementation == "eager"
    from safetensors.torch import load_file

    saved = load_file(str(run / "checkpoint-6" / "model.safetensors"))
    for k, v in saved.items():
        assert torch.equal(model.state_dict()[k], v), k
    reports = check_model(src, "gpt2-run")
    assert [r.ok for r in reports] == [True, True, True]
    assert {r.hash_record for r in reports} == {NO_HASH_RECORD}
    assert all(r.tensor_fingerprint for r in reports)
    # requiring a record that does not exist quarantines, saying so
    r = check_checkpoint(src.checkpoint("gpt2-run", 2), src, require_reference=True)
    assert not r.ok and "no independent record" in r.reason


@pytest.mark.slow
def test_training_args_read_without_running_the_pickle(hf_run, tmp_path):
    _, run, _ = hf_run
    args = read_training_args(run / "checkpoint-6" / "training_args.bin")
    assert args["train_sampling_strategy"] == "sequential"
    assert args["per_device_train_batch_size"] == PER_DEVICE
    assert args["gradient_accumulation_steps"] == GRAD_ACC
    # a hostile pickle in the same container: nothing it names is imported or called
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.write_text, (marker, "x"))

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("training_args/data.pkl", pickle.dumps(Evil()))
    (tmp_path / "training_args.bin").write_bytes(buf.getvalue())
    assert read_training_args(tmp_path / "training_args.bin") is None
    assert not marker.exists()


@pytest.mark.slow
def test_incomplete_trainer_checkpoint_is_not_listed(hf_run, tmp_path):
    _, run, _ = hf_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.copytree(copy / "checkpoint-6", copy / "checkpoint-8")
    (copy / "checkpoint-8" / "trainer_state.json").unlink()     # the Trainer writes it last
    src = HFTrainerSource(copy, T, B)
    assert [r.step for r in src.list_checkpoints("run")] == [2, 4, 6]
    ok, bad = src.scan("run")
    assert len(ok) == 3 and bad == src.incomplete("run")
    assert bad[0][0] == str(copy / "checkpoint-8") and "no trainer_state.json" in bad[0][1]
    assert src.final_step("run") == 6        # trainer_state.json max_steps
    # a truncated weight file is incomplete too (a write in progress)
    st = copy / "checkpoint-4" / "model.safetensors"
    st.write_bytes(st.read_bytes()[:-100])
    assert [r.step for r in src.list_checkpoints("run")] == [2, 6]
    # untracked token counts need tokens_per_step (or B and T)
    state = json.loads((copy / "checkpoint-2" / "trainer_state.json").read_text())
    state["num_input_tokens_seen"] = 0
    (copy / "checkpoint-2" / "trainer_state.json").write_text(json.dumps(state))
    with pytest.raises(RunError, match="num_input_tokens_seen is not logged"):
        HFTrainerSource(copy, T).list_checkpoints("run")
    assert HFTrainerSource(copy, T, tokens_per_step=B * T).list_checkpoints("run")[0].tokens_seen == 2 * B * T


# ---------------------------------------------------------------------------- step folders

@pytest.fixture
def step_family(tmp_path):
    root = tmp_path / "fam"
    write_step_folders(root / "llama-small", tiny_llama(hidden=16))
    write_step_folders(root / "llama-big", tiny_llama(hidden=32), steps=(0, 10))
    (root / "llama-small" / ".tmp-step30").mkdir()         # an interrupted write: ignored
    return root


def test_step_folders_list_models_by_size_with_sidecar_counts(step_family):
    src = StepFoldersSource(step_family, context_length=T)
    assert src.list_models() == ["llama-small", "llama-big"]
    refs = src.list_checkpoints("llama-small")
    assert [(r.step, r.tokens_seen) for r in refs] == [(0, 0), (10, 10 * B * T), (20, 20 * B * T)]
    assert src.derive_windows_per_step("llama-small") == (B, str(step_family / "llama-small" / "step20" / "genbound.json") + " tokens_seen")
    # without a sidecar, tokens_per_step
    (step_family / "llama-small" / "step20" / "genbound.json").unlink()
    with pytest.raises(RunError, match="step20: no genbound.json with tokens_seen; pass --tokens-per-step"):
        src.list_checkpoints("llama-small")
    assert StepFoldersSource(step_family, T, B).list_checkpoints("llama-small")[-1].tokens_seen == 20 * B * T
    # a sidecar that contradicts B x T is refused
    (step_family / "llama-small" / "step10" / "genbound.json").write_text('{"tokens_seen": 5}')
    with pytest.raises(RunError, match=r"step10/genbound.json: tokens_seen = 5, but step 10"):
        StepFoldersSource(step_family, T, B).list_checkpoints("llama-small")
    (step_family / "llama-small" / "step10" / "genbound.json").write_text('{"tokens_seen": "many"}')
    with pytest.raises(RunError, match="tokens_seen must be a non-negative integer, got 'many'"):
        StepFoldersSource(step_family, T, B).list_checkpoints("llama-small")


def test_models_of_one_family_must_share_one_order(step_family, tmp_path):
    big = step_family / "llama-big" / "step10" / "genbound.json"
    big.write_text(json.dumps({"tokens_seen": 10 * 2 * B * T}))      # twice the windows per step
    token_data(tmp_path / "tokens.npy", n=20 * B * T + 1)
    with pytest.raises(RunError) as e:
        validate_user_run("step_folders", step_family, str(tmp_path / "tokens.npy"), T)
    assert "gives windows_per_step 8 but" in str(e.value) and f"gives {B}" in str(e.value)
    assert "one family reads one data order" in str(e.value) and "\n" not in str(e.value)


def test_step_folder_integrity_catches_duplicates_nan_and_shape(step_family):
    small = step_family / "llama-small"
    shutil.copytree(small / "step10", small / "step30")              # a duplicated step
    (small / "step30" / "genbound.json").write_text(json.dumps({"tokens_seen": 30 * B * T}))
    src = StepFoldersSource(step_family, T, B)
    reports = {r.step: r for r in check_model(src, "llama-small")}
    assert reports[0].ok and reports[20].ok
    for s in (10, 30):
        assert not reports[s].ok and "byte-identical" in reports[s].reason
        assert reports[s].hash_record == NO_HASH_RECORD
    # NaN weights
    from safetensors.torch import load_file, save_file

    f = small / "step20" / "model.safetensors"
    sd = load_file(str(f))
    sd["model.norm.weight"][0] = float("nan")
    save_file(sd, str(f), metadata={"format": "pt"})
    r = check_checkpoint(src.checkpoint("llama-small", 20), src)
    assert not r.ok and r.reason.startswith("non-finite weights: model.norm.weight has 1 NaN")
    # a config that contradicts the tensors: shapes come from the Llama class built on meta
    cfg = json.loads((small / "step0" / "config.json").read_text())
    cfg["intermediate_size"] += 8
    (small / "step0" / "config.json").write_text(json.dumps(cfg))
    r = check_checkpoint(src.checkpoint("llama-small", 0), src)
    assert not r.ok and r.reason.startswith("shape mismatch: model.layers.0.mlp.down_proj.weight")
    # a tensor the Llama class does not have
    sd = load_file(str(small / "step10" / "model.safetensors"))
    sd["model.extra.weight"] = torch.zeros(2)
    save_file(sd, str(small / "step10" / "model.safetensors"), metadata={"format": "pt"})
    r = check_checkpoint(src.checkpoint("llama-small", 10), src)
    assert r.reason == ("unexpected tensor model.extra.weight in model.safetensors: a "
                        "LlamaForCausalLM with config.json has no such weight")


def test_tied_gpt2_checkpoint_passes_integrity(tmp_path):
    model = tiny_gpt2()
    write_step_folders(tmp_path / "g", model, steps=(0, 1))
    from safetensors import safe_open

    with safe_open(str(tmp_path / "g" / "step1" / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys()       # saved once, under wte
    src = StepFoldersSource(tmp_path / "g", T, B)
    assert [r.ok for r in check_model(src, "g")] == [True, True]


# ---------------------------------------------------------------------------- registry

def test_registry_opens_step_folders_with_their_order(step_family, tmp_path):
    token_data(tmp_path / "tokens.npy", n=20 * B * T + 1)
    check = validate_user_run("step_folders", step_family, str(tmp_path / "tokens.npy"), T)
    assert check.options == {"context_length": T, "windows_per_step": B}
    fam = open_family(FamilySpec(name="mine", kind="step_folders", checkpoints=str(step_family),
                                 data=str(tmp_path / "tokens.npy"), options=check.options))
    assert isinstance(fam.order, ArrayWindows)
    assert (fam.order.context_length, fam.order.windows_per_step) == (T, B)
    assert fam.order.trained_windows(20) == 20 * B == fam.order.n_windows
    ref = fam.source.checkpoint("llama-small", 20)
    assert ref.tokens_seen == fam.order.n_targets(fam.order.trained_windows(20))
    with pytest.raises(ValueError, match="needs options context_length and windows_per_step"):
        open_family(FamilySpec(name="mine", kind="step_folders", checkpoints=str(step_family),
                               data=str(tmp_path / "tokens.npy")))
