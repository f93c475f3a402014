"""Imports point down only: shell (defs, cli) -> pipeline -> measure -> data / families -> bounds,
fits, storage.  Core packages import no Dagster; the numerical core imports no torch.

Read from the source with `ast` (no import side effects), so a new upward import fails here
with the file and the line.
"""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "genbound_assets"

# package -> genbound_assets packages it may import (itself always allowed)
ALLOWED = {
    "bounds": set(),
    "fits": {"bounds"},
    "storage": set(),
    "data": set(),
    "families": {"data"},
    "measure": {"data", "families", "bounds"},
    "pipeline": {"measure", "data", "families", "bounds", "fits", "storage"},
    # shell level (like defs/ and cli*.py, which import it): the HTML report and its figures;
    # listed here so that it imports only storage and fits, and no Dagster
    "report": {"storage", "fits"},
}
NO_TORCH = {"bounds", "fits", "storage"}


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: stays inside the package unless it climbs
                if node.level > 1:
                    yield node.lineno, "genbound_assets." + (node.module or "")
                continue
            yield node.lineno, node.module or ""


def _cases():
    for pkg in ALLOWED:
        for f in sorted((PKG / pkg).rglob("*.py")):
            yield pytest.param(pkg, f, id=f"{pkg}/{f.relative_to(PKG / pkg)}")


@pytest.mark.parametrize("pkg,path", list(_cases()))
def test_imports_point_down(pkg, path):
    bad = []
    for line, mod in _imports(path):
        top = mod.split(".")[0]
        if top == "dagster" or top.startswith("dagster_"):
            bad.append(f"line {line}: core package imports {mod}")
        if pkg in NO_TORCH and top == "torch":
            bad.append(f"line {line}: numerical core imports torch")
        if top == "genbound_assets":
            parts = mod.split(".")
            target = parts[1] if len(parts) > 1 else ""
            if target != pkg and target not in ALLOWED[pkg]:
                bad.append(f"line {line}: {pkg}/ may not import genbound_assets.{target}")
    assert not bad, f"{path.relative_to(PKG)}: " + "; ".join(bad)


def test_every_core_package_is_checked():
    """A new top-level package must be placed in the layer table above."""
    shell = {"defs", "__pycache__"}
    found = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert found - shell - set(ALLOWED) == set(), "add the new package to ALLOWED"
