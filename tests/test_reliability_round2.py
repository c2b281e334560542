"""Issue 16, reliability and abuse round 2: upload tokens have their own Idempotency-Key space,
the sweeper republishes only what the broker lost, failed jobs are refunded up to a daily limit
per key, and a worker that stops consuming makes /readyz and its health check fail."""

from __future__ import annotations

import io
import json
import re
import socket
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import update

from antihack.shared.cli.sample import for_capture_session
from antihack.shared.domain.jobs import claim
from antihack.shared.infra.broker import UNACKED_KEY, queue_lists
from antihack.shared.infra.db import transaction
from antihack.shared.infra.heartbeat import HEARTBEAT_KEY, PROGRESS_KEY, container_health
from antihack.shared.infra.queues import ALL_QUEUES, ANALYZE_QUEUE, ANALYZE_TASK, SWEEP_TASK
from antihack.shared.infra.settings import Settings
from antihack.shared.infra.tables import ApiKey, Job, RefundCounter, utcnow
from antihack.worker.celery_app import make_celery
from tests.conftest import Key, create_test_app
from tests.devstack import wait_until
from tests.helpers import new_jobs, no_face_capture, quota_used
from tests.test_faults import wait_all_final

TID = re.compile(rb"TID[0-9a-f]{32}")

# --- 1. upload tokens and Idempotency-Key ---------------------------------------------------


def post_capture(client: FlaskClient, headers: dict[str, str], capture: bytes) -> Any:
    return client.post(
        "/v1/jobs",
        data={"liveness_data_file": (io.BytesIO(capture), "c.pb")},
        headers=headers,
        content_type="multipart/form-data",
    )


def new_token(client: FlaskClient, key: Key) -> tuple[dict[str, str], bytes]:
    """A capture session's upload token (as headers) and a capture carrying its nonce."""
    made = client.post("/v1/sessions", headers=key.headers)
    assert made.status_code == 201, made.get_json()
    body = made.get_json()
    capture = for_capture_session(
        no_face_capture(), challenges=body["challenge"], nonce=body["nonce"]
    )
    return {"Authorization": f"Bearer {body['upload_token']}"}, capture


def test_an_upload_token_neither_sees_nor_takes_the_backends_idempotency_keys(
    client: FlaskClient, key: Key
) -> None:
    backend = {**key.headers, "Idempotency-Key": "order-17"}
    mine = no_face_capture()
    first = post_capture(client, backend, mine)
    assert first.status_code == 202, first.get_json()
    original = first.get_json()["request_id"]

    # A browser's token tries the backend's key with another payload: no 422 telling it the key
    # was used; its capture is a job of its own.
    token, capture = new_token(client, key)
    probe = post_capture(client, {**token, "Idempotency-Key": "order-17"}, capture)
    assert probe.status_code == 202, probe.get_json()
    assert probe.get_json()["request_id"] != original
    # The backend's retry still answers its original job.
    again = post_capture(client, backend, mine)
    assert again.status_code == 202 and again.get_json()["request_id"] == original

    # A token that claims a key first does not block the backend's own submission with it.
    token, capture = new_token(client, key)
    claimed = post_capture(client, {**token, "Idempotency-Key": "order-18"}, capture)
    assert claimed.status_code == 202, claimed.get_json()
    backend18 = {**key.headers, "Idempotency-Key": "order-18"}
    theirs = no_face_capture(frames=3)
    own = post_capture(client, backend18, theirs)
    assert own.status_code == 202, own.get_json()
    assert own.get_json()["request_id"] != claimed.get_json()["request_id"]
    retry = post_capture(client, backend18, theirs)
    assert (
        retry.status_code == 202 and retry.get_json()["request_id"] == own.get_json()["request_id"]
    )


# --- 2. the sweeper republishes only what the broker lost ------------------------------------


def messages_for(client: redis.Redis, ids: list[str]) -> Counter[str]:
    """How many analyze messages the broker holds for each of ``ids``, waiting or unacked."""
    wanted = set(ids)
    found: Counter[str] = Counter()
    raw = [m for name in queue_lists(ANALYZE_QUEUE) for m in client.lrange(name, 0, -1)]
    raw += list(client.hvals(UNACKED_KEY))
    for message in raw:
        assert isinstance(message, bytes)  # the client does not decode responses
        match = TID.search(message)
        if match and match.group().decode() in wanted:
            found[match.group().decode()] += 1
    return found


def test_the_sweeper_republishes_a_backlog_once_and_again_after_the_broker_lost_it(
    base_settings: Settings, sessions: Any, key: Key
) -> None:
    # queued_stale_s=0: every QUEUED job is a candidate on every pass (the worst case).
    settings = base_settings.replace(queued_stale_s=0)
    sweep = make_celery(settings).tasks[SWEEP_TASK]
    broker = redis.Redis.from_url(settings.redis_client_url)
    ids = new_jobs(sessions, key.api_id, 12)  # committed, never published: no worker runs
    for _ in range(4):
        sweep.apply().get()
    held = messages_for(broker, ids)
    assert held == dict.fromkeys(ids, 1), held  # 12 messages, not 12 x 4

    # A worker took one (kombu keeps it in the unacked hash until the ack): still held.
    taken = [m for m in broker.lrange(ANALYZE_QUEUE, 0, -1) if isinstance(m, bytes)]
    message = next(m for m in taken if (match := TID.search(m)) and match.group().decode() in ids)
    broker.lrem(ANALYZE_QUEUE, 1, message)  # type: ignore[arg-type]  # redis-py takes bytes too
    tag = "test-" + ids[0]
    broker.hset(UNACKED_KEY, tag, json.dumps([json.loads(message), "", ANALYZE_QUEUE]))
    try:
        sweep.apply().get()
        assert messages_for(broker, ids) == dict.fromkeys(ids, 1)
    finally:
        broker.hdel(UNACKED_KEY, tag)

    # Redis lost the queue (a restart without persistence): the next pass republishes them all.
    broker.delete(*queue_lists(ANALYZE_QUEUE))
    sweep.apply().get()
    assert messages_for(broker, ids) == dict.fromkeys(ids, 1)

    # A RUNNING job past its lease is republished even though the broker holds a message for it.
    with transaction(sessions) as s:
        s.execute(
            update(Job)
            .where(Job.id == ids[1])
            .values(status="RUNNING", lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    sweep.apply().get()
    assert messages_for(broker, ids)[ids[1]] == 2
    # Leave no backlog to later tests' workers and sweepers.
    broker.delete(*queue_lists(ANALYZE_QUEUE))
    with transaction(sessions) as s:
        s.execute(update(Job).where(Job.id.in_(ids)).values(status="FAILED", finished_at=utcnow()))


# --- 3. failed jobs are refunded up to a limit per key and day --------------------------------


def test_failed_jobs_are_refunded_up_to_the_daily_limit_then_charged(
    sessions: Any, make_key: Callable[..., Key]
) -> None:
    key = make_key(quota=100, quota_period="day")
    ids = new_jobs(sessions, key.api_id, 4)
    assert quota_used(sessions, key.api_id) == 4
    with transaction(sessions) as s:
        # Each of them killed its worker three times: the next delivery finds them exhausted.
        s.execute(update(Job).where(Job.id.in_(ids)).values(attempts=3))
    results = []
    for job_id in ids:
        with transaction(sessions) as s:
            assert claim(s, job_id, timedelta(seconds=60), 3, refund_limit=2) is None
        with transaction(sessions) as s:
            job = s.get(Job, job_id)
            assert job is not None and job.result is not None
            results.append((job.status, job.result.body, job.result.reasons, job.refunded_at))
    assert [r[0] for r in results] == ["FAILED"] * 4
    assert [r[1]["status"] for r in results] == ["INTERNAL_ERROR"] * 4
    refunded = [r[3] is not None for r in results]
    assert refunded == [True, True, False, False]
    assert quota_used(sessions, key.api_id) == 2  # 4 charged, 2 refunded
    for _, body, reasons, _ in results[2:]:
        assert "not refunded" in body["reason"] and "ANTIHACK_POISON_REFUND_LIMIT" in body["reason"]
        assert "refund_limit_reached" in reasons
    # A redelivery of a finished job changes nothing: each refund happened once.
    with transaction(sessions) as s:
        assert claim(s, ids[0], timedelta(seconds=60), 3, refund_limit=2) is None
        counter = s.get(RefundCounter, (key.api_id, f"{utcnow():%Y-%m-%d}"))
        assert counter is not None and counter.refunded == 2
    assert quota_used(sessions, key.api_id) == 2


@pytest.mark.parametrize("path", ["killed_every_attempt", "raised_on_the_last_attempt"])
@pytest.mark.parametrize("limit", [0, 10])
def test_the_analyze_task_applies_the_refund_limit(
    base_settings: Settings, make_key: Callable[..., Key], sessions: Any, path: str, limit: int
) -> None:
    """The real task, run in this process: a job that used up its attempts (its worker was
    killed each time), or whose last attempt raised, is refunded under the limit and charged
    past it (limit 0)."""
    key = make_key(quota=10, quota_period="total")
    [job_id] = new_jobs(sessions, key.api_id)
    settings = base_settings.replace(max_attempts=2, poison_refund_limit=limit)
    with transaction(sessions) as s:
        if path == "killed_every_attempt":
            s.execute(update(Job).where(Job.id == job_id).values(attempts=2))
        else:  # the last attempt fails inside the task (an undecryptable key secret)
            s.execute(update(Job).where(Job.id == job_id).values(attempts=1))
            s.execute(
                update(ApiKey).where(ApiKey.id == key.api_id).values(sdk_secret_enc="garbage")
            )
    make_celery(settings).tasks[ANALYZE_TASK].apply(args=(job_id,)).get()
    with transaction(sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.result is not None
        assert job.result.body["status"] == "INTERNAL_ERROR"
        assert ("not refunded" in job.result.body["reason"]) == (limit == 0)
    assert quota_used(sessions, key.api_id) == (1 if limit == 0 else 0)


# --- 4. a worker that stops consuming is not ready --------------------------------------------


def test_a_worker_that_stops_consuming_turns_readyz_and_its_health_check_red(
    base_settings: Settings, start_worker: Any, sessions: Any, key: Key
) -> None:
    """The stall after a Redis reconnection (kombu/Celery) cannot be caused on purpose; its
    symptom can: the process lives and beats, its consumer of ``analyze`` is gone. Celery's own
    cancel_consumer makes exactly that, and add_consumer ends it."""
    settings = base_settings.replace(worker_stall_s=2)
    broker = redis.Redis.from_url(settings.redis_client_url)
    broker.delete(HEARTBEAT_KEY, *(PROGRESS_KEY + q for q in ALL_QUEUES))
    client = create_test_app(settings).test_client()
    start_worker(settings, concurrency=1)

    def readyz() -> tuple[int, dict[str, Any]]:
        resp = client.get("/readyz")
        return resp.status_code, resp.get_json()

    wait_until(lambda: readyz()[0] == 200, 60, "ready")
    first = broker.zrange(HEARTBEAT_KEY, 0, -1)[0]
    assert isinstance(first, bytes)
    member = first.decode()
    node = member.rsplit(":", 1)[0]
    health = (settings.redis_client_url, settings.worker_stall_after_s, 20.0)
    here = node == "celery@" + socket.gethostname()  # else container_health is not ours to ask
    if here:
        assert container_health(*health) is None

    control = make_celery(settings).control
    assert control.cancel_consumer(ANALYZE_QUEUE, destination=[node], reply=True)
    ids = new_jobs(sessions, key.api_id, 3)
    for job_id in ids:
        make_celery(settings).send_task(ANALYZE_TASK, args=(job_id,), queue=ANALYZE_QUEUE)

    def stalled() -> dict[str, Any] | None:
        code, body = readyz()
        return body if code == 503 else None

    body = wait_until(stalled, 60, "readyz to see the stall")
    assert body["checks"]["workers"].startswith("1 with a heartbeat")  # it lives...
    assert body["checks"]["consumption"].startswith("stalled: ")  # ...and consumes nothing
    assert "'analyze'" in body["checks"]["consumption"]
    if here:
        problem = container_health(*health)
        assert problem is not None and problem.startswith("stalled: ") and node in problem

    assert control.add_consumer(ANALYZE_QUEUE, destination=[node], reply=True)
    wait_until(lambda: readyz()[0] == 200, 60, "ready again")
    wait_all_final(sessions, ids, 120)  # the waiting jobs ran
    if here:
        assert container_health(*health) is None
