"""Checkpoint sources: one interface over a family of LM checkpoints (sizes × training steps).

* :class:`LocalCheckpointSource` reads a suite written by ``genbound_assets.families.suite``:
  ``<root>/<model>/step<N>/`` with ``checkpoint.json`` (the manifest, written last).  A folder
  without a complete manifest -- a killed write's ``.tmp-step<N>-*`` folder, or a ``step<N>``
  folder whose checkpoint.json is missing or unreadable -- is not a checkpoint and is never
  listed.  Damage to the files of a listed checkpoint is ``integrity.check_checkpoint``'s job
  (it quarantines with a precise reason).
* :class:`PythiaHubSource` serves EleutherAI's Pythia suite (8 sizes × 154 revisions) through
  ``AutoModelForCausalLM.from_pretrained("EleutherAI/pythia-<size>", revision="step<N>")``, or from
  a local folder laid out like the hub (``<local_root>/EleutherAI/pythia-<size>/step<N>/``), or
  from the Hugging Face cache (``HF_HUB_OFFLINE=1`` works once the snapshot is cached).
* A researcher's own run: ``families/user_runs.py`` (Hugging Face Trainer output, step folders).

Every loader goes through ``AutoModelForCausalLM``: any transformers causal LM architecture
(GPT-NeoX, Llama, GPT-2, ...), not only GPT-NeoX.  ``causal_lm_config`` / ``meta_model`` /
``count_params`` read an architecture from its config.json alone (meta device: no memory).

No Dagster and no database here.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genbound_assets.families.suite import MANIFEST_FORMAT, MANIFEST_NAME

__all__ = [
    "ModelInfo",
    "CheckpointRef",
    "FileDigest",
    "CheckpointSource",
    "LocalCheckpointSource",
    "PythiaHubSource",
    "PYTHIA_MODELS",
    "PYTHIA_STEPS",
    "PYTHIA_TOKENS_PER_STEP",
    "PYTHIA_CONTEXT_LENGTH",
    "HUB_RECORD_SUFFIX",
    "hub_file_digests",
    "is_weight_file",
    "select_weight_files",
    "causal_lm_config",
    "meta_model",
    "count_params",
]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    n_params: int                  # total, both (untied) embeddings included
    n_params_non_embedding: int    # total minus input and output embeddings (Pythia's convention)
    vocab_size: int                # logit dimension V (padded)
    context_length: int            # T the model was trained with
    tokens_per_step: int           # tokens_seen = step × tokens_per_step


@dataclass(frozen=True)
class CheckpointRef:
    model: str
    step: int
    tokens_seen: int
    location: str                  # a folder (local) or "<repo>@<revision>" (hub)


@dataclass(frozen=True)
class FileDigest:
    """Expected content of one file: sha256 (hex) and size in bytes (either may be unknown)."""

    sha256: str | None
    size: int | None


def is_weight_file(name: str) -> bool:
    return name.endswith(".safetensors") or (name.endswith(".bin") and name.startswith("pytorch_model"))


def select_weight_files(names: Iterable[str]) -> list[str]:
    """The weight files ``from_pretrained`` would read: the .safetensors files if there are any,
    else the pytorch_model*.bin files.  Sorted."""
    names = sorted(set(names))
    st = [n for n in names if n.endswith(".safetensors")]
    return st if st else [n for n in names if is_weight_file(n)]


def _check_dtype(dtype) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype (e.g. torch.float32), got {dtype!r}")


def _check_attn(attn_implementation) -> None:
    if attn_implementation not in (None, "eager", "sdpa", "flash_attention_2"):
        raise ValueError(
            f"attn_implementation must be 'eager', 'sdpa', 'flash_attention_2' or None, "
            f"got {attn_implementation!r}")


def _from_pretrained(path_or_repo: str, dtype, attn_implementation, device, **kwargs):
    from transformers import AutoModelForCausalLM

    _check_dtype(dtype)
    _check_attn(attn_implementation)
    extra = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    model = AutoModelForCausalLM.from_pretrained(path_or_repo, dtype=dtype, **extra, **kwargs)
    model = model.to(device)
    model.eval()
    return model


def causal_lm_config(raw: Mapping[str, Any], where: str = "config.json"):
    """The transformers config of a causal LM from a config.json dict; ValueError (one line,
    naming ``where``) if its ``model_type`` is missing, unknown to transformers, or not a causal
    LM that ``AutoModelForCausalLM`` can build."""
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} is not a JSON object")
    mt = raw.get("model_type")
    if not isinstance(mt, str) or not mt:
        raise ValueError(f"{where}: no 'model_type' field (not a transformers config.json)")
    if mt not in CONFIG_MAPPING:
        raise ValueError(f"{where}: model_type {mt!r} is unknown to this transformers version")
    if mt not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(f"{where}: model_type {mt!r} is not a causal LM (AutoModelForCausalLM "
                         "cannot build it)")
    try:
        return CONFIG_MAPPING[mt].from_dict(dict(raw))
    except Exception as e:  # config classes validate in many ways
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{where}: invalid {mt} config: {msg}") from None


def meta_model(config):
    """``AutoModelForCausalLM.from_config(config)`` on the meta device (shapes only, no memory)."""
    import logging

    from transformers import AutoModelForCausalLM

    log = logging.getLogger("transformers.configuration_utils")
    level = log.level
    log.setLevel(logging.ERROR)   # e.g. GPT-2's default bos/eos id 50256 outside a tiny vocab
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    finally:
        log.setLevel(level)


def count_params(config) -> tuple[int, int]:
    """(total, non-embedding) parameter counts of a causal LM from its config (meta device).

    total: every parameter once (tied input/output embeddings count once).  non-embedding:
    total minus every ``nn.Embedding`` (token and learned position embeddings) and minus the
    output embedding unless it is tied to the input one: Pythia's convention (N - 2·V·d for its
    untied GPT-NeoX, which has no position embeddings) and Kaplan et al.'s for GPT-2."""
    model = meta_model(config)
    params = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in params.values())
    emb = {id(m.weight): m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    out = model.get_output_embeddings()
    if out is not None and getattr(out, "weight", None) is not None:
        emb[id(out.weight)] = out.weight
    return int(total), int(total - sum(p.numel() for p in emb.values()))


class CheckpointSource(ABC):
    """A family of checkpoints: models (sizes), each with checkpoints at training steps."""

    #: What ``reference_digests`` compares the files against ("manifest", "hub LFS metadata"),
    #: or None when the source has no independent record of its files' hashes (a researcher's
    #: own run): integrity then checks what can be checked without one and says so.
    hash_record: str | None = "independent record"

    @abstractmethod
    def list_models(self) -> list[str]:
        """Model names, smallest first."""

    @abstractmethod
    def model_info(self, model: str) -> ModelInfo:
        """Sizes and training constants of one model."""

    @abstractmethod
    def list_checkpoints(self, model: str) -> list[CheckpointRef]:
        """The model's complete checkpoints, by step."""

    @abstractmethod
    def load_model(self, model: str, step: int, dtype=torch.float32,
                   attn_implementation: str | None = "eager", device="cpu"):
        """A float causal LM (``AutoModelForCausalLM``: GPT-NeoX, Llama, GPT-2, ...) in eval mode."""

    # -- shared helpers ----------------------------------------------------------------------

    def checkpoint(self, model: str, step: int) -> CheckpointRef:
        """The ref of one checkpoint (error names the available steps)."""
        refs = self.list_checkpoints(model)
        for r in refs:
            if r.step == step:
                return r
        avail = ", ".join(str(r.step) for r in refs[:20]) + (" ..." if len(refs) > 20 else "")
        raise ValueError(f"{model} has no complete checkpoint at step {step!r}; steps: {avail or 'none'}")

    def local_dir(self, ref: CheckpointRef) -> Path | None:
        """Folder holding the checkpoint's files on this machine, or None if not on disk."""
        return None

    def incomplete(self, model: str) -> list[tuple[str, str]]:
        """(folder, reason) of checkpoint folders of ``model`` that are not (yet) checkpoints,
        e.g. a write in progress.  Sources without such folders return []."""
        return []

    def final_step(self, model: str) -> int | None:
        """The step training ends at, when the source knows it (None otherwise)."""
        return None

    def reference_digests(self, ref: CheckpointRef, metadata: Any = None) -> dict[str, FileDigest] | None:
        """What the checkpoint's files should be (name -> sha256/size), from an independent
        record (the local manifest; the hub's LFS metadata), or None if there is none.  Raises
        (ValueError, or the hub client's error) when the record is broken or unreachable."""
        return None


# --------------------------------------------------------------------------------------------
# Local suites

_STEP_DIR = re.compile(r"^step(\d+)$")


def read_manifest(folder: Path, model: str | None = None, step: int | None = None) -> tuple[dict | None, str | None]:
    """(manifest, None) if ``folder`` holds a complete manifest consistent with model/step, else
    (None, reason)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None, f"checkpoint folder {folder} does not exist"
    p = folder / MANIFEST_NAME
    if not p.is_file():
        return None, f"missing {MANIFEST_NAME} in {folder} (incomplete or interrupted write)"
    try:
        man = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        return None, f"unreadable {MANIFEST_NAME} in {folder}: {e}"
    if not isinstance(man, dict) or man.get("format") != MANIFEST_FORMAT:
        return None, f"{p} is not a {MANIFEST_FORMAT} manifest"
    files = man.get("files")
    if not isinstance(files, dict) or not files or not all(
            isinstance(v, dict) and isinstance(v.get("sha256"), str) and isinstance(v.get("bytes"), int)
            for v in files.values()):
        return None, f"{p} has no valid 'files' table (name -> sha256, bytes)"
    if not select_weight_files(files):
        return None, f"{p} lists no weight file"
    if model is not None and man.get("model") != model:
        return None, f"{p} is for model {man.get('model')!r}, not {model!r}"
    if step is not None and man.get("step") != step:
        return None, f"{p} is for step {man.get('step')!r}, but the folder is step{step}"
    for k in ("tokens_seen", "n_targets_seen"):
        if isinstance(man.get(k), bool) or not isinstance(man.get(k), int) or man[k] < 0:
            return None, f"{p}: {k} must be a non-negative integer, got {man.get(k)!r}"
    return man, None


class LocalCheckpointSource(CheckpointSource):
    """``<root>/<model>/step<N>/`` checkpoints written by ``suite.train_suite``."""

    hash_record = "manifest"

    def __init__(self, root):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise ValueError(f"checkpoint root {self.root} does not exist or is not a folder")

    def __repr__(self) -> str:
        return f"LocalCheckpointSource({str(self.root)!r})"

    def _scan(self, model: str) -> list[tuple[int, Path, dict]]:
        folder = self.root / model
        out = []
        if not folder.is_dir():
            return out
        for d in folder.iterdir():
            m = _STEP_DIR.match(d.name)
            if not m or not d.is_dir():
                continue  # .tmp-* folders of interrupted writes, stray files
            step = int(m.group(1))
            man, _ = read_manifest(d, model, step)
            if man is not None:
                out.append((step, d, man))
        out.sort(key=lambda t: t[0])
        return out

    def _require(self, model: str) -> list[tuple[int, Path, dict]]:
        if not isinstance(model, str) or not model or "/" in model or model.startswith("."):
            raise ValueError(f"model must be a model folder name, got {model!r}")
        found = self._scan(model)
        if not found:
            raise ValueError(
                f"no model {model!r} with a complete checkpoint under {self.root}; "
                f"models: {self.list_models() or 'none'}")
        return found

    def list_models(self) -> list[str]:
        names = []
        for d in sorted(self.root.iterdir()):
            if d.is_dir() and not d.name.startswith(".") and self._scan(d.name):
                names.append(d.name)
        return sorted(names, key=lambda n: (self._scan(n)[-1][2].get("n_params") or 0, n))

    def model_info(self, model: str) -> ModelInfo:
        step, folder, man = self._require(model)[-1]
        try:
            cfg = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{folder}/config.json is missing or unreadable: {e}") from e
        n, n_ne = man.get("n_params"), man.get("n_params_non_embedding")
        if not isinstance(n, int) or not isinstance(n_ne, int):
            n, n_ne = count_params(causal_lm_config(cfg, f"{folder}/config.json"))
        tps = man.get("tokens_per_step")
        ctx = man.get("context_length", cfg.get("max_position_embeddings"))
        return ModelInfo(name=model, n_params=int(n), n_params_non_embedding=int(n_ne),
                         vocab_size=int(cfg["vocab_size"]), context_length=int(ctx),
                         tokens_per_step=int(tps))

    def list_checkpoints(self, model: str) -> list[CheckpointRef]:
        return [CheckpointRef(model=model, step=s, tokens_seen=int(man["tokens_seen"]), location=str(d))
                for s, d, man in self._require(model)]

    def final_step(self, model: str) -> int | None:
        found = self._scan(model)
        total = found[-1][2].get("total_steps") if found else None
        return int(total) if isinstance(total, int) and not isinstance(total, bool) else None

    def incomplete(self, model: str) -> list[tuple[str, str]]:
        """``step<N>`` folders without a complete manifest and ``.tmp-step<N>-*`` folders of a
        write in progress (or killed), with the reason they are not listed."""
        folder = self.root / model
        out: list[tuple[str, str]] = []
        if not folder.is_dir():
            return out
        for d in sorted(folder.iterdir()):
            if not d.is_dir():
                continue
            if d.name.startswith(".tmp-step"):
                out.append((str(d), "a checkpoint write in progress (or interrupted): no manifest yet"))
                continue
            m = _STEP_DIR.match(d.name)
            if m:
                man, reason = read_manifest(d, model, int(m.group(1)))
                if man is None:
                    out.append((str(d), reason))
        return out

    def manifest(self, model: str, step: int) -> dict:
        """The checkpoint's manifest (n_targets_seen = its D, is_d_star, ...)."""
        ref = self.checkpoint(model, step)
        man, reason = read_manifest(Path(ref.location), model, step)
        if man is None:
            raise ValueError(reason)
        return man

    def local_dir(self, ref: CheckpointRef) -> Path | None:
        return Path(ref.location)

    def reference_digests(self, ref: CheckpointRef, metadata: Any = None) -> dict[str, FileDigest] | None:
        """From the manifest; raises ValueError naming the problem if it is incomplete."""
        man, reason = read_manifest(Path(ref.location), ref.model, ref.step)
        if man is None:
            raise ValueError(reason)
        return {k: FileDigest(v["sha256"], v["bytes"]) for k, v in man["files"].items()}

    def load_model(self, model: str, step: int, dtype=torch.float32,
                   attn_implementation: str | None = "eager", device="cpu"):
        ref = self.checkpoint(model, step)
        return _from_pretrained(ref.location, dtype, attn_implementation, device)


# --------------------------------------------------------------------------------------------
# Pythia on the Hugging Face hub

# EleutherAI/pythia README and configs (see shared/reference/pythia.json).
PYTHIA_MODELS: dict[str, dict[str, int]] = {
    "70m": dict(total_params=70426624, non_embedding_params=18915328, layers=6, d_model=512, heads=8, padded_vocab=50304),
    "160m": dict(total_params=162322944, non_embedding_params=85056000, layers=12, d_model=768, heads=12, padded_vocab=50304),
    "410m": dict(total_params=405334016, non_embedding_params=302311424, layers=24, d_model=1024, heads=16, padded_vocab=50304),
    "1b": dict(total_params=1011781632, non_embedding_params=805736448, layers=16, d_model=2048, heads=8, padded_vocab=50304),
    "1.4b": dict(total_params=1414647808, non_embedding_params=1208602624, layers=24, d_model=2048, heads=16, padded_vocab=50304),
    "2.8b": dict(total_params=2775208960, non_embedding_params=2517652480, layers=32, d_model=2560, heads=32, padded_vocab=50304),
    "6.9b": dict(total_params=6857302016, non_embedding_params=6444163072, layers=32, d_model=4096, heads=32, padded_vocab=50432),
    "12b": dict(total_params=11846072320, non_embedding_params=11327027200, layers=36, d_model=5120, heads=40, padded_vocab=50688),
}
# step0; step1, 2, 4, ..., 512; step1000 .. step143000 every 1000 (main == step143000): 154.
PYTHIA_STEPS: tuple[int, ...] = (0, *(2 ** i for i in range(10)), *range(1000, 143001, 1000))
PYTHIA_TOKENS_PER_STEP = 2_097_152   # 1024 sequences × 2048 tokens
PYTHIA_CONTEXT_LENGTH = 2048
HUB_RECORD_SUFFIX = ".hub.json"     # <mirror>/EleutherAI/pythia-<size>/step<N>.hub.json
_WEIGHT_PATTERNS = ("config.json", "*.safetensors", "model.safetensors.index.json")
_BIN_PATTERNS = ("config.json", "pytorch_model*.bin", "pytorch_model.bin.index.json")


def hub_file_digests(metadata) -> dict[str, FileDigest]:
    """File name -> FileDigest from hub metadata, without downloading anything.

    ``metadata``: what ``HfApi().model_info(repo, revision=..., files_metadata=True)`` returns
    (its ``.siblings``), a list of ``RepoSibling`` objects, or the raw API json (a dict with
    "siblings", or a list of {"rfilename", "size", "lfs": {"sha256", "size"}} dicts).  LFS files
    (the weights) carry their sha256; plain git files get sha256 None.
    """
    sibs = getattr(metadata, "siblings", None)
    if sibs is None and isinstance(metadata, Mapping):
        sibs = metadata.get("siblings")
    if sibs is None and isinstance(metadata, list | tuple):
        sibs = metadata
    if sibs is None:
        raise ValueError(
            "hub metadata has no file list (siblings); call model_info(..., files_metadata=True)")
    out: dict[str, FileDigest] = {}
    for s in sibs:
        get = s.get if isinstance(s, Mapping) else (lambda k, _s=s: getattr(_s, k, None))
        name = get("rfilename")
        if not isinstance(name, str):
            raise ValueError(f"hub sibling without an rfilename: {s!r}")
        lfs = get("lfs")
        if lfs is not None:
            lget = lfs.get if isinstance(lfs, Mapping) else (lambda k, _l=lfs: getattr(_l, k, None))
            sha, size = lget("sha256"), lget("size")
        else:
            sha, size = None, get("size")
        out[name] = FileDigest(sha256=sha, size=size)
    return out


class PythiaHubSource(CheckpointSource):
    """EleutherAI's Pythia: 8 sizes (70m..12b) × 154 revisions, 2,097,152 tokens per step.

    Loading order: ``local_root/EleutherAI/pythia-<size>/step<N>/`` if it holds a config.json;
    else, with ``endpoint``, ``snapshot_download(..., endpoint=endpoint)`` then from_pretrained
    of that folder; else ``AutoModelForCausalLM.from_pretrained("EleutherAI/pythia-<size>",
    revision="step<N>", cache_dir=cache_dir)`` (honours HF_HUB_OFFLINE / the HF cache).

    ``sizes`` restricts the models listed.  ``mirror_only=True`` (needs ``local_root``) serves a
    local mirror and nothing else: the models are the ``pythia-<size>`` folders it holds (any
    size name; one not in :data:`PYTHIA_MODELS` gets its parameter counts from its config.json),
    the checkpoints are the ``step<N>`` folders holding a config.json, and nothing is fetched.
    ``tokens_per_step`` / ``context_length`` default to Pythia's (for runs stored this way with
    other constants).
    """

    hash_record = "hub LFS metadata"

    def __init__(self, cache_dir=None, endpoint: str | None = None, local_root=None,
                 deduped: bool = False, hub_api=None, sizes=None, mirror_only: bool = False,
                 tokens_per_step: int | None = None, context_length: int | None = None):
        self.cache_dir = None if cache_dir is None else str(Path(cache_dir).expanduser())
        self.endpoint = endpoint
        self.local_root = None if local_root is None else Path(local_root).expanduser()
        self.deduped = bool(deduped)
        self._hub_api = hub_api
        self.mirror_only = bool(mirror_only)
        self.tokens_per_step = PYTHIA_TOKENS_PER_STEP if tokens_per_step is None else tokens_per_step
        self.context_length = PYTHIA_CONTEXT_LENGTH if context_length is None else context_length
        for k in ("tokens_per_step", "context_length"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{k} must be a positive integer, got {v!r}")
        if self.mirror_only and (self.local_root is None or not (self.local_root / "EleutherAI").is_dir()):
            raise ValueError(f"Pythia mirror {self.local_root}: no EleutherAI/ folder (expected "
                             f"<root>/EleutherAI/pythia-<size>/step<N>/)")
        available = self._mirror_sizes() if self.mirror_only else list(PYTHIA_MODELS)
        if sizes is None:
            self._sizes = available
        else:
            if isinstance(sizes, str) or not all(isinstance(x, str) for x in sizes):
                raise ValueError(f"sizes must be a list of size names like '70m', got {sizes!r}")
            missing = [x for x in sizes if x not in available]
            if missing:
                where = f"in the mirror {self.local_root}" if self.mirror_only else "in Pythia"
                raise ValueError(f"Pythia size(s) {missing} not {where}; sizes: "
                                 f"{', '.join(available) or 'none'}")
            self._sizes = [x for x in available if x in sizes]

    def __repr__(self) -> str:
        return (f"PythiaHubSource(cache_dir={self.cache_dir!r}, endpoint={self.endpoint!r}, "
                f"local_root={None if self.local_root is None else str(self.local_root)!r}"
                f"{', mirror_only=True' if self.mirror_only else ''})")

    def _suffix(self) -> str:
        return "-deduped" if self.deduped else ""

    def _size(self, model: str) -> str:
        if isinstance(model, str):
            size = model.removeprefix("pythia-").removesuffix(self._suffix())
            if size in self._sizes and model in (size, f"pythia-{size}{self._suffix()}"):
                return size
        raise ValueError(f"unknown Pythia model {model!r}; models: {', '.join(self.list_models())}")

    # -- local mirror (mirror_only) -------------------------------------------------------------

    def _mirror_steps(self, size: str) -> list[int]:
        folder = self.local_root / "EleutherAI" / f"pythia-{size}{self._suffix()}"
        if not folder.is_dir():
            return []
        return sorted(int(m.group(1)) for d in folder.iterdir()
                      if (m := _STEP_DIR.match(d.name)) and (d / "config.json").is_file())

    def _mirror_sizes(self) -> list[str]:
        """Sizes with at least one checkpoint in the mirror, smallest first."""
        found = []
        for d in (self.local_root / "EleutherAI").iterdir():
            if not d.is_dir() or not d.name.startswith("pythia-"):
                continue
            size = d.name.removeprefix("pythia-")
            if self.deduped != size.endswith("-deduped"):
                continue
            size = size.removesuffix("-deduped")
            if size and self._mirror_steps(size):
                found.append(size)
        return sorted(found, key=lambda z: (self._param_counts(z)[0], z))

    def _param_counts(self, size: str) -> tuple[int, int]:
        if size in PYTHIA_MODELS:
            return PYTHIA_MODELS[size]["total_params"], PYTHIA_MODELS[size]["non_embedding_params"]
        from transformers import GPTNeoXConfig

        from genbound_assets.families.suite import count_params

        return count_params(GPTNeoXConfig.from_dict(self._mirror_config(size)))

    def _mirror_config(self, size: str) -> dict:
        steps = self._mirror_steps(size)
        path = self.local_root / "EleutherAI" / f"pythia-{size}{self._suffix()}" / f"step{steps[-1]}" / "config.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{path} is unreadable: {e}") from e

    def repo_id(self, model: str) -> str:
        return f"EleutherAI/pythia-{self._size(model)}{self._suffix()}"

    @staticmethod
    def _check_step(step) -> int:
        if isinstance(step, bool) or not isinstance(step, int) or step not in PYTHIA_STEPS:
            raise ValueError(
                f"Pythia has no revision step{step}; revisions are step0, step1..step512 (powers "
                f"of two) and step1000..step143000 (every 1000)")
        return step

    def list_models(self) -> list[str]:
        return [f"pythia-{s}{self._suffix()}" for s in self._sizes]

    def model_info(self, model: str) -> ModelInfo:
        size = self._size(model)
        if size in PYTHIA_MODELS:
            vocab = PYTHIA_MODELS[size]["padded_vocab"]
        else:
            vocab = int(self._mirror_config(size)["vocab_size"])
        n, n_ne = self._param_counts(size)
        return ModelInfo(name=f"pythia-{size}{self._suffix()}", n_params=n,
                         n_params_non_embedding=n_ne, vocab_size=vocab,
                         context_length=self.context_length, tokens_per_step=self.tokens_per_step)

    def list_checkpoints(self, model: str) -> list[CheckpointRef]:
        name = self.model_info(model).name
        if self.mirror_only:
            size = self._size(model)
            return [CheckpointRef(model=name, step=s, tokens_seen=s * self.tokens_per_step,
                                  location=str(self._local_folder(model, s)))
                    for s in self._mirror_steps(size)]
        repo = self.repo_id(model)
        return [CheckpointRef(model=name, step=s, tokens_seen=s * self.tokens_per_step,
                              location=f"{repo}@step{s}") for s in PYTHIA_STEPS]

    def checkpoint(self, model: str, step: int) -> CheckpointRef:
        if self.mirror_only:
            return super().checkpoint(model, step)
        step = self._check_step(step)
        return CheckpointRef(model=self.model_info(model).name, step=step,
                             tokens_seen=step * self.tokens_per_step,
                             location=f"{self.repo_id(model)}@step{step}")

    def _local_folder(self, model: str, step: int) -> Path | None:
        if self.local_root is None:
            return None
        folder = self.local_root / self.repo_id(model) / f"step{step}"
        return folder if (folder / "config.json").is_file() else None

    def local_dir(self, ref: CheckpointRef) -> Path | None:
        folder = self._local_folder(ref.model, ref.step)
        if folder is not None or self.mirror_only:
            return folder
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(self.repo_id(ref.model), "config.json",
                                     cache_dir=self.cache_dir, revision=f"step{ref.step}")
        return Path(hit).parent if isinstance(hit, str) else None

    def hub_metadata(self, model: str, step: int):
        """The hub's file metadata for one revision (LFS sha256 of every weight file); network."""
        step = self._check_step(step)
        api = self._hub_api
        if api is None:
            from huggingface_hub import HfApi

            api = HfApi(endpoint=self.endpoint)
        return api.model_info(self.repo_id(model), revision=f"step{step}", files_metadata=True)

    def hub_record_path(self, model: str, step: int) -> Path | None:
        """``<local_root>/EleutherAI/pythia-<size>/step<N>.hub.json``: the hub's file metadata of
        one revision saved next to its mirrored folder (docs/pythia.md, "What to download")."""
        if self.local_root is None:
            return None
        return self.local_root / self.repo_id(model) / f"step{int(step)}{HUB_RECORD_SUFFIX}"

    def reference_digests(self, ref: CheckpointRef, metadata: Any = None) -> dict[str, FileDigest] | None:
        """The hub's LFS sha256 and size of each file: from ``metadata`` when given, else from the
        saved ``step<N>.hub.json`` record when there is one, else (not ``mirror_only``) from the
        hub.  A mirror never calls the hub: without a record it raises, naming the file it
        looked for (integrity then quarantines the checkpoint)."""
        if metadata is None:
            rec = self.hub_record_path(ref.model, ref.step)
            if rec is not None and rec.is_file():
                try:
                    return hub_file_digests(json.loads(rec.read_text()))
                except (OSError, ValueError) as e:
                    raise ValueError(f"{rec}: unreadable hub record: {e}") from None
            if self.mirror_only:
                raise ValueError(f"no hub record {rec} (a mirror never calls the hub: save the "
                                 "revision's LFS metadata there, docs/pythia.md section 3)")
            metadata = self.hub_metadata(ref.model, ref.step)
        return hub_file_digests(metadata)

    def final_step(self, model: str) -> int | None:
        """step143000 for Pythia's own sizes (the hub's ``main``); unknown for other sizes
        stored in the mirror layout."""
        return PYTHIA_STEPS[-1] if self._size(model) in PYTHIA_MODELS else None

    def load_model(self, model: str, step: int, dtype=torch.float32,
                   attn_implementation: str | None = "eager", device="cpu"):
        step = self.checkpoint(model, step).step if self.mirror_only else self._check_step(step)
        _check_dtype(dtype)
        _check_attn(attn_implementation)
        folder = self._local_folder(model, step)
        if folder is not None:
            return _from_pretrained(str(folder), dtype, attn_implementation, device)
        repo, revision = self.repo_id(model), f"step{step}"
        if self.endpoint is not None:
            from huggingface_hub import snapshot_download

            path = snapshot_download(repo, revision=revision, cache_dir=self.cache_dir,
                                     endpoint=self.endpoint, allow_patterns=list(_WEIGHT_PATTERNS))
            if not any(is_weight_file(p.name) for p in Path(path).iterdir()):
                path = snapshot_download(repo, revision=revision, cache_dir=self.cache_dir,
                                         endpoint=self.endpoint, allow_patterns=list(_BIN_PATTERNS))
            return _from_pretrained(path, dtype, attn_implementation, device)
        return _from_pretrained(repo, dtype, attn_implementation, device,
                                revision=revision, cache_dir=self.cache_dir)
