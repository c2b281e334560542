"""Webhooks (Standard Webhooks 1.0), verified by a real receiver process with the
``standardwebhooks`` library: end to end through the API, a real worker and the beat-driven
dispatcher, with the retry schedule compressed to seconds."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select, update
from standardwebhooks.webhooks import Webhook

from antihack.shared.domain import signatures, webhooks
from antihack.shared.domain.jobs import claim, finish
from antihack.shared.domain.keys import _new_secrets
from antihack.shared.infra.db import transaction
from antihack.shared.infra.settings import Settings, SettingsError
from antihack.shared.infra.tables import ApiKey, WebhookAttempt, WebhookDelivery, utcnow
from antihack.worker.webhook_tasks import attempt
from tests.conftest import Key, create_test_app
from tests.devstack import ROOT, wait_until
from tests.helpers import new_jobs, no_face_capture, running_stack

ADMIN = {"Authorization": "Bearer test-admin-token"}
RECEIVER = ROOT / "tests" / "webhook_receiver.py"


# --- a receiver process ------------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    log: Path

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def for_id(self, webhook_id: str) -> list[dict[str, Any]]:
        return [c for c in self.calls() if c["webhook_id"] == webhook_id]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Callable[..., Receiver]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(secrets: list[str], responses: str = "200") -> Receiver:
        n = len(procs)
        port_file, log = tmp_path / f"rx{n}.port", tmp_path / f"rx{n}.jsonl"
        args = [sys.executable, str(RECEIVER), "--port-file", str(port_file), "--log", str(log)]
        args += [f"--secret={s}" for s in secrets] + ["--responses", responses]
        procs.append(subprocess.Popen(args))
        wait_until(port_file.exists, 20, "the receiver")
        return Receiver(f"http://127.0.0.1:{port_file.read_text()}/hook", log)

    yield start
    for p in procs:
        p.terminate()
        p.wait()


# --- the service -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wh_settings(base_settings: Settings) -> Settings:
    # Attempts after 0 s, 1 s, 1 s, 1 s, then failed; the dispatcher looks twice a second.
    return base_settings.replace(
        webhook_schedule_s="0,1,1,1", webhook_dispatch_interval_s=0.5, webhook_timeout_s=5
    )


@dataclass
class Stack:
    base: str
    settings: Settings

    def admin(self, method: str, path: str, **body: Any) -> requests.Response:
        return requests.request(method, self.base + path, json=body, headers=ADMIN, timeout=10)

    def new_key(self) -> Key:
        made = self.admin("POST", "/admin/keys", name="partner").json()
        return Key(made["api_id"], made["api_secret"], made["sdk_secret"], made["webhook_secret"])

    def set_webhook(self, key: Key, url: str) -> dict[str, Any]:
        resp = self.admin("PATCH", f"/admin/keys/{key.api_id}", webhook_url=url)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def submit(self, key: Key, **data: str) -> str:
        resp = requests.post(
            self.base + "/v1/jobs",
            files={"liveness_data_file": ("c.pb", no_face_capture())},
            data=data,
            headers=key.headers,
            timeout=60,
        )
        assert resp.status_code == 202, resp.text
        return str(resp.json()["request_id"])

    def get(self, key: Key, path: str, **params: str) -> requests.Response:
        return requests.get(self.base + path, params=params, headers=key.headers, timeout=10)

    def post(self, key: Key, path: str) -> requests.Response:
        return requests.post(self.base + path, headers=key.headers, timeout=10)

    def deliveries(self, key: Key, **params: str) -> list[dict[str, Any]]:
        resp = self.get(key, "/v1/webhooks/deliveries", **params)
        assert resp.status_code == 200, resp.text
        found: list[dict[str, Any]] = resp.json()["deliveries"]
        return found

    def delivery_of(self, key: Key, request_id: str, status: str) -> dict[str, Any]:
        """Wait until the job's (latest) delivery has ``status``; returns it with attempts."""

        def reached() -> dict[str, Any] | None:
            mine = [d for d in self.deliveries(key) if d["request_id"] == request_id]
            if mine and mine[0]["status"] == status:
                found: dict[str, Any] = self.get(
                    key, f"/v1/webhooks/deliveries/{mine[0]['id']}"
                ).json()
                return found
            return None

        return wait_until(reached, 90, f"a {status} delivery of {request_id}")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def stack(wh_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(wh_settings, tmp_path_factory.mktemp("webhook-stack")) as base:
        yield Stack(base, wh_settings)


def verify(secret: str, call: dict[str, Any]) -> Any:
    """What a partner does with each call (raises if it is not ours)."""
    headers = {
        "webhook-id": call["webhook_id"],
        "webhook-timestamp": call["webhook_timestamp"],
        "webhook-signature": call["webhook_signature"],
    }
    return Webhook(secret).verify(call["body"], headers)


# --- end to end --------------------------------------------------------------------------------


def test_the_worker_sends_at_once_without_waiting_for_the_dispatcher(
    wh_settings: Settings,
    start_worker: Any,
    start_api: Any,
    receiver: Callable[..., Receiver],
) -> None:
    # No beat here (and it runs before the module's stack starts): only the worker's own
    # publish right after the result commits can deliver it.
    start_worker(wh_settings)
    stack = Stack(start_api(wh_settings), wh_settings)
    key = stack.new_key()
    rx = receiver([key.webhook_secret])
    stack.set_webhook(key, rx.url)
    delivery = stack.delivery_of(key, stack.submit(key), "delivered")
    assert [c["verified"] for c in rx.for_id(delivery["id"])] == [[True]]


def test_a_finished_job_is_delivered_signed_and_recorded(
    stack: Stack, receiver: Callable[..., Receiver]
) -> None:
    key = stack.new_key()
    rx = receiver([key.webhook_secret])
    assert stack.set_webhook(key, rx.url)["webhook_url"] == rx.url
    rid = stack.submit(key)

    delivery = stack.delivery_of(key, rid, "delivered")
    [call] = rx.for_id(delivery["id"])
    assert call["verified"] == [True] and call["content_type"] == "application/json"
    assert delivery["id"].startswith("msg_") and call["path"] == "/hook"
    event = verify(key.webhook_secret, call)
    job = stack.get(key, f"/v1/jobs/{rid}").json()
    job.pop("job_url")
    assert event["type"] == "liveness.completed"
    assert event["data"] == job and job["status"] == "SUCCEEDED"
    assert datetime.fromisoformat(event["timestamp"]) == datetime.fromisoformat(job["finished_at"])
    assert delivery["target"] == "key" and delivery["attempts"] == 1
    [logged] = delivery["attempt_log"]
    assert logged["status_code"] == 200 and logged["error"] is None
    assert logged["latency_ms"] >= 0 and logged["url"] == rx.url


def test_a_failing_receiver_gets_every_event_again_with_the_same_webhook_id(
    stack: Stack, receiver: Callable[..., Receiver]
) -> None:
    key = stack.new_key()
    # Each message: 500, then 503 asking for 2 s, then 200.
    rx = receiver([key.webhook_secret], responses="500,503:2,200")
    stack.set_webhook(key, rx.url)
    by_key = stack.submit(key)
    by_callback = stack.submit(key, callback_url=rx.url + "?job=1")

    for rid, target in ((by_key, "key"), (by_callback, "callback")):
        delivery = stack.delivery_of(key, rid, "delivered")
        assert delivery["target"] == target
        calls = rx.for_id(delivery["id"])
        assert [c["answered"] for c in calls] == [500, 503, 200]
        assert all(c["verified"] == [True] for c in calls)
        assert len({c["body"] for c in calls}) == 1  # the same event each time
        assert json.loads(calls[0]["body"])["data"]["request_id"] == rid
        # Retry-After (2 s) overrides the schedule's 1 s.
        assert calls[2]["received_at"] - calls[1]["received_at"] >= 1.9
        log = delivery["attempt_log"]
        assert [a["status_code"] for a in log] == [500, 503, 200]
        assert [a["error"] for a in log] == ["HTTP 500", "HTTP 503", None]
    assert rx.for_id(stack.delivery_of(key, by_callback, "delivered")["id"])[0]["path"] == (
        "/hook?job=1"
    )


def test_a_receiver_that_never_recovers_ends_failed_after_the_schedule(
    stack: Stack, receiver: Callable[..., Receiver]
) -> None:
    key = stack.new_key()
    rx = receiver([key.webhook_secret], responses="500")
    stack.set_webhook(key, rx.url)
    rid = stack.submit(key)
    delivery = stack.delivery_of(key, rid, "failed")
    assert delivery["attempts"] == 4 == len(rx.for_id(delivery["id"]))  # "0,1,1,1"
    assert delivery["next_attempt_at"] is None and delivery["last_status_code"] == 500
    assert [d["id"] for d in stack.deliveries(key, status="failed")] == [delivery["id"]]
    assert stack.deliveries(key, status="pending") == []


def test_410_gone_disables_the_keys_endpoint_until_it_is_set_again(
    stack: Stack, receiver: Callable[..., Receiver]
) -> None:
    key = stack.new_key()
    gone = receiver([key.webhook_secret], responses="410")
    ok = receiver([key.webhook_secret])
    stack.set_webhook(key, gone.url)
    first = stack.delivery_of(key, stack.submit(key), "disabled")
    assert first["attempts"] == 1 and first["last_status_code"] == 410
    shown = stack.admin("GET", f"/admin/keys/{key.api_id}").json()
    assert shown["webhook_disabled_at"] is not None

    # Later events are kept (to reconcile and redeliver) but not sent.
    second = stack.delivery_of(key, stack.submit(key), "disabled")
    assert second["attempts"] == 0 and "410 Gone" in second["last_error"]
    assert len(gone.calls()) == 1
    refused = stack.post(key, f"/v1/webhooks/deliveries/{second['id']}/redeliver")
    assert refused.status_code == 400 and refused.json()["status"] == "INVALID_ARGUMENT"

    # A new URL re-enables the endpoint; the missed event goes out with its webhook-id.
    assert stack.set_webhook(key, ok.url)["webhook_disabled_at"] is None
    resent = stack.post(key, f"/v1/webhooks/deliveries/{second['id']}/redeliver")
    assert resent.status_code == 202 and resent.json()["id"] == second["id"]
    wait_until(lambda: ok.for_id(second["id"]), 30, "the redelivery")
    assert ok.for_id(second["id"])[0]["verified"] == [True]

    # A job's own callback_url answering 410 stops only that delivery.
    by_callback = stack.submit(key, callback_url=gone.url)
    assert stack.delivery_of(key, by_callback, "disabled")["target"] == "callback"
    assert stack.admin("GET", f"/admin/keys/{key.api_id}").json()["webhook_disabled_at"] is None
    stack.delivery_of(key, stack.submit(key), "delivered")


def test_a_rotated_secret_signs_beside_the_new_one_for_the_overlap(
    stack: Stack, receiver: Callable[..., Receiver], sessions: Any
) -> None:
    key = stack.new_key()
    rotated = stack.admin("POST", f"/admin/keys/{key.api_id}/rotate").json()
    old, new = key.webhook_secret, rotated["webhook_secret"]
    assert new != old and rotated["webhook_secret_rotated_at"]
    key = Key(key.api_id, rotated["api_secret"], rotated["sdk_secret"], new)
    rx = receiver([old, new])  # verdicts: [old secret, new secret]
    stack.set_webhook(key, rx.url)

    during = stack.delivery_of(key, stack.submit(key), "delivered")
    [call] = rx.for_id(during["id"])
    assert len(call["webhook_signature"].split(" ")) == 2
    assert call["verified"] == [True, True]  # a receiver still on the old secret accepts it

    with transaction(sessions) as s:  # the overlap (24 h by default) has passed
        s.execute(
            update(ApiKey)
            .where(ApiKey.id == key.api_id)
            .values(webhook_secret_rotated_at=utcnow() - timedelta(days=1, seconds=1))
        )
    after = stack.delivery_of(key, stack.submit(key), "delivered")
    [call] = rx.for_id(after["id"])
    assert len(call["webhook_signature"].split(" ")) == 1
    assert call["verified"] == [False, True]


def test_deliveries_are_visible_only_to_their_key(
    stack: Stack, receiver: Callable[..., Receiver]
) -> None:
    owner, other = stack.new_key(), stack.new_key()
    rx = receiver([owner.webhook_secret])
    stack.set_webhook(owner, rx.url)
    rids = [stack.submit(owner) for _ in range(2)]
    first, second = (stack.delivery_of(owner, rid, "delivered") for rid in rids)

    for method, path in (
        ("GET", f"/v1/webhooks/deliveries/{first['id']}"),
        ("POST", f"/v1/webhooks/deliveries/{first['id']}/redeliver"),
        ("POST", f"/v1/jobs/{rids[0]}/redeliver"),
    ):
        resp = requests.request(method, stack.base + path, headers=other.headers, timeout=10)
        assert resp.status_code == 404, (path, resp.text)
        assert set(resp.json()) == {"status", "reason", "request_id"}
        assert resp.json()["status"] == "NOT_FOUND"
    assert stack.deliveries(other) == []
    assert stack.get(other, "/v1/webhooks/deliveries", before=first["id"]).status_code == 400

    # Pages, newest first.
    newest_first = [d["id"] for d in stack.deliveries(owner)]
    assert sorted(newest_first) == sorted([first["id"], second["id"]])
    page = stack.get(owner, "/v1/webhooks/deliveries", limit="1").json()
    assert [d["id"] for d in page["deliveries"]] == newest_first[:1]
    rest = stack.get(owner, "/v1/webhooks/deliveries", limit="1", before=page["next_before"])
    assert [d["id"] for d in rest.json()["deliveries"]] == newest_first[1:]
    bad = stack.get(owner, "/v1/webhooks/deliveries", status="lost")
    assert bad.status_code == 400 and bad.json()["status"] == "INVALID_ARGUMENT"

    # The owner may have a job's result sent again: a new delivery, a new webhook-id.
    again = stack.post(owner, f"/v1/jobs/{rids[0]}/redeliver")
    assert again.status_code == 202 and again.json()["id"] != first["id"]
    wait_until(lambda: rx.for_id(again.json()["id"]), 30, "the job's redelivery")
    resent = json.loads(rx.for_id(again.json()["id"])[0]["body"])
    assert resent == json.loads(rx.for_id(first["id"])[0]["body"])

    listed = stack.admin("GET", f"/admin/webhooks/deliveries?api_id={owner.api_id}").json()
    assert {d["id"] for d in listed["deliveries"]} == {
        first["id"],
        second["id"],
        again.json()["id"],
    }
    assert requests.get(stack.base + "/admin/webhooks/deliveries", timeout=10).status_code == 401


# --- registration, and the parts a worker runs (called directly) -------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "ftp://example.com/hook",
        "http://user:pw@example.com/hook",
    ],
)
def test_private_or_odd_webhook_urls_are_refused_at_registration(
    base_settings: Settings, url: str
) -> None:
    client = create_test_app(base_settings.replace(allow_private_urls=False)).test_client()
    created = client.post("/admin/keys", json={"name": "x", "webhook_url": url}, headers=ADMIN)
    assert created.status_code == 400, created.get_json()
    assert created.get_json()["status"] == "INVALID_ARGUMENT"
    assert "webhook_url refused" in created.get_json()["reason"]
    made = client.post("/admin/keys", json={"name": "x"}, headers=ADMIN).get_json()
    patched = client.patch(
        f"/admin/keys/{made['api_id']}", json={"webhook_url": url}, headers=ADMIN
    )
    assert patched.status_code == 400


def test_a_name_that_does_not_resolve_yet_is_accepted_and_checked_at_send_time(
    base_settings: Settings,
) -> None:
    client = create_test_app(base_settings.replace(allow_private_urls=False)).test_client()
    url = "https://hooks.partner.invalid/antihack"
    created = client.post("/admin/keys", json={"name": "x", "webhook_url": url}, headers=ADMIN)
    assert created.status_code == 201 and created.get_json()["webhook_url"] == url


def delivery_for_new_job(sessions: Any, key: Key) -> str:
    """Finish a job as a worker would; its delivery is pushed an hour out, so the running
    dispatcher leaves it to the test."""
    [job_id] = new_jobs(sessions, key.api_id)
    with transaction(sessions) as s:
        owned = claim(s, job_id, timedelta(seconds=60), 3)
        assert owned is not None
        assert finish(s, owned, {"status": "OK", "request_id": job_id, "score": 0.5})
        delivery = s.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)).one()
        delivery.next_attempt_at = utcnow() + timedelta(hours=1)
        return delivery.id


def key_with_webhook(sessions: Any, settings: Settings, url: str) -> Key:
    from antihack.shared.domain.keys import KeyOptions, create_key

    with transaction(sessions) as s:
        made, new = create_key(
            s, settings.secret_key, KeyOptions(name="direct", webhook_url=url),
            allow_private_urls=True,
        )  # fmt: skip
        return Key(made.id, new.api_secret, new.sdk_secret, new.webhook_secret)


def claim_now(sessions: Any, delivery_id: str) -> str:
    with transaction(sessions) as s:
        [(found, token)] = webhooks.claim_due(
            s, timedelta(seconds=60), delivery_id=delivery_id, now=utcnow() + timedelta(hours=2)
        )
    assert found == delivery_id
    return token


def test_a_url_that_turned_private_is_refused_at_send_time(
    base_settings: Settings, sessions: Any, receiver: Callable[..., Receiver]
) -> None:
    rx = receiver([])
    key = key_with_webhook(sessions, base_settings, rx.url)  # accepted while private was allowed
    delivery_id = delivery_for_new_job(sessions, key)
    strict = base_settings.replace(allow_private_urls=False, webhook_schedule_s="0,3600")

    assert attempt(sessions, strict, delivery_id, claim_now(sessions, delivery_id)) == "pending"
    with transaction(sessions) as s:
        [logged] = s.scalars(
            select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id)
        ).all()
        assert logged.status_code is None and logged.error is not None
        assert "private or reserved address" in logged.error
        delivery = s.get(WebhookDelivery, delivery_id)
        assert delivery is not None and delivery.next_attempt_at is not None
        assert delivery.next_attempt_at > utcnow() + timedelta(minutes=59)
    assert rx.calls() == []


def test_two_dispatchers_never_claim_the_same_attempt(
    base_settings: Settings, sessions: Any, receiver: Callable[..., Receiver]
) -> None:
    rx = receiver([])
    key = key_with_webhook(sessions, base_settings, rx.url)
    ids = {delivery_for_new_job(sessions, key) for _ in range(6)}
    later = utcnow() + timedelta(hours=2)
    claimed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def dispatcher() -> None:
        with transaction(sessions) as s:
            got = webhooks.claim_due(s, timedelta(seconds=60), now=later)
        with lock:
            claimed.extend(c for c in got if c[0] in ids)

    threads = [threading.Thread(target=dispatcher) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(d for d, _ in claimed) == sorted(ids)  # each once, none lost

    # The same send delivered twice (a redelivered message) makes one POST.
    delivery_id, token = claimed[0]
    assert attempt(sessions, base_settings, delivery_id, token) == "delivered"
    assert attempt(sessions, base_settings, delivery_id, token) == "skipped"
    assert len(rx.for_id(delivery_id)) == 1


def test_our_secrets_and_signatures_are_what_standardwebhooks_expects() -> None:
    body = b'{"type":"liveness.completed"}'
    ts = int(datetime.now(UTC).timestamp())
    for _ in range(50):
        secret = _new_secrets().webhook_secret
        assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
        lib = Webhook(secret)
        ours = signatures.sign(secret, "msg_1", ts, body)
        assert ours == lib.sign("msg_1", datetime.fromtimestamp(ts, UTC), body.decode())
        headers = {"webhook-id": "msg_1", "webhook-timestamp": str(ts)}
        other = _new_secrets().webhook_secret
        both = webhooks.signature_header([other, secret], "msg_1", ts, body)
        assert lib.verify(body, {**headers, "webhook-signature": both}) == json.loads(body)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), (None, None), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_retry_after_is_read_as_seconds_or_a_date(header: str | None, expected: float) -> None:
    assert webhooks.retry_after_seconds(header, utcnow()) == expected


@pytest.mark.parametrize("schedule", ["x", "", "5,-1"])
def test_a_bad_retry_schedule_is_refused_at_start(schedule: str) -> None:
    """Refused when the settings are made (every process), not after a webhook's first POST."""
    with pytest.raises(SettingsError, match="ANTIHACK_WEBHOOK_SCHEDULE_S"):
        Settings().replace(webhook_schedule_s=schedule)
    with pytest.raises(SettingsError, match="ANTIHACK_WEBHOOK_SCHEDULE_S"):
        Settings.from_env({"ANTIHACK_WEBHOOK_SCHEDULE_S": schedule})


def test_a_batch_of_finished_jobs_gets_its_deliveries_from_one_insert(
    sessions: Any, base_settings: Settings, make_key: Any
) -> None:
    """finish_jobs decides each delivery from what its UPDATE returned (no query of the job or
    its key) and writes them all with one INSERT: the callback_url first, else the key's
    webhook_url; a revoked key's or a 410-disabled endpoint's recorded as disabled; none
    without an endpoint, none for an attempt that lost its job."""
    from sqlalchemy import event

    from antihack.shared.domain.jobs import AttemptResult, claim_jobs, finish_jobs
    from antihack.shared.infra.tables import Job

    hooked = key_with_webhook(sessions, base_settings, "http://127.0.0.1:9/key-hook")
    gone = key_with_webhook(sessions, base_settings, "http://127.0.0.1:9/gone")
    revoked = key_with_webhook(sessions, base_settings, "http://127.0.0.1:9/revoked")
    plain = make_key()
    key_only, key_and_callback = new_jobs(sessions, hooked.api_id, 2)
    [nothing, callback_only] = new_jobs(sessions, plain.api_id, 2)
    [disabled_job] = new_jobs(sessions, gone.api_id)
    [revoked_job] = new_jobs(sessions, revoked.api_id)
    [stale] = new_jobs(sessions, hooked.api_id)
    callback = "http://127.0.0.1:9/callback"
    with transaction(sessions) as s:
        s.execute(
            update(Job)
            .where(Job.id.in_([key_and_callback, callback_only]))
            .values(callback_url=callback)
        )
        s.execute(
            update(ApiKey).where(ApiKey.id == gone.api_id).values(webhook_disabled_at=utcnow())
        )
        s.execute(update(ApiKey).where(ApiKey.id == revoked.api_id).values(revoked_at=utcnow()))
    ids = [key_only, key_and_callback, nothing, callback_only, disabled_job, revoked_job, stale]
    with transaction(sessions) as s:
        claims = {j: c.claim for j, c in claim_jobs(s, ids, timedelta(seconds=60), 3).items()}
    assert sorted(claims) == sorted(ids)
    with transaction(sessions) as s:  # the stale job was taken again by another attempt
        s.execute(update(Job).where(Job.id == stale).values(attempts=Job.attempts + 1))

    inserts: list[tuple[str, bool]] = []

    def seen(_c: Any, _cur: Any, statement: str, _p: Any, _ctx: Any, many: bool) -> None:
        if "webhook_deliveries" in statement or "SELECT" in statement.split("RETURNING")[0]:
            inserts.append((statement, many))

    engine = sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", seen)
    try:
        with transaction(sessions) as s:
            finished = finish_jobs(
                s,
                [
                    AttemptResult(claims[j], {"status": "OK", "request_id": j, "score": 0.5})
                    for j in ids
                ],
            )
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    # One statement wrote every delivery (one INSERT of five rows); nothing was read.
    [(statement, _)] = inserts
    assert statement.startswith("INSERT INTO webhook_deliveries")
    assert statement.count("), (") == 4, statement
    assert stale not in finished
    with transaction(sessions) as s:
        rows = {
            d.job_id: d
            for d in s.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id.in_(ids)))
        }
    assert sorted(rows) == sorted(
        [key_only, key_and_callback, callback_only, disabled_job, revoked_job]
    )
    want = {
        key_only: ("key", "http://127.0.0.1:9/key-hook", "pending", hooked.api_id),
        key_and_callback: ("callback", callback, "pending", hooked.api_id),
        callback_only: ("callback", callback, "pending", plain.api_id),
        disabled_job: ("key", "http://127.0.0.1:9/gone", "disabled", gone.api_id),
        revoked_job: (
            "key",
            "http://127.0.0.1:9/revoked",
            "disabled",
            revoked.api_id,
        ),
    }
    for job_id, (target, url, status, api_id) in want.items():
        row = rows[job_id]
        assert (row.target, row.url, row.status, row.api_key_id) == (target, url, status, api_id)
        assert row.event_type == "liveness.completed" and row.attempts == row.step == 0
        assert finished[job_id].delivery_id == row.id
        assert finished[job_id].webhook_due == (status == "pending")
        assert (row.next_attempt_at is None) == (status == "disabled")
    assert "410 Gone" in (rows[disabled_job].last_error or "")
    assert rows[revoked_job].last_error == "the API key is revoked"
    assert finished[nothing].delivery_id is None and not finished[nothing].webhook_due
