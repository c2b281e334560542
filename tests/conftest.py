"""Test fixtures: a real database and Redis (the CI servers, or the embedded default), keys, apps,
and real worker / API processes."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from shared import devstack
from shared.db import make_engine, make_sessionmaker, transaction
from shared.devstack import Proc
from shared.embedded import start_redis
from shared.keys import KeyOptions, create_key
from shared.migrate import upgrade
from shared.settings import Settings

# A Redis db number of this run's own (1-15, never the 0 the server URL names), so that two runs
# on one machine rarely share queues; the run flushes it at start.
TEST_REDIS_DB = 1 + os.getpid() % 15


def _postgres_database(server_url: str) -> tuple[str, Callable[[], None]]:
    """Create a database of our own on the test server; returns its URL and a dropper."""
    name = f"antihack_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    return url, drop


def _redis_url(server_url: str) -> str:
    # Our own db number so that a run never sees (or flushes) anyone else's keys.
    return re.sub(r"/\d*$", "", server_url.rstrip("/")) + f"/{TEST_REDIS_DB}"


@pytest.fixture(scope="session")
def base_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    data = tmp_path_factory.mktemp("var")
    cleanups: list[Callable[[], None]] = []
    pg = os.environ.get("ANTIHACK_TEST_DATABASE_URL")
    if pg:
        db_url, drop = _postgres_database(pg)
        cleanups.append(drop)
    else:
        db_url = f"sqlite:///{data / 'antihack.db'}"
    server = os.environ.get("ANTIHACK_TEST_REDIS_URL")
    redis_url = _redis_url(server) if server else ""
    settings = Settings(
        data_dir=data,
        database_url=db_url,
        redis_url=redis_url,
        secret_key="test-secret-key",
        admin_token="test-admin-token",
        sync_wait_s=60,
        allow_private_urls=True,
        task_time_limit_s=60,
        sweep_interval_s=1,
        queued_stale_s=5,
        ort_intra_threads=1,
        # One database serves the whole run and most tests send the same astronaut frames
        # under their own keys: deployment-wide replay memory would call them replays.
        # tests/test_replay.py sets replay_scope="deployment" (the default) where it tests it.
        replay_scope="key",
    )
    if not redis_url:
        proc = start_redis(settings)
        cleanups.append(lambda: (proc.terminate(), proc.wait()))
    redis.Redis.from_url(settings.redis_client_url).flushdb()
    upgrade(db_url)
    yield settings
    for cleanup in reversed(cleanups):
        cleanup()


@pytest.fixture(scope="session")
def sessions(base_settings: Settings) -> Any:
    engine = make_engine(base_settings.effective_database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@dataclass(frozen=True)
class Key:
    api_id: str
    api_secret: str
    sdk_secret: str
    webhook_secret: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-DF-API-ID": self.api_id, "X-DF-API-SECRET": self.api_secret}


@pytest.fixture
def make_key(base_settings: Settings, sessions: Any) -> Callable[..., Key]:
    def make(**opts: Any) -> Key:
        with transaction(sessions) as session:
            key, new = create_key(
                session, base_settings.secret_key, KeyOptions(name=opts.pop("name", "test"), **opts)
            )
            return Key(key.id, new.api_secret, new.sdk_secret, new.webhook_secret)

    return make


@pytest.fixture
def key(make_key: Callable[..., Key]) -> Key:
    return make_key()


@pytest.fixture
def app(base_settings: Settings) -> Flask:
    return create_test_app(base_settings)


def create_test_app(settings: Settings) -> Flask:
    from api import create_app

    app = create_app(settings)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


# --- processes --------------------------------------------------------------------------------


@pytest.fixture
def start_worker(base_settings: Settings, tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    procs: list[Proc] = []

    def start(settings: Settings | None = None, concurrency: int = 2) -> Proc:
        log = tmp_path / f"worker{len(procs)}.log"
        proc = devstack.start_worker(settings or base_settings, log, concurrency)
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        p.stop()


@pytest.fixture
def start_api(base_settings: Settings, tmp_path: Path) -> Iterator[Callable[..., str]]:
    procs: list[Proc] = []

    def start(settings: Settings | None = None) -> str:
        proc, base = devstack.start_api(
            settings or base_settings, tmp_path / f"api{len(procs)}.log"
        )
        procs.append(proc)
        return base

    yield start
    for p in procs:
        p.stop()


@pytest.fixture
def start_beat(tmp_path: Path) -> Iterator[Callable[[Settings], Proc]]:
    procs: list[Proc] = []

    def start(settings: Settings) -> Proc:
        proc = Proc(settings, "beat", log=tmp_path / f"beat{len(procs)}.log")
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        p.stop()
