"""`genbound demo`: the local suite end to end — integrity, a token sample, certified bounds.

The suite is trained by `genbound suite train` (the CLI calls it first when the suite is
missing). This module then, for every model of the suite: registers it and its checkpoints with
their integrity status, draws the bound's token sample once, picks the checkpoint at the
compute-optimal D* = 20 N (Sec. 2.2), certifies it (pipeline/certify.py) and stores the certificate.
The Dagster asset graph of a later issue runs the same functions per partition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from genbound_assets.bounds.compute_optimal import select_compute_optimal
from genbound_assets.data.sampler import draw_uniforms
from genbound_assets.data.stream import load_stream
from genbound_assets.families.integrity import check_model
from genbound_assets.families.sources import LocalCheckpointSource
from genbound_assets.families.suite import DEMO_GPTQ_GROUP_SIZE, load_data_order, trained_prefix_len
from genbound_assets.pipeline.certify import (
    BoundSettings,
    CheckpointCertificate,
    certify_checkpoint,
)
from genbound_assets.storage.records import (
    write_certificate,
    write_model_registry,
    write_token_sample,
)

SAMPLE = "bound"


@dataclass(frozen=True)
class DemoSettings:
    n_sample: int = 2000          # m pairs (the paper: 10^4 for Pythia)
    sample_seed: int = 0
    bound: BoundSettings = BoundSettings(group_size=DEMO_GPTQ_GROUP_SIZE)


def suite_ready(root: Path, models: list[str]) -> bool:
    """True when root holds a data order and a complete D* checkpoint for every model."""
    if not (root / "data_order.json").exists():
        return False
    order = load_data_order(root)
    source = LocalCheckpointSource(root)
    have = set(source.list_models())
    for name in models:
        info = order.get("models", {}).get(name)
        if name not in have or info is None:
            return False
        if info["d_star_step"] not in {r.step for r in source.list_checkpoints(name)}:
            return False
    return True


def run_demo(engine, root: Path, settings: DemoSettings = DemoSettings(),
             echo: Callable[[str], None] = print) -> list[CheckpointCertificate]:
    """Register, sample, certify and store every model of the suite at ``root``."""
    order = load_data_order(root)
    stream = load_stream(root / "stream.npz", expected_hash=order["stream_sha256"])
    source = LocalCheckpointSource(root)
    u = draw_uniforms(settings.n_sample, settings.sample_seed)
    write_token_sample(engine, SAMPLE, u, settings.sample_seed)
    echo(f"demo: token sample '{SAMPLE}': m = {len(u)} seeded uniforms (seed {settings.sample_seed})")
    certs = []
    for name in source.list_models():
        info = source.model_info(name)
        refs = source.list_checkpoints(name)
        reports = check_model(source, name)
        write_model_registry(engine, info, "local", str(root / name), refs, reports,
                             config=order["models"].get(name))
        bad = [r for r in reports if not r.ok]
        echo(f"demo: {name}: N = {info.n_params:,}, V = {info.vocab_size}, {len(refs)} checkpoints"
             + (f", {len(bad)} quarantined ({bad[0].reason})" if bad else ", all pass integrity"))
        ok_steps = [r.step for r in reports if r.ok]
        tokens = {r.step: r.tokens_seen for r in refs if r.step in ok_steps}
        pick = select_compute_optimal(info.n_params, [tokens[s] for s in ok_steps])
        if not pick.certified:
            echo(f"demo: {name}: no intact checkpoint at D* = 20 N; skipped (interpolated rows "
                 "certify no model)")
            continue
        step = ok_steps[pick.index]
        model = source.load_model(name, step)
        cert = certify_checkpoint(model, stream, trained_prefix_len(step, info.tokens_per_step), u,
                                  info.context_length, settings.bound, model_name=name, step=step,
                                  sample_name=SAMPLE)
        write_certificate(engine, cert, SAMPLE)
        certs.append(cert)
        echo(_summary_line(cert))
    return certs


def _summary_line(cert: CheckpointCertificate) -> str:
    head = f"demo: {cert.model} step {cert.step} (D = {cert.n_train_tokens:,}, N/D = " \
           f"{cert.n_params / cert.n_train_tokens:.3f})"
    if cert.status != "ok":
        return f"{head}: {cert.status}: {cert.failure_reason}"
    direct = cert.bound("freedman_direct")
    deco = next(r for r in cert.bounds if r["method"] == "freedman_decomposed" and r["certified"])
    azuma = cert.bound("azuma")
    return (f"{head}: R_h = {deco['empirical_risk']:.3f}, certified bounds (nats/token): "
            f"direct {direct['bound']:.3f}, Thm 3.4 {deco['bound']:.3f}, Azuma {azuma['bound']:.3f} "
            f"[{direct['code_length_method']} code, {cert.quantized['bits_per_param']:.2f} bits/param]")
