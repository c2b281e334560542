"""Tenant isolation: key A can neither read, delete, redeliver nor count key B's jobs, images,
deliveries or usage. Every client endpoint that takes an id is tried with B's ids under A's
credentials; the answer is the one a non-existent id gets (so it tells nothing), and B's data is
exactly as it was."""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from antihack.shared.domain.jobs import claim, finish
from antihack.shared.infra.db import transaction
from antihack.shared.infra.tables import (
    Image,
    Job,
    JobInput,
    JobResult,
    QuotaCounter,
    WebhookDelivery,
    utcnow,
)
from tests.conftest import Key
from tests.helpers import no_face_capture, png_bytes, small_coffee

MISSING_JOB = "TID" + "0" * 32
MISSING_DELIVERY = "msg_" + "0" * 32
MISSING_IMAGE = "IMG" + "0" * 32


@dataclass(frozen=True)
class Tenant:
    key: Key
    finished_job: str  # SUCCEEDED, with a result and a webhook delivery
    queued_job: str  # still QUEUED, with its input
    delivery: str
    image: str


def submit(client: FlaskClient, key: Key, **data: Any) -> Any:
    return client.post(
        "/v1/jobs", data=data, headers=key.headers, content_type="multipart/form-data"
    )


def capture_file() -> tuple[io.BytesIO, str]:
    return io.BytesIO(no_face_capture()), "c.pb"


@pytest.fixture
def tenant_b(client: FlaskClient, make_key: Callable[..., Key], sessions: Any) -> Tenant:
    """Key B with a quota, a webhook URL, a finished job with its delivery, a queued job and an
    H5 image. The delivery is parked an hour out so that no dispatcher sends it meanwhile."""
    b = make_key(quota=10, quota_period="total", webhook_url="http://127.0.0.1:9/antihack")
    finished = submit(client, b, liveness_data_file=capture_file())
    queued = submit(client, b, liveness_data_file=capture_file())
    assert finished.status_code == queued.status_code == 202, finished.get_json()
    job_id = finished.get_json()["request_id"]
    with transaction(sessions) as s:  # finished as a worker would finish it
        owned = claim(s, job_id, timedelta(seconds=60), 3)
        assert owned is not None
        assert finish(s, owned, {"status": "OK", "request_id": job_id, "score": 0.5})
    with transaction(sessions) as s:
        delivery = s.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)).one()
        delivery.next_attempt_at = utcnow() + timedelta(hours=1)
        delivery_id = delivery.id
    image = client.post(
        "/face/liveness_image",
        data={"image": (io.BytesIO(png_bytes(small_coffee())), "i.png")},
        headers=b.headers,
        content_type="multipart/form-data",
    )
    assert image.status_code == 200, image.get_json()
    return Tenant(
        b, job_id, queued.get_json()["request_id"], delivery_id, image.get_json()["image_id"]
    )


def snapshot(sessions: Any, client: FlaskClient, t: Tenant) -> dict[str, Any]:
    """Everything of B's that A's requests could have touched, as B and the database see it."""
    out: dict[str, Any] = {}
    with transaction(sessions) as s:
        for job_id in (t.finished_job, t.queued_job):
            job = s.get(Job, job_id)
            assert job is not None
            out[job_id] = (
                job.status,
                job.attempts,
                job.api_key_id,
                job.refunded_at,
                s.get(JobInput, job_id) is not None,
                s.get(JobResult, job_id) is not None,
            )
        out["deliveries"] = sorted(
            (d.id, d.status, d.attempts, d.step, d.next_attempt_at, d.claim_token, d.url)
            for d in s.scalars(
                select(WebhookDelivery).where(WebhookDelivery.api_key_id == t.key.api_id)
            )
        )
        image = s.get(Image, t.image)
        assert image is not None
        out["image"] = (image.api_key_id, hashlib.sha256(image.payload).hexdigest())
        out["quota"] = sorted(
            (q.period, q.used)
            for q in s.scalars(select(QuotaCounter).where(QuotaCounter.api_key_id == t.key.api_id))
        )
        out["jobs"] = sorted(s.scalars(select(Job.id).where(Job.api_key_id == t.key.api_id)))
    for path in (
        f"/v1/jobs/{t.finished_job}",
        f"/v1/jobs/{t.queued_job}",
        f"/v1/webhooks/deliveries/{t.delivery}",
        "/v1/webhooks/deliveries",
        "/v1/usage",
    ):
        resp = client.get(path, headers=t.key.headers)
        assert resp.status_code == 200, (path, resp.get_json())
        out[path] = resp.get_json()
    return out


def without_ids(reason: str) -> str:
    return re.sub(r"(TID|msg_|IMG)[0-9a-f]{32}", "<id>", reason)


# (method, path template, form data template, expected status, seed status); ``{job}`` etc.
# are filled with B's ids, then with ids that exist nowhere.
MATRIX = [
    ("GET", "/v1/jobs/{job}", None, 404, "NOT_FOUND"),
    ("GET", "/v1/jobs/{queued}", None, 404, "NOT_FOUND"),
    ("DELETE", "/v1/jobs/{job}", None, 404, "NOT_FOUND"),
    ("DELETE", "/v1/jobs/{queued}", None, 404, "NOT_FOUND"),
    ("POST", "/v1/jobs/{job}/redeliver", None, 404, "NOT_FOUND"),
    ("GET", "/v1/webhooks/deliveries/{delivery}", None, 404, "NOT_FOUND"),
    ("POST", "/v1/webhooks/deliveries/{delivery}/redeliver", None, 404, "NOT_FOUND"),
    ("GET", "/v1/webhooks/deliveries?before={delivery}", None, 400, "INVALID_ARGUMENT"),
    ("POST", "/v1/jobs", {"image_id": "{image}"}, 400, "INVALID_ARGUMENT"),
    ("POST", "/face/liveness_anti_hack", {"image_id": "{image}"}, 400, "INVALID_ARGUMENT"),
]


@pytest.mark.parametrize(
    ("method", "template", "form", "code", "status"),
    MATRIX,
    ids=[f"{m} {p}" for m, p, *_ in MATRIX],
)
def test_key_a_cannot_reach_key_b_by_id(
    client: FlaskClient,
    make_key: Callable[..., Key],
    sessions: Any,
    tenant_b: Tenant,
    method: str,
    template: str,
    form: dict[str, str] | None,
    code: int,
    status: str,
) -> None:
    a = make_key()
    before = snapshot(sessions, client, tenant_b)

    def ask(job: str, queued: str, delivery: str, image: str) -> Any:
        ids = {"job": job, "queued": queued, "delivery": delivery, "image": image}
        path = template.format(**ids)
        if form is None:
            return client.open(path, method=method, headers=a.headers)
        data = {k: v.format(**ids) for k, v in form.items()}
        return client.open(
            path, method=method, data=data, headers=a.headers, content_type="multipart/form-data"
        )

    foreign = ask(tenant_b.finished_job, tenant_b.queued_job, tenant_b.delivery, tenant_b.image)
    missing = ask(MISSING_JOB, MISSING_JOB, MISSING_DELIVERY, MISSING_IMAGE)
    for resp in (foreign, missing):
        assert resp.status_code == code, resp.get_json()
        body = resp.get_json()
        assert set(body) == {"status", "reason", "request_id"} and body["status"] == status
    # B's id gets the very answer an id that exists nowhere gets: no existence oracle.
    assert without_ids(foreign.get_json()["reason"]) == without_ids(missing.get_json()["reason"])
    for secret_id in (tenant_b.finished_job, tenant_b.delivery, tenant_b.image):
        assert secret_id not in str(foreign.headers)
    assert snapshot(sessions, client, tenant_b) == before
    with transaction(sessions) as s:  # and A got nothing out of it
        assert s.scalars(select(Job).where(Job.api_key_id == a.api_id)).first() is None


def test_lists_and_usage_show_only_the_callers_own(
    client: FlaskClient, make_key: Callable[..., Key], sessions: Any, tenant_b: Tenant
) -> None:
    a = make_key(quota=10, quota_period="total")
    usage_before = client.get("/v1/usage", headers=a.headers).get_json()
    b_before = snapshot(sessions, client, tenant_b)
    # B keeps working while A looks: none of it shows on A's side.
    assert submit(client, tenant_b.key, liveness_data_file=capture_file()).status_code == 202

    # A query naming B changes nothing: a key's list and usage are its own.
    for params in ("", f"?api_id={tenant_b.key.api_id}", f"?api_id={tenant_b.key.api_id}&days=5"):
        usage = client.get("/v1/usage" + params, headers=a.headers)
        assert usage.status_code == 200
        body = usage.get_json()
        assert body["api_id"] == a.api_id and body["used"] == 0 and body["days"] == []
        assert body["limit"] == 10
        listed = client.get("/v1/webhooks/deliveries" + params, headers=a.headers)
        assert listed.status_code == 200 and listed.get_json()["deliveries"] == []
    assert client.get("/v1/usage", headers=a.headers).get_json() == usage_before
    for status in ("pending", "delivered", "failed", "disabled"):
        page = client.get(f"/v1/webhooks/deliveries?status={status}", headers=a.headers)
        assert page.get_json()["deliveries"] == []

    # Admin endpoints do not take client credentials, even with B's id in them.
    for path in (
        f"/admin/usage?api_id={tenant_b.key.api_id}",
        f"/admin/keys/{tenant_b.key.api_id}",
        f"/admin/webhooks/deliveries?api_id={tenant_b.key.api_id}",
        f"/admin/webhooks/deliveries/{tenant_b.delivery}",
    ):
        resp = client.get(path, headers=a.headers)
        assert resp.status_code == 401 and resp.get_json()["status"] == "UNAUTHORIZED", path
    after = snapshot(sessions, client, tenant_b)
    assert (
        after[f"/v1/jobs/{tenant_b.finished_job}"] == b_before[f"/v1/jobs/{tenant_b.finished_job}"]
    )
    assert after["image"] == b_before["image"]


def test_an_idempotency_key_belongs_to_its_api_key(
    client: FlaskClient, make_key: Callable[..., Key], sessions: Any
) -> None:
    """A and B may use the same Idempotency-Key with the same bytes: each gets a job of its own,
    never the other's (and never a 422 for the other's payload)."""
    a, b = make_key(), make_key()
    payload = no_face_capture()

    def send(key: Key, data: bytes) -> Any:
        return client.post(
            "/v1/jobs",
            data={"liveness_data_file": (io.BytesIO(data), "c.pb")},
            headers={**key.headers, "Idempotency-Key": "shared-key-1"},
            content_type="multipart/form-data",
        )

    from_b = send(b, payload)
    from_a = send(a, payload)
    assert from_b.status_code == from_a.status_code == 202
    job_b, job_a = from_b.get_json()["request_id"], from_a.get_json()["request_id"]
    assert job_a != job_b
    with transaction(sessions) as s:
        owner_a, owner_b = s.get(Job, job_a), s.get(Job, job_b)
        assert owner_a is not None and owner_b is not None
        assert (owner_a.api_key_id, owner_b.api_key_id) == (a.api_id, b.api_id)
    # A different payload under the same Idempotency-Key: a conflict only with A's own job.
    conflict = send(a, no_face_capture())
    assert conflict.status_code == 422
    again_b = send(b, payload)
    assert again_b.status_code == 202 and again_b.get_json()["request_id"] == job_b
