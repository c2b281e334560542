"""The one declarative ``Base``, engines and sessions, the same on PostgreSQL and SQLite."""

from __future__ import annotations

import contextlib
import select
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, CursorResult, MetaData, create_engine, event, exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

T = TypeVar("T")
# Pooled PostgreSQL connections are replaced after an hour.
POOL_RECYCLE_S = 3600

# Stable constraint names so that Alembic migrations are the same on both databases.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# Connections a pool keeps. Those it opens beyond them (up to max_overflow more) are closed when
# given back, so a process whose threads outnumber its pool opens a connection (a new server
# process, its caches cold) for many requests: a threaded server passes pool_size = its threads.
DB_POOL_SIZE = 10


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine tuned for the backend: WAL and a busy timeout on SQLite; on PostgreSQL a pool
    that drops connections the server closed, without a round trip per checkout."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Several processes (API, workers, beat) share the file: WAL lets readers run while a
            # writer commits, and busy_timeout turns lock contention into waiting, not errors.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # BEGIN IMMEDIATE takes the write lock up front, so two writers never deadlock on
            # a read-then-write upgrade (pysqlite's default deferred BEGIN would).
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        @event.listens_for(engine, "connect")
        def _no_pysqlite_begin(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        return engine
    kwargs.setdefault("pool_size", DB_POOL_SIZE)
    kwargs.setdefault("max_overflow", 20)
    # A connection is replaced after this long, so none outlives a server-side idle limit.
    kwargs.setdefault("pool_recycle", POOL_RECYCLE_S)
    engine = create_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        event.listen(engine, "checkout", _drop_if_closed_by_server)
    return engine


def _drop_if_closed_by_server(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    """Refuse a pooled connection the server has closed, without a round trip.

    Pre-ping (``SELECT 1`` on every checkout) cost a round trip per transaction. An idle
    connection has nothing to read: when its socket is readable, the server said goodbye
    (``pg_terminate_backend``, a restart: an error message, then EOF). DisconnectionError makes
    the pool drop it and check out another. A connection that dies after this check fails its
    first statement: :func:`retry_on_disconnect` runs such a transaction once more.
    """
    try:
        fileno = dbapi_conn.fileno()
    except Exception:
        raise exc.DisconnectionError("the connection is closed") from None
    poller = select.poll()
    poller.register(fileno, select.POLLIN | select.POLLPRI)
    if poller.poll(0):
        raise exc.DisconnectionError("the server closed the connection")


def retry_on_disconnect(session: Session, work: Callable[[], T]) -> T:
    """Run ``work``, the statements of the session's uncommitted transaction, once more on a
    fresh connection when the first try found its connection dead.

    Nothing of the first try was committed (the server rolls back a transaction whose connection
    ends), so running it again is safe. Call it before the commit: a commit that fails on a dead
    connection has an unknown outcome and is never retried.
    """
    try:
        return work()
    except exc.DBAPIError as error:
        if not error.connection_invalidated:
            raise
        session.rollback()
    return work()


def commit_pipelined(session: Session, sql: str, params: dict[str, Any]) -> bool:
    """Run ``sql`` (psycopg's ``%(name)s`` parameters; rows it returns are not read) and commit,
    in one round trip: PostgreSQL
    gets both at once (psycopg's pipeline mode), so that a row lock the statement takes is held
    while the server runs the two, not also while this process reads the statement's answer
    and sends the COMMIT. Their errors are raised as SQLAlchemy's (``DBAPIError``; a lost
    connection is invalidated, as SQLAlchemy does), the transaction then left for the caller
    to roll back. Returns False, having done nothing, where there are no pipelines (SQLite):
    the caller runs its statement and commits itself.

    Worth it where a lock's hold matters, not for CPU: psycopg's pipeline costs as much CPU
    as the round trips it saves, or more (measured on the submission's inserts).
    """
    connection = session.connection()
    dbapi = connection.dialect.loaded_dbapi
    if connection.dialect.driver != "psycopg" or not dbapi.Pipeline.is_supported():
        return False
    raw: Any = connection.connection.dbapi_connection  # a psycopg.Connection
    try:
        with raw.pipeline() as pipeline:
            connection.exec_driver_sql(sql, params)
            try:
                # The driver's commit, not the session's: the session would hand the
                # connection back to the pool at once, to another thread, while this pipeline
                # still has answers to read.
                raw.commit()
            except dbapi.Error:
                # Take the aborted pipeline's last answers here: at its end they are logged.
                with contextlib.suppress(dbapi.Error):
                    pipeline.sync()
                raise
    except dbapi.Error as error:
        raise _as_sqlalchemy(connection, raw, error, None, None) from error
    session.commit()  # the session's side: the server has committed, this sends nothing
    return True


def _as_sqlalchemy(
    connection: Connection, raw: Any, error: Any, sql: str | None, params: Any
) -> exc.StatementError:
    """A driver error raised under SQLAlchemy's connection, as SQLAlchemy would raise it: a lost
    connection invalidated (so :func:`retry_on_disconnect` and the pool treat it alike)."""
    invalidated = connection.dialect.is_disconnect(error, raw, None)
    if invalidated:
        connection.invalidate(error)
    wrapped: exc.StatementError = exc.DBAPIError.instance(
        sql,
        params,
        error,
        connection.dialect.loaded_dbapi.Error,
        connection_invalidated=invalidated,
        dialect=connection.dialect,
    )
    return wrapped


def rowcount(result: object) -> int:
    """Rows matched by an UPDATE or DELETE (``session.execute`` types it as a plain Result)."""
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


def on_psycopg(connection: Connection | Engine) -> bool:
    """Whether ``connection`` is PostgreSQL through psycopg (:func:`driver_rows` runs there)."""
    return connection.dialect.driver == "psycopg"


def driver_rows(connection: Connection, sql: str, params: Mapping[str, Any]) -> list[Any]:
    """Run ``sql`` (psycopg's ``%(name)s`` parameters) on the psycopg connection under
    ``connection``, in its transaction (or in autocommit, where the connection is), and return
    its rows (tuples of the driver's types: naive datetimes, JSON parsed, bytes); ``sql``
    must return rows (``RETURNING``, ``SELECT``).

    For the worker's few statements per job, on PostgreSQL only (:func:`on_psycopg`):
    SQLAlchemy's execution layer costs ~0.3 ms of CPU per statement, more than the driver and
    the server together, and results read in binary spare the server hex-encoding a bytea (a
    ~45 KiB capture is 90 KiB of hex) and this process decoding it. Errors are raised as
    SQLAlchemy's (``DBAPIError``; a lost connection invalidated, as SQLAlchemy does), so
    :func:`retry_on_disconnect` treats them the same.
    """
    raw: Any = connection.connection.dbapi_connection  # a psycopg.Connection
    dbapi = connection.dialect.loaded_dbapi
    try:
        with raw.cursor(binary=True) as cursor:
            cursor.execute(sql, params)
            rows: list[Any] = cursor.fetchall()
            return rows
    except dbapi.Error as error:
        raise _as_sqlalchemy(connection, raw, error, sql, dict(params)) from error


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


class KeptConnections:
    """One connection in autocommit per thread, taken from ``engine``'s pool once and kept, for
    work that is one statement (a claim, a read) repeated job after job: no BEGIN and COMMIT
    round trips around it, no session, no pool checkout per job.

    A kept connection is not checked at each use as a checkout is (``_drop_if_closed_by_server``):
    one the server ended fails its next statement, and :meth:`run` runs the work once more on a
    fresh one. In autocommit that first try may, rarely, have committed before the connection
    died (the server's crash between its commit and its answer): the work must tolerate that
    (a claim then finds its job RUNNING and leaves it to the sweeper; a record finds it
    finished).
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._local = threading.local()

    def run(self, work: Callable[[Connection], T]) -> T:
        """``work`` on this thread's connection, once more on a fresh one if that had died."""
        try:
            return work(self._connection())
        except exc.DBAPIError as error:
            if not error.connection_invalidated:
                raise
        return work(self._connection())

    def close(self) -> None:
        """Give this thread's connection back to the pool (the next run takes another)."""
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()

    def _connection(self) -> Connection:
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is None or connection.invalidated or connection.closed:
            if connection is not None:
                connection.close()
            connection = self._local.connection = self._engine.connect()
        return connection


def kept_connections(engine: Engine) -> KeptConnections | None:
    """:class:`KeptConnections` on PostgreSQL; None elsewhere (SQLite: one transaction each)."""
    return KeptConnections(engine) if engine.dialect.name == "postgresql" else None


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error, always close."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
