"""Families through the whole asset graph (issue #13): a tiny Pythia mirror, a real Hugging Face
Trainer run and a plain step<N>/ folder, each registered with ``genbound family add`` (in process,
click's CliRunner), discovered by one tick of the sensor ``new_checkpoints``, its requests run,
the model-level assets run as the declarative automation requests them, and ``bounds`` holding a
certified headline row at each size's compute-optimal checkpoint (real Postgres, real Dagster
instance, real models trained here for a few hundred steps on a learnable token chain).

* Pythia: ``<root>/EleutherAI/pythia-<size>/step<N>/`` (save_pretrained) with the hub's file
  record ``step<N>.hub.json`` written the way docs/pythia.md says, a Megatron
  ``document.bin``/``.idx`` of T+1-token sequences trained in Pythia's order (step k = sequences
  [kB, (k+1)B)); the checkpoints' D and the stored per-target losses are checked against the
  format decoded by hand (test_megatron's ``read_index_by_hand`` / ``token_from_bin``).
  One size is bounded in the exact design, the other in the sampled-windows design.
* User runs: the Trainer's ``checkpoint-<step>/`` folders and ``step<N>/`` folders with
  ``genbound.json`` sidecars, both on one ``tokens.npy``; two families in one tick.
* Refusals the sensor and ``family add`` say in one line: a mirror step without its hub record
  (quarantined, naming the file; the hub is never called), a run whose token counts contradict
  each other (the sensor's refusal line), models that do not share one step grid (a warning).

GENBOUND_TOKENS_PER_PARAM is chosen so that a checkpoint of each size lies within 5 % above
D* = tokens_per_param · N: the compute-optimal checkpoint exists (a certified compute_optimal row).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from genbound_assets.cli import main
from genbound_assets.data.megatron import write_mmap_dataset
from genbound_assets.families.sources import is_weight_file
from genbound_assets.storage import read_frame
from genbound_assets_tests.test_megatron import read_index_by_hand, token_from_bin

V, EOD, T = 32, 0, 16            # vocabulary (EOD = 0), targets per training window
PYTHIA_B = 8                     # sequences per optimizer step of the tiny Pythia run
USER_B, PER_DEVICE, GRAD_ACC = 16, 8, 2  # the Trainer's windows per step = 8 x 2
MODEL_ASSETS = ("loss_curve", "compute_optimal", "prequential_complexity", "hessian_spectrum",
                "model_bounds")
CHECKPOINT_ASSETS = {"checkpoint", "checkpoint_loss", "quantized_model", "token_losses",
                     "checkpoint_bounds"}
TOLERANCE = 0.05                 # selected_steps / compute_optimal_rows: D within 5 % of D*


# ------------------------------------------------------------------------------ data and models

def chain_tokens(n: int, seed: int = 0) -> np.ndarray:
    """Documents of a sparse bigram chain over 1..V-1 (3 successors per token: entropy ~ log 3),
    joined by EOD: learnable in a few hundred steps."""
    rng = np.random.default_rng(seed)
    nxt = rng.integers(1, V, size=(V, 3))
    out, total = [], 0
    while total < n:
        d = np.empty(int(rng.integers(20, 80)), dtype=np.int64)
        d[0] = rng.integers(1, V)
        for i in range(1, len(d)):
            d[i] = nxt[d[i - 1], rng.integers(3)]
        out += [d, np.array([EOD])]
        total += len(d) + 1
    return np.concatenate(out)[:n]


def tiny_neox(hidden: int, seed: int):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=V, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=hidden // 16,
        intermediate_size=4 * hidden, max_position_embeddings=T, rotary_pct=0.25,
        use_parallel_residual=True, tie_word_embeddings=False, hidden_dropout=0.0,
        attention_dropout=0.0, bos_token_id=EOD, eos_token_id=EOD))


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=V, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=64, max_position_embeddings=64,
        bos_token_id=EOD, eos_token_id=EOD, pad_token_id=EOD))


def tiny_gpt2(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=32, n_layer=1, n_head=2, n_positions=64,
                                      bos_token_id=EOD, eos_token_id=EOD))


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())   # tied weights once


def train_in_order(model, windows: np.ndarray, per_step: int, save_at, save, lr: float = 1e-2):
    """Optimizer step k trains on windows [k·per_step, (k+1)·per_step) (inputs = a window's first
    T tokens, labels = its last T, every label a target), AdamW; ``save(step, model)`` at each
    step of ``save_at`` (step 0 = the initial weights)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    last = max(save_at)
    for k in range(last + 1):
        if k in save_at:
            model.eval()
            save(k, model)
            model.train()
        if k == last:
            break
        x = torch.as_tensor(windows[k * per_step:(k + 1) * per_step].astype(np.int64))
        logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()


def write_hub_record(folder: Path) -> Path:
    """``step<N>.hub.json`` next to ``step<N>/``, in the format docs/pythia.md saves from
    ``HfApi().model_info(..., files_metadata=True)``: every file's rfilename and size, and the LFS
    sha256 and size of the weight files (the hub keeps those in LFS).  Here the record is made
    from the files themselves (there is no hub to ask)."""
    from genbound_assets.families.suite import sha256_file

    sibs = []
    for p in sorted(folder.iterdir()):
        size = p.stat().st_size
        lfs = {"sha256": sha256_file(p), "size": size} if is_weight_file(p.name) else None
        sibs.append({"rfilename": p.name, "size": size, "lfs": lfs})
    out = folder.parent / f"{folder.name}.hub.json"
    out.write_text(json.dumps(sibs))
    return out


# ------------------------------------------------------------------------------ the graph

def family_add(*args) -> str:
    res = CliRunner().invoke(main, ["family", "add", *map(str, args)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.stdout


def graph_env(monkeypatch, tmp: Path, tokens_per_param: float, **settings) -> Path:
    """An empty registry (no default suite family), the micro profile, D* = tokens_per_param · N."""
    reg = tmp / "families.json"
    reg.write_text(json.dumps({"families": []}))
    monkeypatch.setenv("GENBOUND_FAMILIES_FILE", str(reg))
    monkeypatch.setenv("GENBOUND_PROFILE", "micro")
    monkeypatch.setenv("GENBOUND_TOKENS_PER_PARAM", repr(float(tokens_per_param)))
    for k, v in settings.items():
        monkeypatch.setenv(f"GENBOUND_{k.upper()}", str(v))
    from genbound_assets.defs.families import resources

    resources._open.cache_clear()
    return reg


def tick(defs, instance, cursor=None):
    """One evaluation of ``new_checkpoints``, and what the daemon does with its result besides
    launching runs (dynamic partitions, runless events)."""
    sensor = defs.get_sensor_def("new_checkpoints")
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                  resources=defs.get_repository_def().get_top_level_resources())
    result = sensor(ctx)
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    for ev in result.asset_events or []:
        instance.report_runless_asset_event(ev)
    return result


def covered(requests) -> dict[tuple[str, str, int], set[str]]:
    """(family, model, step) -> assets, expanding each request's range over the family's steps."""
    out: dict[tuple[str, str, int], set[str]] = {}
    for r in requests:
        fam = r.tags["genbound/family"]
        lo = r.tags["dagster/asset_partition_range_start"].split("|")
        hi = r.tags["dagster/asset_partition_range_end"].split("|")
        assert lo[0] == hi[0]
        out.setdefault((fam, lo[0], int(lo[1])), set()).update(r.tags["genbound/assets"].split(","))
        out.setdefault((fam, hi[0], int(hi[1])), set()).update(r.tags["genbound/assets"].split(","))
    return out


def run_through_graph(defs, instance):
    """The sensor's first tick, its runs, then the model-level assets the declarative automation
    requests (executed in graph order, as the daemon would launch them).

    The automation evaluates once before the tick (the family's keys exist, its partitions not
    yet) and once after the runs.  In the daemon the evaluations in between request nothing for
    a model: its checkpoint runs are created with the tick (planned materializations), so
    ``any_deps_in_progress`` holds until they finish.  Returns (sensor result, {family: {asset:
    models requested}})."""
    from genbound_assets.demo import _execute

    before = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert not before._requested_partitions_by_asset_key  # noqa: SLF001
    first = tick(defs, instance)
    assert first.run_requests, first.skip_reason
    for r in first.run_requests:
        res = _execute(defs, instance, r.asset_selection, tags=r.tags)
        assert res.success, r.tags
    auto = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
    wanted = auto._requested_partitions_by_asset_key  # noqa: SLF001 (what the daemon would launch)
    models: dict[str, dict[str, set[str]]] = {}
    for key in sorted(wanted, key=lambda k: (k.path[0], MODEL_ASSETS.index(k.path[-1]))):
        models.setdefault(key.path[0], {})[key.path[-1]] = set(wanted[key])
        for m in sorted(wanted[key]):
            assert _execute(defs, instance, [key], partition_key=m).success, (key, m)
    return first, models


def headline_rows(engine, family: str):
    return read_frame(engine, "SELECT model, step, method, certified, role, bound, empirical_risk, "
                      "n_train_tokens, n_params, design FROM bounds WHERE sample = :s AND NOT "
                      "interpolated ORDER BY model, step, method", {"s": f"{family}:bound"})


def assert_bounded_at_d_star(engine, family: str, expected: dict[str, int]) -> dict[str, dict]:
    """Every model has a certified compute_optimal row at ``expected[model]`` and a certified
    headline row there (bound >= its empirical risk, <= the Thm 3.4 decomposed row); returns the
    headline and decomposed rows by model."""
    co = read_frame(engine, "SELECT model, step, certified, d_star, n_train_tokens FROM "
                    "compute_optimal WHERE model = ANY(:m)", {"m": list(expected)})
    got = {r["model"]: r for r in co.iter_rows(named=True)}
    b = headline_rows(engine, family)
    out = {}
    for model, step in expected.items():
        row = got[model]
        assert row["certified"] and row["step"] == step, row
        assert 0 <= row["n_train_tokens"] - row["d_star"] <= TOLERANCE * row["d_star"], row
        at = {r["method"]: r for r in b.iter_rows(named=True) if r["model"] == model and r["step"] == step}
        assert {"headline", "freedman_decomposed", "azuma", "paper_recipe"} <= set(at), at.keys()
        head, dec = at["headline"], at["freedman_decomposed"]
        assert head["certified"] and head["role"] == "headline"
        assert math.isfinite(head["bound"]) and head["bound"] >= head["empirical_risk"]
        assert head["bound"] <= dec["bound"] + 1e-9
        assert not at["paper_recipe"]["certified"]
        out[model] = {"headline": head, "decomposed": dec}
    heads = b.filter(b["method"] == "headline").group_by("model", "step").len()
    assert heads["len"].max() == 1                       # one headline per bounded checkpoint
    return out


# ------------------------------------------------------------------------------ Pythia

PYTHIA_SIZES = {"t1": 16, "t2": 32}          # size -> hidden (t1 smaller)
PYTHIA_S1 = 64                               # t1's compute-optimal step (D* just below it)


def pythia_plan() -> tuple[float, dict[str, int], list[int]]:
    """(tokens_per_param, size -> its D* step, the shared step grid)."""
    n = {s: n_params(tiny_neox(h, 0)) for s, h in PYTHIA_SIZES.items()}
    per_step = PYTHIA_B * T
    tpp = 0.99 * PYTHIA_S1 * per_step / n["t1"]
    s2 = math.ceil(tpp * n["t2"] / per_step)
    return tpp, {"t1": PYTHIA_S1, "t2": s2}, [0, PYTHIA_S1, s2]


@pytest.fixture(scope="module")
def tiny_pythia(tmp_path_factory):
    """The mirror, the Megatron prefix and the sequences (what was written and trained on)."""
    root = tmp_path_factory.mktemp("pythia")
    tpp, d_star_step, grid = pythia_plan()
    n_seq = grid[-1] * PYTHIA_B + 3 * PYTHIA_B     # a few sequences past the last step too
    stream = chain_tokens(n_seq * (T + 1), seed=1)
    seqs = stream.reshape(n_seq, T + 1)             # GPT-NeoX packing: documents cross sequences
    prefix = write_mmap_dataset(root / "pile" / "document", list(seqs))
    mirror = root / "mirror"
    for i, (size, hidden) in enumerate(PYTHIA_SIZES.items()):
        def save(step, model, size=size):
            folder = mirror / "EleutherAI" / f"pythia-{size}" / f"step{step}"
            model.save_pretrained(str(folder))
            write_hub_record(folder)
        train_in_order(tiny_neox(hidden, seed=10 + i), seqs, PYTHIA_B, set(grid), save)
    return mirror, prefix, seqs, tpp, d_star_step, grid


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_pythia_mirror_through_the_graph(tiny_pythia, pg_clean, tmp_path, monkeypatch, caplog):
    mirror, prefix, seqs, tpp, d_star_step, grid = tiny_pythia
    graph_env(monkeypatch, tmp_path, tpp)
    out = family_add("pythia_tiny", mirror, "--data", prefix, "--option", f"sequence_length={T}",
                     "--option", f"sequences_per_step={PYTHIA_B}")
    assert "family pythia_tiny: kind pythia, 2 model(s), 6 checkpoint(s)" in out   # kind detected
    from genbound_assets.definitions import build_defs

    defs = build_defs()
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance, \
            caplog.at_level(logging.INFO, logger="genbound.sensor"):
        first, auto = run_through_graph(defs, instance)
        models = ["pythia-t1", "pythia-t2"]
        assert instance.get_dynamic_partitions("pythia_tiny__model") == models
        assert instance.get_dynamic_partitions("pythia_tiny__step") == [str(s) for s in grid]
        assert "quarantined" not in caplog.text and "refused" not in caplog.text, caplog.text
        # every real checkpoint requested once; the checkpoint at D* gets every checkpoint asset
        cov = covered(first.run_requests)
        assert set(cov) == {("pythia_tiny", m, s) for m in models for s in grid}
        for (_, m, s), assets in cov.items():
            bounded = s == d_star_step[m.removeprefix("pythia-")]
            assert assets == (CHECKPOINT_ASSETS if bounded else {"checkpoint", "checkpoint_loss"})
        # the automation brings every model-level asset of both models up to date
        assert auto["pythia_tiny"] == {a: set(models) for a in MODEL_ASSETS}
        # nothing new: the next tick requests nothing
        assert tick(defs, instance, first.cursor).run_requests == []
        # a new step the data does not reach yet: one line naming the .bin and the counts, no
        # request, no partition, and the tick does not fail (other families carry on)
        beyond = grid[-1] + 4
        folder = mirror / "EleutherAI" / "pythia-t1" / f"step{beyond}"
        tiny_neox(PYTHIA_SIZES["t1"], seed=99).save_pretrained(str(folder))
        write_hub_record(folder)
        caplog.clear()
        try:
            late = tick(defs, instance, first.cursor)
        finally:
            shutil.rmtree(folder)
            folder.with_name(f"step{beyond}.hub.json").unlink()
        assert late.run_requests == [] and str(beyond) not in instance.get_dynamic_partitions(
            "pythia_tiny__step")
        lines = [ln for ln in caplog.text.splitlines() if f"step {beyond} not registered" in ln]
        assert len(lines) == 1 and "document.bin: checkpoint step" in lines[0], caplog.text
        assert f"[0, {beyond * PYTHIA_B:,})" in lines[0] and f"holds {len(seqs):,}" in lines[0]
        assert f"pythia-t1|{beyond}" not in json.loads(late.cursor)["pythia_tiny"]   # retried

    engine = pg_clean
    ck = read_frame(engine, "SELECT model, step, status, tokens_seen, n_train_tokens, fingerprint "
                    "FROM checkpoints ORDER BY model, step")
    assert ck.height == 6 and set(ck["status"]) == {"ok"}   # hub record matched, no network
    # D per step against the format decoded by hand: the labels of sequences [0, step·B)
    idx = read_index_by_hand(prefix.with_name("document.idx"))
    assert idx["n"] == len(seqs) and idx["code"] == 8
    for r in ck.iter_rows(named=True):
        d = sum(size - 1 for size in idx["sizes"][: r["step"] * PYTHIA_B])
        assert r["n_train_tokens"] == r["tokens_seen"] == d == r["step"] * PYTHIA_B * T

    rows = assert_bounded_at_d_star(engine, "pythia_tiny",
                                    {f"pythia-{s}": st for s, st in d_star_step.items()})
    designs = {m: r["headline"]["design"] for m, r in rows.items()}
    assert designs == {"pythia-t1": "exact", "pythia-t2": "windows"}   # micro: exact up to 20k
    # trained for real: the float model's risk at D* is far below random guessing and below
    # the untrained step-0 model's loss on the same (next-update) windows
    curve = read_frame(engine, "SELECT model, step, mean_loss FROM checkpoint_losses WHERE "
                       "eval_kind = 'next_tokens'")
    for m, r in rows.items():
        r_h = r["decomposed"]["empirical_risk"]
        at0 = curve.filter((curve["model"] == m) & (curve["step"] == 0))["mean_loss"][0]
        assert r_h < 0.6 * math.log(V) and r_h < at0 - 1.0, (m, r_h, at0)

    # the per-target losses the bound used, against the format decoded by hand
    from transformers import GPTNeoXForCausalLM

    from genbound_assets.storage.records import read_token_loss_set

    bin_path = prefix.with_name("document.bin")
    rng = np.random.default_rng(0)
    for size, step in d_star_step.items():
        summary, arr = read_token_loss_set(engine, f"pythia-{size}", step)
        win, col = arr["window"], arr["column"].astype(np.int64)
        assert win.min() >= 0 and win.max() < step * PYTHIA_B          # trained windows only
        assert col.min() >= 0 and col.max() == T - 1
        if summary["design"] == "exact":                                # every target, once
            assert sorted(set(zip(win.tolist(), col.tolist(), strict=True))) == [
                (c, j) for c in range(step * PYTHIA_B) for j in range(T)]
        model = GPTNeoXForCausalLM.from_pretrained(
            str(mirror / "EleutherAI" / f"pythia-{size}" / f"step{step}"), attn_implementation="eager").eval()
        for i in rng.choice(len(win), size=12, replace=False):
            c, j = int(win[i]), int(col[i])
            toks = [token_from_bin(bin_path, idx["pointers"][c] + 2 * k) for k in range(T + 1)]
            assert toks == seqs[c].tolist()
            with torch.no_grad():   # target j = token j+1 of sequence c, context tokens 0..j
                logits = model(input_ids=torch.tensor([toks[: j + 1]])).logits[0, -1].double()
            loss = float(-torch.log_softmax(logits, -1)[toks[j + 1]])
            assert abs(loss - float(arr["h_loss"][i])) < 1e-4, (size, c, j, loss, arr["h_loss"][i])


def test_mirror_integrity_needs_the_hub_record_and_never_calls_the_hub(tmp_path):
    """A mirror step with its step<N>.hub.json passes; one without is quarantined naming the file
    it looked for; a weight changed after the record is a sha256 mismatch; the hub API is never
    touched.  Pythia's own sizes end at step143000 (the selection bounds the final checkpoint)."""
    from genbound_assets.families.integrity import check_checkpoint
    from genbound_assets.families.sources import PythiaHubSource

    class NoHub:
        def model_info(self, *a, **k):
            raise AssertionError("the mirror called the hub")

    base = tmp_path / "EleutherAI" / "pythia-t1"
    for step in (1, 2, 4):
        tiny_neox(16, step).save_pretrained(str(base / f"step{step}"))
    write_hub_record(base / "step1")
    write_hub_record(base / "step4")
    w = base / "step4" / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-4:] = b"\x00\x00\x80\x7f"                     # same size, other bytes
    w.write_bytes(bytes(data))
    src = PythiaHubSource(local_root=tmp_path, mirror_only=True, hub_api=NoHub(),
                          tokens_per_step=T * PYTHIA_B, context_length=T)
    reps = {r.step: check_checkpoint(r, src) for r in src.list_checkpoints("pythia-t1")}
    assert reps[1].ok and reps[1].hash_record == "hub LFS metadata"
    assert not reps[2].ok and f"no hub record {base / 'step2.hub.json'}" in reps[2].reason
    assert "\n" not in reps[2].reason
    assert not reps[4].ok and reps[4].reason.startswith("sha256 mismatch for model.safetensors")
    (base / "step2.hub.json").write_text("{not json")
    bad = check_checkpoint(src.checkpoint("pythia-t1", 2), src)
    assert not bad.ok and "step2.hub.json: unreadable hub record" in bad.reason
    assert src.final_step("pythia-t1") is None
    assert PythiaHubSource(sizes=["70m"]).final_step("pythia-70m") == 143000


# ------------------------------------------------------------------------------ user runs

HF_STEPS = (40, 80, 120)         # the Trainer saves every 40 steps; D* of the Llama at step 80


def train_trainer_run(out: Path, tokens: np.ndarray, model, max_steps: int, save_steps: int) -> Path:
    """A real transformers Trainer run on CPU: windows of T+1 tokens with stride T, in order
    (train_sampling_strategy='sequential'), 8 x 2 windows per step, token counts logged."""
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
        include_num_input_tokens_seen=True, train_sampling_strategy="sequential",
        learning_rate=1e-2, warmup_steps=0, report_to=[], logging_steps=10, use_cpu=True,
        disable_tqdm=True, dataloader_num_workers=0, seed=0)
    Trainer(model=model, args=args, train_dataset=Windows()).train()
    return out


def user_plan() -> tuple[float, int, tuple[int, ...]]:
    """(tokens_per_param, the GPT-2 run's D* step, its saved steps)."""
    per_step = USER_B * T
    tpp = 0.99 * HF_STEPS[1] * per_step / n_params(tiny_llama())
    s_star = math.ceil(tpp * n_params(tiny_gpt2()) / per_step)
    return tpp, s_star, (s_star // 2, s_star, s_star + 6)


@pytest.fixture(scope="module")
def user_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("user")
    tpp, s_star, gpt2_steps = user_plan()
    n = (max(HF_STEPS[-1], gpt2_steps[-1]) + 2) * USER_B * T + 1
    tokens = chain_tokens(n, seed=2).astype(np.uint16)
    np.save(base / "tokens.npy", tokens)
    train_trainer_run(base / "llama-run", tokens, tiny_llama(), HF_STEPS[-1], HF_STEPS[0])
    n_win = (len(tokens) - 1) // T
    windows = np.stack([tokens[c * T:c * T + T + 1] for c in range(n_win)])

    def save(step, model):
        d = base / "steps" / "gpt2-run" / f"step{step}"
        model.save_pretrained(str(d))
        (d / "genbound.json").write_text(json.dumps({"tokens_seen": step * USER_B * T}))
    train_in_order(tiny_gpt2(), windows, USER_B, set(gpt2_steps), save)
    return base, tpp, s_star, gpt2_steps


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_trainer_run_and_step_folders_through_the_graph(user_runs, pg_clean, tmp_path, monkeypatch,
                                                        caplog):
    base, tpp, s_star, gpt2_steps = user_runs
    graph_env(monkeypatch, tmp_path, tpp)
    data = base / "tokens.npy"
    out = family_add("hf_run", base / "llama-run", "--data", data, "--context-length", T)
    assert "kind hf_trainer, 1 model(s), 3 checkpoint(s)" in out
    assert f"windows_per_step {USER_B} from" in out and "num_input_tokens_seen" in out
    out = family_add("step_run", base / "steps", "--data", data, "--context-length", T)
    assert "kind step_folders, 1 model(s), 3 checkpoint(s)" in out and "genbound.json" in out
    assert "warning" not in out
    from genbound_assets.definitions import build_defs

    defs = build_defs()
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance, \
            caplog.at_level(logging.INFO, logger="genbound.sensor"):
        first, auto = run_through_graph(defs, instance)
        assert instance.get_dynamic_partitions("hf_run__model") == ["llama-run"]
        assert instance.get_dynamic_partitions("hf_run__step") == [str(s) for s in HF_STEPS]
        assert instance.get_dynamic_partitions("step_run__model") == ["gpt2-run"]
        assert instance.get_dynamic_partitions("step_run__step") == [str(s) for s in gpt2_steps]
        cov = covered(first.run_requests)
        expect = {("hf_run", "llama-run", s) for s in HF_STEPS} | \
                 {("step_run", "gpt2-run", s) for s in gpt2_steps}
        assert set(cov) == expect
        assert cov[("hf_run", "llama-run", HF_STEPS[1])] == CHECKPOINT_ASSETS
        assert cov[("step_run", "gpt2-run", s_star)] == CHECKPOINT_ASSETS
        assert auto == {"hf_run": {a: {"llama-run"} for a in MODEL_ASSETS},
                        "step_run": {a: {"gpt2-run"} for a in MODEL_ASSETS}}
        assert "refused" not in caplog.text and "quarantined" not in caplog.text, caplog.text

        # a later checkpoint whose logged token count contradicts the run: the next tick says
        # why in one line naming the file and the field, and requests nothing for the model
        step = HF_STEPS[-1] + HF_STEPS[0]
        new = base / "llama-run" / f"checkpoint-{step}"
        shutil.copytree(base / "llama-run" / f"checkpoint-{HF_STEPS[-1]}", new)
        state = json.loads((new / "trainer_state.json").read_text())
        logged = step * USER_B * (T + 1) + 1              # not a whole number of T+1 windows
        state.update(global_step=step, num_input_tokens_seen=logged)
        (new / "trainer_state.json").write_text(json.dumps(state))
        caplog.clear()
        try:
            again = tick(defs, instance, first.cursor)
            # the hourly catch-up schedule skips the model instead of failing every family
            from genbound_assets.defs.families.automation import backfill_requests
            from genbound_assets.defs.families.resources import GenboundResource

            assert backfill_requests(instance, pg_clean, GenboundResource()) == []
        finally:
            shutil.rmtree(new)
        assert again.run_requests == []
        lines = [ln for ln in caplog.text.splitlines() if "refused model llama-run" in ln]
        assert len(lines) == 1, caplog.text
        assert f"checkpoint-{step}/trainer_state.json: num_input_tokens_seen = {logged:,}" in lines[0]

    engine = pg_clean
    ck = read_frame(engine, "SELECT model, step, status, tokens_seen, n_train_tokens FROM checkpoints")
    assert ck.height == len(HF_STEPS) + len(gpt2_steps) and set(ck["status"]) == {"ok"}
    for r in ck.iter_rows(named=True):        # windows of T+1 with stride T: D = step·B·T
        assert r["n_train_tokens"] == r["tokens_seen"] == r["step"] * USER_B * T
    rows = assert_bounded_at_d_star(engine, "hf_run", {"llama-run": HF_STEPS[1]})
    rows |= assert_bounded_at_d_star(engine, "step_run", {"gpt2-run": s_star})
    # GPT-2 ties its embeddings: the micro profile's quantize_embeddings applies to untied ones,
    # so the tied matrix stays at 16 bits (recorded as applied); the Llama's are quantized
    q = read_frame(engine, "SELECT model, bool_and(quantize_embeddings) AS qe, count(*) AS n FROM "
                   "quantized_models WHERE status = 'ok' GROUP BY model ORDER BY model")
    assert dict(zip(q["model"], q["qe"], strict=True)) == {"gpt2-run": False, "llama-run": True}
    for m, r in rows.items():                 # both runs learned the chain
        assert r["decomposed"]["empirical_risk"] < 0.75 * math.log(V), (m, r)


def test_family_add_warns_when_models_do_not_share_one_step_grid(tmp_path, monkeypatch):
    """Two models of one step-folder family saved at different steps: registered (every request
    still names a real checkpoint), with one warning line naming each model's extra steps."""
    monkeypatch.setenv("GENBOUND_FAMILIES_FILE", str(tmp_path / "families.json"))
    tokens = chain_tokens(40 * USER_B * T + 1).astype(np.uint16)
    np.save(tmp_path / "tokens.npy", tokens)
    for name, steps in (("small", (0, 10, 20)), ("large", (0, 10, 30))):
        model = tiny_gpt2(seed=len(name))
        for s in steps:
            with torch.no_grad():
                model.get_input_embeddings().weight.add_(0.01)
            d = tmp_path / "runs" / name / f"step{s}"
            model.save_pretrained(str(d))
            (d / "genbound.json").write_text(json.dumps({"tokens_seen": s * USER_B * T}))
    out = family_add("ragged", tmp_path / "runs", "--data", tmp_path / "tokens.npy",
                     "--context-length", T)
    warn = [ln for ln in out.splitlines() if "warning" in ln]
    assert len(warn) == 1, out
    assert "do not share one step grid" in warn[0]
    assert "large has step 30 that small lacks" in warn[0] and "small has step 20 that large lacks" in warn[0]
    assert "register each model as its own family" in warn[0]
    from genbound_assets.families.registry import load_families

    assert [s.name for s in load_families()] == ["suite", "ragged"]


# ------------------------------------------------------------------------------ the profile

def _doc_value(v) -> str:
    if isinstance(v, tuple):
        return ", ".join(str(c) for c in v)
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def test_pythia_profile_documented_as_in_code():
    """docs/pythia.md's profile table holds every CertifySettings field with its value in
    pipeline/settings.py PROFILES["pythia"]."""
    import dataclasses

    from genbound_assets.pipeline.settings import PROFILES, CertifySettings

    doc = (Path(__file__).resolve().parents[1] / "docs" / "pythia.md").read_text()
    marker = "<!-- profile-table: pythia -->"
    assert marker in doc
    rows = {}
    for line in doc.split(marker, 1)[1].strip().splitlines():
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1]
    fields = [f.name for f in dataclasses.fields(CertifySettings)]
    assert sorted(rows) == sorted(fields)
    for name in fields:
        want = _doc_value(getattr(PROFILES["pythia"], name))
        assert rows[name] == want, (name, rows[name], want)
