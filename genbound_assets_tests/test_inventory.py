"""families/inventory.py: what the automation bounds, and what a scan of a source finds."""

import shutil

import pytest

from genbound_assets.families.inventory import scan_source, selected_steps
from genbound_assets.families.sources import LocalCheckpointSource


def test_compute_optimal_selection():
    n = 1000                                     # D* = 20,000
    d = {0: 0, 10: 5_000, 20: 19_000, 30: 20_500, 40: 60_000}
    # the first checkpoint with D >= D* is within 5 %: it is the compute-optimal one
    assert selected_steps(n, d, "compute_optimal", final_step=40) == {30, 40}
    # not within 5 %: the bracket, for the interpolation
    far = {0: 0, 10: 5_000, 20: 15_000, 30: 25_000, 40: 60_000}
    assert selected_steps(n, far, "compute_optimal", final_step=40) == {20, 30, 40}
    # the final step only when the source knows it and it is present
    assert selected_steps(n, far, "compute_optimal") == {20, 30}
    assert selected_steps(n, far, "compute_optimal", final_step=50) == {20, 30}
    assert selected_steps(n, d, "all") == {10, 20, 30, 40}     # never step 0 (D = 0)
    assert selected_steps(n, d, "none") == set()
    with pytest.raises(ValueError, match="selection"):
        selected_steps(n, d, "some")


def test_scan_finds_new_checkpoints_and_half_written_folders(micro_suite_root, tmp_path):
    root = shutil.copytree(micro_suite_root, tmp_path / "suite")
    src = LocalCheckpointSource(root)
    refs = src.list_checkpoints("m-a")
    known = {("m-a", r.step) for r in refs[:-1]} | {("m-b", r.step) for r in src.list_checkpoints("m-b")}
    (root / "m-a" / "step999").mkdir()
    (root / "m-a" / ".tmp-step1000-abc").mkdir()
    res = scan_source(src, known)
    assert [(f.ref.model, f.ref.step) for f in res.found] == [("m-a", refs[-1].step)]
    assert res.found[0].ok and not res.more
    reasons = {folder.split("/")[-1]: why for _, folder, why in res.incomplete}
    assert "checkpoint.json" in reasons["step999"]
    assert "in progress" in reasons[".tmp-step1000-abc"]
    # the per-call budgets: a count, and a time after which no new check starts (one at least)
    res = scan_source(src, set(), limit=3)
    assert len(res.found) == 3 and res.more
    res = scan_source(src, set(), time_budget_s=0.0)
    assert len(res.found) == 1 and res.more
