"""The one declarative ``Base``, engines and sessions, the same on PostgreSQL and SQLite."""

from __future__ import annotations

import select
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import CursorResult, MetaData, create_engine, event, exc
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
    kwargs.setdefault("pool_size", 10)
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


def rowcount(result: object) -> int:
    """Rows matched by an UPDATE or DELETE (``session.execute`` types it as a plain Result)."""
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


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
