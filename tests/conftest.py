"""Test fixtures: a real database and Redis (the CI servers, or the embedded default), keys, apps,
and real worker / API processes."""

from __future__ import annotations

import inspect
import os
import re
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import CodeType
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from antihack.shared.domain.keys import KeyOptions, create_key
from antihack.shared.infra.db import make_engine, make_sessionmaker, transaction
from antihack.shared.infra.embedded import start_redis
from antihack.shared.infra.migrate import upgrade
from antihack.shared.infra.settings import Settings
from tests import devstack
from tests.devstack import Proc

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


_getaddrinfo = socket.getaddrinfo


def _local_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
    """getaddrinfo that never asks a DNS server: numeric hosts (in any form the C library
    reads) and ``localhost`` (answered from /etc/hosts) resolve as usual; any other name is
    "no such name", as if the resolver had answered NXDOMAIN."""
    name = host.decode("ascii", "replace") if isinstance(host, bytes) else host
    if name is None:
        return _getaddrinfo(host, port, *args, **kwargs)
    try:
        _getaddrinfo(name, None, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        local = str(name).rstrip(".").lower()
        if local != "localhost" and not local.endswith(".localhost"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
    return _getaddrinfo(host, port, *args, **kwargs)


@pytest.fixture(scope="session", autouse=True)
def _no_dns_query() -> Iterator[None]:
    """No test sends a DNS query off the machine (glibc would ask the configured server for any
    name, e.g. the fuzzer's generated URLs or an ``.invalid`` webhook host). Only the resolver
    changes: the SSRF guard still calls getaddrinfo and meets "no such name" for names, the real
    answer for numeric hosts and localhost (in this process; API and worker processes the tests
    start are given loopback URLs)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", _local_getaddrinfo)
        yield


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

        def stop_redis() -> None:
            proc.terminate()
            proc.wait()

        cleanups.append(stop_redis)
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


@pytest.fixture
def db(sessions: Any) -> Iterator[Session]:
    """A session whose work is rolled back after the test (warehouse's ``db_session``): one
    connection, an outer transaction, and the session joined to it through a savepoint, so the code
    under test may commit (that releases the savepoint) and still nothing reaches the next test.
    Only for code that takes its session from the caller: the app, the CLI and the workers open
    their own connections and see none of it (on SQLite they would wait for its write lock)."""
    with sessions.kw["bind"].connect() as conn:
        outer = conn.begin()
        session = Session(
            bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            yield session
        finally:
            session.close()
            outer.rollback()


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
                session,
                base_settings.secret_key,
                KeyOptions(name=opts.pop("name", "test"), **opts),
                allow_private_urls=base_settings.allow_private_urls,
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
    from antihack.api import create_app

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


# --- tiers ------------------------------------------------------------------------------------
# Every test gets one of the markers pyproject.toml registers, from what it uses, so that test
# files need no marks (a tier marker written on a test wins):
#   browser      drives headless Chromium (tests.browser.chromium);
#   e2e          starts processes: the API, workers, beat, Redis, the CLI, docker compose, ...;
#   integration  in process, on the test database and Redis (base_settings and what builds on it:
#                sessions, db, app, client, make_key, key);
#   unit         none of these.
# "Starts processes" is read from the code: the test, its fixtures and the tests.* helpers they
# name (transitively) refer to subprocess or devstack's process starters. `make test-fast` runs
# unit and integration, less the `slow` ones below.

TIERS = ("unit", "integration", "e2e", "browser")
PROCESS_FIXTURES = frozenset({"start_worker", "start_api", "start_beat"})
SERVICE_FIXTURES = frozenset(
    {"base_settings", "sessions", "db", "app", "client", "make_key", "key"}
)
_STARTERS = {
    id(x) for x in (subprocess, devstack.start_api, devstack.start_worker, Proc, start_redis)
}

# In-process but seconds each: the ONNX models over rendered or recorded videos, and the fuzzers.
# By module ("*": all of its tests) and test name. `make test-fast` leaves them out.
SLOW: dict[str, frozenset[str]] = {
    name: frozenset({"*"})
    for name in (
        "test_attacks.py",
        "test_blink.py",
        "test_challenges.py",
        "test_directional.py",
        "test_eval.py",
        "test_fas_optimized.py",
        "test_light.py",
        "test_model_stages.py",
        "test_motion.py",
        "test_pipeline.py",
        "test_replay.py",
        "test_sample_steps.py",
    )
} | {
    "test_abuse.py": frozenset(
        {
            "test_the_app_conforms_to_its_openapi_document",
            "test_random_multipart_bodies_get_a_seed_error_in_bounded_memory",
            "test_hostile_captures_are_refused_quickly_in_bounded_memory",
        }
    ),
    "test_batching.py": frozenset(
        {"test_the_pipeline_gets_the_same_analysis_when_jobs_share_batches"}
    ),
    "test_cli.py": frozenset({"test_eval_json_prints_the_summary"}),
}


def _codes(code: CodeType) -> Iterator[CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _codes(const)


def _reaches(obj: Any, seen: set[CodeType]) -> str | None:
    """What ``obj`` (a function, or a class's methods) or a tests.* helper it names reaches:
    "browser" if one launches Chromium, "e2e" if one starts a process, else None."""
    if isinstance(obj, type):
        methods = [_reaches(v, seen) for v in vars(obj).values() if inspect.isfunction(v)]
        return "browser" if "browser" in methods else "e2e" if "e2e" in methods else None
    obj = inspect.unwrap(obj)
    code = getattr(obj, "__code__", None)
    if code is None or code in seen:
        return None
    seen.add(code)
    env = obj.__globals__
    found: str | None = None
    for c in _codes(code):
        for name in c.co_names:
            value = env.get(name)
            module = getattr(value, "__module__", None) or ""
            if module == "tests.browser" and getattr(value, "__name__", "") == "chromium":
                return "browser"
            if id(value) in _STARTERS or (
                value is devstack and {"start_api", "start_worker", "Proc"} & set(c.co_names)
            ):
                found = "e2e"
            elif module.startswith("tests.") and (
                inspect.isroutine(value) or isinstance(value, type)
            ):
                reached = _reaches(value, seen)
                if reached == "browser":
                    return reached
                found = found or reached
    return found


def tier_of(item: pytest.Function) -> str:
    """The tier a test belongs to by what it uses (see above)."""
    used = set(item.fixturenames)
    defs = item._fixtureinfo.name2fixturedefs
    seen: set[CodeType] = set()
    reached = [_reaches(item.obj, seen)]
    # base_settings starts the embedded Redis where no server is named: infrastructure, not e2e.
    reached += [
        _reaches(defs[name][-1].func, seen) for name in used - SERVICE_FIXTURES if defs.get(name)
    ]
    if "browser" in reached:
        return "browser"
    if "e2e" in reached or used & PROCESS_FIXTURES:
        return "e2e"
    return "integration" if used & SERVICE_FIXTURES else "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        if not any(item.get_closest_marker(t) for t in TIERS):
            item.add_marker(tier_of(item))
        slow = SLOW.get(item.path.name, frozenset())
        if "*" in slow or item.originalname in slow:
            item.add_marker("slow")
