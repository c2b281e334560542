"""A partner's webhook receiver down for a long outage, with time compressed by configuration
(``ANTIHACK_WEBHOOK_SCHEDULE_S=0,1,1,2,2,3``): jobs finish while nothing listens on its port,
the receiver comes back, and every event arrives at least once, under one ``webhook-id`` per
event, with the quota charged once and each job finished once.

The receiver runs in a thread of the test on a fixed port: "down" is that port closed
(connection refused), as when the partner's process is stopped."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from antihack.shared.infra.db import transaction
from antihack.shared.infra.settings import Settings
from antihack.shared.infra.tables import Job, WebhookAttempt, WebhookDelivery
from tests.conftest import Key
from tests.devstack import free_port, wait_until
from tests.helpers import job_states, no_face_capture, running_stack

ADMIN = {"Authorization": "Bearer test-admin-token"}
SCHEDULE = "0,1,1,2,2,3"  # six attempts over 9 s
JOBS = 8


@dataclass
class Receiver:
    """A partner endpoint on a fixed port that can be stopped and started again."""

    port: int
    secret: str
    calls: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(receiver.secret).verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    verified = False
                receiver.calls.append(
                    {
                        "webhook_id": headers.get("webhook-id"),
                        "request_id": json.loads(body)["data"]["request_id"],
                        "verified": verified,
                    }
                )
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def receiver() -> Iterator[Callable[[str], Receiver]]:
    made: list[Receiver] = []

    def make(secret: str) -> Receiver:
        made.append(Receiver(free_port(), secret))  # not started: the outage has begun
        return made[-1]

    yield make
    for r in made:
        r.down()


@dataclass
class Stack:
    base: str

    def new_key(self, **options: Any) -> Key:
        made = requests.post(
            self.base + "/admin/keys", json={"name": "outage", **options}, headers=ADMIN, timeout=10
        )
        assert made.status_code == 201, made.text
        body = made.json()
        return Key(body["api_id"], body["api_secret"], body["sdk_secret"], body["webhook_secret"])

    def set_webhook(self, key: Key, url: str) -> None:
        resp = requests.patch(
            f"{self.base}/admin/keys/{key.api_id}",
            json={"webhook_url": url},
            headers=ADMIN,
            timeout=10,
        )
        assert resp.status_code == 200, resp.text

    def submit(self, key: Key) -> str:
        resp = requests.post(
            self.base + "/v1/jobs",
            files={"liveness_data_file": ("c.pb", no_face_capture())},
            headers=key.headers,
            timeout=30,
        )
        assert resp.status_code == 202, resp.text
        return str(resp.json()["request_id"])

    def get(self, key: Key, path: str) -> Any:
        resp = requests.get(self.base + path, headers=key.headers, timeout=10)
        assert resp.status_code == 200, resp.text
        return resp.json()


@pytest.fixture(scope="module")
def stack(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = base_settings.replace(
        webhook_schedule_s=SCHEDULE, webhook_dispatch_interval_s=0.5, webhook_timeout_s=2
    )
    with running_stack(settings, tmp_path_factory.mktemp("outage")) as base:
        yield Stack(base)


def deliveries_of(sessions: Any, job_ids: list[str]) -> dict[str, list[tuple[str, str, int]]]:
    """Job id → its deliveries as (id, status, attempts)."""
    out: dict[str, list[tuple[str, str, int]]] = {j: [] for j in job_ids}
    with transaction(sessions) as s:
        for d in s.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id.in_(job_ids))):
            out[d.job_id].append((d.id, d.status, d.attempts))
    return out


def failed_attempts(sessions: Any, delivery_id: str) -> int:
    with transaction(sessions) as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(WebhookAttempt)
                .where(
                    WebhookAttempt.delivery_id == delivery_id, WebhookAttempt.status_code.is_(None)
                )
            )
            or 0
        )


def assert_each_job_finished_once(sessions: Any, job_ids: list[str]) -> None:
    states = job_states(sessions, job_ids)
    assert sorted(states) == sorted(job_ids)
    assert set(states.values()) == {("SUCCEEDED", 1, 1)}, states


def assert_delivered_once_per_event(rx: Receiver, sessions: Any, job_ids: list[str]) -> None:
    """Every job's event arrived, verified, and all its calls carry one webhook-id: the id of
    the job's one delivery."""
    deliveries = deliveries_of(sessions, job_ids)
    for job_id in job_ids:
        [(delivery_id, status, _)] = deliveries[job_id]
        assert status == "delivered", (job_id, deliveries[job_id])
        calls = [c for c in rx.calls if c["request_id"] == job_id]
        assert calls, f"no call for {job_id}"
        assert {c["webhook_id"] for c in calls} == {delivery_id}
        assert all(c["verified"] for c in calls)
    assert len({c["webhook_id"] for c in rx.calls}) == len(job_ids)


def test_events_that_finish_during_an_outage_arrive_when_the_receiver_is_back(
    stack: Stack, receiver: Callable[[str], Receiver], sessions: Any
) -> None:
    key = stack.new_key(quota=100, quota_period="total")
    rx = receiver(key.webhook_secret)
    stack.set_webhook(key, rx.url)

    job_ids = [stack.submit(key) for _ in range(JOBS)]  # the receiver is down
    assert_each_job_finished_once(sessions, wait_jobs(sessions, job_ids))

    # The outage lasts until every event has been refused three times (connection refused),
    # half of the schedule's attempts.
    def refused_three_times() -> bool:
        found = deliveries_of(sessions, job_ids)
        return all(
            len(ds) == 1 and failed_attempts(sessions, ds[0][0]) >= 3 for ds in found.values()
        )

    wait_until(refused_three_times, 30, "every delivery to fail three times", interval=0.2)
    assert rx.calls == []
    rx.up()

    wait_until(
        lambda: all(ds[0][1] == "delivered" for ds in deliveries_of(sessions, job_ids).values()),
        60,
        "every delivery after the outage",
    )
    assert_delivered_once_per_event(rx, sessions, job_ids)
    for ds in deliveries_of(sessions, job_ids).values():
        [(delivery_id, _, attempts)] = ds
        assert attempts == failed_attempts(sessions, delivery_id) + 1  # refused..., then 2xx
    usage = stack.get(key, "/v1/usage")
    assert usage["used"] == JOBS and usage["remaining"] == 100 - JOBS  # charged once each
    assert_each_job_finished_once(sessions, job_ids)


def test_an_outage_longer_than_the_schedule_is_recovered_by_redelivery(
    stack: Stack, receiver: Callable[[str], Receiver], sessions: Any
) -> None:
    """Past the last attempt the deliveries are ``failed``; once the receiver is back, the
    partner redelivers them: the same webhook-id, not charged again."""
    key = stack.new_key(quota=100, quota_period="total")
    rx = receiver(key.webhook_secret)
    stack.set_webhook(key, rx.url)
    job_ids = [stack.submit(key) for _ in range(4)]
    wait_jobs(sessions, job_ids)
    wait_until(
        lambda: all(
            ds and ds[0][1] == "failed" for ds in deliveries_of(sessions, job_ids).values()
        ),
        60,
        "every delivery to run out of attempts",
    )
    for ds in deliveries_of(sessions, job_ids).values():
        assert ds[0][2] == len(SCHEDULE.split(","))  # every attempt of the schedule was made
    assert rx.calls == []
    rx.up()

    failed = stack.get(key, "/v1/webhooks/deliveries?status=failed")["deliveries"]
    assert sorted(d["request_id"] for d in failed) == sorted(job_ids)
    for d in failed:
        resp = requests.post(
            f"{stack.base}/v1/webhooks/deliveries/{d['id']}/redeliver",
            headers=key.headers,
            timeout=10,
        )
        assert resp.status_code == 202 and resp.json()["id"] == d["id"], resp.text
    wait_until(
        lambda: all(ds[0][1] == "delivered" for ds in deliveries_of(sessions, job_ids).values()),
        60,
        "the redeliveries",
    )
    assert_delivered_once_per_event(rx, sessions, job_ids)
    assert stack.get(key, "/v1/usage")["used"] == len(job_ids)
    assert_each_job_finished_once(sessions, job_ids)


def wait_jobs(sessions: Any, job_ids: list[str]) -> list[str]:
    def finished() -> bool:
        with transaction(sessions) as s:
            done = s.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.id.in_(job_ids), Job.status.in_(("SUCCEEDED", "FAILED")))
            )
        return done == len(job_ids)

    wait_until(finished, 90, f"{len(job_ids)} jobs to finish", interval=0.2)
    return job_ids
