"""Checkpoint families genbound watches: the registry file and how a family is opened.

A *family* is a set of models saved on one checkpoint schedule (Pythia's 8 sizes × 154 steps;
the local suite's sizes), with the training data they read in one order.  Each family gets its
own Dagster assets and partitions (docs/dagster.md: a family's models share a step grid, so its
model × step partitions hold no phantom checkpoint).

The registry is a JSON file, ``$GENBOUND_FAMILIES_FILE`` or ``<data dir>/families.json``:

    {"families": [{"name": "suite", "kind": "suite", "checkpoints": "/…/suite",
                   "data": null, "profile": null, "options": {}},
                  {"name": "pythia", "kind": "pythia", "checkpoints": "/…/pythia-mirror",
                   "data": "/…/pile-standard/document", "options": {"sizes": ["70m"]}}, ...]}

Without the file the registry holds one family, ``suite``, at ``<data dir>/suite`` (what
``genbound demo`` trains).  ``genbound family add`` writes the file.  No Dagster, no database.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from genbound_assets.data.order import StreamWindows, WindowOrder

from .sources import CheckpointSource, LocalCheckpointSource
from .suite import default_data_dir, load_data_order

__all__ = ["FAMILY_KINDS", "FamilySpec", "Family", "families_file", "load_families",
           "save_families", "add_family", "default_family", "open_family", "check_family_name"]

FAMILIES_FILE_ENV = "GENBOUND_FAMILIES_FILE"
FAMILY_KINDS = ("suite", "pythia", "hf_trainer", "step_folders")   # extended as sources are added
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


def check_family_name(name) -> str:
    """A family name becomes part of Dagster asset keys and partition names."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"family name must match [a-z][a-z0-9_]{{0,30}} (it names Dagster assets "
                         f"and partitions), got {name!r}")
    return name


@dataclass(frozen=True)
class FamilySpec:
    name: str
    kind: str
    checkpoints: str                 # checkpoint root folder
    data: str | None = None          # training tokens (None: the kind's default place)
    profile: str | None = None       # settings profile (pipeline/settings.py); None: $GENBOUND_PROFILE or demo
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        check_family_name(self.name)
        if self.kind not in FAMILY_KINDS:
            raise ValueError(f"family {self.name}: kind must be one of {', '.join(FAMILY_KINDS)}, "
                             f"got {self.kind!r}")
        if not isinstance(self.checkpoints, str) or not self.checkpoints:
            raise ValueError(f"family {self.name}: 'checkpoints' must be a path")
        if not isinstance(self.options, dict):
            raise ValueError(f"family {self.name}: 'options' must be an object")

    def __hash__(self) -> int:   # options is a dict: hash its canonical JSON
        return hash((self.name, self.kind, self.checkpoints, self.data, self.profile,
                     json.dumps(self.options, sort_keys=True, default=str)))


@dataclass(frozen=True)
class Family:
    """An opened family: where its checkpoints are and the order its data was trained in."""

    spec: FamilySpec
    source: CheckpointSource
    order: WindowOrder

    @property
    def name(self) -> str:
        return self.spec.name


def families_file() -> Path:
    env = os.environ.get(FAMILIES_FILE_ENV, "").strip()
    return Path(env).expanduser() if env else default_data_dir() / "families.json"


def default_family() -> FamilySpec:
    return FamilySpec(name="suite", kind="suite", checkpoints=str(default_data_dir() / "suite"))


def load_families(path: str | os.PathLike | None = None) -> list[FamilySpec]:
    """The registered families (the default suite family when no registry file exists)."""
    p = Path(path) if path is not None else families_file()
    if not p.exists():
        return [default_family()]
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"family registry {p} is unreadable: {e}") from e
    items = doc.get("families") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ValueError(f"family registry {p}: expected {{\"families\": [...]}}")
    specs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"family registry {p}: entry {i} is not an object")
        unknown = set(item) - {f for f in FamilySpec.__dataclass_fields__}
        if unknown:
            raise ValueError(f"family registry {p}: entry {i} has unknown field(s) {sorted(unknown)}")
        lacking = [f for f in ("name", "kind", "checkpoints") if f not in item]
        if lacking:
            raise ValueError(f"family registry {p}: entry {i} lacks field(s) {lacking}")
        try:
            specs.append(FamilySpec(**item))
        except TypeError as e:
            raise ValueError(f"family registry {p}: entry {i}: {e}") from e
        except ValueError as e:
            raise ValueError(f"family registry {p}: {e}") from e
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"family registry {p}: duplicate family name(s) {dup}")
    return specs


def save_families(specs: list[FamilySpec], path: str | os.PathLike | None = None) -> Path:
    from .suite import write_json_atomic

    p = Path(path) if path is not None else families_file()
    p.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(p, {"families": [asdict(s) for s in specs]})
    return p


def add_family(spec: FamilySpec, path: str | os.PathLike | None = None, replace: bool = False) -> Path:
    """Register ``spec`` (refuses a taken name unless ``replace``)."""
    specs = load_families(path)
    if any(s.name == spec.name for s in specs):
        if not replace:
            raise ValueError(f"a family named {spec.name!r} is already registered")
        specs = [s for s in specs if s.name != spec.name]
    return save_families([*specs, spec], path)


def open_family(spec: FamilySpec) -> Family:
    """Resolve a spec to its checkpoint source and training-window order (reads the data)."""
    if spec.kind == "suite":
        root = Path(spec.checkpoints).expanduser()
        from genbound_assets.data.stream import load_stream

        order_doc = load_data_order(root)
        stream_path = Path(spec.data).expanduser() if spec.data else root / "stream.npz"
        stream = load_stream(stream_path, expected_hash=order_doc.get("stream_sha256"))
        order = StreamWindows(stream, int(order_doc["context_length"]), int(order_doc["batch_size"]))
        return Family(spec, LocalCheckpointSource(root), order)
    if spec.kind == "pythia":
        return _open_pythia(spec)
    if spec.kind in ("hf_trainer", "step_folders"):   # a researcher's own run (user_runs.py)
        from .user_runs import open_user_run

        source, order = open_user_run(spec.kind, spec.checkpoints, spec.data, spec.options)
        return Family(spec, source, order)
    raise ValueError(f"family {spec.name}: no opener for kind {spec.kind!r}")


# -- pythia ------------------------------------------------------------------------------------
# checkpoints: a local mirror in hub layout (<root>/EleutherAI/pythia-<size>[-deduped]/step<N>/),
# or PYTHIA_HUB for the live hub / HF cache.  data: the preshuffled Pile's Megatron prefix
# (.../document for document.bin + document.idx).  docs/pythia.md.
PYTHIA_HUB = "hf://EleutherAI"
PYTHIA_OPTIONS = {"sizes", "deduped", "sequence_length", "sequences_per_step", "cache_dir"}


def _open_pythia(spec: FamilySpec) -> Family:
    from genbound_assets.data.megatron import (
        PYTHIA_SEQUENCE_LENGTH,
        PYTHIA_SEQUENCES_PER_STEP,
        MegatronWindows,
    )

    from .sources import PythiaHubSource

    opts = spec.options
    unknown = sorted(set(opts) - PYTHIA_OPTIONS)
    if unknown:
        raise ValueError(f"family {spec.name}: unknown pythia option(s) {unknown}; options: "
                         f"{sorted(PYTHIA_OPTIONS)}")
    if not spec.data:
        raise ValueError(f"family {spec.name}: kind pythia needs data = the preshuffled Pile's "
                         f"Megatron prefix (.../document for document.bin and document.idx)")
    deduped = opts.get("deduped", False)
    if not isinstance(deduped, bool):
        raise ValueError(f"family {spec.name}: option deduped must be true or false, got {deduped!r}")
    seq_len = opts.get("sequence_length", PYTHIA_SEQUENCE_LENGTH)
    per_step = opts.get("sequences_per_step", PYTHIA_SEQUENCES_PER_STEP)
    hub = spec.checkpoints == PYTHIA_HUB
    if hub and (seq_len, per_step) != (PYTHIA_SEQUENCE_LENGTH, PYTHIA_SEQUENCES_PER_STEP):
        raise ValueError(f"family {spec.name}: the hub's Pythia checkpoints trained on "
                         f"{PYTHIA_SEQUENCES_PER_STEP} sequences of {PYTHIA_SEQUENCE_LENGTH} targets "
                         f"per step, got sequence_length={seq_len}, sequences_per_step={per_step}")
    order = MegatronWindows(Path(spec.data).expanduser(), seq_len, per_step)
    common = dict(deduped=deduped, sizes=opts.get("sizes"), tokens_per_step=order.tokens_per_step,
                  context_length=order.context_length)
    if hub:
        source = PythiaHubSource(cache_dir=opts.get("cache_dir"), **common)
    else:
        source = PythiaHubSource(local_root=Path(spec.checkpoints).expanduser(), mirror_only=True,
                                 **common)
    return Family(spec, source, order)
