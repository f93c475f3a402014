"""A checkpoint certificate lands in three tables in one transaction, and re-runs replace it."""

import numpy as np
import polars as pl
import pytest

from genbound_assets.data.corpus import SyntheticMarkovSource
from genbound_assets.data.sampler import draw_uniforms
from genbound_assets.families.models import tiny_gpt_neox
from genbound_assets.pipeline.certify import BoundSettings, certify_checkpoint
from genbound_assets.storage import read_frame, replace_partitions
from genbound_assets.storage.records import (
    certificate_partitions,
    write_certificate,
    write_token_sample,
)

M = 120


@pytest.fixture(scope="module")
def cert():
    src = SyntheticMarkovSource(vocab_size=31, order=1, n_docs=1200, doc_len=(20, 50), seed=0)
    stream = src.stream()
    model = tiny_gpt_neox(vocab_size=32, hidden=16, layers=1, heads=2, context=32, seed=0).eval()
    settings = BoundSettings(quantizer="rtn", group_size=16, n_calibration_windows=2)
    return certify_checkpoint(model, stream, len(stream), draw_uniforms(M, seed=0), 32, settings,
                              model_name="tiny", step=7)


def _counts(engine):
    q = "select '{t}' as t, count(*) as n from {t} where model = 'tiny'"
    return {t: read_frame(engine, q.format(t=t))["n"][0]
            for t in ("token_losses", "quantized_models", "bounds")}


def test_certificate_round_trips_and_rerun_replaces(pg_clean, cert):
    assert cert.status == "ok"
    write_token_sample(pg_clean, "bound", draw_uniforms(M, seed=0), seed=0)
    write_certificate(pg_clean, cert)
    first = _counts(pg_clean)
    n_pairs = M + cert.n_exact
    assert first == {"token_losses": 3 * n_pairs, "quantized_models": 1, "bounds": len(cert.bounds)}
    write_certificate(pg_clean, cert)
    assert _counts(pg_clean) == first
    stored = read_frame(pg_clean, "select method, code_length_method, bound, certified from bounds "
                                  "order by method, code_length_method")
    expected = sorted((r["method"], r["code_length_method"], r["bound"], r["certified"])
                      for r in cert.bounds)
    assert list(stored.iter_rows()) == expected  # floats bit-exact
    sq = read_frame(pg_clean, "select position, loss from token_losses where alpha > 0 and "
                              "sample = 'bound' order by i")
    np.testing.assert_array_equal(sq["loss"].to_numpy(), cert.token_rows["sq_loss"][:M])
    joined = read_frame(pg_clean, "select count(*) as n from token_losses l join token_samples s "
                                  "on s.sample = l.sample and s.i = l.i where l.alpha > 0")
    assert joined["n"][0] == M  # sampled pairs point back at their stored uniform


def test_a_failing_write_leaves_the_previous_certificate(pg_clean, cert):
    write_certificate(pg_clean, cert)
    before = _counts(pg_clean)
    parts = certificate_partitions(cert)
    # partitions are written in table-name order, token_losses last: break its last partition so
    # bounds and quantized_models have already been deleted and rewritten when the COPY fails
    i = max(k for k, (t, _, _) in enumerate(parts) if t == "token_losses")
    table, key, frame = parts[i]
    duplicated = pl.concat([frame, frame])  # primary-key violation inside the COPY
    with pytest.raises(Exception, match="duplicate key"):
        replace_partitions(pg_clean, parts[:i] + [(table, key, duplicated)] + parts[i + 1:])
    assert _counts(pg_clean) == before


def test_quarantined_checkpoints_keep_their_reason(pg_clean):
    from genbound_assets.families.integrity import IntegrityReport
    from genbound_assets.families.sources import CheckpointRef, ModelInfo
    from genbound_assets.storage.records import write_model_registry

    info = ModelInfo("m", n_params=100, n_params_non_embedding=40, vocab_size=257,
                     context_length=128, tokens_per_step=4096)
    refs = [CheckpointRef("m", s, s * 4096, f"/x/m/step{s}") for s in (0, 1, 2)]
    reports = [IntegrityReport("m", 0, True, None, "sha256:a"),
               IntegrityReport("m", 1, False, "model.safetensors is truncated (10 of 20 bytes)", None),
               IntegrityReport("m", 2, True, None, "sha256:b")]
    for _ in range(2):  # a re-run replaces, never duplicates
        write_model_registry(pg_clean, info, "local", "/x/m", refs, reports)
    rows = read_frame(pg_clean, "select step, status, quarantine_reason, tokens_seen from checkpoints "
                                "order by step")
    assert rows["status"].to_list() == ["ok", "quarantined", "ok"]
    assert rows["quarantine_reason"][1] == "model.safetensors is truncated (10 of 20 bytes)"
    assert rows["tokens_seen"].to_list() == [0, 4096, 8192]
    with pytest.raises(ValueError, match="no integrity report for step"):
        write_model_registry(pg_clean, info, "local", "/x/m", refs, reports[:2])
