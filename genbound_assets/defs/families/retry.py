"""Retries for the assets that touch Postgres (docs/reliability.md, "Retries").

Every genbound asset that reads or writes the store carries ``retry_policy=POSTGRES_RETRY``
and its body is wrapped by :func:`retry_transient`:

* a *transient* error -- the database was down, restarted, dropped the connection, or
  aborted the transaction under a deadlock or serialization failure (:func:`is_transient`) --
  raises ``dg.RetryRequested`` with the policy's exponential backoff, so the step runs again
  (its partition writes are one transaction each: a failed attempt left the previous rows);
* anything else (bad input, a damaged file, a failed check, a bug) becomes a
  ``dg.Failure(allow_retries=False)`` with a one-line description naming the cause, which the
  policy does not retry: running it again would fail the same way.

``POSTGRES_RETRY`` is read when an attempt fails (tests shorten it with monkeypatch).  No
``from __future__ import annotations``: the wrapper keeps the asset's annotations for Dagster.
"""

import functools

import dagster as dg

__all__ = ["POSTGRES_RETRY", "is_transient", "retry_transient", "one_line"]

#: 4 retries, after 1, 3, 7, 15 s (each ± 1 s of jitter; Dagster's exponential backoff is
#: (2^n - 1) x delay): about 26 s for a database restart or fail-over.
POSTGRES_RETRY = dg.RetryPolicy(max_retries=4, delay=1, backoff=dg.Backoff.EXPONENTIAL,
                                jitter=dg.Jitter.PLUS_MINUS)

# SQLSTATE classes / codes of errors that go away by themselves: connection exceptions (08),
# insufficient resources (53), operator intervention (57P01 admin shutdown, 57P02 crash
# shutdown, 57P03 cannot connect now), serialization failure and deadlock (40001, 40P01).
_TRANSIENT_CLASSES = ("08", "53")
_TRANSIENT_CODES = {"57P01", "57P02", "57P03", "40001", "40P01"}
# connection failures libpq reports without a SQLSTATE that will not heal by waiting
_PERMANENT_TEXT = ("password authentication failed", "does not exist", "pg_hba.conf",
                   "could not translate host name", "invalid dsn", "invalid connection option",
                   "sslmode value")


def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def is_transient(err: BaseException) -> bool:
    """True for a lost or refused database connection (or an aborted transaction that a retry
    can commit), anywhere in ``err``'s cause/context chain; False for everything else.

    Connection errors: SQLAlchemy's ``OperationalError`` / ``InterfaceError`` /
    ``DisconnectionError`` (or a statement whose connection was invalidated) and psycopg2's
    ``OperationalError`` / ``InterfaceError``, unless their SQLSTATE or message says the problem
    is permanent (bad password, unknown database or host).  ``storage.StoreError`` carries the
    connection error as its context when the server was unreachable, and is transient then;
    a StoreError for a malformed URL is not.
    """
    import psycopg2
    import sqlalchemy.exc as sx

    def driver(e) -> bool:
        code = getattr(e, "pgcode", None)
        if code:
            return code[:2] in _TRANSIENT_CLASSES or code in _TRANSIENT_CODES
        text = str(e).lower()
        return not any(t in text for t in _PERMANENT_TEXT)

    for e in _chain(err):
        if isinstance(e, sx.DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, sx.DisconnectionError):
            return True
        if isinstance(e, (sx.OperationalError, sx.InterfaceError)):
            orig = e.orig
            return driver(orig) if isinstance(orig, psycopg2.Error) else True
        if isinstance(e, (psycopg2.OperationalError, psycopg2.InterfaceError)):
            return driver(e)
    return False


def one_line(err: BaseException) -> str:
    """The error as one line: ``Type: first line`` (a dg.Failure: its description)."""
    if isinstance(err, dg.Failure) and err.description:
        text = err.description
    else:
        orig = getattr(err, "orig", None) or err
        text = f"{type(orig).__name__}: {str(orig).strip()}" if str(orig).strip() else type(orig).__name__
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return " ".join(lines[0].split()) if lines else type(err).__name__


def retry_transient(fn):
    """Wrap an asset body: transient database errors -> ``dg.RetryRequested`` with the
    ``POSTGRES_RETRY`` backoff; any other exception -> ``dg.Failure(allow_retries=False)``
    naming it in one line (the original is kept as the cause)."""

    @functools.wraps(fn)
    def wrapper(context, *args, **kwargs):
        try:
            return fn(context, *args, **kwargs)
        except dg.RetryRequested:
            raise
        except Exception as e:
            policy = POSTGRES_RETRY
            if is_transient(e):
                attempt = context.retry_number + 1
                wait = policy.calculate_delay(attempt)
                context.log.warning(f"transient database error (attempt {attempt} of "
                                    f"{policy.max_retries + 1}), retrying in {wait:.1f} s: "
                                    f"{one_line(e)}")
                raise dg.RetryRequested(max_retries=policy.max_retries, seconds_to_wait=wait) from e
            if isinstance(e, dg.Failure) and not e.allow_retries:
                raise
            meta = e.metadata if isinstance(e, dg.Failure) else None
            raise dg.Failure(description=one_line(e), metadata=meta, allow_retries=False) from e

    return wrapper
