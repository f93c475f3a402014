"""docs/reliability.md's tables are what the tests observe (they cannot drift).

The drills (test_drills.py, test_drills_db.py) and the bad-input doors (test_bad_inputs.py)
each compare their observed row -- outcome and message, with machine-specific parts
normalized (:func:`normalize`) -- with the row of the same key in the doc's table.  Run them
with ``GENBOUND_WRITE_DOCS=1`` to (re)write the rows instead:

    GENBOUND_WRITE_DOCS=1 python -m pytest -q -p no:cacheprovider \
        genbound_assets_tests/test_drills*.py genbound_assets_tests/test_bad_inputs.py

This module's own test checks that each table holds exactly the keys the tests produce.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
WRITE_ENV = "GENBOUND_WRITE_DOCS"
_lock = threading.Lock()

# key -> header of each table the tests own
TABLES = {
    "drills": ["drill", "fault", "assets run", "outcome", "message (normalized)"],
    "bad-inputs": ["case", "door", "input", "exit", "message (normalized)"],
}

# every key each table must hold (filled by the test modules at import)
DRILL_KEYS = ["manifest_missing", "wrong_sha256", "truncated_safetensors", "shape_mismatch",
              "nan_weights", "duplicate_weights", "vocab_mismatch", "removed_after_discovery",
              "removed_between_assets", "artifact_write_fails", "quantization_nan",
              "db_down_at_start", "db_down_for_good", "db_restarted_mid_write",
              "bad_input_not_retried"]

_HEX = re.compile(r"\b[0-9a-f]{64}\b")
_PID = re.compile(r"\.tmp-\d+-")


def normalize(text: str, **places: str | os.PathLike) -> str:
    """One line; each ``places`` path (also URL-encoded) replaced by ``<name>`` (longest first), sha256 hex
    digests by ``<sha256>``, temp-file pids by ``<pid>``."""
    from urllib.parse import quote

    out = " ".join(str(text).split())
    for name, path in sorted(places.items(), key=lambda kv: -len(str(kv[1]))):
        if path:   # as written, and URL-encoded (a socket dir in a database URL)
            out = out.replace(str(path), f"<{name}>").replace(quote(str(path), safe=""), f"<{name}>")
    out = _HEX.sub("<sha256>", out)
    return _PID.sub(".tmp-<pid>-", out)


def _escape(cell: str) -> str:
    return str(cell).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _unescape(cell: str) -> str:
    return re.sub(r"\\(.)", r"\1", cell)


def _split_row(line: str) -> list[str]:
    body = line.strip()
    assert body.startswith("|") and body.endswith("|"), line
    cells, cur, i = [], "", 1
    while i < len(body) - 1:
        c = body[i]
        if c == "\\" and i + 1 < len(body) - 1:
            cur += body[i:i + 2]
            i += 2
            continue
        if c == "|":
            cells.append(_unescape(cur.strip()))
            cur = ""
        else:
            cur += c
        i += 1
    cells.append(_unescape(cur.strip()))
    return cells


def _bounds(lines: list[str], table: str) -> tuple[int, int]:
    begin, end = f"<!-- {table}:begin -->", f"<!-- {table}:end -->"
    try:
        return lines.index(begin), lines.index(end)
    except ValueError:
        raise AssertionError(f"{DOC} has no {begin} ... {end} block") from None


def read_table(table: str) -> dict[str, list[str]]:
    """key (first cell) -> cells of every row of ``table``."""
    lines = DOC.read_text().splitlines()
    b, e = _bounds(lines, table)
    rows = [ln for ln in lines[b + 1:e] if ln.strip().startswith("|")][2:]   # header, rule
    return {cells[0]: cells for cells in map(_split_row, rows)}


def _write_row(table: str, cells: list[str], order: list[str] | None) -> None:
    with _lock:
        lines = DOC.read_text().splitlines() if DOC.exists() else []
        if f"<!-- {table}:begin -->" not in lines:
            lines += ["", f"<!-- {table}:begin -->", f"<!-- {table}:end -->"]
        b, e = _bounds(lines, table)
        rows = {c[0]: c for c in map(_split_row, [ln for ln in lines[b + 1:e]
                                                   if ln.strip().startswith("|")][2:])}
        rows[cells[0]] = cells
        keys = sorted(rows, key=lambda k: (order.index(k) if order and k in order else 10**6, k))
        head = TABLES[table]
        body = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        body += ["| " + " | ".join(_escape(c) for c in rows[k]) + " |" for k in keys]
        DOC.write_text("\n".join(lines[:b + 1] + body + lines[e:]) + "\n")


def check_row(table: str, cells: list[str], order: list[str] | None = None) -> None:
    """Assert the doc's row for ``cells[0]`` equals ``cells`` (or write it, GENBOUND_WRITE_DOCS=1)."""
    cells = [str(c) for c in cells]
    assert len(cells) == len(TABLES[table]), cells
    if os.environ.get(WRITE_ENV, "").strip() in ("1", "true", "yes"):
        _write_row(table, cells, order)
        return
    have = read_table(table).get(cells[0])
    assert have is not None, f"{DOC}: table {table} has no row {cells[0]!r}; observed {cells}"
    assert have == cells, (f"{DOC}: table {table} row {cells[0]!r} drifted:\n  doc:      {have}\n"
                           f"  observed: {cells}\n(rewrite with {WRITE_ENV}=1)")


def test_drill_table_holds_exactly_the_drills():
    assert list(read_table("drills")) == DRILL_KEYS


def test_normalize_hides_machine_specific_parts():
    got = normalize("sha256 mismatch: expected " + "ab" * 32 + " in /tmp/x/suite/m-a/.tmp-123-hq\n"
                    "second line", suite="/tmp/x/suite")
    assert got == "sha256 mismatch: expected <sha256> in <suite>/m-a/.tmp-<pid>-hq second line"
