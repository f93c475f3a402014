"""``genbound family``: the registry of checkpoint families genbound watches (docs/your-run.md).

    genbound family add NAME PATH [--kind suite|pythia|hf_trainer|step_folders] [--data PATH]
                        [--context-length T] [--windows-per-step B] [--tokens-per-step N]
                        [--option KEY=JSON ...] [--profile NAME] [--replace]
    genbound family list
    genbound family remove NAME

``add`` validates everything before it writes the registry (families/user_runs.py
``validate_user_run`` for a researcher's own run; ``registry.open_family`` for the other kinds)
and refuses with one line naming the file and the field.  The registry file is
``$GENBOUND_FAMILIES_FILE`` or ``<data dir>/families.json`` (families/registry.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

USER_KINDS = ("hf_trainer", "step_folders")


def _fail(msg: str) -> None:
    line = " ".join(str(msg).split())  # one line, whatever the underlying error printed
    click.echo(f"genbound: error: {line}", err=True)
    sys.exit(1)


def detect_kind(root: Path) -> str | None:
    """The layout of ``root``: pythia (a hub-layout mirror, ``EleutherAI/pythia-*``), hf_trainer
    (checkpoint-<step>/), suite (step<N>/ with the suite's checkpoint.json), step_folders
    (step<N>/), looked for in ``root`` and its sub-folders."""
    from genbound_assets.families.suite import MANIFEST_NAME

    if (root / "EleutherAI").is_dir() and any(
            d.name.startswith("pythia-") for d in (root / "EleutherAI").iterdir()):
        return "pythia"

    def kinds(folder: Path) -> set[str]:
        out = set()
        for d in folder.iterdir():
            if not d.is_dir():
                continue
            if d.name.startswith("checkpoint-") and d.name[len("checkpoint-"):].isdigit():
                out.add("hf_trainer")
            elif d.name.startswith("step") and d.name[4:].isdigit():
                out.add("suite" if (d / MANIFEST_NAME).is_file() else "step_folders")
        return out

    found = kinds(root)
    if not found:
        for d in root.iterdir():
            if d.is_dir() and not d.name.startswith("."):
                found |= kinds(d)
    if len(found) == 1:
        return found.pop()
    if "suite" in found and found <= {"suite", "step_folders"}:
        return "suite"
    return None


def _parse_options(items) -> dict:
    """``KEY=VALUE`` pairs; VALUE is JSON when it parses (true, 3, ["70m"]), else a string."""
    import json

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option must be KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _model_names(spec) -> list[str]:
    """Model names of a registered family, read cheaply (no training data opened)."""
    root = Path(spec.checkpoints).expanduser()
    if spec.kind in USER_KINDS:
        from genbound_assets.families.user_runs import make_user_source

        if not root.is_dir():
            return []
        return list(make_user_source(spec.kind, root).model_dirs())
    if spec.kind == "suite":
        from genbound_assets.families.sources import LocalCheckpointSource

        return LocalCheckpointSource(root).list_models() if root.is_dir() else []
    if "://" not in spec.checkpoints and not root.is_dir():
        return []
    from genbound_assets.families.registry import open_family

    return open_family(spec).source.list_models()


def step_grid_warning(refs: dict) -> str | None:
    """One line when the models of a family were not saved at the same steps, else None.

    A family's partitions are the cross product model x step (docs/dagster.md, "Partitions"):
    a step one model lacks is a cell no checkpoint fills.  Nothing fails (the sensor and the
    schedule request only real checkpoints), but the UI shows those cells as missing forever."""
    grids = {m: {r.step for r in rs} for m, rs in refs.items() if rs}
    if len({frozenset(g) for g in grids.values()}) <= 1:
        return None
    common = set.intersection(*grids.values())
    parts = []
    for m, g in grids.items():
        extra = sorted(g - common)
        if not extra:
            continue
        lack = [o for o, og in grids.items() if o != m and not set(extra) <= og]
        shown = ", ".join(map(str, extra[:6])) + (f" and {len(extra) - 6} more" if len(extra) > 6 else "")
        parts.append(f"{m} has step{'s' if len(extra) > 1 else ''} {shown} that "
                     f"{' and '.join(lack)} lack{'s' if len(lack) == 1 else ''}")
    return ("models do not share one step grid: " + "; ".join(parts) + "; those model x step "
            "cells hold no checkpoint (never requested, shown as missing in the UI; "
            "docs/dagster.md); register each model as its own family to avoid them")


@click.group("family")
def family():
    """Checkpoint families genbound watches: the suite, Pythia, your own training runs."""


@family.command("add")
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--kind", default=None, metavar="suite|pythia|hf_trainer|step_folders",
              help="Folder layout (default: detected from PATH).")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Training tokens in training order: .npy/.npz token array or Megatron .bin/.idx.")
@click.option("--context-length", type=click.IntRange(min=1), default=None,
              help="T: targets per training window (windows are T+1 tokens, stride T).")
@click.option("--windows-per-step", type=click.IntRange(min=1), default=None,
              help="B: windows per optimizer step (default: read from the run's token counts).")
@click.option("--tokens-per-step", type=click.IntRange(min=1), default=None,
              help="tokens_seen = step x N when the run records no token counts (N = B x T).")
@click.option("--option", "options", multiple=True, metavar="KEY=JSON",
              help="A kind option (pythia: sizes='[\"70m\"]', deduped=true, ...); repeatable.")
@click.option("--profile", default=None,
              help="Settings profile of this family (pipeline/settings.py: demo, micro, pythia); "
                   "default: $GENBOUND_PROFILE, else demo.")
@click.option("--replace", is_flag=True, help="Replace a family registered under NAME.")
def add(name, path, kind, data, context_length, windows_per_step, tokens_per_step, options,
        profile, replace):
    """Validate the checkpoints and data at PATH and register them as family NAME."""
    from genbound_assets.families.registry import (
        FAMILY_KINDS,
        FamilySpec,
        add_family,
        check_family_name,
        families_file,
        load_families,
        open_family,
    )
    from genbound_assets.families.user_runs import validate_user_run

    try:
        check_family_name(name)
        if kind is not None and kind not in FAMILY_KINDS:
            raise ValueError(f"--kind must be one of {', '.join(FAMILY_KINDS)}, got {kind!r}")
        if profile is not None:
            from genbound_assets.pipeline.settings import settings_for_profile

            try:
                settings_for_profile(profile)   # an unknown profile is refused by name
            except ValueError as e:
                raise ValueError(f"--profile: {e}") from None
        extra = _parse_options(options)
        remote = "://" in str(path)          # pythia: hf://EleutherAI, the live hub
        root = path if remote else path.expanduser()
        if remote and kind is None:
            raise ValueError(f"{path}: pass --kind for a remote checkpoint location")
        if not remote and not root.is_dir():
            raise ValueError(f"{root}: no such folder")
        checkpoints = str(path) if remote else str(root.resolve())
        root = Path(checkpoints)
        if kind is None:
            kind = detect_kind(root)
            if kind is None:
                raise ValueError(f"{root}: no checkpoint-<step>/ or step<N>/ folders found; "
                                 "pass --kind")
        registered = load_families()
        if any(s.name == name for s in registered) and not replace:
            raise ValueError(f"a family named {name!r} is already registered in {families_file()} "
                             "(pass --replace to replace it)")
        data_s = str(data.expanduser().resolve()) if data is not None else None
        notes: list[str] = []
        if kind in USER_KINDS:
            if extra:
                raise ValueError(f"--option does not apply to kind {kind} (use --context-length, "
                                 "--windows-per-step, --tokens-per-step)")
            check = validate_user_run(kind, root, data_s, context_length, windows_per_step,
                                      tokens_per_step)
            spec = FamilySpec(name=name, kind=kind, checkpoints=checkpoints, data=data_s,
                              profile=profile, options=check.options)
            refs = check.checkpoints
            notes = check.notes
        else:
            given = [f for f, v in (("--context-length", context_length),
                                    ("--windows-per-step", windows_per_step),
                                    ("--tokens-per-step", tokens_per_step)) if v is not None]
            if given:
                raise ValueError(f"{', '.join(given)} apply to kinds {' and '.join(USER_KINDS)} "
                                 f"only (kind {kind} records its own)")
            spec = FamilySpec(name=name, kind=kind, checkpoints=checkpoints, data=data_s,
                              profile=profile, options=extra)
            fam = open_family(spec)
            refs = {m: fam.source.list_checkpoints(m) for m in fam.source.list_models()}
            if not any(refs.values()):
                raise ValueError(f"{checkpoints}: no complete checkpoint")
        # model names unique across all registered families
        mine = set(refs)
        for other in registered:
            if other.name == name:
                continue
            try:
                theirs = set(_model_names(other))
            except (ValueError, OSError) as e:
                notes.append(f"family {other.name} could not be listed ({e}); model names not "
                             "compared with it")
                continue
            clash = sorted(mine & theirs)
            if clash:
                raise ValueError(f"model name {clash[0]!r} is already used by family {other.name!r} "
                                 f"({other.checkpoints}); model names are unique across families "
                                 "(rename the model folder)")
        where = add_family(spec, replace=replace)
    except (ValueError, OSError) as e:
        _fail(str(e))
    n_ck = sum(len(r) for r in refs.values())
    click.echo(f"family {name}: kind {kind}, {len(refs)} model(s), {n_ck} checkpoint(s); "
               f"registered in {where}")
    if spec.options:
        click.echo("  options: " + ", ".join(f"{k}={v}" for k, v in spec.options.items()))
    for m, rs in refs.items():
        if rs:
            click.echo(f"  {m}: steps {rs[0].step}..{rs[-1].step} ({len(rs)}), latest tokens_seen "
                       f"{rs[-1].tokens_seen:,}")
    for n in notes:
        click.echo(f"  note: {n}")
    warn = step_grid_warning(refs)
    if warn:
        click.echo(f"  warning: {warn}")
    click.echo("  the sensor new_checkpoints picks it up (docs/dagster.md)")


@family.command("list")
def list_():
    """The registered families."""
    from genbound_assets.families.registry import families_file, load_families

    try:
        specs = load_families()
    except ValueError as e:
        _fail(str(e))
    f = families_file()
    click.echo(f"registry: {f}" + ("" if f.exists() else " (absent: the default suite family)"))
    for s in specs:
        try:
            models = _model_names(s)
            mtxt = f"{len(models)} model(s)" + (f": {', '.join(models[:6])}" if models else "")
            if len(models) > 6:
                mtxt += ", ..."
        except (ValueError, OSError) as e:
            mtxt = f"unavailable: {' '.join(str(e).split())}"
        opts = " ".join(f"{k}={v}" for k, v in s.options.items())
        click.echo(f"{s.name}  kind={s.kind}  profile={s.profile or '(GENBOUND_PROFILE or demo)'}  checkpoints={s.checkpoints}"
                   + (f"  data={s.data}" if s.data else "") + (f"  {opts}" if opts else ""))
        click.echo(f"  {mtxt}")


@family.command("remove")
@click.argument("name")
def remove(name):
    """Unregister family NAME (its files are not touched)."""
    from genbound_assets.families.registry import families_file, load_families, save_families

    try:
        specs = load_families()
        if not any(s.name == name for s in specs):
            raise ValueError(f"no family named {name!r} in {families_file()} (registered: "
                             f"{', '.join(s.name for s in specs) or 'none'})")
        where = save_families([s for s in specs if s.name != name])
    except (ValueError, OSError) as e:
        _fail(str(e))
    click.echo(f"removed family {name} from {where} (its checkpoints and data are untouched)")
