"""Everything a certificate fixes before any data is looked at, and where each setting comes from.

A setting chosen by the user before the bound's data is seen costs nothing in the bound.  A
choice the pipeline makes *after* looking at data (which quantization configuration of the
declared grid, which of the code lengths) is paid for in the bound (docs/pipeline.md).

Settings come from a named profile (``demo``, ``micro``, ``pythia``), then environment
variables ``GENBOUND_<FIELD>`` (e.g. ``GENBOUND_DELTA=0.05``, ``GENBOUND_QUANT_GRID=gptq:3:16,gptq:4:16``),
then Dagster run config / explicit overrides; ``CertifySettings.from_env`` does the first two and
refuses a malformed value with one line naming the variable.  docs/dagster.md lists every one.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["QuantConfig", "CertifySettings", "PROFILES", "SELECTIONS", "parse_quant_grid",
           "settings_for_profile", "DEVICE_ENV_FIELDS"]

QUANTIZERS = ("gptq", "rtn")
SUPPORTED_BITS = (2, 3, 4, 8)          # what measure/quantize.py packs
SELECTIONS = ("compute_optimal", "all", "none")
_CONFIG_RE = re.compile(r"^(gptq|rtn):(\d+):(-1|\d+)$")
_DEVICE_RE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True, order=True)
class QuantConfig:
    """One quantization configuration of the declared grid: quantizer, bits, group size
    (-1 = one group per row, i.e. per channel)."""

    quantizer: str
    bits: int
    group_size: int

    def __post_init__(self):
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        if self.bits not in SUPPORTED_BITS:
            raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {self.bits!r}")
        if self.group_size != -1 and self.group_size < 1:
            raise ValueError(f"group_size must be a positive integer or -1, got {self.group_size!r}")

    @property
    def key(self) -> str:
        """Stable text key, e.g. 'gptq-b4-g16' (used in artifact names and table keys)."""
        g = "row" if self.group_size == -1 else str(self.group_size)
        return f"{self.quantizer}-b{self.bits}-g{g}"

    def __str__(self) -> str:
        return f"{self.quantizer}:{self.bits}:{self.group_size}"


def parse_quant_grid(text: str) -> tuple[QuantConfig, ...]:
    """'gptq:3:16,gptq:4:16,rtn:4:-1' -> configs (sorted, duplicates refused)."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ValueError("quantization grid is empty")
    out = []
    for t in items:
        m = _CONFIG_RE.match(t)
        if not m:
            raise ValueError(f"quantization config {t!r} is not quantizer:bits:group_size "
                             f"(e.g. gptq:4:16, rtn:3:-1)")
        out.append(QuantConfig(m.group(1), int(m.group(2)), int(m.group(3))))
    if len(set(out)) != len(out):
        raise ValueError(f"quantization grid {text!r} lists a configuration twice")
    return tuple(sorted(out))


@dataclass(frozen=True)
class CertifySettings:
    """The certificate's constants and sampling design (docs/pipeline.md, docs/dagster.md)."""

    # -- the statement
    delta: float = 0.01                # failure probability of each certified row (the paper's)
    delta_split: float = 0.1           # sampled designs: share of delta for the martingale part
    grid_size: int = 1000              # |K| (Thm 3.1's grid of s), the paper's
    # -- quantization: the grid is declared before data; the choice among it is paid log|grid|
    # the demo's grid: 2 and 3 bits per channel (scales cost 16/d_in bits per weight), 3 and 4
    # bits at group size 16; measured on the suite, 2-bit per channel wins at every size (the
    # code shrinks more than the quantization gap grows) -- a larger grid is a setting
    quant_grid: tuple[QuantConfig, ...] = (QuantConfig("gptq", 2, -1), QuantConfig("gptq", 3, -1),
                                           QuantConfig("gptq", 3, 16), QuantConfig("gptq", 4, 16))
    reference_config: QuantConfig = QuantConfig("gptq", 4, 16)   # the paper's recipe (b = 4)
    quantize_embeddings: bool = True   # tiny models: embeddings are most of N
    n_calibration_windows: int = 16    # GPTQ calibration = the exact stratum of sampled designs
    calibration_seed: int = 1
    max_gap_nats: float = 2.0          # quantization gap ceiling, decided on calibration windows
    # -- the bound's data
    exact_max_targets: int = 3_000_000 # evaluate every training target when D <= this
    n_windows: int = 2_000             # sampled design: windows drawn (prob. proportional to targets)
    n_reference_pairs: int = 10_000    # the paper recipe's single-target sample (m = 10^4)
    reference_at: str = "compute_optimal"  # where the paper-recipe row is computed: compute_optimal | all
    sample_seed: int = 0
    # -- loss curve (eq. 5 inputs)
    curve_tokens: int = 4_096          # targets scored per checkpoint for the loss curve
    # -- which checkpoints the automation bounds
    selection: str = "compute_optimal" # compute_optimal (D* bracket + last) | all | none
    tokens_per_param: float = 20.0     # D* = 20 N (Sec. 2.2)
    # -- Hessian spectrum (App. B)
    slq_lanczos: int = 24
    slq_vectors: int = 2
    slq_batch_tokens: int = 4_096
    slq_seed: int = 0
    # -- compute
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 32               # windows per forward pass

    def __post_init__(self):
        for name in ("delta", "delta_split"):
            x = getattr(self, name)
            if not (isinstance(x, float | int) and 0.0 < x < 1.0):
                raise ValueError(f"{name} must lie in (0, 1), got {x!r}")
        for name in ("grid_size", "n_calibration_windows", "exact_max_targets", "n_windows",
                     "n_reference_pairs", "curve_tokens", "slq_lanczos", "slq_vectors",
                     "slq_batch_tokens", "batch_size"):
            x = getattr(self, name)
            if isinstance(x, bool) or not isinstance(x, int) or x < (0 if name == "exact_max_targets" else 1):
                what = "a non-negative" if name == "exact_max_targets" else "a positive"
                raise ValueError(f"{name} must be {what} integer, got {x!r}")
        if self.n_windows < 4:
            raise ValueError(f"n_windows must be >= 4 (the sample is split in two), got {self.n_windows}")
        for name in ("calibration_seed", "sample_seed", "slq_seed"):
            x = getattr(self, name)
            if isinstance(x, bool) or not isinstance(x, int) or x < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {x!r}")
        if not self.quant_grid:
            raise ValueError("quant_grid is empty")
        if len(set(self.quant_grid)) != len(self.quant_grid):
            raise ValueError("quant_grid lists a configuration twice")
        if self.reference_at not in ("compute_optimal", "all"):
            raise ValueError(f"reference_at must be compute_optimal or all, got {self.reference_at!r}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        if not (math.isfinite(self.max_gap_nats) and self.max_gap_nats > 0):
            raise ValueError(f"max_gap_nats must be > 0, got {self.max_gap_nats!r}")
        if not (math.isfinite(self.tokens_per_param) and self.tokens_per_param > 0):
            raise ValueError(f"tokens_per_param must be > 0, got {self.tokens_per_param!r}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if not (isinstance(self.device, str) and _DEVICE_RE.match(self.device)):
            raise ValueError(f"device must be cpu, cuda, cuda:<index> or mps, got {self.device!r}")

    @property
    def torch_dtype(self):
        """The model dtype as a torch.dtype (float32 | bfloat16 | float16)."""
        import torch

        return getattr(torch, self.dtype)

    def load_kwargs(self, attn_implementation: str = "sdpa") -> dict:
        """Keyword arguments of CheckpointSource.load_model for this device and dtype."""
        return {"dtype": self.torch_dtype, "device": self.device,
                "attn_implementation": attn_implementation}

    @property
    def configs(self) -> tuple[QuantConfig, ...]:
        """Every configuration to quantize: the grid plus the paper-recipe reference."""
        return tuple(sorted(set(self.quant_grid) | {self.reference_config}))

    def replace(self, **changes) -> CertifySettings:
        return dataclasses.replace(self, **changes)

    def as_record(self) -> dict[str, Any]:
        """JSON-able record stored with every row that depends on the settings."""
        d = dataclasses.asdict(self)
        d["quant_grid"] = [str(c) for c in self.quant_grid]
        d["reference_config"] = str(self.reference_config)
        return d

    # -- environment -----------------------------------------------------------------------

    @classmethod
    def from_env(cls, profile: str | None = None, environ=None, **overrides) -> CertifySettings:
        """Profile (``GENBOUND_PROFILE`` or ``profile``), then ``GENBOUND_<FIELD>`` variables,
        then ``overrides``.  A malformed variable is refused with one line naming it."""
        env = os.environ if environ is None else environ
        name = profile or env.get("GENBOUND_PROFILE", "").strip() or "demo"
        try:
            base = settings_for_profile(name)
        except ValueError as e:
            raise ValueError(f"GENBOUND_PROFILE: {e}" if not profile else str(e)) from None
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            var = f"GENBOUND_{f.name.upper()}"
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                continue
            try:
                changes[f.name] = _parse_field(f, raw.strip())
            except ValueError as e:
                raise ValueError(f"{var}={raw!r}: {e}") from None
        changes.update(overrides)
        try:
            return dataclasses.replace(base, **changes)
        except ValueError as e:
            bad = [k for k in changes if k in str(e)]
            where = f"GENBOUND_{bad[0].upper()}" if bad and bad[0] not in overrides else "settings"
            raise ValueError(f"{where}: {e}") from None


DEVICE_ENV_FIELDS = ("device", "dtype", "batch_size")


def _parse_field(f: dataclasses.Field, raw: str):
    if f.name == "quant_grid":
        return parse_quant_grid(raw)
    if f.name == "reference_config":
        cfgs = parse_quant_grid(raw)
        if len(cfgs) != 1:
            raise ValueError("expected one configuration, e.g. gptq:4:16")
        return cfgs[0]
    default = f.default
    if isinstance(default, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if isinstance(default, int):
        try:
            return int(raw.replace("_", ""))
        except ValueError:
            raise ValueError("expected an integer") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ValueError("expected a number") from None
    return raw


PROFILES: dict[str, CertifySettings] = {
    # the local suite of `genbound demo` (V = 257, GPTQ group size 16 fits d = 16)
    "demo": CertifySettings(),
    # tests: seconds per checkpoint
    "micro": CertifySettings(
        quant_grid=(QuantConfig("rtn", 4, 16), QuantConfig("gptq", 4, 16)),
        reference_config=QuantConfig("gptq", 4, 16), n_calibration_windows=4,
        exact_max_targets=20_000, n_windows=64, n_reference_pairs=256, curve_tokens=256,
        grid_size=100, slq_lanczos=8, slq_vectors=2, slq_batch_tokens=256, batch_size=16),
    # Pythia on a GPU node (docs/pythia.md): sampled windows, bf16
    "pythia": CertifySettings(
        quant_grid=(QuantConfig("gptq", 3, 128), QuantConfig("gptq", 4, 128)),
        reference_config=QuantConfig("gptq", 4, 128), quantize_embeddings=False,
        n_calibration_windows=128, exact_max_targets=0, n_windows=2_000,
        n_reference_pairs=10_000, curve_tokens=65_536, slq_lanczos=80, slq_vectors=4,
        slq_batch_tokens=8_192, device="cuda", dtype="bfloat16", batch_size=8),
}


def settings_for_profile(name: str) -> CertifySettings:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown settings profile {name!r}; profiles: {', '.join(PROFILES)}") from None

