"""Retention (issue 16): the hourly purge deletes everything about a capture once it is older
than ANTIHACK_RETENTION_DAYS, in batches, and ``DELETE /v1/jobs/<id>`` removes every trace of
one job at once."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import String, func, insert, select, update

from antihack.shared.cli.sample import for_capture_session
from antihack.shared.domain.jobs import claim, error_body, finish
from antihack.shared.domain.quota import period_key
from antihack.shared.domain.retention import job_dependents, purge
from antihack.shared.infra.db import Base, transaction
from antihack.shared.infra.queues import PURGE_TASK
from antihack.shared.infra.settings import Settings
from antihack.shared.infra.tables import (
    DELIVERED,
    ApiKey,
    Fingerprint,
    Image,
    Job,
    JobInput,
    JobResult,
    QuotaCounter,
    RefundCounter,
    ReplayBand,
    ReplayCapture,
    WebhookAttempt,
    WebhookDelivery,
    utcnow,
)
from antihack.worker.celery_app import make_celery
from tests.conftest import Key
from tests.devstack import wait_until
from tests.helpers import face_capture, new_jobs, quota_used

# Tables that hold no per-capture data (keys) or are purged by a rule of their own rather than
# through a job: H5 images by their expiry, quota and refund counters by the end of their period.
NOT_JOB_DATA = {"api_keys", "images", "quota_counters", "refund_counters"}


def test_every_table_is_purged_with_its_job_or_by_a_rule_of_its_own() -> None:
    # A new table that references jobs is deleted with them; any other new table must be
    # given a retention rule here and in shared/domain/retention.py (this test names it).
    with_jobs = {"jobs"} | {dep.table.name for dep in job_dependents()}
    assert {"job_inputs", "job_results", "webhook_deliveries", "webhook_attempts"} <= with_jobs
    assert "capture_sessions" in with_jobs
    unruled = set(Base.metadata.tables) - with_jobs - NOT_JOB_DATA
    assert not unruled, f"tables with no retention rule: {sorted(unruled)}"


# --- DELETE /v1/jobs/<id> ---------------------------------------------------------------------


@pytest.fixture
def hook() -> Iterator[tuple[str, list[bytes]]]:
    """A loopback webhook receiver answering 200; yields its URL and the bodies it got."""
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *a: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies
    server.shutdown()
    server.server_close()


def _mentions(sessions: Any, value: str) -> dict[str, int]:
    """Rows of every table with a text column equal to ``value`` (a job id), per table."""
    found: dict[str, int] = {}
    with transaction(sessions) as s:
        for table in Base.metadata.sorted_tables:
            for column in table.columns:
                if isinstance(column.type, String):
                    n = s.scalar(select(func.count()).select_from(table).where(column == value))
                    if n:
                        found[f"{table.name}.{column.name}"] = int(n)
    return found


def test_delete_removes_every_trace_of_a_finished_job(
    client: FlaskClient,
    make_key: Callable[..., Key],
    sessions: Any,
    start_worker: Callable[..., Any],
    hook: tuple[str, list[bytes]],
) -> None:
    start_worker()
    url, bodies = hook
    key, other = make_key(quota=10, quota_period="day"), make_key()
    made = client.post("/v1/sessions", headers=key.headers).get_json()
    capture = for_capture_session(face_capture(3), nonce=made["nonce"])
    resp = client.post(
        "/v1/jobs",
        data={
            "liveness_data_file": (io.BytesIO(capture), "c.pb"),
            "return_image": "1",
            "callback_url": url,
        },
        headers=key.headers,
        content_type="multipart/form-data",
    )
    assert resp.status_code == 202, resp.get_data(as_text=True)
    rid = resp.get_json()["request_id"]

    def delivered() -> list[str] | None:
        with transaction(sessions) as s:
            rows = s.execute(
                select(WebhookDelivery.id, WebhookDelivery.status).where(
                    WebhookDelivery.job_id == rid
                )
            ).all()
            return [r.id for r in rows] if rows and rows[0].status == DELIVERED else None

    delivery_ids: list[str] = wait_until(delivered, 120, "the job's webhook")
    job = client.get(f"/v1/jobs/{rid}", headers=key.headers).get_json()
    assert job["status"] == "SUCCEEDED" and job["result"]["image_base64"]  # the best frame
    assert bodies and rid.encode() in bodies[0]
    with transaction(sessions) as s:
        prints = s.scalar(select(func.count()).where(Fingerprint.job_id == rid))
        attempts = s.scalar(
            select(func.count()).where(WebhookAttempt.delivery_id.in_(delivery_ids))
        )
    assert prints and attempts  # phashes of the face and the capture's session id; one POST
    before = _mentions(sessions, rid)
    assert {"jobs.id", "job_inputs.job_id", "job_results.job_id"} <= set(before)
    traces = {"fingerprints", "replay_captures", "replay_bands", "webhook_deliveries"}
    assert {f"{t}.job_id" for t in traces} | {"capture_sessions.job_id"} <= set(before)
    used = quota_used(sessions, key.api_id)

    # Another key learns nothing: the same 404 as for a job that does not exist.
    assert client.delete(f"/v1/jobs/{rid}", headers=other.headers).status_code == 404
    resp = client.delete(f"/v1/jobs/{rid}", headers=key.headers)
    assert resp.status_code == 200 and resp.get_json() == {"request_id": rid, "status": "OK"}

    assert _mentions(sessions, rid) == {}
    with transaction(sessions) as s:
        left = s.scalar(select(func.count()).where(WebhookAttempt.delivery_id.in_(delivery_ids)))
    assert left == 0
    assert client.get(f"/v1/jobs/{rid}", headers=key.headers).status_code == 404
    assert client.get(f"/v1/sessions/{made['session_id']}", headers=key.headers).status_code == 404
    listed = client.get("/v1/webhooks/deliveries", headers=key.headers).get_json()
    assert all(d["request_id"] != rid for d in listed["deliveries"])
    again = client.delete(f"/v1/jobs/{rid}", headers=key.headers)
    assert again.status_code == 404 and again.get_json()["status"] == "NOT_FOUND"
    assert quota_used(sessions, key.api_id) == used  # a delete gives no quota back


def test_delete_refuses_a_running_job_and_cancels_a_queued_one(
    client: FlaskClient, key: Key, sessions: Any
) -> None:
    running, queued = new_jobs(sessions, key.api_id, 2)
    with transaction(sessions) as s:
        s.execute(update(Job).where(Job.id == running).values(status="RUNNING"))
    resp = client.delete(f"/v1/jobs/{running}", headers=key.headers)
    body = resp.get_json()
    assert resp.status_code == 409 and body["status"] == "INVALID_ARGUMENT"
    assert "RUNNING" in body["reason"] and body["request_id"]
    assert client.delete(f"/v1/jobs/{queued}", headers=key.headers).status_code == 200
    with transaction(sessions) as s:
        assert s.get(Job, running) is not None and s.get(JobInput, running) is not None
        assert s.get(Job, queued) is None and s.get(JobInput, queued) is None


# --- the purge --------------------------------------------------------------------------------


def _finished(sessions: Any, job_ids: list[str], *, prints: int = 2) -> None:
    """Finish jobs as a worker does (result, webhook delivery), add fingerprints and an attempt."""
    with transaction(sessions) as s:
        for job_id in job_ids:
            owned = claim(s, job_id, timedelta(minutes=1), 3)
            assert owned is not None
            assert finish(s, owned, error_body(job_id, "DETETION_FAILED", "no face")) is not None
            for i in range(prints):
                s.add(
                    Fingerprint(
                        api_key_id=owned.api_key_id, kind="session", value=f"s{i}", job_id=job_id
                    )
                )
                s.add(ReplayBand(job_id=job_id, band=i, api_key_id=owned.api_key_id))
            if prints:
                s.add(ReplayCapture(job_id=job_id, api_key_id=owned.api_key_id, prints=b"p"))
            delivery = s.scalars(
                select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
            ).one()
            s.add(
                WebhookAttempt(
                    delivery_id=delivery.id,
                    attempted_at=utcnow(),
                    url=delivery.url,
                    status_code=200,
                    latency_ms=5,
                )
            )


def _backdate(sessions: Any, job_ids: list[str], when: datetime) -> None:
    with transaction(sessions) as s:
        s.execute(update(Job).where(Job.id.in_(job_ids)).values(created_at=when, finished_at=when))
        s.execute(update(JobInput).where(JobInput.job_id.in_(job_ids)).values(created_at=when))
        s.execute(update(JobResult).where(JobResult.job_id.in_(job_ids)).values(created_at=when))
        s.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.job_id.in_(job_ids))
            .values(created_at=when)
        )
        for model in (Fingerprint, ReplayCapture, ReplayBand):
            s.execute(update(model).where(model.job_id.in_(job_ids)).values(created_at=when))


def _rows(sessions: Any, job_ids: list[str]) -> dict[str, int]:
    """What is left of these jobs, per table."""
    with transaction(sessions) as s:
        deliveries = select(WebhookDelivery.id).where(WebhookDelivery.job_id.in_(job_ids))
        counts = {
            "jobs": s.scalar(select(func.count()).where(Job.id.in_(job_ids))),
            "job_inputs": s.scalar(select(func.count()).where(JobInput.job_id.in_(job_ids))),
            "job_results": s.scalar(select(func.count()).where(JobResult.job_id.in_(job_ids))),
            "fingerprints": s.scalar(select(func.count()).where(Fingerprint.job_id.in_(job_ids))),
            "replay_captures": s.scalar(
                select(func.count()).where(ReplayCapture.job_id.in_(job_ids))
            ),
            "replay_bands": s.scalar(select(func.count()).where(ReplayBand.job_id.in_(job_ids))),
            "webhook_deliveries": s.scalar(
                select(func.count()).where(WebhookDelivery.job_id.in_(job_ids))
            ),
            "webhook_attempts": s.scalar(
                select(func.count()).where(WebhookAttempt.delivery_id.in_(deliveries))
            ),
        }
    return {name: int(n or 0) for name, n in counts.items()}


def test_the_purge_deletes_everything_past_retention_in_batches_and_keeps_the_rest(
    base_settings: Settings, make_key: Callable[..., Key], sessions: Any
) -> None:
    key = make_key(quota=100, quota_period="day")
    with transaction(sessions) as s:  # an endpoint, so that finishing a job makes a delivery
        s.execute(
            update(ApiKey)
            .where(ApiKey.id == key.api_id)
            .values(webhook_url="http://127.0.0.1:9/hook")
        )
    days = base_settings.retention_days
    old = utcnow() - timedelta(days=days, hours=1)
    recent = utcnow() - timedelta(days=days - 1)
    expired, kept, waiting, running = (new_jobs(sessions, key.api_id, n) for n in (5, 2, 1, 1))
    _finished(sessions, expired + kept)
    _backdate(sessions, expired, old)
    _backdate(sessions, kept, recent)
    _backdate(sessions, waiting + running, old)  # never finished: the jobs stay, inputs go
    with transaction(sessions) as s:
        s.execute(update(Job).where(Job.id.in_(running)).values(status="RUNNING"))
        today = period_key("day", utcnow())
        yesterday = period_key("day", utcnow() - timedelta(days=1))  # ended, but recently
        ended = period_key("day", utcnow() - timedelta(days=days + 2))
        s.execute(
            insert(QuotaCounter),
            [
                {"api_key_id": key.api_id, "period": p, "used": 3}
                for p in (ended, yesterday, "day:2020-02-29", "month:2020-02", "total")
            ],
        )
        s.execute(
            insert(RefundCounter),
            [{"api_key_id": key.api_id, "day": d[4:], "refunded": 1} for d in (ended, yesterday)],
        )
        image = Image(
            id="IMG" + "f" * 32,
            api_key_id=key.api_id,
            payload=b"x",
            created_at=utcnow() - timedelta(hours=2),
            expires_at=utcnow() - timedelta(hours=1),
        )
        s.add(image)
    used = quota_used(sessions, key.api_id)
    assert used == 9  # the 9 jobs, charged today

    # Two jobs per transaction: the five expired ones take three batches.
    app = make_celery(base_settings.replace(purge_batch=2))
    deleted = app.tasks[PURGE_TASK].apply().get()

    assert _rows(sessions, expired) == dict.fromkeys(_rows(sessions, expired), 0)
    assert _rows(sessions, kept) == {
        "jobs": 2,
        "job_inputs": 2,
        "job_results": 2,
        "fingerprints": 4,
        "replay_captures": 2,
        "replay_bands": 4,
        "webhook_deliveries": 2,
        "webhook_attempts": 2,
    }
    assert _rows(sessions, waiting + running)["jobs"] == 2
    assert _rows(sessions, waiting + running)["job_inputs"] == 0
    # Other tests' rows may be purged too: at least ours are counted.
    for table, n in {
        "jobs": 5,
        "job_inputs": 7,
        "job_results": 5,
        "fingerprints": 10,
        "replay_captures": 5,
        "replay_bands": 10,
        "webhook_deliveries": 5,
        "webhook_attempts": 5,
        "quota_counters": 3,
        "refund_counters": 1,
        "images": 1,
    }.items():
        assert deleted.get(table, 0) >= n, (table, deleted)
    with transaction(sessions) as s:
        periods = set(
            s.scalars(select(QuotaCounter.period).where(QuotaCounter.api_key_id == key.api_id))
        )
        refund_days = set(
            s.scalars(select(RefundCounter.day).where(RefundCounter.api_key_id == key.api_id))
        )
        assert refund_days == {yesterday[4:]}
        assert s.get(Image, image.id) is None
        assert s.get(ApiKey, key.api_id) is not None
    assert periods == {today, yesterday, "total"}
    assert quota_used(sessions, key.api_id) == used  # the current period is exact


def test_a_purge_past_its_deadline_stops_between_batches_and_the_next_run_goes_on(
    make_key: Callable[..., Key], sessions: Any
) -> None:
    key = make_key()
    with transaction(sessions) as s:
        s.execute(
            update(ApiKey)
            .where(ApiKey.id == key.api_id)
            .values(webhook_url="http://127.0.0.1:9/hook")
        )
    ids = new_jobs(sessions, key.api_id, 3)
    _finished(sessions, ids, prints=0)
    # Far in the past, so that no other test's rows sort before them (oldest go first).
    _backdate(sessions, ids, datetime(2001, 1, 1, tzinfo=UTC))
    first = purge(sessions, timedelta(days=1), 2, deadline_s=0)
    assert not first.complete and first.counts["jobs"] == 2
    assert _rows(sessions, ids)["jobs"] == 1
    second = purge(sessions, timedelta(days=1), 2)
    assert second.complete and _rows(sessions, ids)["jobs"] == 0


@pytest.mark.parametrize(("days", "batch"), [(-1, 10), (1, 0)])
def test_the_purge_refuses_nonsense_settings(sessions: Any, days: int, batch: int) -> None:
    with pytest.raises(ValueError):
        purge(sessions, timedelta(days=days), batch)
