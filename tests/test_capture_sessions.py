"""Capture sessions (issue #9): creation, every misuse of a nonce scored as a hack by the real
worker, exactly one winner among concurrent submissions of one nonce, upload tokens and CORS
for the browser SDK, and the key option, CLI and client that go with them."""

from __future__ import annotations

import functools
import io
import json
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from antihack.shared.cli import main
from antihack.shared.cli.sample import for_capture_session
from antihack.shared.domain.capture import CaptureLimits, parse_capture, verify_signature
from antihack.shared.domain.capture_sessions import CAPTURE_SESSION_CHECKS
from antihack.shared.domain.keys import revoke_key
from antihack.shared.infra.db import transaction
from antihack.shared.infra.queues import PURGE_TASK
from antihack.shared.infra.settings import (
    CHALLENGE_AXES,
    DEFAULT_SESSION_CHALLENGES,
    Settings,
    SettingsError,
)
from antihack.shared.infra.tables import CaptureSession, Job
from antihack.shared.sdk.client import Client, ClientError
from antihack.shared.sdk.sample import build_capture
from antihack.worker.celery_app import make_celery
from antihack.worker.pipeline.fusion import CERTAIN, FusionInput, fuse
from antihack.worker.pipeline.integrity import session_signals
from tests import devstack
from tests.blink import blink_frames
from tests.conftest import Key, create_test_app
from tests.fixtures_images import astronaut
from tests.helpers import no_face_capture, png_bytes, quota_used

CAPTURE_SESSION_CODES = frozenset(CAPTURE_SESSION_CHECKS)
TID = "TID" + "0" * 32


# --- captures ---------------------------------------------------------------------------------


def faceless(nonce: str = "", challenges: tuple[str, ...] = (), frames: int = 2) -> bytes:
    """A real photo without a face: the worker answers quickly, score 0.9 and no reason,
    unless a certain signal (a failed capture session check) makes it a hack."""
    return for_capture_session(no_face_capture(frames), challenges=challenges, nonce=nonce)


def blinking(nonce: str, steps: list[str | None] | None = None) -> bytes:
    """A real face blinking (tests/blink.py), claiming BLINK; every frame tagged BLINK unless
    ``steps`` tags them otherwise. Clean: BLINK is observed in its tagged frames."""
    data = build_capture(blink_frames(15), session_id=None)
    return for_capture_session(data, challenges=("BLINK",), steps=steps, nonce=nonce)


# --- processes and helpers --------------------------------------------------------------------

# The server's capture sessions ask for BLINK only: the one challenge a test can perform with a
# real face (tests/blink.py), so a correct capture for a capture session is clean end to end.
BLINK_ONLY = {"session_challenges": "BLINK", "session_challenge_length": 1}


@pytest.fixture(scope="module")
def stack_settings(base_settings: Settings) -> Settings:
    return base_settings.replace(**BLINK_ONLY)


@pytest.fixture(scope="module")
def api_url(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real API (gunicorn, 2 processes x 16 threads) for the whole module."""
    log = tmp_path_factory.mktemp("capture-sessions-api") / "api.log"
    proc, base = devstack.start_api(stack_settings, log)
    yield base
    proc.stop()


@pytest.fixture(scope="module")
def worker(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One real worker for the module: every job of these tests runs through the pipeline."""
    log = tmp_path_factory.mktemp("capture-sessions-worker") / "worker.log"
    proc = devstack.start_worker(stack_settings, log, concurrency=1)
    yield
    proc.stop()


@pytest.fixture
def api(stack_settings: Settings) -> FlaskClient:
    """The same app in process, for requests that need no real server."""
    app: Flask = create_test_app(stack_settings)
    return app.test_client()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_capture_session(base: str, key: Key) -> dict[str, Any]:
    resp = requests.post(f"{base}/v1/sessions", headers=key.headers, timeout=10)
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def submit(
    base: str, headers: dict[str, str], capture: bytes, path: str = "/v1/jobs", **extra: str
) -> requests.Response:
    return requests.post(
        base + path,
        files={"liveness_data_file": ("c.pb", capture)},
        headers={**headers, **extra},
        timeout=60,
    )


def accepted(resp: requests.Response) -> str:
    assert resp.status_code == 202, resp.text
    rid: str = resp.json()["request_id"]
    return rid


def finished(base: str, headers: dict[str, str], ids: list[str]) -> dict[str, dict[str, Any]]:
    """Wait for every job to end; their resources by id."""

    def read(rid: str) -> dict[str, Any] | None:
        resp = requests.get(f"{base}/v1/jobs/{rid}", headers=headers, timeout=10)
        assert resp.status_code == 200, resp.text
        job: dict[str, Any] = resp.json()
        return job if job["status"] in ("SUCCEEDED", "FAILED") else None

    out: dict[str, dict[str, Any]] = {}
    for rid in ids:
        out[rid] = devstack.wait_until(functools.partial(read, rid), 180, f"job {rid}")
    return out


def expire(sessions: Any, session_id: str, ago: timedelta = timedelta(seconds=1)) -> None:
    """Move a capture session's expiry into the past (what waiting for its TTL would do)."""
    with transaction(sessions) as s:
        s.execute(
            update(CaptureSession)
            .where(CaptureSession.id == session_id)
            .values(expires_at=datetime.now(UTC) - ago)
        )


def session_check_of(sessions: Any, job_id: str) -> str | None:
    with transaction(sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job.session_check


# --- creating capture sessions ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("pool", "length"),
    [
        (DEFAULT_SESSION_CHALLENGES, 3),
        ("BLINK,MOUTH,NOD,YAW", 2),
        ("NOD,YAW", 2),
        ("MOUTH,YAW,BLINK", 1),
    ],
)
def test_a_capture_session_has_distinct_random_challenges_from_the_pool(
    base_settings: Settings, make_key: Callable[..., Key], pool: str, length: int
) -> None:
    settings = base_settings.replace(
        session_challenges=pool, session_challenge_length=length, session_ttl_s=120
    )
    client = create_test_app(settings).test_client()
    key = make_key()
    seen = set()
    for _ in range(24):
        before = datetime.now(UTC)
        resp = client.post("/v1/sessions", headers=key.headers)
        after = datetime.now(UTC)
        assert resp.status_code == 201, resp.get_json()
        body = resp.get_json()
        assert set(body) == {
            "request_id", "status", "session_id", "nonce", "challenge", "expires_at",
            "upload_token",
        }  # fmt: skip
        assert body["status"] == "OK" and body["request_id"].startswith("TID")
        assert body["session_id"].startswith("ses_")
        # URL-safe and at least 128 random bits (22 base64 characters).
        assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", body["nonce"]), body["nonce"]
        challenge = body["challenge"]
        assert len(challenge) == length and len(set(challenge)) == length
        assert set(challenge) <= set(pool.split(","))
        axes = [CHALLENGE_AXES[c] for c in challenge]
        assert all(a != b for a, b in zip(axes, axes[1:], strict=False)), challenge
        expires = datetime.fromisoformat(body["expires_at"])
        assert before + timedelta(seconds=120) <= expires <= after + timedelta(seconds=120)
        seen.add(tuple(challenge))
    # Drawn at random: 24 capture sessions (12, 2 or 3 possible sequences) do not all repeat one.
    assert len(seen) > 1


def test_capture_session_settings_are_checked_at_start() -> None:
    ok = Settings.from_env(
        {"ANTIHACK_SESSION_CHALLENGES": "yaw, blink", "ANTIHACK_SESSION_CHALLENGE_LENGTH": "2"}
    )
    assert ok.session_challenge_pool == ("YAW", "BLINK")
    assert Settings().session_challenge_length == 3
    assert "TURN_LEFT" in Settings().session_challenge_pool
    with pytest.raises(SettingsError, match="WINK"):
        Settings().replace(session_challenges="BLINK,WINK")
    with pytest.raises(SettingsError, match="axis"):
        Settings().replace(session_challenges="TURN_LEFT,TURN_RIGHT", session_challenge_length=2)
    with pytest.raises(SettingsError, match="CHALLENGE_LENGTH"):
        Settings().replace(session_challenges="BLINK,YAW", session_challenge_length=3)
    with pytest.raises(SettingsError, match="twice"):
        Settings().replace(session_challenges="BLINK,BLINK", session_challenge_length=1)
    with pytest.raises(SettingsError, match="TTL"):
        Settings.from_env({"ANTIHACK_SESSION_TTL_S": "0"})


def test_creating_and_reading_capture_sessions_is_for_permitted_keys_only(
    client: FlaskClient, make_key: Callable[..., Key], sessions: Any
) -> None:
    key, other = make_key(quota=1), make_key()
    assert client.post("/v1/sessions").get_json()["status"] == "UNAUTHORIZED"
    wrong = {**key.headers, "X-DF-API-SECRET": "nope"}
    assert client.post("/v1/sessions", headers=wrong).status_code == 401
    jobs_only = make_key(permissions="jobs")
    refused = client.post("/v1/sessions", headers=jobs_only.headers)
    assert refused.status_code == 403 and refused.get_json()["status"] == "NO_PERMISSION"
    for body in (b"[1]", b"not json", b'{"challenge": ["BLINK"]}'):
        bad = client.post(
            "/v1/sessions", data=body, headers=key.headers, content_type="application/json"
        )
        assert bad.status_code == 400, body
        assert set(bad.get_json()) == {"status", "reason", "request_id"}
    assert client.post("/v1/sessions", json={}, headers=key.headers).status_code == 201

    made = [client.post("/v1/sessions", headers=key.headers).get_json() for _ in range(3)]
    # Capture sessions are free; their captures are not.
    assert quota_used(sessions, key.api_id) == 0
    sid = made[0]["session_id"]
    shown = client.get(f"/v1/sessions/{sid}", headers=key.headers).get_json()
    assert shown["state"] == "PENDING" and shown["job_id"] is None
    assert shown["challenge"] == made[0]["challenge"]
    assert shown["expires_at"] == made[0]["expires_at"]
    assert "nonce" not in shown and "upload_token" not in shown
    for path in (f"/v1/sessions/{sid}", "/v1/sessions/ses_" + "0" * 32):
        hidden = client.get(path, headers=other.headers)
        assert hidden.status_code == 404 and hidden.get_json()["status"] == "NOT_FOUND"
    expire(sessions, sid)
    assert client.get(f"/v1/sessions/{sid}", headers=key.headers).get_json()["state"] == "EXPIRED"
    with transaction(sessions) as s:
        stored = s.scalars(select(CaptureSession).where(CaptureSession.id == sid)).one()
        assert made[0]["upload_token"] not in json.dumps(
            {c.name: str(getattr(stored, c.name)) for c in CaptureSession.__table__.columns}
        )  # only a keyed hash of the token is stored


def test_creating_capture_sessions_passes_the_rate_limit(
    client: FlaskClient, make_key: Callable[..., Key]
) -> None:
    key = make_key(rate=0.01, burst=1)
    assert client.post("/v1/sessions", headers=key.headers).status_code == 201
    over = client.post("/v1/sessions", headers=key.headers)
    assert over.status_code == 403 and over.get_json()["status"] == "RATE_LIMIT_EXCEEDED"
    assert over.headers["Retry-After"]


# --- misuse, scored by the real worker --------------------------------------------------------


def test_every_misuse_of_a_capture_session_is_a_certain_hack(
    api_url: str,
    worker: None,
    make_key: Callable[..., Key],
    stack_settings: Settings,
    sessions: Any,
) -> None:
    key, other, strict = make_key(), make_key(), make_key(require_session=True)
    honest = make_key()  # the clean face capture, under a key with no history to replay
    ordered = make_key()  # the same face with mis-tagged steps: again no shared history

    good = new_capture_session(api_url, honest)
    assert good["challenge"] == ["BLINK"]
    clean = accepted(submit(api_url, honest.headers, blinking(good["nonce"])))

    wrong_order = new_capture_session(api_url, ordered)
    steps: list[str | None] = [*["BLINK"] * 12, *["NOD"] * 3]  # a step never asked for
    out_of_order = accepted(submit(api_url, ordered.headers, blinking(wrong_order["nonce"], steps)))

    used = new_capture_session(api_url, key)
    first = accepted(submit(api_url, key.headers, faceless(used["nonce"], ("BLINK",), 3)))
    late = new_capture_session(api_url, key)
    expire(sessions, late["session_id"])
    foreign = new_capture_session(api_url, other)
    asked = new_capture_session(api_url, key)
    cases = {
        "session_reused": (key, faceless(used["nonce"])),
        "session_expired": (key, faceless(late["nonce"])),
        "session_unknown": (key, faceless(foreign["nonce"])),
        "session_challenge_mismatch": (key, faceless(asked["nonce"], ())),
        "session_required": (strict, faceless()),
    }
    ids = {code: accepted(submit(api_url, k.headers, c)) for code, (k, c) in cases.items()}
    made_up = accepted(submit(api_url, key.headers, faceless("n" * 32)))

    jobs = finished(api_url, key.headers, [first, made_up, ids["session_reused"]])
    jobs |= finished(api_url, honest.headers, [clean])
    jobs |= finished(api_url, ordered.headers, [out_of_order])
    jobs |= finished(api_url, strict.headers, [ids["session_required"]])
    jobs |= finished(api_url, key.headers, [ids[c] for c in cases if c != "session_required"])

    ok = jobs[clean]
    assert ok["status"] == "SUCCEEDED" and ok["result"]["score"] < 0.98, ok
    assert not CAPTURE_SESSION_CODES & set(ok["reasons"]), ok["reasons"]
    assert CAPTURE_SESSION_CODES.isdisjoint(jobs[first]["reasons"])  # the nonce's first use is fine
    for code, rid in [*ids.items(), ("session_unknown", made_up)]:
        result = jobs[rid]
        assert result["status"] == "SUCCEEDED", result
        # Without the capture session check these faceless captures score 0.9 with no reason.
        assert result["reasons"] == [code], (code, result["reasons"])
        assert result["result"]["score"] >= 0.99, (code, result["result"])
    hacked = jobs[out_of_order]
    assert hacked["reasons"] == ["session_step_order"], hacked["reasons"]
    assert hacked["result"]["score"] >= 0.99

    # The backend sees which job used each capture session.
    shown = requests.get(
        f"{api_url}/v1/sessions/{used['session_id']}", headers=key.headers, timeout=10
    ).json()
    assert shown["state"] == "USED" and shown["job_id"] == first


@pytest.mark.parametrize(
    ("challenge", "claimed", "steps", "code"),
    [
        (["BLINK", "YAW"], ["BLINK", "YAW"], ["BLINK", "BLINK", "YAW", "YAW"], None),
        # untagged frames are ignored, runs of one step collapse
        (["BLINK", "YAW"], ["BLINK", "YAW"], [None, "BLINK", None, "BLINK", "YAW", None], None),
        (["BLINK", "YAW"], ["YAW", "BLINK"], ["YAW", "YAW", "BLINK", "BLINK"], "mismatch"),
        (["BLINK", "YAW"], ["BLINK"], ["BLINK", "BLINK", "BLINK", "BLINK"], "mismatch"),
        (["BLINK", "YAW"], ["BLINK", "YAW"], ["YAW", "YAW", "BLINK", "BLINK"], "order"),
        (["BLINK", "YAW"], ["BLINK", "YAW"], ["BLINK", "YAW", "BLINK", "YAW"], "order"),
        (["BLINK", "YAW"], ["BLINK", "YAW"], ["BLINK", "BLINK", "BLINK", "BLINK"], "order"),
        (["BLINK", "YAW"], ["BLINK", "YAW"], [None, None, None, None], "order"),
    ],
)
def test_the_capture_must_claim_and_tag_the_capture_sessions_steps_in_order(
    base_settings: Settings,
    make_key: Callable[..., Key],
    sessions: Any,
    challenge: list[str],
    claimed: list[str],
    steps: list[str | None],
    code: str | None,
) -> None:
    """The check made at submission, for sequences a real face cannot act out here (the worker
    turns the recorded code into the reason and score, as the test above shows)."""
    client = create_test_app(base_settings).test_client()
    key = make_key()
    made = client.post("/v1/sessions", headers=key.headers).get_json()
    with transaction(sessions) as s:  # this capture session's challenge, whatever was drawn
        s.execute(
            update(CaptureSession)
            .where(CaptureSession.id == made["session_id"])
            .values(challenge=challenge)
        )
    capture = for_capture_session(
        no_face_capture(len(steps)), challenges=tuple(claimed), steps=steps, nonce=made["nonce"]
    )
    resp = client.post(
        "/v1/jobs",
        data={"liveness_data_file": (io.BytesIO(capture), "c.pb")},
        headers=key.headers,
        content_type="multipart/form-data",
    )
    assert resp.status_code == 202, resp.get_json()
    expected = {None: None, "mismatch": "session_challenge_mismatch", "order": "session_step_order"}
    assert session_check_of(sessions, resp.get_json()["request_id"]) == expected[code]
    # Right or wrong, the nonce is spent.
    shown = client.get(f"/v1/sessions/{made['session_id']}", headers=key.headers).get_json()
    assert shown["state"] == "USED" and shown["job_id"] == resp.get_json()["request_id"]


@pytest.mark.parametrize("code", sorted(CAPTURE_SESSION_CODES))
def test_a_failed_capture_session_check_is_certain_whatever_the_models_say(code: str) -> None:
    """Fusion: even a capture the models find perfectly live scores as a hack."""
    signals = session_signals(code)
    assert [(s.code, s.severity) for s in signals] == [(code, CERTAIN)]
    live = FusionInput(has_face=True, live_proba=1.0, mask_proba=0.0, quality_score=1.0)
    assert fuse([], live) < 0.98
    assert fuse(signals, live) >= 0.99
    assert session_signals(None) == []


def test_concurrent_submissions_of_one_nonce_have_exactly_one_winner(
    api_url: str, worker: None, make_key: Callable[..., Key]
) -> None:
    key = make_key()
    made = new_capture_session(api_url, key)
    captures = [faceless(made["nonce"], ("BLINK",), 3) for _ in range(8)]  # distinct captures
    start = threading.Barrier(len(captures))
    answers: list[requests.Response] = []
    lock = threading.Lock()

    def send(capture: bytes) -> None:
        start.wait()
        resp = submit(api_url, key.headers, capture)
        with lock:
            answers.append(resp)

    threads = [threading.Thread(target=send, args=(c,)) for c in captures]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [accepted(resp) for resp in answers]  # every submission is accepted as a job...
    jobs = finished(api_url, key.headers, ids)
    session_reasons = [sorted(CAPTURE_SESSION_CODES & set(job["reasons"])) for job in jobs.values()]
    # ...and exactly one of them redeemed the nonce.
    assert sorted(session_reasons) == [[]] + [["session_reused"]] * 7, session_reasons
    winner = next(rid for rid, job in jobs.items() if "session_reused" not in job["reasons"])
    shown = requests.get(
        f"{api_url}/v1/sessions/{made['session_id']}", headers=key.headers, timeout=10
    ).json()
    assert shown["job_id"] == winner


def test_an_idempotent_retry_is_the_same_job_not_a_reuse(
    api_url: str, worker: None, make_key: Callable[..., Key], sessions: Any
) -> None:
    key = make_key(quota=10)
    made = new_capture_session(api_url, key)
    capture = faceless(made["nonce"], ("BLINK",), 3)
    retry = {"Idempotency-Key": "order-9"}
    first = accepted(submit(api_url, key.headers, capture, **retry))
    again = accepted(submit(api_url, key.headers, capture, **retry))
    assert again == first
    job = finished(api_url, key.headers, [first])[first]
    assert CAPTURE_SESSION_CODES.isdisjoint(job["reasons"]), job["reasons"]
    assert quota_used(sessions, key.api_id) == 1


# --- upload tokens ----------------------------------------------------------------------------


def test_an_upload_token_submits_its_capture_once_and_reads_only_that_job(
    api_url: str, worker: None, make_key: Callable[..., Key], sessions: Any
) -> None:
    key = make_key(quota=5)
    made = new_capture_session(api_url, key)
    token = bearer(made["upload_token"])

    # Another capture session's capture: refused, and nothing is spent.
    elsewhere = new_capture_session(api_url, key)
    refused = submit(api_url, token, faceless(elsewhere["nonce"], ("BLINK",), 3))
    assert refused.status_code == 403 and refused.json()["status"] == "NO_PERMISSION"
    assert "session_nonce" in refused.json()["reason"]
    assert submit(api_url, token, faceless("", ("BLINK",), 3)).status_code == 403

    resp = submit(api_url, token, faceless(made["nonce"], ("BLINK",), 3))
    rid = accepted(resp)
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert quota_used(sessions, key.api_id) == 1  # charged to the capture session's key

    again = submit(api_url, token, faceless(made["nonce"], ("BLINK",), 3))
    assert again.status_code == 401 and again.json()["status"] == "UNAUTHORIZED"
    assert "already used" in again.json()["reason"]
    assert again.headers["Access-Control-Allow-Origin"] == "*"  # a page can read why

    job = finished(api_url, token, [rid])[rid]  # polled with the token alone
    assert CAPTURE_SESSION_CODES.isdisjoint(job["reasons"])
    mine = accepted(submit(api_url, key.headers, faceless()))
    for path in (f"/v1/jobs/{mine}", f"/v1/jobs/{TID}"):
        hidden = requests.get(api_url + path, headers=token, timeout=10)
        assert hidden.status_code == 404 and hidden.json()["status"] == "NOT_FOUND"
    assert requests.get(f"{api_url}/v1/jobs/{mine}", headers=key.headers, timeout=10).ok
    for method, path in [
        ("DELETE", f"/v1/jobs/{rid}"),
        ("GET", "/v1/usage"),
        ("POST", "/v1/sessions"),
        ("GET", f"/v1/sessions/{made['session_id']}"),
    ]:
        other = requests.request(method, api_url + path, headers=token, timeout=10)
        assert other.status_code == 401, (method, path)

    # The sync endpoint takes tokens as well.
    sync = new_capture_session(api_url, key)
    seed = submit(
        api_url,
        bearer(sync["upload_token"]),
        faceless(sync["nonce"], ("BLINK",), 3),
        path="/face/liveness_anti_hack",
        Prefer="respond-async",
    )
    assert seed.status_code == 202, seed.text

    # Once the capture session expired, the token submits nothing and reads its job for 10 min.
    late = new_capture_session(api_url, key)
    expire(sessions, late["session_id"])
    gone = submit(api_url, bearer(late["upload_token"]), faceless(late["nonce"], ("BLINK",), 3))
    assert gone.status_code == 401 and "expired" in gone.json()["reason"]
    expire(sessions, made["session_id"], timedelta(minutes=5))
    assert requests.get(f"{api_url}/v1/jobs/{rid}", headers=token, timeout=10).ok
    expire(sessions, made["session_id"], timedelta(minutes=11))
    stale = requests.get(f"{api_url}/v1/jobs/{rid}", headers=token, timeout=10)
    assert stale.status_code == 401 and "expired" in stale.json()["reason"]
    bogus = requests.get(f"{api_url}/v1/jobs/{rid}", headers=bearer("ut_nope"), timeout=10)
    assert bogus.status_code == 401 and bogus.json()["status"] == "UNAUTHORIZED"


def test_an_upload_token_acts_within_its_keys_permissions(
    api: FlaskClient, make_key: Callable[..., Key]
) -> None:
    key = make_key(permissions="sessions,liveness_anti_hack")
    made = api.post("/v1/sessions", headers=key.headers).get_json()
    resp = api.post(
        "/v1/jobs",
        data={"liveness_data_file": (io.BytesIO(faceless(made["nonce"], ("BLINK",), 3)), "c.pb")},
        headers=bearer(made["upload_token"]),
        content_type="multipart/form-data",
    )
    assert resp.status_code == 403 and resp.get_json()["status"] == "NO_PERMISSION"


def test_cors_preflights_and_headers_on_the_token_endpoints(api: FlaskClient, key: Key) -> None:
    asked = {
        "Origin": "https://shop.example",
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key, prefer",
    }
    for path, method in [
        ("/v1/jobs", "POST"),
        ("/face/liveness_anti_hack", "POST"),
        (f"/v1/jobs/{TID}", "GET"),
    ]:
        pre = api.options(path, headers={**asked, "Access-Control-Request-Method": method})
        assert pre.status_code == 204, path
        assert pre.headers["Access-Control-Allow-Origin"] == "*"
        assert pre.headers["Access-Control-Allow-Methods"] == method
        allowed = {h.strip() for h in pre.headers["Access-Control-Allow-Headers"].split(",")}
        assert allowed == {"Authorization", "Content-Type", "Prefer", "Idempotency-Key"}
    answer = api.get(f"/v1/jobs/{TID}", headers={"Origin": "https://shop.example", **key.headers})
    assert answer.status_code == 404 and answer.headers["Access-Control-Allow-Origin"] == "*"
    exposed = {h.strip() for h in answer.headers["Access-Control-Expose-Headers"].split(",")}
    assert exposed == {"Location", "Retry-After", "RateLimit", "RateLimit-Policy"}
    # Endpoints a browser has no token for stay closed to other origins.
    for path in ("/v1/usage", "/v1/sessions", "/admin/keys"):
        assert "Access-Control-Allow-Origin" not in api.options(path).headers, path
    deleting = api.delete(f"/v1/jobs/{TID}", headers=key.headers)
    assert "Access-Control-Allow-Origin" not in deleting.headers


def test_an_upload_token_of_a_revoked_key_is_refused(
    api: FlaskClient, make_key: Callable[..., Key], sessions: Any
) -> None:
    key = make_key()
    made = api.post("/v1/sessions", headers=key.headers).get_json()
    with transaction(sessions) as s:
        revoke_key(s, key.api_id)
    resp = api.post(
        "/v1/jobs",
        data={"liveness_data_file": (io.BytesIO(faceless(made["nonce"], ("BLINK",), 3)), "c.pb")},
        headers=bearer(made["upload_token"]),
        content_type="multipart/form-data",
    )
    assert resp.status_code == 401 and "revoked" in resp.get_json()["reason"]


def test_purge_drops_capture_sessions_long_expired(
    base_settings: Settings, make_key: Callable[..., Key], sessions: Any, api: FlaskClient
) -> None:
    key = make_key()
    old, recent = (api.post("/v1/sessions", headers=key.headers).get_json() for _ in range(2))
    expire(sessions, old["session_id"], timedelta(days=base_settings.retention_days + 1))
    expire(sessions, recent["session_id"], timedelta(days=1))
    assert make_celery(base_settings).tasks[PURGE_TASK].apply().get()["capture_sessions"] >= 1
    assert api.get(f"/v1/sessions/{old['session_id']}", headers=key.headers).status_code == 404
    kept = api.get(f"/v1/sessions/{recent['session_id']}", headers=key.headers)
    assert kept.get_json()["state"] == "EXPIRED"


# --- the key option, the CLI and the Python client --------------------------------------------


def test_require_session_through_the_admin_api_and_the_cli(
    client: FlaskClient, base_settings: Settings
) -> None:
    admin = {"Authorization": f"Bearer {base_settings.admin_token}"}
    made = client.post("/admin/keys", json={"name": "strict"}, headers=admin).get_json()
    assert made["require_session"] is False
    path = f"/admin/keys/{made['api_id']}"
    on = client.patch(path, json={"require_session": True}, headers=admin)
    assert on.status_code == 200 and on.get_json()["require_session"] is True
    assert client.get(path, headers=admin).get_json()["require_session"] is True
    bad = client.patch(path, json={"require_session": "yes"}, headers=admin)
    assert bad.status_code == 400 and "require_session" in bad.get_json()["reason"]

    runner = CliRunner(env=base_settings.to_env())
    created = runner.invoke(
        main, ["keys", "create", "--name", "cli", "--require-session", "--json"]
    )
    assert created.exit_code == 0, created.output
    api_id = json.loads(created.output)["api_id"]
    assert json.loads(created.output)["require_session"] is True
    off = runner.invoke(main, ["keys", "update", api_id, "--no-require-session", "--json"])
    assert json.loads(off.output)["require_session"] is False
    shown = runner.invoke(main, ["keys", "show", api_id])
    assert "require_session" in shown.output


def test_make_sample_builds_a_signed_capture_for_a_capture_session(tmp_path: Path) -> None:
    image = tmp_path / "face.png"
    image.write_bytes(png_bytes(astronaut()))
    # Six pictures (one photo six times shows no blink: make-sample refuses it).
    frames = []
    for i, frame in enumerate(blink_frames(6)):
        frames.append(tmp_path / f"f{i}.png")
        frames[-1].write_bytes(png_bytes(frame))
    out = tmp_path / "session.pb"
    args = [*map(str, frames), "-o", str(out), "--challenge", "BLINK", "--challenge", "YAW"]
    args += ["--session-nonce", "n0nce-from-the-backend", "--sign-secret", "sdk-secret"]
    result = CliRunner().invoke(main, ["make-sample", *args])
    assert result.exit_code == 0, result.output
    capture = parse_capture(out.read_bytes(), CaptureLimits())
    assert capture.session_nonce == "n0nce-from-the-backend"
    assert [c for c in capture.challenges] == [1, 4]  # BLINK, YAW
    assert [f.challenge_step for f in capture.frames] == [1, 1, 1, 4, 4, 4]
    assert verify_signature(capture, b"sdk-secret")
    too_long = CliRunner().invoke(main, ["make-sample", str(image), "-o", str(out),
                                         "--session-nonce", "x" * 101])  # fmt: skip
    assert too_long.exit_code == 1 and "session_nonce" in too_long.output


def test_the_python_client_creates_and_reads_capture_sessions(
    api_url: str, make_key: Callable[..., Key]
) -> None:
    key = make_key()
    client = Client(api_url, key.api_id, key.api_secret)
    made = client.create_session()
    assert made["challenge"] == ["BLINK"] and made["upload_token"]
    assert client.session(made["session_id"])["state"] == "PENDING"
    with pytest.raises(ClientError) as err:
        Client(api_url, make_key().api_id, key.api_secret).create_session()
    assert (err.value.http_status, err.value.status) == (401, "UNAUTHORIZED")
