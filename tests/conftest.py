"""Test fixtures: a real database and Redis (the CI servers, or the embedded default), keys, apps,
and real worker / API processes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
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

from shared.db import make_engine, make_sessionmaker, transaction
from shared.embedded import start_redis
from shared.keys import KeyOptions, create_key
from shared.migrate import upgrade
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
TEST_REDIS_DB = 11


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Proc:
    """A child process of the ``antihack`` CLI in its own process group."""

    def __init__(self, settings: Settings, *args: str, log: Path) -> None:
        env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
        self.log = log
        self._fh = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill9(self) -> None:
        """SIGKILL the whole group: the main process and every pool child, mid-task."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()
            except ProcessLookupError:
                pass
        self._fh.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def start_worker(base_settings: Settings, tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    procs: list[Proc] = []

    def start(settings: Settings | None = None, concurrency: int = 2) -> Proc:
        s = settings or base_settings
        proc = Proc(
            s, "worker", "--concurrency", str(concurrency), log=tmp_path / f"worker{len(procs)}.log"
        )
        procs.append(proc)
        r = redis.Redis.from_url(s.redis_client_url)
        # Ready when the worker has said so in its log (models loaded, consuming).
        wait_until(lambda: "ready." in proc.output() or proc.proc.poll() is not None, 90, "worker")
        assert proc.proc.poll() is None, proc.output()
        r.close()
        return proc

    yield start
    for p in procs:
        p.stop()


@pytest.fixture
def start_api(base_settings: Settings, tmp_path: Path) -> Iterator[Callable[..., str]]:
    procs: list[Proc] = []

    def start(settings: Settings | None = None) -> str:
        port = free_port()
        proc = Proc(settings or base_settings, "api", "--port", str(port), log=tmp_path / "api.log")
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                import requests

                return requests.get(base + "/healthz", timeout=1).status_code == 200
            except Exception:
                return proc.proc.poll() is not None

        wait_until(healthy, 60, "api")
        assert proc.proc.poll() is None, proc.output()
        return base

    yield start
    for p in procs:
        p.stop()
