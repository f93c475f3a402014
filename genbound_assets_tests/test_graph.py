"""The asset graph end to end on the micro suite (real Postgres, real Dagster instance, real models).

One demo run materializes every asset of the family; then: every method for every size, a rerun
of a partition replaces its rows exactly, and recomputing bounds at another delta loads no model.
"""

import dagster as dg
import pytest

from genbound_assets.storage import read_frame, table_counts
from genbound_assets_tests.micro import FAMILY, micro_env

pytestmark = pytest.mark.slow

CERT_METHODS = {"headline", "freedman_decomposed", "azuma", "paper_recipe"}


@pytest.fixture(scope="module")
def graph(micro_suite_root, pg_engine, tmp_path_factory):
    """The demo on the micro suite, once for the module: (defs, instance, engine, summary)."""
    from genbound_assets_tests.conftest import truncate_all

    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("graph")
    micro_env(mp, micro_suite_root, tmp)
    truncate_all(pg_engine)
    from genbound_assets.definitions import build_defs
    from genbound_assets.demo import run_demo

    defs = build_defs()
    (tmp / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp / "dagster")) as instance:
        lines = []
        summary = run_demo(pg_engine, instance, echo=lines.append, defs=defs)
        yield defs, instance, pg_engine, summary, lines
    mp.undo()


def _keys(defs, level=None):
    repo = defs.get_repository_def()
    return {k: a for k, a in repo.assets_defs_by_key.items() if k.path[0] == FAMILY}


def test_every_asset_materializes(graph):
    defs, instance, engine, summary, lines = graph
    assert not [ln for ln in lines if "FAILED" in ln], "\n".join(lines)
    models = instance.get_dynamic_partitions(f"{FAMILY}__model")
    steps = instance.get_dynamic_partitions(f"{FAMILY}__step")
    assert sorted(models) == ["m-a", "m-b"] and len(steps) >= 3
    real = {f"{m}|{s}" for m in models for s in steps}      # one step grid: no phantom cell
    for key, asset in _keys(defs).items():
        if asset.partitions_def is None:   # family-level (scaling_fits): checked below
            continue
        done = instance.get_materialized_partitions(key)
        name = key.path[-1]
        if name in ("checkpoint", "checkpoint_loss"):
            assert done == real, name
        elif name in ("quantized_model", "token_losses", "checkpoint_bounds"):
            assert done and done <= real, name
        else:
            assert done == set(models), name
    # the unpartitioned assets too (the store's schema, SQL views, fits)
    repo = defs.get_repository_def()
    for key, asset in repo.assets_defs_by_key.items():
        if asset.partitions_def is None and asset.is_executable:
            assert instance.get_latest_materialization_event(key) is not None, key


def test_bounds_hold_every_method_for_every_size(graph):
    _, _, engine, summary, _ = graph
    rows = summary[FAMILY]
    assert {r["model"] for r in rows} == {"m-a", "m-b"}
    b = read_frame(engine, "SELECT model, step, method, certified, role, bound, empirical_risk "
                           "FROM bounds WHERE NOT interpolated AND sample = :s", {"s": f"{FAMILY}:bound"})
    for r in rows:
        at = b.filter((b["model"] == r["model"]) & (b["step"] == r["step"]))
        assert set(at["method"].to_list()) == CERT_METHODS
        head = at.filter(at["method"] == "headline").row(0, named=True)
        assert head["certified"] and head["role"] == "headline"
        assert head["bound"] >= head["empirical_risk"]
        assert not at.filter(at["method"] == "paper_recipe")["certified"][0]
    # exactly one headline per bounded checkpoint
    per = b.filter(b["method"] == "headline").group_by("model", "step").len()
    assert per["len"].max() == 1


def test_rerunning_a_partition_replaces_it_exactly(graph):
    defs, instance, engine, _, _ = graph
    from genbound_assets.demo import _execute

    sets = read_frame(engine, "SELECT model, step FROM token_loss_sets ORDER BY model, step")
    model, step = sets.row(0)
    before = table_counts(engine)
    bound_before = read_frame(engine, "SELECT method, bound FROM bounds WHERE model = :m AND step = :s "
                              "AND NOT interpolated ORDER BY method", {"m": model, "s": step})
    keys = [dg.AssetKey([FAMILY, a]) for a in ("checkpoint", "quantized_model", "token_losses",
                                               "checkpoint_bounds")]
    res = _execute(defs, instance, keys, partition_key=dg.MultiPartitionKey({"model": model, "step": str(step)}))
    assert res.success
    assert table_counts(engine) == before
    bound_after = read_frame(engine, "SELECT method, bound FROM bounds WHERE model = :m AND step = :s "
                             "AND NOT interpolated ORDER BY method", {"m": model, "s": step})
    assert bound_after.equals(bound_before)   # deterministic: the same numbers


def test_bounds_at_another_delta_load_no_model(graph, monkeypatch):
    defs, instance, engine, _, _ = graph
    from genbound_assets.defs.families import resources
    from genbound_assets.demo import _execute
    from genbound_assets.families.sources import LocalCheckpointSource

    def forbidden(*a, **k):
        raise AssertionError("checkpoint_bounds loaded a model")

    monkeypatch.setattr(LocalCheckpointSource, "load_model", forbidden)
    monkeypatch.setattr("transformers.PreTrainedModel.from_pretrained", classmethod(forbidden))
    sets = read_frame(engine, "SELECT model, step FROM token_loss_sets ORDER BY model, step")
    old = read_frame(engine, "SELECT model, step, bound FROM bounds WHERE method = 'headline' "
                             "AND NOT interpolated ORDER BY model, step")
    monkeypatch.setenv("GENBOUND_DELTA", "0.05")
    resources._open.cache_clear()
    for model, step in sets.iter_rows():
        res = _execute(defs, instance, [dg.AssetKey([FAMILY, "checkpoint_bounds"])],
                       partition_key=dg.MultiPartitionKey({"model": model, "step": str(step)}))
        assert res.success
    new = read_frame(engine, "SELECT model, step, bound, delta FROM bounds WHERE method = 'headline' "
                             "AND NOT interpolated ORDER BY model, step")
    assert set(new["delta"].to_list()) == {0.05}
    assert (new["bound"] < old["bound"]).all()        # a larger delta gives a smaller bound


GRAPH_QUERY = """{
  assetNodes {
    assetKey { path }
    isPartitioned
    partitionKeysByDimension { name partitionKeys }
    assetChecksOrError { __typename ... on AssetChecks { checks { name blocking } } }
  }
}"""
MATERIALIZATIONS_QUERY = """query($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) { __typename ... on Asset {
    assetMaterializations(limit: 500) { partition runId } } }
}"""


@pytest.mark.timeout(240)
def test_webserver_graphql_shows_the_graph_and_the_demo(graph, pg_url, tmp_path):
    """dagster-webserver on the demo's instance: every asset, its partitions and checks, and
    the demo's materializations, found over GraphQL."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from genbound_assets_tests.test_definitions import REPO, _free_port, _restore_signals, _stop

    defs, instance, engine, _, _ = graph
    port = _free_port()
    env = dict(os.environ, DAGSTER_HOME=instance.root_directory, GENBOUND_DATABASE_URL=pg_url)
    log = open(tmp_path / "web.log", "w")  # noqa: SIM115 - closed by _stop
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-w", "workspace.yaml",
         "-h", "127.0.0.1", "-p", str(port)], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_restore_signals)
    try:
        from genbound_assets_tests.test_definitions import wait_loaded

        wait_loaded(port, proc, tmp_path / "web.log")
        from dagster_graphql import DagsterGraphQLClient

        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        nodes = client._execute(GRAPH_QUERY)["assetNodes"]  # noqa: SLF001
        by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
        repo = defs.get_repository_def()
        assert {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()} <= set(by_key)
        ckpt = by_key[f"{FAMILY}/checkpoint_bounds"]
        dims = {d["name"]: d["partitionKeys"] for d in ckpt["partitionKeysByDimension"]}
        assert sorted(dims["model"]) == ["m-a", "m-b"] and len(dims["step"]) >= 3
        checks = {c["name"]: c["blocking"] for c in ckpt["assetChecksOrError"]["checks"]}
        assert checks == {"certified_bounds_sane": True}
        for name, check in (("checkpoint", "integrity_clean"), ("quantized_model", "honest_code_length"),
                            ("token_losses", "complete_and_finite")):
            got = {c["name"] for c in by_key[f"{FAMILY}/{name}"]["assetChecksOrError"]["checks"]}
            assert got == {check}
        for k in repo.asset_graph.get_all_asset_keys():
            if not repo.assets_defs_by_key[k].is_executable:
                continue
            res = client._execute(MATERIALIZATIONS_QUERY, {"key": {"path": list(k.path)}})  # noqa: SLF001
            mats = res["assetOrError"]["assetMaterializations"]
            assert mats, f"{k.to_user_string()} shows no materialization"
    finally:
        _stop(proc, log)
