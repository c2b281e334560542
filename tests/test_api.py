"""API contract: every status this service can answer without running a job, in the seed's body."""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from flask.testing import FlaskClient

from antihack.shared.infra.db import transaction
from antihack.shared.infra.tables import Job, JobInput
from tests.conftest import Key, create_test_app
from tests.helpers import job_count, no_face_capture, png_bytes, small_coffee

SEED = "/face/liveness_anti_hack"


def post(
    client: FlaskClient, key: Key | None, data: dict[str, Any], path: str = SEED, **headers: str
) -> Any:
    hdrs = {**(key.headers if key else {}), **headers}
    return client.post(path, data=data, headers=hdrs, content_type="multipart/form-data")


def upload(payload: bytes, name: str = "capture.pb") -> tuple[io.BytesIO, str]:
    return (io.BytesIO(payload), name)


def assert_error(resp: Any, code: int, status: str, reason_part: str = "") -> None:
    assert resp.status_code == code, resp.get_data(as_text=True)
    body = resp.get_json()
    assert set(body) == {"status", "reason", "request_id"}
    assert body["status"] == status
    assert body["request_id"].startswith("TID") and len(body["request_id"]) == 35
    assert reason_part.lower() in body["reason"].lower()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, "UNAUTHORIZED"),
        ({"X-DF-API-ID": "ak_nope", "X-DF-API-SECRET": "x"}, "UNAUTHORIZED"),
    ],
)
def test_missing_or_wrong_credentials_are_401(
    client: FlaskClient, headers: dict[str, str], status: str
) -> None:
    resp = client.post(SEED, data={}, headers=headers, content_type="multipart/form-data")
    assert_error(resp, 401, status)


def test_wrong_secret_is_401(client: FlaskClient, key: Key) -> None:
    resp = client.post(SEED, headers={"X-DF-API-ID": key.api_id, "X-DF-API-SECRET": "wrong"})
    assert_error(resp, 401, "UNAUTHORIZED")


def test_expired_key_is_401_key_expired(client: FlaskClient, make_key: Any) -> None:
    k = make_key(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert_error(post(client, k, {}), 401, "KEY_EXPIRED")


def test_endpoint_not_permitted_is_403(client: FlaskClient, make_key: Any) -> None:
    k = make_key(permissions="jobs")
    assert_error(post(client, k, {}), 403, "NO_PERMISSION")


def test_revoked_key_is_401(client: FlaskClient, key: Key) -> None:
    resp = client.delete(
        f"/admin/keys/{key.api_id}", headers={"Authorization": "Bearer test-admin-token"}
    )
    assert resp.status_code == 200 and resp.get_json()["revoked"] is True
    assert_error(post(client, key, {}), 401, "UNAUTHORIZED")


def test_unknown_path_is_json_404(client: FlaskClient) -> None:
    assert_error(client.get("/no/such/path"), 404, "NOT_FOUND")


def test_wrong_method_is_json(client: FlaskClient) -> None:
    resp = client.get(SEED)
    assert resp.status_code == 405 and resp.get_json()["status"] == "NOT_FOUND"


def test_non_multipart_is_400(client: FlaskClient, key: Key) -> None:
    resp = client.post(SEED, data=b'{"x": 1}', headers=key.headers, content_type="application/json")
    assert_error(resp, 400, "INVALID_ARGUMENT", "multipart")


def test_missing_data_is_400_with_seed_reason(client: FlaskClient, key: Key) -> None:
    assert_error(
        post(client, key, {"return_extra": "1"}), 400, "INVALID_ARGUMENT", "liveness_data_file"
    )


def test_two_sources_are_400(client: FlaskClient, key: Key) -> None:
    data = {"liveness_data_file": upload(no_face_capture()), "image_id": "IMGx"}
    assert_error(post(client, key, data), 400, "INVALID_ARGUMENT", "exactly one")


@pytest.mark.parametrize("value", ["2", "yes", "-1", "true"])
def test_bad_return_flags_are_400(client: FlaskClient, key: Key, value: str) -> None:
    data = {"liveness_data_file": upload(no_face_capture()), "return_image": value}
    assert_error(post(client, key, data), 400, "INVALID_ARGUMENT", "return_image")


@pytest.mark.parametrize(
    "payload", [b"", b"garbage that is not a capture", b"\x0a\xff\xff\xff\xff\x0f", b"\x00" * 100]
)
def test_empty_or_garbage_capture_is_400_and_no_job(
    client: FlaskClient, key: Key, sessions: Any, payload: bytes
) -> None:
    assert_error(
        post(client, key, {"liveness_data_file": upload(payload)}), 400, "INVALID_ARGUMENT"
    )
    assert job_count(sessions, key.api_id) == 0


def test_oversized_body_is_413(base_settings: Any, key: Key) -> None:
    app = create_test_app(base_settings.replace(max_upload_bytes=50_000))
    resp = post(app.test_client(), key, {"liveness_data_file": upload(b"x" * 200_000)})
    assert_error(resp, 413, "INVALID_ARGUMENT")


def test_unknown_image_id_is_400(client: FlaskClient, key: Key) -> None:
    assert_error(post(client, key, {"image_id": "IMG0000"}), 400, "INVALID_ARGUMENT", "image_id")


def test_image_id_belongs_to_its_key(client: FlaskClient, make_key: Any) -> None:
    a, b = make_key(), make_key()
    resp = post(
        client,
        a,
        {"image": upload(png_bytes(small_coffee()), "i.png")},
        path="/face/liveness_image",
    )
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["status"] == "OK" and body["image_id"].startswith("IMG")
    assert_error(
        post(client, b, {"image_id": body["image_id"]}), 400, "INVALID_ARGUMENT", "image_id"
    )
    ok = post(client, a, {"image_id": body["image_id"]}, path="/v1/jobs")
    assert ok.status_code == 202


def test_image_upload_rejects_non_image(client: FlaskClient, key: Key) -> None:
    resp = post(
        client, key, {"image": upload(b"not an image", "i.png")}, path="/face/liveness_image"
    )
    assert_error(resp, 400, "INVALID_ARGUMENT")


def test_v1_jobs_accepts_with_location_and_owner_only(
    client: FlaskClient, make_key: Any, sessions: Any
) -> None:
    a, b = make_key(), make_key()
    resp = post(client, a, {"liveness_data_file": upload(no_face_capture())}, path="/v1/jobs")
    assert resp.status_code == 202
    body = resp.get_json()
    assert body["status"] == "QUEUED"
    assert resp.headers["Location"].endswith(f"/v1/jobs/{body['request_id']}")
    with transaction(sessions) as s:
        job = s.get(Job, body["request_id"])
        assert job is not None and job.status == "QUEUED"
        assert s.get(JobInput, job.id) is not None
    mine = client.get(f"/v1/jobs/{body['request_id']}", headers=a.headers)
    assert mine.status_code == 200 and mine.get_json()["request_id"] == body["request_id"]
    assert_error(client.get(f"/v1/jobs/{body['request_id']}", headers=b.headers), 404, "NOT_FOUND")


def test_prefer_respond_async_answers_202(client: FlaskClient, key: Key) -> None:
    resp = post(
        client, key, {"liveness_data_file": upload(no_face_capture())}, Prefer="respond-async"
    )
    assert resp.status_code == 202 and resp.headers["Location"]
    assert resp.headers["Preference-Applied"] == "respond-async"


def test_delete_job_removes_it_for_the_owner_only(
    client: FlaskClient, make_key: Any, sessions: Any
) -> None:
    a, b = make_key(), make_key()
    resp = post(client, a, {"liveness_data_file": upload(no_face_capture())}, path="/v1/jobs")
    rid = resp.get_json()["request_id"]
    assert_error(client.delete(f"/v1/jobs/{rid}", headers=b.headers), 404, "NOT_FOUND")
    assert client.delete(f"/v1/jobs/{rid}", headers=a.headers).status_code == 200
    with transaction(sessions) as s:
        assert s.get(JobInput, rid) is None and s.get(Job, rid) is None


@pytest.fixture
def file_server() -> Iterator[str]:
    """A loopback HTTP server: /capture.pb serves a capture, /big 2 MB, anything else 404."""
    capture = no_face_capture()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = {"/capture.pb": capture, "/big": b"x" * 2_000_000}.get(self.path)
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            # The API hangs up as soon as the declared length is over its cap.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_liveness_data_url_downloads(client: FlaskClient, key: Key, file_server: str) -> None:
    resp = post(client, key, {"liveness_data_url": file_server + "/capture.pb"}, path="/v1/jobs")
    assert resp.status_code == 202, resp.get_json()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("/missing", "404"),
        ("ftp://example.org/x", "http"),
        ("http://", "host"),
    ],
)
def test_liveness_data_url_failures(
    client: FlaskClient, key: Key, file_server: str, url: str, reason: str
) -> None:
    full = file_server + url if url.startswith("/") else url
    assert_error(post(client, key, {"liveness_data_url": full}), 400, "DOWNLOAD_ERROR", reason)


def test_liveness_data_url_size_cap(base_settings: Any, key: Key, file_server: str) -> None:
    app = create_test_app(base_settings.replace(max_upload_bytes=1_000_000))
    resp = post(app.test_client(), key, {"liveness_data_url": file_server + "/big"})
    assert_error(resp, 400, "DOWNLOAD_ERROR", "larger")


def test_private_addresses_refused_by_default(
    base_settings: Any, key: Key, file_server: str
) -> None:
    app = create_test_app(base_settings.replace(allow_private_urls=False))
    resp = post(app.test_client(), key, {"liveness_data_url": file_server + "/capture.pb"})
    assert_error(resp, 400, "DOWNLOAD_ERROR", "private")


def test_admin_keys_need_the_token(client: FlaskClient) -> None:
    assert_error(client.get("/admin/keys"), 401, "UNAUTHORIZED")
    assert_error(
        client.get("/admin/keys", headers={"Authorization": "Bearer nope"}), 401, "UNAUTHORIZED"
    )


def test_admin_key_lifecycle(client: FlaskClient) -> None:
    admin = {"Authorization": "Bearer test-admin-token"}
    created = client.post(
        "/admin/keys", json={"name": "partner", "quota": 10, "quota_period": "day"}, headers=admin
    )
    assert created.status_code == 201
    body = created.get_json()
    assert body["webhook_secret"].startswith("whsec_") and body["api_secret"] and body["sdk_secret"]
    shown = client.get(f"/admin/keys/{body['api_id']}", headers=admin).get_json()
    assert "api_secret" not in shown and shown["quota"] == 10
    updated = client.patch(
        f"/admin/keys/{body['api_id']}", json={"rate": 5, "burst": 10}, headers=admin
    )
    assert updated.get_json()["rate"] == 5.0
    bad = client.patch(
        f"/admin/keys/{body['api_id']}", json={"quota_period": "week"}, headers=admin
    )
    assert_error(bad, 400, "INVALID_ARGUMENT", "quota period")
    rotated = client.post(f"/admin/keys/{body['api_id']}/rotate", headers=admin).get_json()
    assert rotated["api_secret"] != body["api_secret"]
    old = {"X-DF-API-ID": body["api_id"], "X-DF-API-SECRET": body["api_secret"]}
    assert client.get("/v1/jobs/TIDx", headers=old).status_code == 401
    assert_error(client.get("/admin/keys/ak_missing", headers=admin), 404, "NOT_FOUND")
