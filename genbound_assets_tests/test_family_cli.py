"""`genbound family add | list | remove` (cli_family.py), in process with click's CliRunner:
a real tiny Hugging Face Trainer run (Llama) and a plain step<N>/ folder (GPT-2, tied
embeddings) are registered, opened with registry.open_family and listed with the right
tokens_seen; every malformed input is refused with ONE line naming the file and the field,
and nothing is written to the registry when it is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_user_runs import (
    B,
    T,
    tiny_gpt2,
    tiny_llama,
    token_data,
    train_hf_run,
    write_step_folders,
)

from genbound_assets.cli import main
from genbound_assets.data.order import ArrayWindows
from genbound_assets.families.registry import FAMILIES_FILE_ENV, load_families, open_family


def run(*args):
    return CliRunner().invoke(main, ["family", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(hf run dir, step-folder root, tokens.npy): the Trainer consumed 6 steps x 4 windows."""
    base = tmp_path_factory.mktemp("runs")
    toks = token_data(base / "tokens.npy", n=2000)
    train_hf_run(base / "hf" / "llama-run", toks, tiny_llama())
    steps = write_step_folders(base / "steps" / "gpt2-run", tiny_gpt2(), steps=(0, 10, 20))
    return base / "hf", steps, base / "tokens.npy"


@pytest.fixture
def registry(tmp_path, monkeypatch):
    f = tmp_path / "families.json"
    monkeypatch.setenv(FAMILIES_FILE_ENV, str(f))
    return f


def refused(res, *needles):
    """Exit 1, nothing on stdout, exactly one line on stderr containing every needle."""
    assert res.exit_code == 1, res.output
    assert res.stdout == ""
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("genbound: error: "), res.stderr
    for n in needles:
        assert str(n) in res.stderr, (n, res.stderr)
    assert "Traceback" not in res.stderr
    return res.stderr


@pytest.mark.slow
def test_add_trainer_run_and_step_folders_then_open_list_remove(runs, registry):
    hf, steps, data = runs
    res = run("add", "mine", hf, "--data", data, "--context-length", T)
    assert res.exit_code == 0, res.output
    assert "kind hf_trainer, 1 model(s), 3 checkpoint(s)" in res.stdout
    assert f"windows_per_step {B} from" in res.stdout and "num_input_tokens_seen" in res.stdout
    assert "the sensor new_checkpoints picks it up (docs/dagster.md)" in res.stdout
    res = run("add", "steps", steps, "--data", data, "--context-length", T, "--profile", "pythia")
    assert res.exit_code == 0, res.output
    assert "kind step_folders, 1 model(s), 3 checkpoint(s)" in res.stdout

    specs = {s.name: s for s in load_families()}
    assert set(specs) == {"suite", "mine", "steps"}   # the default suite family is kept
    assert specs["mine"].options == {"context_length": T, "windows_per_step": B}
    assert specs["steps"].profile == "pythia" and specs["steps"].kind == "step_folders"

    fam = open_family(specs["mine"])
    assert isinstance(fam.order, ArrayWindows) and fam.order.windows_per_step == B
    refs = fam.source.list_checkpoints("llama-run")
    assert [(r.step, r.tokens_seen) for r in refs] == [(s, s * B * T) for s in (2, 4, 6)]
    assert type(fam.source.load_model("llama-run", 6)).__name__ == "LlamaForCausalLM"
    fam = open_family(specs["steps"])
    assert [(r.step, r.tokens_seen) for r in fam.source.list_checkpoints("gpt2-run")] == \
        [(0, 0), (10, 10 * B * T), (20, 20 * B * T)]

    res = run("list")
    assert res.exit_code == 0 and "mine  kind=hf_trainer" in res.stdout
    assert "1 model(s): llama-run" in res.stdout and "1 model(s): gpt2-run" in res.stdout
    refused(run("add", "mine", hf, "--data", data, "--context-length", T),
            "a family named 'mine' is already registered", "--replace")
    assert run("add", "mine", hf, "--data", data, "--context-length", T, "--replace").exit_code == 0
    res = run("remove", "mine")
    assert res.exit_code == 0 and "removed family mine" in res.stdout
    assert [s.name for s in load_families()] == ["suite", "steps"]
    refused(run("remove", "mine"), "no family named 'mine'", "registered: suite, steps")


@pytest.fixture
def hf_copy(runs, tmp_path):
    hf, _, data = runs
    dst = tmp_path / "hf"
    shutil.copytree(hf, dst)
    return dst, dst / "llama-run", data


def _state(ckpt: Path) -> dict:
    return json.loads((ckpt / "trainer_state.json").read_text())


@pytest.mark.slow
def test_trainer_run_refusals_name_file_and_field(hf_copy, registry, tmp_path):
    root, run_dir, data = hf_copy
    add = ("add", "x", root, "--data", data, "--context-length", T)

    refused(run("add", "x", tmp_path / "nowhere", "--data", data), "nowhere: no such folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(run("add", "x", empty, "--data", data), "no checkpoint-<step>/ or step<N>/ folders found",
            "--kind")
    refused(run("add", "Bad-Name", root, "--data", data, "--context-length", T), "family name",
            "'Bad-Name'")
    refused(run("add", "x", root, "--context-length", T), "--data is required")
    refused(run("add", "x", root, "--data", data), "--context-length is required")
    refused(run("add", *add[1:], "--kind", "nope"), "--kind must be one of", "'nope'")
    cfg = json.loads((run_dir / "checkpoint-6" / "config.json").read_text())
    refused(run("add", "x", root, "--data", data, "--context-length", 100),
            "checkpoint-6/config.json: max_position_embeddings 64 < context length T = 100")
    # windows per step contradicting the Trainer's own count
    refused(run(*add, "--windows-per-step", 3), "checkpoint-2/trainer_state.json",
            "num_input_tokens_seen = 136 = 8 windows", "windows_per_step 3")
    refused(run(*add[:-1], T - 1), "trainer_state.json: num_input_tokens_seen = 408 is not a "
            "multiple of T+1 = 16")
    # data: too short for the latest checkpoint, token ids beyond the vocabulary
    short = tmp_path / "short.npy"
    np.save(short, np.zeros(6 * B * T, dtype=np.int32))      # one token short of 24 windows
    refused(run("add", "x", root, "--data", short, "--context-length", T),
            "short.npy: holds 384 tokens = 23 windows of T+1 = 17", "step 6 trained on 6 × 4 = 24")
    big = tmp_path / "big.npy"
    np.save(big, np.full(2000, 64, dtype=np.int32))
    refused(run("add", "x", root, "--data", big, "--context-length", T),
            "big.npy: token id 64 >= vocab_size 64", "checkpoint-6/config.json")
    refused(run("add", "x", root, "--data", tmp_path / "none.npy", "--context-length", T),
            "none.npy does not exist")
    # a tokenizer larger than the model's vocabulary
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    Tokenizer(WordLevel({f"<{i}>": i for i in range(70)}, unk_token="<0>")).save(
        str(run_dir / "checkpoint-6" / "tokenizer.json"))
    refused(run(*add), "checkpoint-6/tokenizer.json: tokenizer vocabulary 70 exceeds vocab_size 64")
    (run_dir / "checkpoint-6" / "tokenizer.json").unlink()
    # shuffled windows
    args_bin = run_dir / "checkpoint-6" / "training_args.bin"
    raw = args_bin.read_bytes()
    _rewrite_training_args(args_bin, train_sampling_strategy="random")
    refused(run(*add), "checkpoint-6/training_args.bin: train_sampling_strategy = 'random'",
            "sequential")
    args_bin.write_bytes(raw)
    # Trainer's per-process batch must divide B
    _rewrite_training_args(args_bin, gradient_accumulation_steps=3)
    refused(run(*add), "per_device_train_batch_size 2 × gradient_accumulation_steps 3 = 6 does not "
            "divide windows_per_step 4")
    args_bin.write_bytes(raw)
    # global_step that disagrees with the folder name
    st = _state(run_dir / "checkpoint-4")
    (run_dir / "checkpoint-4" / "trainer_state.json").write_text(json.dumps({**st, "global_step": 5}))
    refused(run(*add), "checkpoint-4/trainer_state.json: global_step 5 does not match the folder "
            "name checkpoint-4")
    (run_dir / "checkpoint-4" / "trainer_state.json").write_text(json.dumps(st))
    # no token counts logged and none given
    for c in (2, 4, 6):
        s = _state(run_dir / f"checkpoint-{c}")
        (run_dir / f"checkpoint-{c}" / "trainer_state.json").write_text(
            json.dumps({**s, "num_input_tokens_seen": 0}))
    refused(run(*add), "windows per step unknown", "trainer_state.json num_input_tokens_seen")
    res = run(*add, "--tokens-per-step", B * T)
    assert res.exit_code == 0, res.output
    assert load_families()[-1].options == {"context_length": T, "windows_per_step": B,
                                           "tokens_per_step": B * T}
    run("remove", "x")
    refused(run(*add, "--tokens-per-step", B * T + 1), f"tokens_per_step {B * T + 1} is not a "
            f"multiple of T = {T}")
    # a config that is not a causal LM
    (run_dir / "checkpoint-6" / "config.json").write_text(json.dumps({**cfg, "model_type": "vit"}))
    refused(run(*add, "--tokens-per-step", B * T),
            "checkpoint-6/config.json: model_type 'vit' is not a causal LM")
    (run_dir / "checkpoint-6" / "config.json").write_text(json.dumps(cfg))
    # only incomplete checkpoints
    for c in (2, 4, 6):
        (run_dir / f"checkpoint-{c}" / "trainer_state.json").unlink()
    refused(run(*add), "no complete checkpoint", "no trainer_state.json in")
    assert [s.name for s in load_families()] == ["suite"]   # nothing refused was registered


def _rewrite_training_args(path: Path, **changes) -> None:
    """Re-save a training_args.bin with some fields changed (the real TrainingArguments)."""
    import torch

    args = torch.load(str(path), weights_only=False)   # our own file, written by this test run
    for k, v in changes.items():
        setattr(args, k, v)
    torch.save(args, str(path))


@pytest.mark.slow
def test_step_folder_refusals_and_unique_model_names(runs, registry, tmp_path):
    hf, steps, data = runs
    root = tmp_path / "s"
    shutil.copytree(steps, root / "gpt2-run")
    add = ("add", "s", root, "--data", data, "--context-length", T)
    for c in (0, 10, 20):
        (root / "gpt2-run" / f"step{c}" / "genbound.json").unlink()
    refused(run(*add), "windows per step unknown", "genbound.json tokens_seen")
    (root / "gpt2-run" / "step20" / "genbound.json").write_text('{"tokens_seen": 99}')
    refused(run(*add), "step20/genbound.json: tokens_seen = 99 is not step 20 × B × T 16")
    (root / "gpt2-run" / "step20" / "genbound.json").write_text('{"tokens_seen": "lots"}')
    refused(run(*add), "step20/genbound.json: tokens_seen must be a non-negative integer, got 'lots'")
    (root / "gpt2-run" / "step20" / "genbound.json").unlink()
    # a model folder name that cannot name partitions
    (root / "gpt2-run").rename(root / "gpt2 run")
    refused(run(*add, "--windows-per-step", B), "model folder name 'gpt2 run'")
    (root / "gpt2 run").rename(root / "gpt2-run")
    # registered: the same model names under another family are refused
    assert run(*add, "--windows-per-step", B).exit_code == 0
    other = tmp_path / "other"
    shutil.copytree(root, other)
    refused(run("add", "t", other, "--data", data, "--context-length", T, "--windows-per-step", B),
            "model name 'gpt2-run' is already used by family 's'")
    # kind-specific options on another kind
    refused(run("add", "t", other, "--kind", "suite", "--context-length", T),
            "--context-length apply to kinds hf_trainer and step_folders only")
    assert [s.name for s in load_families()] == ["suite", "s"]


def test_step_folders_on_megatron_data_and_a_pythia_mirror(registry, tmp_path):
    """The data may be a Megatron .bin/.idx pair (sequences of T+1 tokens: MegatronWindows), and
    `family add` registers the pythia kind too (a hub-layout mirror, detected; --option)."""
    from genbound_assets.data.megatron import MegatronWindows, write_mmap_dataset

    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 64, T + 1) for _ in range(2 * B)]
    prefix = write_mmap_dataset(tmp_path / "data" / "document", seqs)
    root = write_step_folders(tmp_path / "run" / "gpt2-mega", tiny_gpt2(), steps=(0, 1, 2))
    for s in (0, 1, 2):   # steps 1, 2 of B windows each: sidecars in tokens_seen = step·B·T
        (root / f"step{s}" / "genbound.json").write_text(json.dumps({"tokens_seen": s * B * T}))
    res = run("add", "mega", tmp_path / "run", "--data", f"{prefix}.bin", "--context-length", T)
    assert res.exit_code == 0, res.output
    fam = open_family(next(s for s in load_families() if s.name == "mega"))
    assert isinstance(fam.order, MegatronWindows) and fam.order.trained_windows(2) == 2 * B
    assert fam.source.list_checkpoints("gpt2-mega")[-1].tokens_seen == 2 * B * T
    run("remove", "mega")
    bad = write_mmap_dataset(tmp_path / "bad" / "document", [*seqs[:-1], np.full(T + 1, 99)])
    refused(run("add", "mega", tmp_path / "run", "--data", bad, "--context-length", T),
            "document: token id 99 >= vocab_size 64", "step2/config.json")
    refused(run("add", "mega", tmp_path / "run", "--data", tmp_path / "data" / "nothing.bin",
                "--context-length", T), "nothing.bin: missing (a Megatron dataset is a .bin/.idx pair)")

    from test_pythia_family import tiny_neox

    mirror = tmp_path / "mirror"
    for s in (0, 1, 2):
        tiny_neox(32, seed=s).save_pretrained(str(mirror / "EleutherAI" / "pythia-t1" / f"step{s}"))
    res = run("add", "pythia_tiny", mirror, "--data", prefix, "--option", "sequence_length=16",
              "--option", f"sequences_per_step={B}", "--option", 'sizes=["t1"]')
    assert res.exit_code == 0, res.output
    assert "kind pythia, 1 model(s), 3 checkpoint(s)" in res.stdout
    spec = next(s for s in load_families() if s.name == "pythia_tiny")
    assert spec.options == {"sequence_length": 16, "sequences_per_step": B, "sizes": ["t1"]}
    refused(run("add", "p2", mirror, "--data", prefix, "--option", "sizes"),
            "--option must be KEY=VALUE, got 'sizes'")
    refused(run("add", "p2", tmp_path / "run", "--data", prefix, "--context-length", T,
                "--option", "x=1"), "--option does not apply to kind step_folders")


@pytest.mark.slow
def test_sensor_plan_picks_up_a_registered_trainer_run(runs, registry, pg_clean):
    """What the sensor new_checkpoints does on a tick (defs/families/watch.plan_tick): the
    registered run's model and steps become partitions and its checkpoints get run requests;
    integrity passes without a hash record."""
    import dagster as dg

    from genbound_assets.defs.families.partitions import family_parts
    from genbound_assets.defs.families.watch import plan_tick
    from genbound_assets.pipeline.settings import settings_for_profile

    hf, _, data = runs
    assert run("add", "mine", hf, "--data", data, "--context-length", T).exit_code == 0
    spec = next(s for s in load_families() if s.name == "mine")
    with dg.DagsterInstance.ephemeral() as instance:
        plan = plan_tick(instance, family_parts(spec), open_family(spec), pg_clean,
                         settings_for_profile(spec.profile or "demo"), seen=set())
    assert plan.add_models == ["llama-run"] and plan.add_steps == ["2", "4", "6"]
    assert sorted(plan.handled) == ["llama-run|2", "llama-run|4", "llama-run|6"]
    assert plan.events == [] and plan.requests          # nothing quarantined, work requested
    assert not any("quarantined" in line for line in plan.log)
