"""The submission path's shortcuts keep their promises: the API loads no worker code, a cached
key is refused within the cache's bound once revoked, a dead database connection costs no
error and no double charge, the quota charge travels with the COMMIT, a plain submission is one
statement that writes what the transaction writes."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, func, select

from antihack.shared.domain import jobs as jobs_module
from antihack.shared.domain.keys import revoke_key, rotate_key
from antihack.shared.infra.db import driver_rows, transaction
from antihack.shared.infra.settings import Settings
from antihack.shared.infra.tables import Job
from tests.conftest import Key, create_test_app
from tests.devstack import ROOT
from tests.helpers import no_face_capture, quota_used

HEAVY = ("antihack.worker", "cv2", "onnxruntime")

IMPORTS = """
import json, sys
from pathlib import Path
from antihack.api.app import create_app
from antihack.shared.infra.settings import Settings
create_app(Settings(data_dir=Path(sys.argv[1])))
loaded = sorted(sys.modules)
print(json.dumps(loaded))
"""


def test_the_api_imports_no_worker_code(tmp_path: Any) -> None:
    """The API publishes tasks by name: neither ``worker`` nor the pipeline's OpenCV and
    onnxruntime are loaded by importing it or building the app."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    # It did import the app and its publisher.
    assert "antihack.api.app" in loaded and "celery" in loaded
    heavy = sorted(n for n in loaded if any(n == h or n.startswith(h + ".") for h in HEAVY))
    assert heavy == [], heavy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cached_app(base_settings: Settings) -> tuple[Flask, Clock]:
    app = create_test_app(base_settings.replace(key_cache_s=30.0))
    clock = Clock()
    app.extensions["antihack"].keys.clock = clock
    return app, clock


def _read(client: FlaskClient, headers: dict[str, str]) -> int:
    """401 for refused credentials, 404 for accepted ones (the job does not exist)."""
    code: int = client.get("/v1/jobs/TIDnone", headers=headers).status_code
    return code


def test_a_revoked_key_is_refused_within_the_cache_bound(
    cached_app: tuple[Flask, Clock], key: Key, sessions: Any, base_settings: Settings
) -> None:
    app, clock = cached_app
    client = app.test_client()
    assert _read(client, key.headers) == 404  # authenticated: the key is now cached
    with transaction(sessions) as s:  # revoked elsewhere (the CLI, another API process)
        revoke_key(s, key.api_id)
    clock.now += 29.0
    assert _read(client, key.headers) == 404  # within ANTIHACK_KEY_CACHE_S: still cached
    clock.now += 1.0
    assert _read(client, key.headers) == 401  # the bound has passed: read again, refused


def test_rotation_takes_the_new_secret_at_once_and_drops_the_old_within_the_bound(
    cached_app: tuple[Flask, Clock], key: Key, sessions: Any, base_settings: Settings
) -> None:
    app, clock = cached_app
    client = app.test_client()
    assert _read(client, key.headers) == 404
    with transaction(sessions) as s:
        _, new = rotate_key(s, base_settings.secret_key, key.api_id)
    fresh = {"X-DF-API-ID": key.api_id, "X-DF-API-SECRET": new.api_secret}
    assert _read(client, fresh) == 404  # a secret the cached key refuses is checked again
    clock.now += 30.0
    assert _read(client, key.headers) == 401


def test_the_admin_api_revokes_at_once_in_its_process(
    cached_app: tuple[Flask, Clock], key: Key
) -> None:
    app, _ = cached_app
    client = app.test_client()
    assert _read(client, key.headers) == 404
    admin = {"Authorization": f"Bearer {app.extensions['antihack'].settings.admin_token}"}
    assert client.delete(f"/admin/keys/{key.api_id}", headers=admin).status_code == 200
    assert _read(client, key.headers) == 401


def _submit(client: FlaskClient, key: Key) -> Any:
    return client.post(
        "/v1/jobs",
        data={"liveness_data_file": (io.BytesIO(no_face_capture()), "c.pb")},
        headers=key.headers,
        content_type="multipart/form-data",
    )


def _jobs(sessions: Any, api_id: str) -> int:
    with transaction(sessions) as s:
        n = s.scalar(select(func.count()).select_from(Job).where(Job.api_key_id == api_id))
        return int(n or 0)


@pytest.fixture
def postgres(base_settings: Settings) -> Iterator[sa.Engine]:
    if not base_settings.effective_database_url.startswith("postgresql"):
        pytest.skip("pg_terminate_backend needs PostgreSQL (set ANTIHACK_TEST_DATABASE_URL)")
    engine = sa.create_engine(base_settings.effective_database_url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


def _terminate(killer: sa.Engine, pids: list[int]) -> int:
    with killer.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(pg_terminate_backend(pid)) FROM unnest(:pids) AS pid"),
                {"pids": pids},
            ).scalar_one()
        )


def test_a_pooled_connection_the_server_closed_is_dropped_at_checkout(
    base_settings: Settings, make_key: Any, sessions: Any, postgres: sa.Engine
) -> None:
    key = make_key(quota=10, quota_period="total")
    # No key cache: the request's first statement is then the key's read, which no
    # retry_on_disconnect covers, so only the checkout's check can spare it the dead connection.
    app = create_test_app(base_settings.replace(key_cache_s=0))
    client = app.test_client()
    engine = app.extensions["antihack"].sessions.kw["bind"]
    pids: list[int] = []
    event.listen(engine, "connect", lambda conn, _r: pids.append(conn.info.backend_pid))
    assert _submit(client, key).status_code == 202  # the pool now holds an idle connection
    assert pids and _terminate(postgres, pids) == len(pids)
    assert _submit(client, key).status_code == 202  # no pre-ping, and no error either
    assert _jobs(sessions, key.api_id) == 2 and quota_used(sessions, key.api_id) == 2


def _general_path(app: Flask) -> Flask:
    """The app with the transaction path for every submission (as for one with a capture
    session, and on SQLite), not the one statement of a plain submission."""
    app.extensions["antihack"] = dataclasses.replace(app.extensions["antihack"], intake=None)
    return app


def test_a_connection_that_dies_mid_submission_is_retried_once_and_charged_once(
    base_settings: Settings, make_key: Any, sessions: Any, postgres: sa.Engine
) -> None:
    key = make_key(quota=10, quota_period="total")
    app = _general_path(create_test_app(base_settings))
    client = app.test_client()
    engine = app.extensions["antihack"].sessions.kw["bind"]
    killed: list[int] = []

    def kill_at_the_first_insert(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not killed and statement.startswith("INSERT INTO jobs"):
            # After the checkout's check: the transaction's first statement meets a dead
            # connection, as when the server ends it between two requests' statements.
            killed.append(conn.connection.dbapi_connection.info.backend_pid)
            assert _terminate(postgres, killed) == 1

    event.listen(engine, "before_cursor_execute", kill_at_the_first_insert)
    resp = _submit(client, key)
    assert killed and resp.status_code == 202, resp.get_json()
    assert _jobs(sessions, key.api_id) == 1 and quota_used(sessions, key.api_id) == 1


def test_a_plain_submission_is_one_statement_and_a_refusal_commits_nothing(
    base_settings: Settings,
    make_key: Any,
    sessions: Any,
    postgres: sa.Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No Idempotency-Key, token or capture session: the job, its input and the charge are
    one INSERT in autocommit (no BEGIN, no COMMIT); at the limit it fails as a whole."""
    key = make_key(quota=2, quota_period="total")
    app = create_test_app(base_settings)
    client = app.test_client()
    engine = app.extensions["antihack"].sessions.kw["bind"]
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda _c, _cur, sql, *_: statements.append(sql))
    codes = [_submit(client, key).status_code for _ in range(4)]
    assert codes == [202, 202, 403, 403]
    assert _jobs(sessions, key.api_id) == 2 and quota_used(sessions, key.api_id) == 2
    with transaction(sessions) as s:
        inputs = s.execute(
            sa.text(
                "SELECT count(*) FROM job_inputs JOIN jobs ON jobs.id = job_id "
                "WHERE api_key_id = :k"
            ),
            {"k": key.api_id},
        ).scalar_one()
    assert inputs == 2
    # Only the key's read (once: then it is cached) went through SQLAlchemy's execution.
    assert [sql.split()[:2] for sql in statements] == [["SELECT", "api_keys.id,"]]
    assert _read(client, key.headers) == 404  # the refusals left their connections usable
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records


@pytest.mark.parametrize("quota", [10, None])
def test_one_statement_and_the_transaction_write_the_same_rows(
    base_settings: Settings, make_key: Any, sessions: Any, postgres: sa.Engine, quota: int | None
) -> None:
    key = make_key(quota=quota, quota_period="month")
    fast, general = create_test_app(base_settings), _general_path(create_test_app(base_settings))
    capture = no_face_capture()
    ids = [
        app.test_client()
        .post(
            "/v1/jobs",
            data={"liveness_data_file": (io.BytesIO(capture), "c.pb")},
            headers=key.headers,
            content_type="multipart/form-data",
        )
        .get_json()["request_id"]
        for app in (fast, general)
    ]
    columns = (
        "status, source, return_image, return_extra, callback_url, idempotency_key, "
        "payload_sha256, attempts, charged_period, api_key_id, session_check, "
        "jobs.created_at = enqueued_at, started_at, finished_at, size, payload, "
        "job_inputs.created_at = jobs.created_at"
    )
    with transaction(sessions) as s:
        rows = [
            s.execute(
                sa.text(
                    f"SELECT {columns} FROM jobs JOIN job_inputs ON job_id = id WHERE id = :id"
                ),
                {"id": job_id},
            ).one()
            for job_id in ids
        ]
    assert rows[0] == rows[1]
    if quota is None:
        assert rows[0].charged_period is None and quota_used(sessions, key.api_id) == 0
    else:
        assert rows[0].charged_period.startswith("month:")
        assert quota_used(sessions, key.api_id) == 2


def test_one_statement_retried_on_a_dead_connection_is_charged_once(
    base_settings: Settings, make_key: Any, sessions: Any, postgres: sa.Engine
) -> None:
    """The server ends the connection after the checkout's check: the statement fails, runs
    once more on a fresh connection, and the job is accepted once."""
    key = make_key(quota=10, quota_period="total")
    app = create_test_app(base_settings)
    client = app.test_client()
    engine = app.extensions["antihack"].sessions.kw["bind"]
    killed: list[int] = []
    checkouts: list[int] = []

    def kill_once(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        checkouts.append(dbapi_conn.info.backend_pid)
        if not killed:  # runs after the pool's own check (listened to later)
            killed.append(dbapi_conn.info.backend_pid)
            assert _terminate(postgres, killed) == 1
            _wait_gone(postgres, killed[0])

    assert _submit(client, key).status_code == 202  # the pool holds a connection now
    event.listen(engine, "checkout", kill_once)
    resp = _submit(client, key)
    assert killed and resp.status_code == 202, resp.get_json()
    # The statement met the dead connection and ran again on another: two checkouts.
    assert len(checkouts) == 2 and checkouts[1] != killed[0], checkouts
    assert _jobs(sessions, key.api_id) == 2 and quota_used(sessions, key.api_id) == 2


def _wait_gone(killer: sa.Engine, pid: int) -> None:
    """Until the server process has ended (pg_terminate_backend only signals it)."""
    deadline = time.monotonic() + 10
    with killer.connect() as conn:
        while conn.execute(
            sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        ).scalar_one():
            assert time.monotonic() < deadline, f"server process {pid} still there"
            time.sleep(0.02)


def test_one_statement_whose_answer_was_lost_is_accepted_once(
    base_settings: Settings,
    make_key: Any,
    sessions: Any,
    postgres: sa.Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server committed the statement, then the connection died before its answer came
    back: the second try meets the job's own primary key, and the job stands, charged once."""
    key = make_key(quota=10, quota_period="total")
    app = create_test_app(base_settings)
    calls: list[str] = []
    real = driver_rows

    def commit_then_lose_the_answer(connection: Any, sql: str, params: Any) -> Any:
        rows = real(connection, sql, params)  # committed (autocommit)
        calls.append(params["id"])
        if len(calls) == 1:
            pid = connection.connection.dbapi_connection.info.backend_pid
            assert _terminate(postgres, [pid]) == 1
            try:
                connection.exec_driver_sql("SELECT 1")  # meets the dead connection
            except sa.exc.DBAPIError as error:
                assert error.connection_invalidated
                raise
        return rows

    monkeypatch.setattr(jobs_module, "driver_rows", commit_then_lose_the_answer)
    resp = _submit(app.test_client(), key)
    assert resp.status_code == 202, resp.get_json()
    assert len(calls) == 1 and resp.get_json()["request_id"] == calls[0]
    assert _jobs(sessions, key.api_id) == 1 and quota_used(sessions, key.api_id) == 1


def test_the_quota_charge_travels_with_the_commit_and_a_refusal_commits_nothing(
    base_settings: Settings,
    make_key: Any,
    sessions: Any,
    postgres: sa.Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The charge locks the key's counter row until the COMMIT: both go to PostgreSQL in one
    pipeline, so that no answer is read between them (the lock's hold is the server's work).
    At the limit the charge fails and its job is not committed; the connection serves on."""
    from psycopg.pq import PipelineStatus

    key = make_key(quota=2, quota_period="total")
    app = _general_path(create_test_app(base_settings))
    client = app.test_client()
    engine = app.extensions["antihack"].sessions.kw["bind"]
    modes: list[int] = []

    def note_the_charge(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("INSERT INTO quota_counters"):
            modes.append(conn.connection.dbapi_connection.pgconn.pipeline_status)

    event.listen(engine, "before_cursor_execute", note_the_charge)
    codes = [_submit(client, key).status_code for _ in range(4)]
    assert codes == [202, 202, 403, 403]
    assert modes == [PipelineStatus.ON] * 4  # each charge, the refused ones too, pipelined
    assert _jobs(sessions, key.api_id) == 2 and quota_used(sessions, key.api_id) == 2
    assert _read(client, key.headers) == 404  # the refusals left their connections usable
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records
