"""A researcher's own training run as a checkpoint family (docs/your-run.md).

Two folder layouts, each a :class:`~genbound_assets.families.sources.CheckpointSource`:

* :class:`HFTrainerSource`: a Hugging Face ``Trainer`` output dir, ``checkpoint-<step>/``
  folders holding the model in ``save_pretrained`` format and ``trainer_state.json``
  (``global_step``; ``num_input_tokens_seen`` when the run tracked it) and ``training_args.bin``.
* :class:`StepFoldersSource`: a plain folder of ``step<N>/`` folders in ``save_pretrained``
  format, each optionally with a ``genbound.json`` sidecar ``{"tokens_seen": ...}``.

A family root is either one run (it holds the checkpoint folders: one model, named after the
root folder) or several runs of different sizes (one sub-folder per model).  Any transformers
causal LM loads (``AutoModelForCausalLM``).

**The data contract** (the bound is about the tokens each checkpoint trained on, in order):
the run read one token array in order as windows of T+1 tokens with stride T (window c =
tokens[c·T : c·T+T+1]: T inputs, T targets), B windows per optimizer step, so checkpoint
``step`` trained on windows [0, step·B) and has seen ``tokens_seen = step·B·T`` tokens of the
stream (the stream position it reached; the unit the suite and Pythia use).  Evidence for it:

* ``num_input_tokens_seen`` (Trainer, when tracked): each window is T+1 input ids, so it must
  be ``step·B·(T+1)``; ``tokens_seen = num_input_tokens_seen · T / (T+1)``.  It also gives B
  when the user does not.
* ``genbound.json`` (step folders): ``tokens_seen`` as defined above.
* else the user's ``tokens_per_step`` (or B·T): ``tokens_seen = step · tokens_per_step``.

Counts that contradict each other or the contract are refused with one line naming the file
and the field (:class:`RunError`).

**Integrity** (``integrity.check_checkpoint``): these sources keep no independent record of the
files' hashes (``hash_record = None``), so a silently corrupted file cannot be caught by its
hash; every other check runs (files readable, safetensors lengths, shapes vs config.json for
the model class, finite weights, byte-identical steps) and the report records
``hash_record = integrity.NO_HASH_RECORD``.

No Dagster and no database here.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genbound_assets.data.order import ArrayWindows, WindowOrder

from .sources import (
    CheckpointRef,
    CheckpointSource,
    FileDigest,
    ModelInfo,
    _from_pretrained,
    causal_lm_config,
    count_params,
    select_weight_files,
)

__all__ = [
    "RunError",
    "HFTrainerSource",
    "StepFoldersSource",
    "USER_RUN_KINDS",
    "TRAINER_STATE",
    "TRAINING_ARGS",
    "SIDECAR",
    "make_user_source",
    "open_token_data",
    "open_user_run",
    "validate_user_run",
    "RunCheck",
    "check_model_name",
    "read_training_args",
    "weights_complete",
    "tokenizer_vocab_size",
]

TRAINER_STATE = "trainer_state.json"
TRAINING_ARGS = "training_args.bin"
SIDECAR = "genbound.json"
# the partition-key rule of defs/families/partitions.check_model_key (no '|', ',' or spaces)
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RunError(ValueError):
    """A run that cannot be registered or read as it is: one line naming the file and field."""


def check_model_name(name: str, where: Path) -> str:
    """Model names become partition keys and rows of the ``models`` table."""
    if not _MODEL_NAME.match(name):
        raise RunError(f"{where}: model folder name {name!r} must match [A-Za-z0-9][A-Za-z0-9._-]"
                       "{0,127} (it names the model's partitions); rename the folder")
    return name


def _read_json(path: Path, what: str = "") -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path}: missing{what}") from None
    except (OSError, ValueError) as e:
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RunError(f"{path}: unreadable JSON: {msg}") from None


def _text(cfg):
    """The text part of a config (itself for a plain causal LM)."""
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def _nonneg_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


# --------------------------------------------------------------------------------------------
# files


def weights_complete(folder: Path) -> str | None:
    """None when ``folder`` holds config.json and complete weights in save_pretrained format,
    else why not: a sharded checkpoint needs every shard its index names; a .safetensors file
    must be as long as its own header says (a write still in progress is shorter)."""
    from .integrity import safetensors_required_size

    if not (folder / "config.json").is_file():
        return f"no config.json in {folder}"
    names = {p.name for p in folder.iterdir() if p.is_file()}
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if index in names:
            doc = _read_json(folder / index)
            wm = doc.get("weight_map") if isinstance(doc, dict) else None
            if not isinstance(wm, dict) or not wm:
                return f"{folder / index}: no 'weight_map'"
            absent = sorted(set(map(str, wm.values())) - names)
            if absent:
                return f"{folder / index} names shard {absent[0]}, which is missing"
    weights = select_weight_files(names)
    if not weights:
        return f"no model.safetensors or pytorch_model.bin in {folder}"
    for n in weights:
        if n.endswith(".safetensors"):
            try:
                need = safetensors_required_size(folder / n)
            except (OSError, ValueError) as e:
                return f"{folder / n}: {e}"
            if (folder / n).stat().st_size < need:
                return f"{folder / n} is shorter than its header says (still being written?)"
    return None


def tokenizer_vocab_size(folder: Path) -> tuple[int, Path] | None:
    """(tokens incl. added tokens, file) of a tokenizer saved in ``folder`` (tokenizer.json, or
    a GPT-2 style vocab.json + added_tokens.json), or None when there is none."""
    tj = folder / "tokenizer.json"
    if tj.is_file():
        from tokenizers import Tokenizer

        try:
            return Tokenizer.from_file(str(tj)).get_vocab_size(with_added_tokens=True), tj
        except Exception as e:  # tokenizers raises a bare Exception
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise RunError(f"{tj}: unreadable tokenizer: {msg}") from None
    vj = folder / "vocab.json"
    if vj.is_file():
        vocab = _read_json(vj)
        if not isinstance(vocab, dict):
            raise RunError(f"{vj}: expected a token -> id object")
        ids = set(vocab.values())
        aj = folder / "added_tokens.json"
        if aj.is_file():
            added = _read_json(aj)
            if isinstance(added, dict):
                ids |= set(added.values())
        return len(ids), vj
    return None


class _Stub:
    """Stands in for every class a pickle names: records arguments and state, runs nothing."""

    def __init__(self, *args, **kwargs):
        self._args = args

    def __setstate__(self, state):
        self._state = state


class _NoCodeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):  # never imports: every global becomes an inert stub
        return type(name, (_Stub,), {"_where": f"{module}.{name}"})

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("tensor storage in training arguments")


def read_training_args(path: Path) -> dict[str, Any] | None:
    """The fields of a Trainer's ``training_args.bin`` (``torch.save`` of TrainingArguments),
    read *without executing the pickle*: no module is imported and no class is built, every
    object is an inert stub, so only plain values (str, int, bool, ...) are usable.  None when
    the file is absent or not in that format."""
    if not path.is_file():
        return None
    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                return None
            obj = _NoCodeUnpickler(io.BytesIO(z.read(name))).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError,
            AttributeError, IndexError, KeyError):
        return None
    state = getattr(obj, "_state", None)
    return dict(state) if isinstance(state, dict) else None


# --------------------------------------------------------------------------------------------
# sources


class _UserRunSource(CheckpointSource):
    """Shared logic of the two layouts; subclasses define the folder pattern and token counts."""

    hash_record = None          # no independent record of the files' hashes (module docstring)
    kind: str = ""
    _pattern: re.Pattern

    def __init__(self, root, context_length: int | None = None,
                 windows_per_step: int | None = None, tokens_per_step: int | None = None):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise RunError(f"{self.root}: no such folder")
        for k, v in (("context_length", context_length), ("windows_per_step", windows_per_step),
                     ("tokens_per_step", tokens_per_step)):
            if v is not None and (not _nonneg_int(v) or v < 1):
                raise RunError(f"{k} must be a positive integer, got {v!r}")
        self.context_length = context_length
        self.windows_per_step = windows_per_step
        self.tokens_per_step = tokens_per_step
        T, B, N = context_length, windows_per_step, tokens_per_step
        if T and B and N and N != B * T:
            raise RunError(f"tokens_per_step {N:,} != windows_per_step × context_length = "
                           f"{B} × {T} = {B * T:,} (a step reads B windows of T new tokens)")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.root)!r}, T={self.context_length}, "
                f"B={self.windows_per_step}, tokens_per_step={self.tokens_per_step})")

    # -- layout ---------------------------------------------------------------------------------

    def _ckpt_dirs(self, folder: Path) -> list[tuple[int, Path]]:
        out = []
        for d in folder.iterdir():
            m = self._pattern.match(d.name)
            if m and d.is_dir():
                out.append((int(m.group(1)), d))
        return sorted(out)

    def model_dirs(self) -> dict[str, Path]:
        """Model name -> run folder: the root itself if it holds checkpoint folders, else its
        sub-folders that do."""
        if self._ckpt_dirs(self.root):
            return {self.root.name: self.root}
        return {d.name: d for d in sorted(self.root.iterdir())
                if d.is_dir() and not d.name.startswith(".") and self._ckpt_dirs(d)}

    def _incomplete_reason(self, step: int, folder: Path) -> str | None:
        return weights_complete(folder)

    def scan(self, model: str) -> tuple[list[tuple[int, Path]], list[tuple[str, str]]]:
        """(complete checkpoints as (step, folder), (folder, reason) of the checkpoint folders
        that are not complete yet)."""
        run = self.model_dirs().get(model)
        if run is None:
            return [], []
        ok, bad = [], []
        for step, d in self._ckpt_dirs(run):
            why = self._incomplete_reason(step, d)
            if why is None:
                ok.append((step, d))
            else:
                bad.append((str(d), why))
        return ok, bad

    def incomplete(self, model: str) -> list[tuple[str, str]]:
        """(folder, reason) of checkpoint folders that are not complete yet (a write in
        progress: no trainer_state.json yet, a shard missing, a weight file still short)."""
        return self.scan(model)[1]

    def _require(self, model: str) -> list[tuple[int, Path]]:
        if not isinstance(model, str) or model not in self.model_dirs():
            raise RunError(f"no model {model!r} under {self.root}; models: "
                           f"{', '.join(self.model_dirs()) or 'none'}")
        ok, bad = self.scan(model)
        if not ok:
            raise RunError(f"{self.model_dirs()[model]}: no complete checkpoint"
                           + (f" ({bad[0][1]})" if bad else ""))
        return ok

    # -- token counts ---------------------------------------------------------------------------

    def _tokens_seen(self, step: int, folder: Path) -> int:
        raise NotImplementedError

    def _from_tokens_per_step(self, step: int, folder: Path, missing: str) -> int:
        N = self.tokens_per_step
        if N is None and self.windows_per_step and self.context_length:
            N = self.windows_per_step * self.context_length
        if N is None:
            raise RunError(f"{missing}; pass --tokens-per-step (or --windows-per-step with "
                           "--context-length)")
        return step * N

    def _check_contract(self, step: int, tokens_seen: int, where: str) -> int:
        """tokens_seen must be step·B·T when B and T are known."""
        T, B = self.context_length, self.windows_per_step
        if T and B and tokens_seen != step * B * T:
            raise RunError(f"{where} = {tokens_seen:,}, but step {step} × windows_per_step {B} × "
                           f"T {T} = {step * B * T:,}")
        return tokens_seen

    # -- CheckpointSource -----------------------------------------------------------------------

    def list_models(self) -> list[str]:
        names = [m for m in self.model_dirs() if self.scan(m)[0]]

        def size(m):
            try:
                return self.model_info(m).n_params
            except (RunError, ValueError):
                return 0
        return sorted(names, key=lambda m: (size(m), m))

    def config(self, model: str) -> tuple[Any, Path]:
        """(transformers config, config.json path) of the model's latest complete checkpoint."""
        step, folder = self._require(model)[-1]
        path = folder / "config.json"
        return causal_lm_config(_read_json(path), str(path)), path

    def model_info(self, model: str) -> ModelInfo:
        cfg, _ = self.config(model)
        n, n_ne = count_params(cfg)
        text = _text(cfg)
        T = self.context_length or getattr(text, "max_position_embeddings", None)
        if not T:
            raise RunError(f"{model}: context length unknown (pass --context-length)")
        tps = self.tokens_per_step or (
            self.windows_per_step * self.context_length
            if self.windows_per_step and self.context_length else None)
        if tps is None:
            refs = [r for r in self.list_checkpoints(model) if r.step > 0]
            if refs and refs[-1].tokens_seen % refs[-1].step == 0:
                tps = refs[-1].tokens_seen // refs[-1].step
        if tps is None:
            raise RunError(f"{model}: tokens per step unknown (pass --tokens-per-step)")
        return ModelInfo(name=model, n_params=n, n_params_non_embedding=n_ne,
                         vocab_size=int(text.vocab_size), context_length=int(T),
                         tokens_per_step=int(tps))

    def list_checkpoints(self, model: str) -> list[CheckpointRef]:
        """Complete checkpoints by step; RunError (one line, naming the file and field) when a
        complete checkpoint's token count cannot be read or contradicts the contract."""
        return [CheckpointRef(model=model, step=s, tokens_seen=self._tokens_seen(s, d), location=str(d))
                for s, d in self._require(model)]

    def local_dir(self, ref: CheckpointRef) -> Path | None:
        return Path(ref.location)

    def reference_digests(self, ref: CheckpointRef, metadata: Any = None) -> dict[str, FileDigest] | None:
        return None   # no independent record of the files' hashes: see the module docstring

    def load_model(self, model: str, step: int, dtype=torch.float32,
                   attn_implementation: str | None = "eager", device="cpu"):
        ref = self.checkpoint(model, step)
        return _from_pretrained(ref.location, dtype, attn_implementation, device)

    # -- helpers for registration ---------------------------------------------------------------

    def derive_windows_per_step(self, model: str) -> tuple[int | None, str]:
        """(B, where it came from) read from the run itself, or (None, why not)."""
        return None, "the run records no token counts"


class HFTrainerSource(_UserRunSource):
    """A Hugging Face ``Trainer`` output dir: ``checkpoint-<step>/`` folders (or one sub-folder
    per model holding them).  A checkpoint is complete once ``trainer_state.json`` exists (the
    Trainer writes it after the weights) with ``global_step`` equal to the folder's step, and
    its config.json and weights are complete (``weights_complete``)."""

    kind = "hf_trainer"
    _pattern = re.compile(r"^checkpoint-(\d+)$")

    def _state(self, folder: Path) -> dict:
        """trainer_state.json (cached per file version: a long run's log_history is large)."""
        p = folder / TRAINER_STATE
        try:
            st = p.stat()
            key = (str(p), st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        cache = self.__dict__.setdefault("_state_cache", {})
        if key is not None and key in cache:
            return cache[key]
        doc = _read_json(p, " (the Trainer writes it last: incomplete checkpoint)")
        if not isinstance(doc, dict):
            raise RunError(f"{p}: expected a JSON object")
        doc = {k: doc.get(k) for k in ("global_step", "num_input_tokens_seen", "max_steps")}
        if key is not None:
            cache[key] = doc
        return doc

    def _incomplete_reason(self, step: int, folder: Path) -> str | None:
        if not (folder / TRAINER_STATE).is_file():
            return f"no {TRAINER_STATE} in {folder} (the Trainer writes it last)"
        return weights_complete(folder)

    def logged_tokens(self, step: int, folder: Path) -> int | None:
        """``num_input_tokens_seen`` when the run tracked it, else None.  The Trainer always
        writes the field; it stays 0 unless ``include_num_input_tokens_seen`` was on, so 0 after
        step 0 means "not tracked"."""
        st = self._state(folder)
        p = folder / TRAINER_STATE
        gs = st.get("global_step")
        if not _nonneg_int(gs):
            raise RunError(f"{p}: global_step must be a non-negative integer, got {gs!r}")
        if gs != step:
            raise RunError(f"{p}: global_step {gs} does not match the folder name checkpoint-{step}")
        v = st.get("num_input_tokens_seen")
        if v is None or (v == 0 and step > 0):
            return None
        if not _nonneg_int(v):
            raise RunError(f"{p}: num_input_tokens_seen must be a non-negative integer, got {v!r}")
        return v

    def _tokens_seen(self, step: int, folder: Path) -> int:
        p = folder / TRAINER_STATE
        logged = self.logged_tokens(step, folder)
        if logged is None:
            return self._from_tokens_per_step(
                step, folder, f"{p}: num_input_tokens_seen is not logged (0 at global_step {step}: "
                "TrainingArguments(include_num_input_tokens_seen=True) was off)")
        T = self.context_length
        if not T:
            raise RunError(f"{p}: num_input_tokens_seen needs the context length T to convert "
                           "(pass --context-length)")
        if logged % (T + 1):
            hint = (" (it is a multiple of T: the run read blocks of T tokens, e.g. run_clm's "
                    "group_texts, which are not genbound's windows of T+1 with stride T)"
                    if logged % T == 0 else "")
            raise RunError(f"{p}: num_input_tokens_seen = {logged:,} is not a multiple of T+1 = "
                           f"{T + 1} (each window is T+1 input ids){hint}")
        windows = logged // (T + 1)
        B = self.windows_per_step
        if B and windows != step * B:
            raise RunError(f"{p}: num_input_tokens_seen = {logged:,} = {windows:,} windows of T+1 = "
                           f"{T + 1}, but step {step} × windows_per_step {B} = {step * B:,}")
        tokens = windows * T
        if self.tokens_per_step and tokens != step * self.tokens_per_step:
            raise RunError(f"{p}: num_input_tokens_seen = {logged:,} means {tokens:,} tokens seen, "
                           f"but step {step} × tokens_per_step {self.tokens_per_step:,} = "
                           f"{step * self.tokens_per_step:,}")
        return tokens

    def derive_windows_per_step(self, model: str) -> tuple[int | None, str]:
        T = self.context_length
        for step, folder in reversed(self._require(model)):
            if step == 0:
                continue
            logged = self.logged_tokens(step, folder)
            if logged is None or not T:
                break
            windows = logged // (T + 1)
            if logged % (T + 1) or windows % step:
                self._tokens_seen(step, folder)   # raises the precise message
                raise RunError(f"{folder / TRAINER_STATE}: num_input_tokens_seen = {logged:,} is "
                               f"not step {step} × B × (T+1) for any whole B")
            return windows // step, f"{folder / TRAINER_STATE} num_input_tokens_seen"
        return None, "trainer_state.json logs no num_input_tokens_seen"

    def final_step(self, model: str) -> int | None:
        """``max_steps`` of the latest checkpoint's trainer_state.json: the step training ends
        at (the Trainer sets it from max_steps or epochs x steps per epoch)."""
        ok, _ = self.scan(model)
        if not ok:
            return None
        v = self._state(ok[-1][1]).get("max_steps")
        return v if _nonneg_int(v) and v > 0 else None

    def training_args(self, model: str) -> tuple[dict[str, Any] | None, Path]:
        """The latest checkpoint's training arguments (``read_training_args``) and their file."""
        step, folder = self._require(model)[-1]
        return read_training_args(folder / TRAINING_ARGS), folder / TRAINING_ARGS


class StepFoldersSource(_UserRunSource):
    """A plain folder of ``step<N>/`` checkpoints in save_pretrained format (or one sub-folder per
    model holding them).  tokens_seen: the ``genbound.json`` sidecar's ``tokens_seen`` when there
    is one, else step × tokens_per_step (or step × B × T).  Write each step folder under another
    name and rename it when complete (or write the sidecar last): a folder whose safetensors
    file is still shorter than its header says is not listed."""

    kind = "step_folders"
    _pattern = re.compile(r"^step(\d+)$")

    def _sidecar(self, folder: Path) -> int | None:
        p = folder / SIDECAR
        if not p.exists():
            return None
        doc = _read_json(p)
        v = doc.get("tokens_seen") if isinstance(doc, dict) else None
        if not _nonneg_int(v):
            raise RunError(f"{p}: tokens_seen must be a non-negative integer, got {v!r}")
        return v

    def _tokens_seen(self, step: int, folder: Path) -> int:
        v = self._sidecar(folder)
        if v is None:
            return self._from_tokens_per_step(step, folder, f"{folder}: no {SIDECAR} with tokens_seen")
        if self.tokens_per_step and v != step * self.tokens_per_step:
            raise RunError(f"{folder / SIDECAR}: tokens_seen = {v:,}, but step {step} × "
                           f"tokens_per_step {self.tokens_per_step:,} = {step * self.tokens_per_step:,}")
        return self._check_contract(step, v, f"{folder / SIDECAR}: tokens_seen")

    def derive_windows_per_step(self, model: str) -> tuple[int | None, str]:
        T = self.context_length
        for step, folder in reversed(self._require(model)):
            if step == 0:
                continue
            v = self._sidecar(folder)
            if v is None or not T:
                break
            if v % (step * T):
                raise RunError(f"{folder / SIDECAR}: tokens_seen = {v:,} is not step {step} × B × "
                               f"T {T} for any whole B")
            return v // (step * T), f"{folder / SIDECAR} tokens_seen"
        return None, f"no {SIDECAR} with tokens_seen"


USER_RUN_KINDS: dict[str, type[_UserRunSource]] = {
    "hf_trainer": HFTrainerSource, "step_folders": StepFoldersSource}


def make_user_source(kind: str, root, context_length=None, windows_per_step=None,
                     tokens_per_step=None) -> _UserRunSource:
    if kind not in USER_RUN_KINDS:
        raise RunError(f"kind must be one of {', '.join(USER_RUN_KINDS)}, got {kind!r}")
    return USER_RUN_KINDS[kind](root, context_length, windows_per_step, tokens_per_step)


# --------------------------------------------------------------------------------------------
# training data


def _megatron_prefix(p: Path) -> Path | None:
    if p.suffix in (".bin", ".idx"):
        return p.with_suffix("")
    if p.with_name(p.name + ".bin").is_file() and p.with_name(p.name + ".idx").is_file():
        return p
    return None


def open_token_data(path, context_length: int, windows_per_step: int) -> WindowOrder:
    """The training windows of a run: a ``.npy``/``.npz`` token array (``ArrayWindows``: windows
    of T+1 tokens with stride T) or a Megatron ``.bin``/``.idx`` pair (``prefix``, ``prefix.bin``
    or ``prefix.idx``; ``data.megatron.MegatronWindows``: window c = stored sequence c, each of
    T+1 tokens), B windows per step."""
    p = Path(path).expanduser()
    prefix = _megatron_prefix(p)
    if prefix is not None:
        for suf in (".bin", ".idx"):
            f = prefix.with_name(prefix.name + suf)
            if not f.is_file():
                raise RunError(f"{f}: missing (a Megatron dataset is a .bin/.idx pair)")
        try:
            from genbound_assets.data.megatron import MegatronWindows
        except ImportError:
            raise RunError(f"{p}: reading Megatron .bin/.idx needs genbound_assets.data.megatron, "
                           "which this checkout lacks; convert the tokens to .npy") from None
        try:   # each stored sequence must hold T+1 tokens (Pythia's preshuffled layout)
            return MegatronWindows(prefix, context_length, windows_per_step)
        except ValueError as e:
            raise RunError(str(e) if str(prefix) in str(e) else f"{p}: {e}") from None
    try:
        return ArrayWindows.from_file(p, context_length, windows_per_step)
    except ValueError as e:
        raise RunError(str(e)) from None


def _max_token_id(order: WindowOrder) -> int | None:
    """The data's largest token id: ``order.max_token_id()``, or one chunked pass over its flat
    token array (ArrayWindows ``tokens``, MegatronWindows ``dataset.tokens``)."""
    fn = getattr(order, "max_token_id", None)
    if callable(fn):
        return int(fn())
    toks = getattr(order, "tokens", None)
    if toks is None:
        toks = getattr(getattr(order, "dataset", None), "tokens", None)
    if not isinstance(toks, np.ndarray) or not toks.size:
        return None
    chunk = 1 << 24
    return max(int(np.asarray(toks[i:i + chunk]).max()) for i in range(0, len(toks), chunk))


def open_user_run(kind: str, checkpoints, data, options: dict[str, Any]) -> tuple[_UserRunSource, WindowOrder]:
    """(source, order) of a registered user run (what ``registry.open_family`` returns for the
    kinds hf_trainer and step_folders).  ``options``: context_length, windows_per_step,
    optional tokens_per_step, as ``validate_user_run`` resolved them."""
    unknown = set(options) - {"context_length", "windows_per_step", "tokens_per_step"}
    if unknown:
        raise RunError(f"unknown option(s) {sorted(unknown)} for kind {kind}")
    T, B = options.get("context_length"), options.get("windows_per_step")
    if not T or not B:
        raise RunError(f"kind {kind} needs options context_length and windows_per_step "
                       "(register it with `genbound family add`)")
    if not data:
        raise RunError(f"kind {kind} needs the training data (--data)")
    src = make_user_source(kind, checkpoints, T, B, options.get("tokens_per_step"))
    return src, open_token_data(data, T, B)


# --------------------------------------------------------------------------------------------
# validation before registering


@dataclass
class RunCheck:
    """What ``validate_user_run`` found: the options to store and a summary to print."""

    options: dict[str, Any]
    source: _UserRunSource
    order: WindowOrder
    checkpoints: dict[str, list[CheckpointRef]]
    notes: list[str] = field(default_factory=list)


def validate_user_run(kind: str, path, data, context_length: int | None,
                      windows_per_step: int | None = None, tokens_per_step: int | None = None
                      ) -> RunCheck:
    """Every check ``genbound family add`` makes for a user run, in order; the first failure
    raises RunError (one line naming the file and field):

    1. the folder exists and holds at least one complete checkpoint; model folder names are
       valid partition names; each latest config.json is a causal LM transformers can build;
    2. T (``context_length``) given and <= the config's max_position_embeddings; the data given;
    3. B: given, or read from the run (trainer_state.json num_input_tokens_seen, genbound.json
       tokens_seen), or tokens_per_step / T; the same for every model;
    4. a token count for every complete checkpoint, consistent with step × B × T;
    5. Trainer runs: training_args.bin says train_sampling_strategy 'sequential' and its per-
       process batch (per_device_train_batch_size × gradient_accumulation_steps) divides B;
    6. a saved tokenizer's vocabulary fits config.json vocab_size;
    7. the data opens, every token id < vocab_size (max id, one pass), and it holds the windows
       of every model's latest checkpoint (step × B windows of T+1 with stride T).
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise RunError(f"{root}: no such folder")
    probe = make_user_source(kind, root, context_length, windows_per_step, tokens_per_step)
    models = list(probe.model_dirs())
    if not models:
        pat = "checkpoint-<step>/" if kind == "hf_trainer" else "step<N>/"
        raise RunError(f"{root}: no {pat} folders (neither in it nor in its sub-folders)")
    for m in models:
        check_model_name(m, probe.model_dirs()[m])
    complete = {m: probe.scan(m) for m in models}
    if not any(ok for ok, _ in complete.values()):
        bad = next((b[0][1] for _, b in complete.values() if b), "")
        raise RunError(f"{root}: no complete checkpoint ({bad})")
    notes = [f"{m}: {len(bad)} incomplete checkpoint folder(s) not listed ({bad[0][1]})"
             for m, (ok, bad) in complete.items() if bad]
    models = [m for m in models if complete[m][0]]
    configs = {m: probe.config(m) for m in models}

    if context_length is None:
        raise RunError(f"{root}: --context-length is required for kind {kind} (T: targets per "
                       "training window)")
    T = int(context_length)
    for cfg, cpath in configs.values():
        mp = getattr(_text(cfg), "max_position_embeddings", None)
        if isinstance(mp, int) and T > mp:
            raise RunError(f"{cpath}: max_position_embeddings {mp} < context length T = {T}")
    if not data:
        raise RunError(f"{root}: --data is required for kind {kind} (the training tokens, in order)")

    B, how = windows_per_step, "--windows-per-step"
    if B is None:
        found = {}
        for m in models:
            b, why = probe.derive_windows_per_step(m)
            if b is not None:
                found[m] = (b, why)
        if found:
            vals = {b for b, _ in found.values()}
            if len(vals) > 1:
                (m1, (b1, w1)), (m2, (b2, w2)) = sorted(found.items(), key=lambda kv: kv[1][0])[:2]
                raise RunError(f"{w2} gives windows_per_step {b2} but {w1} gives {b1}: one family "
                               "reads one data order (register the runs as separate families)")
            B, how = found[models[0]] if models[0] in found else next(iter(found.values()))
            if B < 1:
                raise RunError(f"{how}: implies windows_per_step {B}")
        elif tokens_per_step is not None:
            if tokens_per_step % T:
                raise RunError(f"tokens_per_step {tokens_per_step:,} is not a multiple of T = {T} "
                               "(a step reads B windows of T new tokens)")
            B, how = tokens_per_step // T, "--tokens-per-step / --context-length"
        else:
            raise RunError(f"{root}: windows per step unknown: no --windows-per-step, no "
                           "--tokens-per-step, and the run logs no token counts ("
                           + ("trainer_state.json num_input_tokens_seen" if kind == "hf_trainer"
                              else f"{SIDECAR} tokens_seen") + ")")
    src = make_user_source(kind, root, T, int(B), tokens_per_step)
    refs = {m: src.list_checkpoints(m) for m in models}   # step 4: raises on any bad count

    if kind == "hf_trainer":
        for m in models:
            args, apath = src.training_args(m)
            if args is None:
                notes.append(f"{m}: {apath.name} unreadable or absent: sampling order not checked")
                continue
            strat = args.get("train_sampling_strategy")
            if isinstance(strat, str) and strat != "sequential":
                raise RunError(f"{apath}: train_sampling_strategy = {strat!r}: the Trainer "
                               "shuffled the windows; train with train_sampling_strategy="
                               "'sequential' so the data order is the array's order")
            if strat is None:
                notes.append(f"{m}: {apath.name} has no train_sampling_strategy (transformers < 5?): "
                             "sampling order not checked")
            per, ga = args.get("per_device_train_batch_size"), args.get("gradient_accumulation_steps")
            if _nonneg_int(per) and _nonneg_int(ga) and per * ga and B % (per * ga):
                raise RunError(f"{apath}: per_device_train_batch_size {per} × "
                               f"gradient_accumulation_steps {ga} = {per * ga} does not divide "
                               f"windows_per_step {B} (from {how})")

    for m, (cfg, cpath) in configs.items():
        V = int(_text(cfg).vocab_size)
        step, folder = src.scan(m)[0][-1]
        for place in (folder, src.model_dirs()[m]):
            tok = tokenizer_vocab_size(place)
            if tok is not None:
                size, tpath = tok
                if size > V:
                    raise RunError(f"{tpath}: tokenizer vocabulary {size:,} exceeds vocab_size "
                                   f"{V:,} of {cpath}")
                break

    order = open_token_data(data, T, int(B))
    mx = _max_token_id(order)
    if mx is None:
        notes.append(f"{data}: max token id not checked (the reader exposes no max_token_id)")
    else:
        for cfg, cpath in configs.values():
            V = int(_text(cfg).vocab_size)
            if mx >= V:
                raise RunError(f"{data}: token id {mx:,} >= vocab_size {V:,} of {cpath}")
    for m in models:
        last = refs[m][-1]
        need = last.step * int(B)
        if need > order.n_windows:
            have = getattr(order, "tokens", None)
            ntok = f"{len(have):,} tokens = " if have is not None else ""
            raise RunError(f"{data}: holds {ntok}{order.n_windows:,} windows of T+1 = {T + 1} "
                           f"(stride {T}), but {m} checkpoint step {last.step} trained on "
                           f"{last.step} × {B} = {need:,} windows (tokens_seen {last.tokens_seen:,})")
    options: dict[str, Any] = {"context_length": T, "windows_per_step": int(B)}
    if tokens_per_step is not None:
        options["tokens_per_step"] = int(tokens_per_step)
    notes.insert(0, f"windows_per_step {B} from {how}")
    return RunCheck(options, src, order, refs, notes)
