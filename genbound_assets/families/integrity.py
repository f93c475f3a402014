"""Checkpoint integrity: fingerprints, and quarantine of damaged or duplicated checkpoints.

A checkpoint is *quarantined* (never used silently) with a precise reason when

* a file is missing, truncated, of the wrong size, or its sha256 differs from the independent
  record (the local manifest, or the hub's LFS sha256 from ``HfApi().model_info(...,
  files_metadata=True)``, compared without downloading the weights);
* config.json or a weight file is unreadable, or config.json contradicts the manifest;
* a tensor's shape contradicts config.json, a tensor the config implies is missing, or a tensor
  is not one the model class has (``AutoModelForCausalLM.from_config(config.json)`` built on
  the meta device: any transformers causal LM, GPT-NeoX, Llama, GPT-2, ...; a tied output
  embedding may be stored under either name or once);
* a weight holds NaN or inf;
* its weights (or one weight file) are byte-identical to another step of the same model -- a
  real Pythia defect: EleutherAI/pythia #205 (pythia-2.8b: 86 of 154 branches serve final-era
  weights), #195, #206 (pythia-12b step50000/58000 serve the final model's first shard).

A source without an independent record of its files' hashes (``source.hash_record is None``: a
researcher's own training run) cannot have a silently corrupted file detected by hash; its
checkpoints get every other check (files readable, safetensors lengths, shapes vs config.json,
finite weights, duplicates across steps) and the report says ``hash_record = NO_HASH_RECORD``.

Fingerprints: ``fingerprint`` = "sha256:" + sha256 over the weight files' (name, sha256) lines,
the same whether the sha256s come from local files or from the hub's LFS metadata; and
``tensor_fingerprint`` = "tensors:" + sha256 over every tensor's (name, dtype, shape, bytes),
independent of file layout.  Reports are plain dataclasses (status 'ok' | 'quarantined').
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from genbound_assets.families.sources import (
    CheckpointRef,
    CheckpointSource,
    FileDigest,
    LocalCheckpointSource,
    read_manifest,
    select_weight_files,
)
from genbound_assets.families.suite import config_hash, sha256_file

__all__ = [
    "IntegrityReport",
    "check_checkpoint",
    "check_model",
    "files_fingerprint",
    "tensor_fingerprint",
    "safetensors_required_size",
    "LEGACY_BUFFERS",
    "NO_HASH_RECORD",
]

# Buffers older GPT-NeoX checkpoints (Pythia's) carry that current transformers recomputes.
# (GPT-2 checkpoints saved by older transformers carry the causal-mask buffers attn.bias and
# attn.masked_bias the same way.)
LEGACY_BUFFERS = (".attention.bias", ".attention.masked_bias", ".attention.rotary_emb.inv_freq",
                  ".rotary_emb.inv_freq", ".attn.bias", ".attn.masked_bias")
# Saved (original) tensor names -> in-memory names of transformers' GPTNeoXForCausalLM.
_ALIASES = {"embed_out.weight": "lm_head.weight"}
NO_HASH_RECORD = "none: no independent hash record"


@dataclass(frozen=True)
class IntegrityReport:
    model: str
    step: int
    ok: bool
    reason: str | None                      # None when ok
    fingerprint: str | None                 # "sha256:<hex>" over weight files (name, sha256)
    tensor_fingerprint: str | None = None   # "tensors:<hex>" when the tensors were read
    file_sha256: dict[str, str] = field(default_factory=dict)  # weight file -> sha256
    hash_record: str | None = None          # what file hashes were compared against
                                            # ("manifest", "hub LFS metadata", NO_HASH_RECORD)

    @property
    def status(self) -> str:
        return "ok" if self.ok else "quarantined"


def files_fingerprint(file_sha256: Mapping[str, str]) -> str:
    """'sha256:' + sha256 over the weight files' "name<TAB>sha256" lines, sorted by name."""
    names = select_weight_files(file_sha256)
    if not names:
        raise ValueError("no weight files to fingerprint")
    h = hashlib.sha256(b"genbound-weights-v1\n")
    for n in names:
        h.update(f"{n}\t{file_sha256[n]}\n".encode())
    return "sha256:" + h.hexdigest()


def safetensors_required_size(path) -> int:
    """Bytes a .safetensors file must have according to its own header (raises ValueError if
    the header itself is unreadable)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path.name} has {size} bytes, too short for a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ValueError(f"{path.name}: header claims {n} bytes but the file has {size}")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise ValueError(f"{path.name}: unreadable safetensors header: {e}") from e
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v]
    return 8 + n + (max(ends) if ends else 0)


def _iter_tensors(path: Path):
    """(name, torch tensor) of one weight file."""
    import torch

    if path.name.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            for k in sorted(f.keys()):
                yield k, f.get_tensor(k)
    else:
        sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        for k in sorted(sd):
            yield k, sd[k]


def _tensor_bytes(t) -> bytes:
    return t.detach().contiguous().reshape(-1).view(__import__("torch").uint8).numpy().tobytes()


def tensor_fingerprint(folder, weight_files: Iterable[str] | None = None) -> str:
    """'tensors:' + sha256 over every tensor's (name, dtype, shape, raw bytes), sorted by name."""
    folder = Path(folder)
    names = select_weight_files(weight_files if weight_files is not None
                                else [p.name for p in folder.iterdir()])
    items = {}
    for n in names:
        for k, t in _iter_tensors(folder / n):
            items[k] = t
    h = hashlib.sha256(b"genbound-tensors-v1\n")
    for k in sorted(items):
        t = items[k]
        h.update(f"{k}\t{t.dtype}\t{list(t.shape)}\n".encode())
        h.update(_tensor_bytes(t))
    return "tensors:" + h.hexdigest()


@dataclass(frozen=True)
class _Expected:
    shapes: dict[str, tuple[int, ...]]   # state_dict name -> shape (tied aliases included)
    aliases: dict[str, str]              # tied alias -> canonical name
    class_name: str
    prefix: str                          # base_model_prefix ("gpt_neox", "model", "transformer")


def _expected_shapes(config) -> _Expected:
    """The tensors a checkpoint of ``config`` holds: the state_dict of the model class
    ``AutoModelForCausalLM`` builds from it, on the meta device."""
    from genbound_assets.families.sources import meta_model

    model = meta_model(config)
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            aliases[n] = first[id(p)]
        else:
            first[id(p)] = n
    return _Expected({k: tuple(v.shape) for k, v in model.state_dict().items()}, aliases,
                     type(model).__name__, str(getattr(model, "base_model_prefix", "") or ""))


class _Fault(Exception):
    pass


def _verify_files(folder: Path, names: Iterable[str], digests: Mapping[str, FileDigest] | None,
                  origin: str) -> dict[str, str]:
    """sha256 of each named file, checked against ``digests``; raises _Fault."""
    out = {}
    for n in sorted(names):
        p = folder / n
        if not p.is_file():
            raise _Fault(f"missing file {n} in {folder}")
        size = p.stat().st_size
        exp = digests.get(n) if digests else None
        if exp is not None and exp.size is not None and size != exp.size:
            if size < exp.size:
                raise _Fault(f"truncated file {n}: {size} of {exp.size} bytes ({origin})")
            raise _Fault(f"size mismatch for {n}: {size} bytes, {origin} says {exp.size}")
        if n.endswith(".safetensors"):
            try:
                need = safetensors_required_size(p)
            except ValueError as e:
                raise _Fault(f"unreadable weight file {n}: {e}") from None
            if size < need:
                raise _Fault(f"truncated file {n}: {size} of {need} bytes (its safetensors header)")
        sha = sha256_file(p)
        if exp is not None and exp.sha256 is not None and sha != exp.sha256:
            raise _Fault(f"sha256 mismatch for {n}: expected {exp.sha256} ({origin}), found {sha}")
        out[n] = sha
    return out


def _check_tensors(folder: Path, weight_names: list[str], config) -> str:
    """Shapes vs config, NaN/inf; returns the tensor fingerprint.  Raises _Fault."""
    import torch

    exp = _expected_shapes(config)
    expected = exp.shapes
    seen: dict[str, tuple[str, Any]] = {}
    for n in weight_names:
        try:
            for k, t in _iter_tensors(folder / n):
                seen[k] = (n, t)
        except Exception as e:  # safetensors / torch.load raise many types
            raise _Fault(f"unreadable weight file {n}: {type(e).__name__}: {e}") from None
    found = set()
    for k in sorted(seen):
        n, t = seen[k]
        key = _ALIASES.get(k, k)
        if key not in expected and exp.prefix and f"{exp.prefix}.{key}" in expected:
            key = f"{exp.prefix}.{key}"   # saved from the base model (hub GPT-2: "h.0...")
        if key not in expected:
            if k.endswith(LEGACY_BUFFERS):
                continue
            raise _Fault(f"unexpected tensor {k} in {n}: a {exp.class_name} with config.json has "
                         "no such weight")
        found.add(exp.aliases.get(key, key))
        if tuple(t.shape) != expected[key]:
            raise _Fault(f"shape mismatch: {k} is {list(t.shape)} in {n} but config.json implies "
                         f"{list(expected[key])}")
        if t.is_floating_point():
            bad = ~torch.isfinite(t)
            if bool(bad.any()):
                n_nan = int(torch.isnan(t).sum())
                n_inf = int(bad.sum()) - n_nan
                raise _Fault(f"non-finite weights: {k} has {n_nan} NaN and {n_inf} inf values ({n})")
    missing = sorted(set(expected) - set(exp.aliases) - found)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise _Fault(f"missing tensor {missing[0]}{more}: config.json implies it, no weight file has it")
    h = hashlib.sha256(b"genbound-tensors-v1\n")
    for k in sorted(seen):
        t = seen[k][1]
        h.update(f"{k}\t{t.dtype}\t{list(t.shape)}\n".encode())
        h.update(_tensor_bytes(t))
    return "tensors:" + h.hexdigest()


def _known_items(known) -> list[tuple[str, int, set[str], dict[str, str]]]:
    """(model, step, fingerprints, weight-file sha256s) of previously checked checkpoints."""
    out = []
    if known is None:
        return out
    if isinstance(known, Mapping):
        for key, v in known.items():
            if not (isinstance(key, tuple) and len(key) == 2):
                raise ValueError(f"known_fingerprints keys must be (model, step) pairs, got {key!r}")
            out.append((key[0], int(key[1]), *_fps_of(v)))
    else:
        for r in known:
            if not isinstance(r, IntegrityReport):
                raise ValueError(f"known_fingerprints items must be IntegrityReports, got {type(r).__name__}")
            out.append((r.model, r.step, *_fps_of(r)))
    return out


def _fps_of(v) -> tuple[set[str], dict[str, str]]:
    if isinstance(v, IntegrityReport):
        return {f for f in (v.fingerprint, v.tensor_fingerprint) if f}, dict(v.file_sha256)
    if isinstance(v, str):
        return {v}, {}
    if isinstance(v, Iterable):
        return {str(x) for x in v}, {}
    raise ValueError(f"a known fingerprint must be a string or an IntegrityReport, got {v!r}")


def _duplicate_reason(model: str, step: int, fps: set[str], files: Mapping[str, str], known) -> str | None:
    for m, s, kfps, kfiles in _known_items(known):
        if m != model or s == step:
            continue
        common = fps & kfps
        if common:
            return (f"weights byte-identical to step{s} of {model} ({sorted(common)[0]}): a "
                    "duplicated checkpoint, cf. EleutherAI/pythia issues #205/#206")
        for name, sha in sorted(files.items()):
            if kfiles.get(name) == sha:
                return (f"weight file {name} is byte-identical to {name} of step{s} of {model} "
                        f"(sha256 {sha}): a duplicated shard, cf. EleutherAI/pythia issue #206")
    return None


def check_checkpoint(
    ref: CheckpointRef,
    source: CheckpointSource,
    known_fingerprints: Mapping[tuple[str, int], Any] | Iterable[IntegrityReport] | None = None,
    hub_metadata: Any = None,
    require_reference: bool | None = None,
    check_tensors: bool = True,
) -> IntegrityReport:
    """Verify one checkpoint; never raises for a damaged checkpoint (returns quarantined).

    ``known_fingerprints``: earlier reports of the same family, as {(model, step): fingerprint
    string or IntegrityReport} or an iterable of IntegrityReports; a byte-identical match with
    another step of the same model quarantines this one.  ``hub_metadata``: the hub's
    model_info(files_metadata=True) object (or its siblings list) for this revision; fetched via
    the source when None.  ``require_reference``: quarantine when no independent record of the
    expected hashes can be had (else skip that comparison); None (default): required exactly
    when the source keeps one (``source.hash_record`` is not None: the suite's manifest, the
    hub), so a researcher's own run is checked without one and its report says
    ``hash_record == NO_HASH_RECORD``.  Without local files (a hub
    checkpoint not downloaded) only the metadata is checked: weight files listed, LFS sha256
    present, not a duplicate.
    """
    record = getattr(source, "hash_record", "independent record")
    if require_reference is None:
        require_reference = record is not None
    origin = record or NO_HASH_RECORD
    used = {"record": origin}

    def quarantine(reason, fp=None, tfp=None, files=None):
        return IntegrityReport(ref.model, ref.step, False, reason, fp, tfp, dict(files or {}),
                               used["record"])

    def passed(fp, tfp, files):
        return IntegrityReport(ref.model, ref.step, True, None, fp, tfp, dict(files), used["record"])

    try:
        digests = source.reference_digests(ref, hub_metadata)
    except Exception as e:
        if isinstance(source, LocalCheckpointSource) or require_reference:
            what = "" if isinstance(source, LocalCheckpointSource) else f"no hub metadata for {ref.location}: "
            return quarantine(f"{what}{e}")
        digests = None
    if digests is None:
        used["record"] = NO_HASH_RECORD
        if require_reference:
            return quarantine(f"no independent record of {ref.location}'s file hashes")
    folder = source.local_dir(ref)
    if folder is not None and not Path(folder).is_dir():
        return quarantine(f"checkpoint folder {folder} does not exist")

    if folder is None:  # metadata-only (hub, not downloaded)
        weights = select_weight_files(digests or {})
        if not weights:
            return quarantine(f"the hub lists no weight files for {ref.location}")
        shas = {}
        for n in weights:
            if not digests[n].sha256:
                return quarantine(f"hub metadata for {ref.location} has no LFS sha256 for {n}")
            shas[n] = digests[n].sha256
        fp = files_fingerprint(shas)
        dup = _duplicate_reason(ref.model, ref.step, {fp}, shas, known_fingerprints)
        if dup:
            return quarantine(dup, fp, None, shas)
        return passed(fp, None, shas)

    folder = Path(folder)
    try:
        if digests is not None:
            weights = select_weight_files(digests)
            if not weights:
                raise _Fault(f"{origin} for {ref.location} lists no weight files")
            to_verify = set(digests) if isinstance(source, LocalCheckpointSource) else set(weights)
        else:
            weights = select_weight_files(p.name for p in folder.iterdir())
            if not weights:
                raise _Fault(f"no weight files in {folder}")
            to_verify = set(weights)
        shas = _verify_files(folder, to_verify, digests, origin)
        file_sha = {n: shas[n] for n in weights}
        fp = files_fingerprint(file_sha)
        cfg_path = folder / "config.json"
        if not cfg_path.is_file():
            raise _Fault(f"missing file config.json in {folder}")
        try:
            raw = json.loads(cfg_path.read_text())
        except Exception as e:
            raise _Fault(f"unreadable config.json: {type(e).__name__}: {e}") from None
        try:
            from genbound_assets.families.sources import causal_lm_config

            config = causal_lm_config(raw)
        except ValueError as e:
            raise _Fault(str(e)) from None
        if isinstance(source, LocalCheckpointSource):
            man, _ = read_manifest(folder, ref.model, ref.step)
            if man is not None and man.get("config_hash") != config_hash(config):
                raise _Fault("config.json does not match the manifest's config_hash "
                             f"({man.get('config_hash')})")
        tfp = _check_tensors(folder, weights, config) if check_tensors else None
    except _Fault as f:
        return quarantine(str(f))
    fps = {fp} | ({tfp} if tfp else set())
    dup = _duplicate_reason(ref.model, ref.step, fps, file_sha, known_fingerprints)
    if dup:
        return quarantine(dup, fp, tfp, file_sha)
    return passed(fp, tfp, file_sha)


def check_model(
    source: CheckpointSource,
    model: str,
    hub_metadata: Mapping[int, Any] | None = None,
    steps: Iterable[int] | None = None,
    require_reference: bool | None = None,
    check_tensors: bool = True,
) -> list[IntegrityReport]:
    """Check every checkpoint of ``model`` (or ``steps``), then quarantine *every* member of a
    group of byte-identical steps (which of them is genuine cannot be told from the bytes).

    ``hub_metadata``: {step: model_info object} to avoid network calls (hub sources)."""
    refs = source.list_checkpoints(model)
    if steps is not None:
        wanted = set(steps)
        refs = [r for r in refs if r.step in wanted]
    reports = [check_checkpoint(r, source, None, (hub_metadata or {}).get(r.step),
                                require_reference, check_tensors) for r in refs]
    # group duplicates among reports that passed
    owners: dict[str, list[int]] = {}
    for i, r in enumerate(reports):
        if not r.ok:
            continue
        keys = {r.fingerprint, r.tensor_fingerprint} | {f"file:{n}:{s}" for n, s in r.file_sha256.items()}
        for k in keys:
            if k:
                owners.setdefault(k, []).append(i)
    out = list(reports)
    # whole-checkpoint matches first, so their (stronger) reason wins over a shared shard
    for k, idx in sorted(owners.items(), key=lambda kv: kv[0].startswith("file:")):
        if len(idx) < 2:
            continue
        for i in idx:
            if not out[i].ok:
                continue
            others = [f"step{reports[j].step}" for j in idx if j != i]
            shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            if k.startswith("file:"):
                name = k.split(":", 2)[1]
                why = (f"weight file {name} is byte-identical to the same file of {shown} of {model}: "
                       "a duplicated shard, cf. EleutherAI/pythia issue #206")
            else:
                why = (f"weights byte-identical to {shown} of {model} ({k}): a duplicated "
                       "checkpoint, cf. EleutherAI/pythia issues #205/#206")
            out[i] = replace(out[i], ok=False, reason=why)
    return out
