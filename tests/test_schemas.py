"""One definition per schema: the pydantic models of shared/domain/schemas.py generate every
schema of /openapi.json and shape the answers, and the answers stay byte for byte what the
service sent before the models: the domain's dicts (job_resource, key_usage, delivery_view) and
the worker's stored result, in the same key order, with the same nulls and absent fields."""

from __future__ import annotations

import ast
import io
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify
from flask.testing import FlaskClient
from pydantic import BaseModel, ValidationError
from sqlalchemy import select

from antihack.api.openapi import SCHEMAS
from antihack.shared.domain import schemas
from antihack.shared.domain.jobs import claim, error_body, finish, job_resource
from antihack.shared.domain.quota import key_usage
from antihack.shared.domain.webhooks import delivery_view
from antihack.shared.infra.db import transaction
from antihack.shared.infra.tables import ApiKey, Job, WebhookAttempt, WebhookDelivery, utcnow
from tests.conftest import Key
from tests.helpers import no_face_capture, png_bytes, small_coffee

ROOT = Path(__file__).resolve().parents[1]
ADMIN = {"Authorization": "Bearer test-admin-token"}
# The worker's ``extra`` (worker/pipeline/run.py's _extra), in its order.
EXTRA = schemas.EXTRA_EXAMPLE


def wire(app: Flask, body: Any) -> bytes:
    """``body`` as the API's JSON provider sends it (what ``json_response`` sent before)."""
    with app.app_context():
        return jsonify(body).get_data()


def reshaped(model: type[BaseModel], raw: bytes) -> dict[str, Any]:
    """An answer read back through its model: equal to the answer when the model describes
    every field of it, in order."""
    return schemas.shown(model.model_validate_json(raw))


def test_every_schema_of_the_document_is_generated_from_the_models(doc: dict[str, Any]) -> None:
    generated = schemas.component_schemas()
    assert doc["components"]["schemas"] == generated == SCHEMAS
    # The seed's bodies, the job and the webhook payload are models, not dicts written by hand.
    for name in ("Error", "SeedResult", "Extra", "Job", "Usage", "WebhookDelivery"):
        assert generated[name]["type"] == "object", name
    assert generated["JobResult"]["oneOf"] == [
        {"$ref": "#/components/schemas/SeedResult"},
        {"$ref": "#/components/schemas/Error"},
    ]
    # Left out when absent, never null: not required and no null alternative.
    seed = generated["SeedResult"]
    assert seed["required"] == ["request_id", "status", "score"]
    assert seed["properties"]["extra"] == {
        "$ref": "#/components/schemas/Extra",
        "description": "Only with return_extra=1.",
    }
    assert list(seed["examples"][0]) == ["request_id", "status", "score", "extra"]


@pytest.fixture
def doc(client: FlaskClient) -> dict[str, Any]:
    body: dict[str, Any] = client.get("/openapi.json").get_json()
    return body


def _form(return_extra: str, capture: bytes | None = None) -> dict[str, Any]:
    upload = (io.BytesIO(capture or no_face_capture()), "c.pb")
    return {"liveness_data_file": upload, "return_extra": return_extra}


SEED_RESULTS = {
    "result with extra and image": lambda job_id: {
        "request_id": job_id,
        "status": "OK",
        "score": 0.13119,
        "extra": dict(EXTRA),
        "image_base64": "/9j/4AAQSkZJRgABAQ==",
    },
    "bare result": lambda job_id: {"request_id": job_id, "status": "OK", "score": 0.995},
    "error": lambda job_id: error_body(job_id, "DETETION_FAILED", "no face"),
}


@pytest.mark.parametrize("kind", sorted(SEED_RESULTS))
def test_a_job_answers_as_before_the_models(
    app: Flask, client: FlaskClient, key: Key, sessions: Any, kind: str
) -> None:
    """202, the seed endpoint's body (its stored result), GET and DELETE of the job."""
    headers = {**key.headers, "Idempotency-Key": f"schemas-{kind}"}
    capture = no_face_capture()
    accepted = client.post("/v1/jobs", data=_form("1", capture), headers=headers)
    assert accepted.status_code == 202, accepted.get_json()
    job_id = accepted.get_json()["request_id"]
    url = accepted.headers["Location"]
    assert accepted.get_data() == wire(
        app, {"request_id": job_id, "status": "QUEUED", "job_url": url}
    )

    body = SEED_RESULTS[kind](job_id)
    with transaction(sessions) as s:  # finished as a worker finishes it
        owned = claim(s, job_id, timedelta(seconds=60), 3)
        assert owned is not None
        failed = [{"step": "BLINK", "why": "no blink"}] if kind == "bare result" else None
        assert finish(s, owned, body, reasons=["r"], failed_steps=failed)

    # The same Idempotency-Key and payload: the seed endpoint answers the finished job at once.
    seed = client.post("/face/liveness_anti_hack", data=_form("1", capture), headers=headers)
    assert seed.status_code == (400 if kind == "error" else 200)
    assert seed.get_data() == wire(app, body)

    shown = client.get(f"/v1/jobs/{job_id}", headers=key.headers)
    assert shown.status_code == 200
    with transaction(sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None
        before = job_resource(job, url)
    assert shown.get_data() == wire(app, before)
    assert list(shown.get_json()) == [*schemas.Job.model_fields]  # finished: every field

    deleted = client.delete(f"/v1/jobs/{job_id}", headers=key.headers)
    assert deleted.get_data() == wire(app, {"request_id": job_id, "status": "OK"})


def test_a_stored_answer_outside_its_model_is_still_served(
    app: Flask, client: FlaskClient, key: Key, sessions: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The models shape answers; they never make stored data unreadable (no 500): a result
    outside the model (here a score of 1.5) is sent as it is, and the log says so."""
    headers = {**key.headers, "Idempotency-Key": "schemas-outside"}
    capture = no_face_capture()
    accepted = client.post("/v1/jobs", data=_form("1", capture), headers=headers)
    job_id = accepted.get_json()["request_id"]
    body = {"request_id": job_id, "status": "OK", "score": 1.5, "extra": {"odd": "x"}}
    with transaction(sessions) as s:
        owned = claim(s, job_id, timedelta(seconds=60), 3)
        assert owned is not None
        assert finish(s, owned, body, reasons=["r"], failed_steps=None)

    with caplog.at_level("ERROR"):
        seed = client.post("/face/liveness_anti_hack", data=_form("1", capture), headers=headers)
        shown = client.get(f"/v1/jobs/{job_id}", headers=key.headers)
    assert seed.status_code == 200 and seed.get_json() == body
    assert shown.status_code == 200 and shown.get_json()["result"] == body
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("stored result outside its model" in m for m in logged), logged
    assert any("answer outside its model Job" in m for m in logged), logged


def test_a_queued_job_leaves_out_what_it_does_not_have_yet(client: FlaskClient, key: Key) -> None:
    accepted = client.post("/v1/jobs", data=_form("0"), headers=key.headers)
    job = client.get(accepted.headers["Location"], headers=key.headers).get_json()
    assert list(job) == [
        "request_id", "status", "created_at", "started_at", "finished_at", "attempts",
        "result", "job_url",
    ]  # fmt: skip
    assert job["started_at"] is None and job["result"] is None


def test_an_uploaded_image_answers_as_before(client: FlaskClient, key: Key) -> None:
    resp = client.post(
        "/face/liveness_image",
        data={"image": (io.BytesIO(png_bytes(small_coffee())), "i.png")},
        headers=key.headers,
        content_type="multipart/form-data",
    )
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert list(body) == ["request_id", "status", "image_id", "expires_at"]
    assert body["expires_at"].endswith("+00:00")  # isoformat, as before the models
    assert reshaped(schemas.ImageUploaded, resp.get_data()) == body


def test_usage_answers_as_before(
    app: Flask, client: FlaskClient, make_key: Callable[..., Key], sessions: Any
) -> None:
    limited = make_key(quota=5, quota_period="day")
    unlimited = make_key(quota_period="total")
    assert client.post("/v1/jobs", data=_form("0"), headers=limited.headers).status_code == 202
    for who in (limited, unlimited):
        mine = client.get("/v1/usage?days=3", headers=who.headers)
        admin = client.get(f"/admin/usage?api_id={who.api_id}&days=3", headers=ADMIN)
        with transaction(sessions) as s:
            row = s.get(ApiKey, who.api_id)
            assert row is not None
            before = key_usage(s, row, 3)
        assert mine.get_data() == wire(app, before)
        assert admin.get_data() == wire(app, {"keys": [before]})
    assert mine.get_json()["limit"] is None and mine.get_json()["period_start"] is None
    every = client.get("/admin/usage", headers=ADMIN)
    assert reshaped(schemas.UsageList, every.get_data()) == every.get_json()


def test_webhook_deliveries_answer_as_before(
    app: Flask, client: FlaskClient, make_key: Callable[..., Key], sessions: Any
) -> None:
    hooked = make_key(webhook_url="http://127.0.0.1:9/antihack")
    accepted = client.post("/v1/jobs", data=_form("0"), headers=hooked.headers)
    job_id = accepted.get_json()["request_id"]
    with transaction(sessions) as s:
        owned = claim(s, job_id, timedelta(seconds=60), 3)
        assert owned is not None
        assert finish(s, owned, {"request_id": job_id, "status": "OK", "score": 0.5})
    with transaction(sessions) as s:
        delivery = s.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)).one()
        delivery.next_attempt_at = utcnow() + timedelta(hours=1)  # no dispatcher sends it
        s.add(
            WebhookAttempt(
                delivery_id=delivery.id,
                attempted_at=utcnow(),
                url=delivery.url,
                status_code=None,
                latency_ms=12,
                error="connection refused",
            )
        )
        delivery_id = delivery.id

    def views(with_attempts: bool) -> dict[str, Any]:
        with transaction(sessions) as s:
            row = s.get(WebhookDelivery, delivery_id)
            assert row is not None
            return delivery_view(row, with_attempts=with_attempts)

    page = client.get("/v1/webhooks/deliveries", headers=hooked.headers)
    assert page.get_data() == wire(app, {"deliveries": [views(False)], "next_before": None})
    full = wire(app, {"deliveries": [views(False)], "next_before": delivery_id})
    assert client.get("/v1/webhooks/deliveries?limit=1", headers=hooked.headers).data == full
    admin_page = client.get(f"/admin/webhooks/deliveries?api_id={hooked.api_id}", headers=ADMIN)
    assert admin_page.get_data() == page.get_data()
    one = client.get(f"/v1/webhooks/deliveries/{delivery_id}", headers=hooked.headers)
    assert one.get_data() == wire(app, views(True))
    assert one.get_json()["attempt_log"][0]["status_code"] is None
    assert client.get(f"/admin/webhooks/deliveries/{delivery_id}", headers=ADMIN).data == one.data


def test_the_webhook_payload_is_the_model(client: FlaskClient, key: Key, sessions: Any) -> None:
    """The worker builds ``liveness.completed``; the document's LivenessCompleted describes it."""
    from antihack.worker.webhook_tasks import event_body

    accepted = client.post("/v1/jobs", data=_form("0"), headers=key.headers)
    job_id = accepted.get_json()["request_id"]
    with transaction(sessions) as s:
        owned = claim(s, job_id, timedelta(seconds=60), 3)
        assert owned is not None
        assert finish(s, owned, error_body(job_id, "INTERNAL_ERROR", "boom"))
    with transaction(sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None
        payload = event_body(job)
    again = reshaped(schemas.LivenessCompleted, payload)
    assert json.dumps(again, separators=(",", ":")).encode() == payload


def test_the_probes_answer_their_models(client: FlaskClient) -> None:
    health = client.get("/healthz")
    assert reshaped(schemas.Health, health.get_data()) == health.get_json()
    ready = client.get("/readyz")  # its checks in the order they ran (api/ops.py)
    assert reshaped(schemas.Readiness, ready.get_data()) == ready.get_json()


def test_the_submission_model_names_the_form_fields_the_api_reads() -> None:
    """The multipart form is read by api/submission.py (the seed's checks); the model documents
    it: both name the same fields."""
    tree = ast.parse((ROOT / "api" / "submission.py").read_text())
    read: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func, args = node.func, node.args
        if isinstance(func, ast.Name) and func.id == "_flag" and len(args) == 2:
            name = args[1]  # _flag(form, "...")
        elif (  # form.get("...") or files.get("...")
            isinstance(func, ast.Attribute)
            and func.attr == "get"
            and isinstance(func.value, ast.Name)
            and func.value.id in ("form", "files")
            and args
        ):
            name = args[0]
        else:
            continue
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            read.add(name.value)
    assert read == set(schemas.Submission.model_fields)


@pytest.mark.parametrize(
    ("model", "body"),
    [
        # A result without its score, an unknown status, a job id that is no request id.
        (schemas.JOB_RESULT, {"request_id": "TID" + "0" * 32, "status": "OK"}),
        (schemas.JOB_RESULT, {"request_id": "TID" + "0" * 32, "status": "NOPE", "reason": "x"}),
        (schemas.Accepted, {"request_id": "job-1", "status": "QUEUED", "job_url": "http://x/"}),
        (schemas.WebhookDelivery, {"id": "msg_1", "status": "sent"}),
    ],
)
def test_a_body_that_is_not_its_model_is_refused(model: Any, body: dict[str, Any]) -> None:
    """The models check what they shape: a body the document does not describe is a bug found."""
    with pytest.raises(ValidationError):
        model.validate_python(body) if model is schemas.JOB_RESULT else model.model_validate(body)


@pytest.mark.parametrize(
    ("days", "code"),
    [
        ("31", 200),
        ("031", 200),
        ("366", 200),
        ("٣", 200),  # another script's decimal digit: int() takes it, as before the model
        ("0", 400),
        ("367", 400),
        ("", 400),
        ("x", 400),
        ("+3", 400),
        (" 3", 400),
        ("3.0", 400),
        ("²", 400),  # a digit that is no decimal: was a 500 (int() refused what isdigit took)
        ("9" * 40, 400),
    ],
)
def test_the_usage_query_is_checked_after_the_key(
    client: FlaskClient, key: Key, days: str, code: int
) -> None:
    for path, headers in (("/v1/usage", key.headers), ("/admin/usage", ADMIN)):
        resp = client.get(path, query_string={"days": days}, headers=headers)
        assert resp.status_code == code, (path, resp.get_json())
        if code == 400:
            assert resp.get_json()["status"] == "INVALID_ARGUMENT"
            assert resp.get_json()["reason"] == "days must be an integer from 1 to 366"
        # Authentication first: without credentials it is 401, whatever the query.
        assert client.get(path, query_string={"days": days}).status_code == 401


@pytest.mark.parametrize("limit", ["²", "x", "0", "201"])
def test_a_bad_page_size_is_the_seed_error(client: FlaskClient, key: Key, limit: str) -> None:
    resp = client.get("/v1/webhooks/deliveries", query_string={"limit": limit}, headers=key.headers)
    assert resp.status_code == 400
    assert resp.get_json()["reason"] == "limit must be an integer from 1 to 200"


def test_the_query_parameters_are_documented_from_their_checks(doc: dict[str, Any]) -> None:
    days = doc["components"]["parameters"]["Days"]
    assert days["schema"] == {"default": 31, "maximum": 366, "minimum": 1, "type": "integer"}
    assert days["schema"]["maximum"] == schemas.MAX_DAYS and days["required"] is False
    limit = doc["components"]["parameters"]["Limit"]["schema"]
    assert (limit["default"], limit["maximum"]) == (50, 200)
