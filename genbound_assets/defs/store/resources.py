"""The Postgres resource every asset that touches the store uses (resource key ``postgres``)."""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field
from sqlalchemy.engine import Engine

from genbound_assets.storage import DATABASE_URL_ENV, get_engine


class PostgresResource(dg.ConfigurableResource):
    """genbound's Postgres store.

    ``database_url`` is a ``postgresql+psycopg2://`` URL; left unset, the embedded server under
    ``GENBOUND_DATA_DIR`` is started (or reused).  ``genbound ui`` exports the URL it resolved,
    so the webserver, the daemon and every run worker use the same database.
    """

    database_url: str | None = Field(
        default=None,
        description=f"postgresql+psycopg2:// URL; unset = ${DATABASE_URL_ENV} or the embedded server",
    )

    def get_engine(self) -> Engine:
        """The cached engine, with the schema created on first use."""
        return get_engine(self.database_url or None)


def postgres_resource() -> PostgresResource:
    # EnvVar keeps the URL out of the UI's config view and resolves it in each run's process;
    # with the variable unset at load time, fall back to the embedded server.
    if os.environ.get(DATABASE_URL_ENV, "").strip():
        return PostgresResource(database_url=dg.EnvVar(DATABASE_URL_ENV))
    return PostgresResource()


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"postgres": postgres_resource()})
