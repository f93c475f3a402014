"""The Postgres schema (SQLAlchemy 2 Core).  Table names are final: later issues add columns.

No foreign keys on purpose: every asset rewrites its own partitions (storage/io.py
``replace_partition``), and a cascade from e.g. ``models`` would silently delete other assets'
rows.  Columns that distinguish rows are NOT NULL (with neutral defaults such as
``quantizer='none'``, ``bits=0``) so that the primary keys really are unique (NULLs are distinct
in a Postgres key).  See docs/storage.md.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.engine import Engine

metadata = MetaData()

# Allowed values of the enum-like columns (also enforced by CHECK constraints).
SOURCE_KINDS = ("local", "pythia_hub")
CHECKPOINT_STATUSES = ("ok", "quarantined")
SAMPLE_PURPOSES = ("bound", "calibration", "hessian")
DESIGNS = ("exact", "windows", "pairs")
BOUND_ROLES = ("headline", "diagnostic", "reference", "estimate")
QUANTIZERS = ("none", "gptq", "rtn")
EVAL_KINDS = ("next_tokens", "held_sample")
QUANTIZATION_STATUSES = ("ok", "failed")
FIT_FORMS = ("power", "offset_power")
FIT_STATUSES = ("ok", "not_enough_sizes", "not_fitted")

_SCHEMA_LOCK_KEY = 0x67656E62  # "genb": serializes concurrent create_schema calls


def _in(col: str, values: tuple[str, ...], table: str) -> CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{col} IN ({allowed})", name=f"{table}_{col}_check")


def _stamp(name: str = "computed_at") -> Column:
    return Column(name, DateTime(timezone=True), nullable=False, server_default=func.now())


def _quant_cols() -> list[Column]:
    """The columns naming a (possibly quantized) variant of a checkpoint."""
    return [
        Column("quantizer", Text, nullable=False, server_default="none"),
        Column("bits", SmallInteger, nullable=False, server_default="0"),  # 0 = float
        Column("group_size", Integer, nullable=False, server_default="0"),  # 0 = none
    ]


models = Table(
    "models",
    metadata,
    Column("model", Text, primary_key=True),  # e.g. "pythia-70m", "suite-s"
    Column("family", Text, nullable=False),
    Column("source_kind", Text, nullable=False),
    Column("location", Text),  # hub repo id or local path
    Column("n_params", BigInteger),  # total
    Column("n_params_non_embedding", BigInteger),
    Column("vocab_size", Integer),  # logit dimension V (padded)
    Column("context_length", Integer),
    Column("tokens_per_step", BigInteger),
    Column("config", JSONB),
    _stamp("created_at"),
    _in("source_kind", SOURCE_KINDS, "models"),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("model", Text, nullable=False),
    Column("step", Integer, nullable=False),
    Column("tokens_seen", BigInteger),
    Column("n_train_tokens", BigInteger),  # D: targets trained on (the bound's n)
    Column("location", Text),  # path or hub revision
    Column("fingerprint", Text),  # sha256 hex of the weights
    Column("status", Text, nullable=False, server_default="ok"),
    Column("quarantine_reason", Text),
    Column("checked_at", DateTime(timezone=True)),
    _stamp("created_at"),
    PrimaryKeyConstraint("model", "step", name="checkpoints_pkey"),
    _in("status", CHECKPOINT_STATUSES, "checkpoints"),
)

token_samples = Table(
    "token_samples",
    metadata,
    Column("sample", Text, nullable=False),
    Column("i", Integer, nullable=False),
    Column("u", Double, nullable=False),  # the seeded uniform
    Column("seed", BigInteger, nullable=False),
    Column("purpose", Text, nullable=False),
    _stamp("created_at"),
    PrimaryKeyConstraint("sample", "i", name="token_samples_pkey"),
    _in("purpose", SAMPLE_PURPOSES, "token_samples"),
)

token_losses = Table(
    "token_losses",
    metadata,
    Column("model", Text, nullable=False),
    Column("step", Integer, nullable=False),
    *_quant_cols(),
    Column("alpha", Double, nullable=False, server_default="0"),  # 0 = unsmoothed
    Column("sample", Text, nullable=False),
    Column("i", Integer, nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("loss", Double, nullable=False),  # X
    Column("entropy", Double),  # Y
    _stamp(),
    PrimaryKeyConstraint(
        "model", "step", "quantizer", "bits", "group_size", "alpha", "sample", "i",
        name="token_losses_pkey",
    ),
    _in("quantizer", QUANTIZERS, "token_losses"),
)

checkpoint_losses = Table(
    "checkpoint_losses",
    metadata,
    Column("model", Text, nullable=False),
    Column("step", Integer, nullable=False),
    Column("tokens_seen", BigInteger),
    Column("eval_kind", Text, nullable=False),
    Column("n_tokens", BigInteger, nullable=False),
    Column("mean_loss", Double, nullable=False),
    _stamp(),
    PrimaryKeyConstraint("model", "step", "eval_kind", name="checkpoint_losses_pkey"),
    _in("eval_kind", EVAL_KINDS, "checkpoint_losses"),
)

quantized_models = Table(
    "quantized_models",
    metadata,
    Column("model", Text, nullable=False),
    Column("step", Integer, nullable=False),
    *_quant_cols(),
    Column("quantize_embeddings", Boolean, nullable=False, server_default=sa.false()),
    Column("calibration_sample", Text),
    Column("n_params", BigInteger),
    Column("nominal_bits", BigInteger),
    Column("stored_bits", BigInteger),
    Column("compressed_bits", BigInteger),
    Column("bits_per_param", Double),
    Column("status", Text, nullable=False, server_default="ok"),
    Column("failure_reason", Text),
    Column("quantization_gap", Double),  # on the calibration windows (decides the status)
    Column("wall_s", Double),
    Column("artifact_path", Text),
    Column("artifact_sha256", Text),
    Column("entropy_bits", BigInteger),
    Column("code_length_method", Text),  # the certified code the bound uses (grid configs)
    Column("code_length_bits", Double),
    Column("in_grid", Boolean, nullable=False, server_default=sa.true()),
    Column("is_reference", Boolean, nullable=False, server_default=sa.false()),
    Column("chosen", Boolean, nullable=False, server_default=sa.false()),
    Column("choice_nats", Double),  # log|grid| + log #codes paid in the bound
    Column("alpha", Double),
    Column("complexity", Double),
    Column("reference_alpha", Double),  # the paper recipe's alpha (nominal b*N accounting)
    Column("predicted_bound", Double),  # the selection score on the calibration windows
    _stamp(),
    PrimaryKeyConstraint(
        "model", "step", "quantizer", "bits", "group_size", "quantize_embeddings",
        name="quantized_models_pkey",
    ),
    _in("quantizer", QUANTIZERS, "quantized_models"),
    _in("status", QUANTIZATION_STATUSES, "quantized_models"),
)

hessian_spectra = Table(
    "hessian_spectra",
    metadata,
    Column("model", Text, nullable=False),
    Column("step", Integer, nullable=False),
    Column("n_lanczos", Integer, nullable=False),
    Column("n_vectors", Integer, nullable=False),
    Column("seed", BigInteger, nullable=False),
    Column("n_batch_tokens", BigInteger, nullable=False),
    Column("sample", Text),
    Column("trace_slq", Double),
    Column("trace_hutchinson", Double),
    Column("trace_hutchinson_se", Double),
    Column("lambda_min", Double),
    Column("lambda_max", Double),
    Column("trace_sqrt_shifted", Double),
    Column("trace_sqrt_abs", Double),
    Column("trace_sqrt_positive", Double),  # Tr(H_+^1/2), no shift (App. B's quantity)
    Column("n_params", BigInteger),
    Column("bits_needed", Double),  # App. B: bits that suffice at the measured spectrum
    Column("ritz_nodes", ARRAY(Double)),
    Column("ritz_weights", ARRAY(Double)),
    Column("density_grid", ARRAY(Double)),
    Column("density", ARRAY(Double)),
    _stamp(),
    PrimaryKeyConstraint(
        "model", "step", "n_lanczos", "n_vectors", "seed", "n_batch_tokens",
        name="hessian_spectra_pkey",
    ),
)

# The columns that distinguish one bound from another: the primary key of `bounds`.
BOUND_KEY = (
    "model", "step", "method", "quantizer", "bits", "group_size", "code_length_method", "alpha",
    "loss_range_method", "delta", "sample", "n_sample", "subsample_method", "grid_size",
    "interpolated", "design", "quantize_embeddings", "calibration", "delta_split_share",
)

bounds = Table(
    "bounds",
    metadata,
    Column("model", Text, nullable=False),
    Column("step", Integer, nullable=False),
    Column("method", Text, nullable=False),  # freedman_decomposed | freedman_direct | azuma | prequential
    *_quant_cols(),
    Column("code_length_method", Text, nullable=False),
    Column("code_length_bits", Double),
    Column("alpha", Double, nullable=False, server_default="0"),
    Column("loss_range", Double),  # Δ
    Column("loss_range_method", Text, nullable=False),
    Column("sigma", Double),
    Column("s_star", Double),
    Column("grid_size", Integer, nullable=False, server_default="0"),
    Column("delta", Double, nullable=False),
    Column("delta_split", JSONB),  # how δ was split between the union-bound terms
    Column("n_params", BigInteger),
    Column("n_train_tokens", BigInteger),  # D
    Column("sample", Text, nullable=False, server_default=""),  # token_samples.sample
    Column("n_sample", BigInteger, nullable=False),  # m
    Column("empirical_risk", Double),
    Column("complexity", Double),
    Column("random_guess_term", Double),
    Column("loss_variation_term", Double),
    Column("smoothing_term", Double),
    Column("quantization_gap", Double),
    Column("subsample_term", Double),
    Column("subsample_method", Text, nullable=False, server_default="none"),
    Column("choice_cost_nats", Double),
    Column("bound", Double),
    # false for interpolated rows, nominal code lengths and estimates
    Column("certified", Boolean, nullable=False, server_default=sa.false()),
    Column("interpolated", Boolean, nullable=False, server_default=sa.false()),
    Column("role", Text, nullable=False, server_default="diagnostic"),
    Column("design", Text, nullable=False, server_default="pairs"),
    Column("quantize_embeddings", Boolean, nullable=False, server_default=sa.false()),
    Column("calibration", Text, nullable=False, server_default=""),
    Column("delta_split_share", Double, nullable=False, server_default="0"),
    Column("family", Text),
    _stamp(),
    PrimaryKeyConstraint(*BOUND_KEY, name="bounds_pkey"),
    _in("quantizer", QUANTIZERS, "bounds"),
    _in("role", BOUND_ROLES, "bounds"),
    _in("design", DESIGNS, "bounds"),
)

# One checkpoint's certificate data: the design and its summary (per-target arrays below).
token_loss_sets = Table(
    "token_loss_sets",
    metadata,
    Column("model", Text, nullable=False),
    Column("step", Integer, nullable=False),
    Column("design", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="ok"),
    Column("failure_reason", Text),
    Column("n_train_tokens", BigInteger),  # D
    Column("n_draws", Integer),  # m windows drawn (0 = every target)
    Column("n_targets", BigInteger),  # targets evaluated for the bound
    Column("n_exact", BigInteger),  # of which in the exact stratum
    Column("n_reference_pairs", Integer),
    *_quant_cols(),  # the chosen configuration
    Column("alpha", Double),
    Column("ref_quantizer", Text),
    Column("ref_bits", SmallInteger),
    Column("ref_group_size", Integer),
    Column("alpha_ref", Double),
    Column("vocab_size", Integer),
    Column("mean_h_loss", Double),
    Column("mean_q_loss", Double),
    Column("mean_sq_loss", Double),
    Column("sample", Text),  # token_samples.sample the draws came from
    Column("settings", JSONB),
    Column("wall_s", Double),
    _stamp(),
    PrimaryKeyConstraint("model", "step", name="token_loss_sets_pkey"),
    _in("design", DESIGNS[:2], "token_loss_sets"),
)

token_loss_arrays = Table(
    "token_loss_arrays",
    metadata,
    Column("model", Text, nullable=False),
    Column("step", Integer, nullable=False),
    Column("name", Text, nullable=False),  # window, column, draw, h_loss, q_sq_loss, ...
    Column("chunk", Integer, nullable=False),
    Column("dtype", Text, nullable=False),  # numpy dtype string, little-endian
    Column("n", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    _stamp(),
    PrimaryKeyConstraint("model", "step", "name", "chunk", name="token_loss_arrays_pkey"),
)

# The compute-optimal selection of each model (Sec. 2.2: D* = 20 N).
compute_optimal = Table(
    "compute_optimal",
    metadata,
    Column("model", Text, primary_key=True),
    Column("n_params", BigInteger),
    Column("tokens_per_param", Double),
    Column("d_star", BigInteger),
    Column("step", Integer),  # the first intact checkpoint with D >= D* (its bounds are certified)
    Column("n_train_tokens", BigInteger),
    Column("step_lo", Integer),  # the bracket for the interpolated (not certified) row
    Column("step_hi", Integer),
    Column("d_lo", BigInteger),
    Column("d_hi", BigInteger),
    Column("weight_hi", Double),  # linear weight in N/D at N/D = 1/tokens_per_param
    Column("certified", Boolean, nullable=False, server_default=sa.false()),
    Column("note", Text),
    _stamp(),
)

# Scaling-law fits across a family's model sizes (fits/scaling.py; none of them is certified).
power_law_fits = Table(
    "power_law_fits",
    metadata,
    # first, so that the key's column order is the table's (create_schema compares them)
    Column("family", Text, nullable=False, server_default=""),
    Column("quantity", Text, nullable=False),
    Column("form", Text, nullable=False),
    Column("selection", Text, nullable=False, server_default=""),
    Column("params", JSONB),
    Column("std_errors", JSONB),
    Column("ci_low", JSONB),
    Column("ci_high", JSONB),
    Column("r2", Double),
    Column("n_points", Integer),
    Column("residuals", ARRAY(Double)),
    Column("certified", Boolean, nullable=False, server_default=sa.false()),
    _stamp(),
    # ok | not_enough_sizes (a record, not a fit) | not_fitted (the note says why)
    Column("status", Text, nullable=False, server_default="ok"),
    Column("note", Text),
    Column("unit", Text),  # of the fitted quantity (y)
    Column("source", Text),  # which stored values the points are
    Column("x", ARRAY(Double)),  # N of each point
    Column("y", ARRAY(Double)),
    Column("models", ARRAY(Text)),
    Column("extrapolation", JSONB),  # {n_params, factor, y, ci_low, ci_high, pi_low, pi_high}
    PrimaryKeyConstraint("family", "quantity", "form", "selection", name="power_law_fits_pkey"),
    _in("form", FIT_FORMS, "power_law_fits"),
    _in("status", FIT_STATUSES, "power_law_fits"),
)

TABLES: tuple[str, ...] = tuple(metadata.tables)


def get_table(table: str | Table) -> Table:
    """The Table object for a name (or the Table itself); clear error for unknown names."""
    if isinstance(table, Table):
        return table
    try:
        return metadata.tables[table]
    except KeyError:
        raise ValueError(f"unknown table {table!r}; genbound tables: {', '.join(TABLES)}") from None


def create_schema(engine: Engine) -> list[str]:
    """Create every table (idempotent), and add columns that newer code defines but an older
    database lacks.  Returns the names of what was created or added (empty when up to date).

    Runs in one transaction under an advisory lock, so concurrent callers do not race.
    Only additive changes are migrated: a new column must be nullable or have a server default.
    """
    changed: list[str] = []
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK_KEY})
        inspector = sa.inspect(conn)
        existing = set(inspector.get_table_names())
        for name, table in metadata.tables.items():
            if name not in existing:
                table.create(conn)
                changed.append(name)
                continue
            have = {c["name"] for c in inspector.get_columns(name)}
            for col in table.columns:
                if col.name in have:
                    continue
                if not col.nullable and col.server_default is None:
                    raise RuntimeError(
                        f"cannot add NOT NULL column {name}.{col.name} without a server default "
                        "to an existing table; give it a server_default"
                    )
                ddl = sa.schema.CreateColumn(col).compile(dialect=conn.dialect)
                conn.execute(text(f'ALTER TABLE "{name}" ADD COLUMN IF NOT EXISTS {ddl}'))
                changed.append(f"{name}.{col.name}")
            # a primary key that gained columns (a key only ever grows: no duplicate can appear)
            want = [c.name for c in table.primary_key.columns]
            pk = inspector.get_pk_constraint(name)
            if want and list(pk.get("constrained_columns") or []) != want:
                cols = ", ".join(f'"{c}"' for c in want)
                if pk.get("name"):
                    conn.execute(text(f'ALTER TABLE "{name}" DROP CONSTRAINT "{pk["name"]}"'))
                conn.execute(text(f'ALTER TABLE "{name}" ADD CONSTRAINT "{table.primary_key.name}" '
                                  f'PRIMARY KEY ({cols})'))
                changed.append(f"{name}.primary_key")
    return changed


def table_counts(engine: Engine) -> dict[str, int]:
    """Row count of every genbound table."""
    with engine.connect() as conn:
        return {
            name: int(conn.execute(sa.select(func.count()).select_from(table)).scalar_one())
            for name, table in metadata.tables.items()
        }
