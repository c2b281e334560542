"""Quota, rate limit, idempotency and usage on the real database and Redis."""

from __future__ import annotations

import dataclasses
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from flask import Flask
from sqlalchemy.orm import Session

from antihack.shared.cli import main
from antihack.shared.domain.errors import ApiError
from antihack.shared.domain.jobs import claim, error_body, finish
from antihack.shared.domain.keys import KeyOptions, create_key
from antihack.shared.domain.quota import charge, refund
from antihack.shared.domain.ratelimit import RateLimiter
from antihack.shared.infra.db import transaction
from antihack.shared.infra.settings import Settings
from antihack.shared.infra.tables import Job
from tests.devstack import free_port
from tests.helpers import job_count, new_jobs, no_face_capture, quota_used, submit

LEASE = timedelta(seconds=60)


def test_500_concurrent_submissions_against_a_quota_of_100(
    start_api: Any, make_key: Any, sessions: Any
) -> None:
    key = make_key(quota=100, quota_period="day")
    base = start_api()
    payload = no_face_capture()
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda _: submit(base, key, payload), range(500)))
    codes = [r.status_code for r in answers]
    assert codes.count(202) == 100 and codes.count(403) == 400
    assert {r.json()["status"] for r in answers if r.status_code == 403} == {"OUT_OF_QUOTA"}
    assert quota_used(sessions, key.api_id) == 100
    assert job_count(sessions, key.api_id) == 100


def test_periods_roll_over_at_utc_midnight(db: Session, base_settings: Settings) -> None:
    # charge() works in the caller's transaction: the rolled-back db session is enough.
    key, _ = create_key(
        db, base_settings.secret_key, KeyOptions(name="periods", quota=1, quota_period="day")
    )
    late = datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC)
    assert charge(db, key, late) == "day:2026-03-01"
    with pytest.raises(ApiError) as err:
        charge(db, key, late)
    assert err.value.status == "OUT_OF_QUOTA"
    assert charge(db, key, late + timedelta(seconds=1)) == "day:2026-03-02"


def test_refund_exactly_once_under_retry(make_key: Any, sessions: Any) -> None:
    key = make_key(quota=10, quota_period="total")
    [job_id] = new_jobs(sessions, key.api_id)
    assert quota_used(sessions, key.api_id) == 1
    with transaction(sessions) as s:
        first = claim(s, job_id, LEASE, 3)
    assert first is not None
    body = error_body(job_id, "INTERNAL_ERROR", "boom")
    with transaction(sessions) as s:
        assert finish(s, first, body)
    # The same attempt delivered again, and a direct second refund: neither gives back more.
    with transaction(sessions) as s:
        assert not finish(s, first, body)
    with transaction(sessions) as s:
        assert not refund(s, job_id)
    assert quota_used(sessions, key.api_id) == 0
    with transaction(sessions) as s:
        assert s.get(Job, job_id).refunded_at is not None  # type: ignore[union-attr]


def test_gcra_accepts_rate_and_burst_over_a_measured_interval(base_settings: Settings) -> None:
    client = redis.Redis.from_url(base_settings.redis_client_url)
    limiter = RateLimiter(client, fail_open=False)
    rate, burst = 10.0, 5  # low enough that a loaded machine still polls faster than 1/rate
    name = f"gcra-{time.monotonic_ns()}"
    accepted = 0
    start = time.monotonic()
    while time.monotonic() - start < 2.0:
        decision = limiter.check(name, rate, burst)
        assert decision is not None
        accepted += decision.allowed
        time.sleep(0.002)
    elapsed = time.monotonic() - start
    expected = burst + rate * elapsed
    assert abs(accepted - expected) <= 2, (accepted, expected)


def test_rate_limit_answers_403_with_headers(start_api: Any, make_key: Any) -> None:
    key = make_key(rate=0.5, burst=2)
    base = start_api()
    payload = no_face_capture()
    answers = [submit(base, key, payload) for _ in range(3)]
    assert [r.status_code for r in answers] == [202, 202, 403]
    for r in answers:
        assert r.headers["RateLimit-Policy"] == '"default";q=2;w=4'
        assert r.headers["RateLimit"].startswith('"default";r=')
    assert answers[0].headers["RateLimit"].startswith('"default";r=1;')
    refused = answers[2]
    assert refused.json()["status"] == "RATE_LIMIT_EXCEEDED"
    assert 1 <= int(refused.headers["Retry-After"]) <= 2


@pytest.mark.parametrize(("fail_open", "code"), [(True, 202), (False, 403)])
def test_redis_unreachable_fails_open_or_closed(
    app: Flask, make_key: Any, fail_open: bool, code: int
) -> None:
    # A real client aimed at a port where nothing listens: every call fails to connect.
    dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    svc = app.extensions["antihack"]
    app.extensions["antihack"] = dataclasses.replace(svc, limiter=RateLimiter(dead, fail_open))
    key = make_key(rate=100, burst=10)
    resp = app.test_client().post(
        "/v1/jobs",
        data={"liveness_data_file": (io.BytesIO(no_face_capture()), "c.pb")},
        headers=key.headers,
        content_type="multipart/form-data",
    )
    assert resp.status_code == code, resp.get_json()
    if not fail_open:
        assert resp.get_json()["status"] == "RATE_LIMIT_EXCEEDED"


def test_idempotency_replay_conflict_and_concurrent_duplicates(
    start_api: Any, make_key: Any, sessions: Any
) -> None:
    key = make_key(quota=50, quota_period="total")
    base = start_api()
    payload = no_face_capture()
    first = submit(base, key, payload, headers={"Idempotency-Key": "order-1"})
    again = submit(base, key, payload, headers={"Idempotency-Key": "order-1"})
    assert first.status_code == again.status_code == 202
    assert first.json()["request_id"] == again.json()["request_id"]
    assert quota_used(sessions, key.api_id) == 1  # the replay was not charged
    conflict = submit(base, key, no_face_capture(), headers={"Idempotency-Key": "order-1"})
    assert conflict.status_code == 422 and conflict.json()["status"] == "INVALID_ARGUMENT"

    with ThreadPoolExecutor(16) as pool:
        order_2 = {"Idempotency-Key": "order-2"}
        dupes = list(pool.map(lambda _: submit(base, key, payload, headers=order_2), range(16)))
    assert {r.status_code for r in dupes} == {202}
    assert len({r.json()["request_id"] for r in dupes}) == 1
    assert job_count(sessions, key.api_id) == 2 and quota_used(sessions, key.api_id) == 2


def test_usage_numbers_equal_what_was_submitted(
    client: Any, make_key: Any, sessions: Any, base_settings: Settings
) -> None:
    key = make_key(quota=10, quota_period="month")
    ids = new_jobs(sessions, key.api_id, 3)
    outcomes: list[dict[str, Any]] = [
        {"status": "OK", "score": 0.1},
        {"status": "DETETION_FAILED", "reason": "x"},
        {"status": "INTERNAL_ERROR", "reason": "x"},
    ]
    for job_id, body in zip(ids, outcomes, strict=True):
        with transaction(sessions) as s:
            owned = claim(s, job_id, LEASE, 3)
            assert owned is not None
        with transaction(sessions) as s:
            assert finish(s, owned, {**body, "request_id": job_id})

    mine = client.get("/v1/usage", headers=key.headers).get_json()
    today = datetime.now(UTC).date().isoformat()
    assert mine["used"] == 2 and mine["limit"] == 10 and mine["remaining"] == 8
    assert mine["days"] == [
        {"date": today, "accepted": 3, "succeeded": 1, "failed": 2, "refunded": 1}
    ]
    admin = client.get(
        f"/admin/usage?api_id={key.api_id}", headers={"Authorization": "Bearer test-admin-token"}
    ).get_json()
    assert admin["keys"] == [mine]
    cli = CliRunner(env=base_settings.to_env()).invoke(
        main, ["usage", "--api-id", key.api_id, "--json"], catch_exceptions=False
    )
    assert json.loads(cli.output) == [mine]
    table = CliRunner(env=base_settings.to_env()).invoke(main, ["usage", "--api-id", key.api_id])
    assert "used 2 of 10" in table.output
    bad = client.get("/v1/usage?days=0", headers=key.headers)
    assert bad.status_code == 400
