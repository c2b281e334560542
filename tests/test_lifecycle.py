"""Job lifecycle on the real database: idempotent transitions, leases, attempts, migrations."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from antihack.shared.domain.jobs import Submission, claim, create_job, due_for_publish, finish
from antihack.shared.infra.db import transaction
from antihack.shared.infra.migrate import check
from antihack.shared.infra.settings import Settings
from antihack.shared.infra.tables import ApiKey, Job, JobResult
from tests.conftest import Key
from tests.helpers import new_jobs, no_face_capture

LEASE = timedelta(seconds=60)


def expire_lease(sessions: Any, job_id: str) -> None:
    with transaction(sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.lease_expires_at = job.started_at - timedelta(seconds=1)  # type: ignore[operator,assignment]


def test_models_and_migrations_agree(base_settings: Settings) -> None:
    check(base_settings.effective_database_url)  # raises if autogenerate would change anything


def test_payloads_are_stored_without_a_compression_attempt(sessions: Any) -> None:
    """Migration 0010: JPEG data gains nothing from pglz, which ran over all of it per insert."""
    with transaction(sessions) as s:
        if s.get_bind().dialect.name != "postgresql":
            pytest.skip("storage modes are PostgreSQL's")
        modes = s.execute(
            text(
                "SELECT attrelid::regclass::text, attstorage FROM pg_attribute "
                "WHERE attname = 'payload' AND attrelid IN ('job_inputs'::regclass, "
                "'images'::regclass) ORDER BY 1"
            )
        ).all()
    assert [tuple(m) for m in modes] == [("images", "e"), ("job_inputs", "e")]


def test_a_job_is_claimed_once(sessions: Any, key: Key) -> None:
    [job_id] = new_jobs(sessions, key.api_id)
    with transaction(sessions) as s:
        first = claim(s, job_id, LEASE, max_attempts=3)
    with transaction(sessions) as s:
        second = claim(s, job_id, LEASE, max_attempts=3)
    assert first is not None and first.attempt == 1
    assert second is None  # a duplicate delivery never runs it again


def test_a_late_attempt_cannot_overwrite_the_result(sessions: Any, key: Key) -> None:
    [job_id] = new_jobs(sessions, key.api_id)
    with transaction(sessions) as s:
        old = claim(s, job_id, LEASE, 3)
    expire_lease(sessions, job_id)
    with transaction(sessions) as s:
        # Other tests' jobs share the database: stale ones of theirs may come too.
        assert job_id in due_for_publish(s, timedelta(seconds=30))
    with transaction(sessions) as s:
        new = claim(s, job_id, LEASE, 3)
    assert old is not None and new is not None and new.attempt == 2
    body = {"status": "OK", "request_id": job_id, "score": 0.1}
    with transaction(sessions) as s:
        assert finish(s, new, body)
    with transaction(sessions) as s:
        assert not finish(s, old, {**body, "score": 0.9})
    with transaction(sessions) as s:
        results = s.scalars(select(JobResult).where(JobResult.job_id == job_id)).all()
        assert [r.body["score"] for r in results] == [0.1]


def test_a_job_that_keeps_killing_its_worker_fails_after_max_attempts(
    sessions: Any, key: Key
) -> None:
    [job_id] = new_jobs(sessions, key.api_id)
    for attempt in (1, 2, 3):
        with transaction(sessions) as s:
            owned = claim(s, job_id, LEASE, max_attempts=3)
        assert owned is not None and owned.attempt == attempt
        expire_lease(sessions, job_id)  # the worker died: the lease runs out
        with transaction(sessions) as s:
            assert job_id in due_for_publish(s, timedelta(seconds=30))
    with transaction(sessions) as s:
        assert claim(s, job_id, LEASE, max_attempts=3) is None
    with transaction(sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.status == "FAILED" and job.attempts == 4
        assert job.result is not None and job.result.body["status"] == "INTERNAL_ERROR"
        n = s.scalar(select(func.count()).select_from(JobResult).where(JobResult.job_id == job_id))
        assert n == 1


def test_idempotency_key_returns_the_original_job(sessions: Any, key: Key) -> None:
    from antihack.shared.domain.errors import ApiError

    sub = Submission(payload=no_face_capture(session_id="s1"), source="file", idempotency_key="k1")
    with transaction(sessions) as s:
        api_key = s.get(ApiKey, key.api_id)
        first, created = create_job(s, api_key, sub)  # type: ignore[arg-type]
        assert created
    with transaction(sessions) as s:
        api_key = s.get(ApiKey, key.api_id)
        again, created = create_job(s, api_key, sub)  # type: ignore[arg-type]
        assert not created and again.id == first.id
    other = Submission(
        payload=no_face_capture(session_id="s2"), source="file", idempotency_key="k1"
    )
    with transaction(sessions) as s:
        api_key = s.get(ApiKey, key.api_id)
        with pytest.raises(ApiError) as err:
            create_job(s, api_key, other)  # type: ignore[arg-type]
    assert err.value.http_code == 422 and err.value.status == "INVALID_ARGUMENT"
