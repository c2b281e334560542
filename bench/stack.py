"""A throw-away antihack stack for benchmarks: settings, servers, a key."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
import sqlalchemy as sa

from antihack.shared.domain.keys import KeyOptions, create_key
from antihack.shared.infra.db import make_engine, make_sessionmaker, transaction
from antihack.shared.infra.embedded import start_redis
from antihack.shared.infra.migrate import upgrade
from antihack.shared.infra.settings import Settings


@dataclass(frozen=True)
class Stack:
    settings: Settings
    headers: dict[str, str]
    logs: Path


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new database on the server ANTIHACK_DATABASE_URL names, dropped afterwards, so that
    one benchmark's backlog never lands in the next one's."""
    if not server_url:
        yield ""
        return
    name = f"antihack_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextmanager
def stack(**overrides: object) -> Iterator[Stack]:
    """PostgreSQL/Redis from ANTIHACK_DATABASE_URL/ANTIHACK_REDIS_URL if set (a fresh database
    and a flushed Redis db each time), else embedded."""
    with (
        tempfile.TemporaryDirectory(prefix="antihack-bench-") as tmp,
        fresh_database(os.environ.get("ANTIHACK_DATABASE_URL", "")) as database_url,
    ):
        settings = Settings(
            data_dir=Path(tmp),
            database_url=database_url,
            redis_url=os.environ.get("ANTIHACK_REDIS_URL", ""),
            secret_key="bench",
            admin_token="bench",
        ).replace(**overrides)
        redis_proc = start_redis(settings) if settings.embedded_redis else None
        redis.Redis.from_url(settings.redis_client_url).flushdb()
        try:
            upgrade(settings.effective_database_url)
            engine = make_engine(settings.effective_database_url)
            with transaction(make_sessionmaker(engine)) as session:
                key, new = create_key(session, settings.secret_key, KeyOptions(name="bench"))
                headers = {"X-DF-API-ID": key.id, "X-DF-API-SECRET": new.api_secret}
            engine.dispose()
            yield Stack(settings, headers, Path(tmp))
        finally:
            if redis_proc is not None:
                redis_proc.terminate()
                redis_proc.wait()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def ms_since(start: float) -> float:
    """Milliseconds since ``start``, a ``time.perf_counter()`` reading."""
    return (time.perf_counter() - start) * 1000


def load_average() -> str:
    """The 1/5/15-minute load averages, for a benchmark's header and footer."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"
