"""Faults on real processes: SIGTERM, duplicate messages, Redis restarts, killed database
connections, poison captures, an API killed mid-upload, retention."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import sqlalchemy as sa

from antihack.shared.infra.db import transaction
from antihack.shared.infra.embedded import redis_server_binary
from antihack.shared.infra.queues import ANALYZE_QUEUE, ANALYZE_TASK, PURGE_TASK
from antihack.shared.infra.settings import Settings
from antihack.shared.infra.tables import Image, Job, JobInput, utcnow
from antihack.worker.celery_app import make_celery
from tests.conftest import Key
from tests.devstack import free_port, start_api, wait_until
from tests.helpers import (
    face_capture,
    job_count,
    job_states,
    new_jobs,
    no_face_capture,
    quota_used,
    submit,
    wait_running,
)

FINAL = ("SUCCEEDED", "FAILED")


def wait_all_final(
    sessions: Any, ids: list[str], timeout: float
) -> dict[str, tuple[str, int, int]]:
    def done() -> dict[str, tuple[str, int, int]] | None:
        now = job_states(sessions, ids)
        return now if len(now) == len(ids) and all(v[0] in FINAL for v in now.values()) else None

    return wait_until(done, timeout, f"{len(ids)} jobs to finish", interval=0.5)  # type: ignore[no-any-return]


def test_sigterm_lets_the_running_job_finish(
    start_worker: Any, start_api: Any, key: Key, sessions: Any
) -> None:
    worker = start_worker(concurrency=1)
    base = start_api()
    rid = submit(base, key, face_capture(frames=4)).json()["request_id"]
    wait_running(sessions, rid)
    worker.proc.send_signal(signal.SIGTERM)  # warm shutdown: finish what is running, then exit
    worker.proc.wait(timeout=60)
    assert job_states(sessions, [rid])[rid] == ("SUCCEEDED", 1, 1)


def test_a_message_delivered_three_times_runs_once(
    base_settings: Settings, start_worker: Any, start_api: Any, key: Key, sessions: Any
) -> None:
    start_worker()
    base = start_api()
    rid = submit(base, key, no_face_capture()).json()["request_id"]
    app = make_celery(base_settings)
    for _ in range(2):
        app.send_task(ANALYZE_TASK, args=(rid,), queue=ANALYZE_QUEUE)
    assert wait_all_final(sessions, [rid], 60)[rid] == ("SUCCEEDED", 1, 1)
    time.sleep(1)  # the duplicates have been consumed by now; nothing changed
    assert job_states(sessions, [rid])[rid] == ("SUCCEEDED", 1, 1)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """A Redis server of this test's own (no persistence) that it may kill and restart."""
    port = free_port()
    binary = shutil.which("redis-server") or redis_server_binary()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(tmp_path)]  # fmt: skip
    proc: list[subprocess.Popen[bytes]] = []
    url = f"redis://127.0.0.1:{port}/0"

    def up() -> None:
        proc.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))
        client = redis.Redis.from_url(url)
        wait_until(lambda: _pings(client), 15, "own redis")

    def down() -> None:
        proc[-1].kill()
        proc[-1].wait()

    up()
    yield url, down, up
    down()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_redis_restart_during_a_burst_loses_no_job(
    base_settings: Settings,
    start_worker: Any,
    start_api: Any,
    start_beat: Any,
    make_key: Any,
    sessions: Any,
    own_redis: Any,
) -> None:
    url, down, up = own_redis
    key = make_key(quota=1000, quota_period="total")
    settings = base_settings.replace(redis_url=url, queued_stale_s=3, sweep_interval_s=1)
    start_worker(settings)
    start_beat(settings)
    base = start_api(settings)
    payload = no_face_capture()
    accepted: list[str] = []
    codes: list[int] = []
    lock = threading.Lock()

    def one(_: int) -> None:
        r = submit(base, key, payload)
        with lock:
            codes.append(r.status_code)
            if r.status_code == 202:
                accepted.append(r.json()["request_id"])

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(80)]
        wait_until(lambda: len(codes) >= 20, 60, "the first submissions")
        down()  # every queued message is gone with it
        time.sleep(1.0)
        up()
        for f in futures:
            f.result()
    assert codes.count(202) == 80, (
        codes
    )  # the database accepted every job; publishing is best effort
    final = wait_all_final(sessions, accepted, 180)
    assert {v[0] for v in final.values()} == {"SUCCEEDED"}
    assert all(v[2] == 1 for v in final.values())
    assert quota_used(sessions, key.api_id) == len(accepted)  # charged once each, nothing refunded


def test_killed_database_connections_lose_no_job(
    base_settings: Settings, start_worker: Any, start_beat: Any, make_key: Any, sessions: Any
) -> None:
    if not base_settings.effective_database_url.startswith("postgresql"):
        pytest.skip("pg_terminate_backend needs PostgreSQL (set ANTIHACK_TEST_DATABASE_URL)")
    settings = base_settings.replace(
        task_time_limit_s=5, lease_margin_s=2, queued_stale_s=3, sweep_interval_s=1
    )
    key = make_key(quota=1000, quota_period="total")
    ids = new_jobs(sessions, key.api_id, 30)
    start_worker(settings)
    start_beat(settings)  # the sweeper publishes them (never published: queued_stale_s later)
    dbname = sa.make_url(settings.effective_database_url).database
    killer = sa.create_engine(settings.effective_database_url, poolclass=sa.pool.NullPool)
    killed = 0
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        with killer.connect() as conn:
            killed += conn.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": dbname},
            ).scalar_one()
        time.sleep(0.3)
    killer.dispose()
    assert killed > 0
    final = wait_all_final(sessions, ids, 180)
    assert {v[0] for v in final.values()} == {"SUCCEEDED"}
    assert all(v[2] == 1 for v in final.values())
    assert quota_used(sessions, key.api_id) == len(ids)


def test_a_poison_capture_fails_after_max_attempts(
    base_settings: Settings,
    start_worker: Any,
    start_api: Any,
    start_beat: Any,
    make_key: Any,
    sessions: Any,
) -> None:
    key = make_key(quota=10, quota_period="total")
    # A capture that always outlives the time limit: 40 frames take ~0.5 s to analyse on two
    # cores (more on a busy machine, never less), so a 0.15 s limit cuts every attempt off.
    settings = base_settings.replace(
        task_time_limit_s=0.15,
        lease_margin_s=2,
        queued_stale_s=3,
        sweep_interval_s=1,
        max_attempts=2,
    )
    start_worker(settings, concurrency=1)
    start_beat(settings)
    base = start_api(settings)
    rid = submit(base, key, face_capture(frames=40)).json()["request_id"]
    status, attempts, results = wait_all_final(sessions, [rid], 120)[rid]
    assert (status, results) == ("FAILED", 1)
    assert attempts >= 2
    job = requests.get(f"{base}/v1/jobs/{rid}", headers=key.headers, timeout=10).json()
    assert job["result"]["status"] == "INTERNAL_ERROR"
    assert quota_used(sessions, key.api_id) == 0  # our fault: refunded, once


def test_api_killed_mid_upload_creates_nothing(
    base_settings: Settings, key: Key, sessions: Any, tmp_path: Path
) -> None:
    proc, base = start_api(base_settings, tmp_path / "api.log")
    try:
        port = int(base.rsplit(":", 1)[1])
        body = b"x" * 400_000
        head = (
            "POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"X-DF-API-ID: {key.api_id}\r\nX-DF-API-SECRET: {key.api_secret}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {len(body) * 2}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(head + body)  # half the declared body, then the API dies
            time.sleep(0.3)
            proc.kill9()
    finally:
        proc.stop()
    assert job_count(sessions, key.api_id) == 0
    again, base2 = start_api(base_settings, tmp_path / "api2.log")
    try:
        assert submit(base2, key, no_face_capture()).status_code == 202
    finally:
        again.stop()


def test_purge_deletes_old_inputs_and_expired_images(
    base_settings: Settings, sessions: Any, key: Key
) -> None:
    from antihack.shared.domain.jobs import Submission, create_job
    from antihack.shared.infra.tables import ApiKey

    old = utcnow() - timedelta(days=base_settings.retention_days + 1)
    with transaction(sessions) as s:
        api_key = s.get(ApiKey, key.api_id)
        job, _ = create_job(s, api_key, Submission(payload=no_face_capture(), source="file"))  # type: ignore[arg-type]
        fresh, _ = create_job(s, api_key, Submission(payload=no_face_capture(), source="file"))  # type: ignore[arg-type]
        assert job.input is not None
        job.input.created_at = old
        s.add(Image(id="IMGold" + job.id[3:], api_key_id=key.api_id, payload=b"x",
                    created_at=old, expires_at=old + timedelta(hours=1)))  # fmt: skip
        job_id, fresh_id, image_id = job.id, fresh.id, "IMGold" + job.id[3:]
    app = make_celery(base_settings)
    deleted = app.tasks[PURGE_TASK].apply().get()
    assert deleted["job_inputs"] >= 1 and deleted["images"] >= 1
    with transaction(sessions) as s:
        assert s.get(JobInput, job_id) is None and s.get(Job, job_id) is not None
        assert s.get(JobInput, fresh_id) is not None
        assert s.get(Image, image_id) is None
