"""Job lifecycle: QUEUED → RUNNING → SUCCEEDED | FAILED, each step an idempotent transition."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.capture import CaptureLimits
from shared.db import rowcount
from shared.errors import ApiError
from shared.models import (
    FAILED,
    PENDING,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    ApiKey,
    Job,
    JobInput,
    JobResult,
    RefundCounter,
    WebhookDelivery,
    iso,
    utcnow,
)
from shared.quota import charge, refund
from shared.secrets import new_request_id
from shared.sessions import CaptureFacts, UploadGrant, redeem, spend_upload_token
from shared.settings import Settings
from shared.webhooks import record_completion

IDEMPOTENCY_WINDOW = timedelta(hours=24)
# An upload token's Idempotency-Key is stored under this prefix, its session id and a digest of
# the key: the API takes only printable keys, so none of the key's own can start with it.
TOKEN_IDEMPOTENCY_PREFIX = "\x1fupload:"


@dataclass(frozen=True)
class Submission:
    """A validated request, ready to become a job."""

    payload: bytes
    source: str  # file | url | image
    return_image: bool = False
    return_extra: bool = False
    callback_url: str | None = None
    idempotency_key: str | None = None
    # The capture's session nonce, challenges and tagged steps (read_submission fills them).
    capture: CaptureFacts = field(default_factory=CaptureFacts)

    @property
    def fingerprint(self) -> str:
        """What makes two submissions "the same payload" for Idempotency-Key."""
        h = hashlib.sha256(self.payload)
        h.update(f"|{self.return_image:d}{self.return_extra:d}|{self.callback_url or ''}".encode())
        return h.hexdigest()


def create_job(
    session: Session, key: ApiKey, sub: Submission, upload: UploadGrant | None = None
) -> tuple[Job, bool]:
    """Insert the job and its input and charge the quota (not committed); returns (job, created).

    With an Idempotency-Key this key used in the last 24 h, the original job is returned
    instead (not charged again, no session redeemed again), or 422 if the payload differs.
    A capture with a session nonce, or any capture of a key that requires sessions, redeems
    its session in the same transaction; ``upload`` (a request authenticated by an upload
    token) spends the token there too, so a refused submission spends neither. An upload
    token's Idempotency-Key names jobs of its own session only (:func:`idempotency_scope`).
    """
    now = utcnow()
    idem = idempotency_scope(sub.idempotency_key, upload)
    if idem:
        existing = _by_idempotency_key(session, key.id, idem)
        if existing is not None and existing.created_at > now - IDEMPOTENCY_WINDOW:
            return _same_or_conflict(existing, sub), False
        if existing is not None:
            existing.idempotency_key = None  # expired: the key may name a new job
            session.flush()
    job = Job(
        id=new_request_id(),
        api_key_id=key.id,
        status=QUEUED,
        source=sub.source,
        return_image=sub.return_image,
        return_extra=sub.return_extra,
        callback_url=sub.callback_url,
        idempotency_key=idem,
        payload_sha256=sub.fingerprint,
        created_at=now,
        enqueued_at=now,
        attempts=0,
    )
    job.input = JobInput(job_id=job.id, payload=sub.payload, size=len(sub.payload), created_at=now)
    if not idem:
        _insert(session, key, job, sub, upload, now)
        return job, True
    try:
        # The charge, the insert and the redemption share a savepoint: losing the race below
        # undoes all three (the winner's job redeemed the session).
        with session.begin_nested():
            _insert(session, key, job, sub, upload, now)
            session.flush()
    except IntegrityError:
        # A concurrent request with the same key won the unique index: answer with its job.
        existing = _by_idempotency_key(session, key.id, idem)
        if existing is None:
            raise
        return _same_or_conflict(existing, sub), False
    return job, True


def idempotency_scope(idempotency_key: str | None, upload: UploadGrant | None) -> str | None:
    """What a submission's Idempotency-Key is stored (and looked up) as.

    The key's own credentials use it as given. A browser's upload token gets a namespace of
    its session: otherwise it could learn which keys the backend used (422 or 202, without
    spending the token) and claim one first, so that the backend's own submission fails.
    """
    if not idempotency_key or upload is None:
        return idempotency_key
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return f"{TOKEN_IDEMPOTENCY_PREFIX}{upload.session_id}:{digest}"


def _insert(
    session: Session,
    key: ApiKey,
    job: Job,
    sub: Submission,
    upload: UploadGrant | None,
    now: datetime,
) -> None:
    """Charge the quota, add ``job``, then spend the upload token and redeem the session for it
    (after the job is inserted: both rows point at it)."""
    job.charged_period = charge(session, key, now)
    session.add(job)
    if upload is None and not (sub.capture.nonce or key.require_session):
        return
    session.flush()
    if upload is not None:
        spend_upload_token(session, upload, job.id, now)
    if sub.capture.nonce or key.require_session:
        job.session_check = redeem(session, key.id, job.id, sub.capture, now)


def _by_idempotency_key(session: Session, key_id: str, idem: str) -> Job | None:
    return session.scalars(
        select(Job).where(Job.api_key_id == key_id, Job.idempotency_key == idem)
    ).first()


def _same_or_conflict(job: Job, sub: Submission) -> Job:
    if job.payload_sha256 != sub.fingerprint:
        raise ApiError(
            "INVALID_ARGUMENT",
            "Idempotency-Key already used with a different payload",
            http_code=422,
        )
    return job


def get_owned_job(session: Session, key: ApiKey, job_id: str) -> Job:
    """The job if this key submitted it; 404 otherwise (never reveal other keys' jobs)."""
    job = session.get(Job, job_id)
    if job is None or job.api_key_id != key.id:
        raise ApiError("NOT_FOUND", f"no job {job_id!r} for this API key")
    return job


def job_resource(job: Job, job_url: str | None = None) -> dict[str, Any]:
    """The job as ``GET /v1/jobs/<id>`` shows it."""
    result = job.result
    resource: dict[str, Any] = {
        "request_id": job.id,
        "status": job.status,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "attempts": job.attempts,
        "result": result.body if result is not None else None,
    }
    if result is not None:
        resource["reasons"] = result.reasons
        resource["failed_steps"] = result.failed_steps or []
        resource["model_versions"] = result.model_versions
    if job_url:
        resource["job_url"] = job_url
    return resource


@dataclass(frozen=True)
class Claim:
    job_id: str
    attempt: int
    api_key_id: str


@dataclass(frozen=True)
class Finished:
    """A result recorded by the attempt that owned the job, with its webhook delivery if any."""

    delivery: WebhookDelivery | None

    @property
    def webhook_due(self) -> bool:
        """A delivery to send now (not one recorded as disabled)."""
        return self.delivery is not None and self.delivery.status == PENDING


def claim(
    session: Session,
    job_id: str,
    lease: timedelta,
    max_attempts: int,
    *,
    refund_limit: int | None = None,
) -> Claim | None:
    """Move a QUEUED job to RUNNING for this worker, or return None if it is not ours to run.

    A RUNNING job is never taken over here, even when redelivered: its lease may still belong to
    a live worker. The sweeper requeues it when the lease has passed. A job past
    ``max_attempts`` is failed here (``refund_limit``: see :func:`finish`).
    """
    now = utcnow()
    row = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == QUEUED)
        .values(
            status=RUNNING,
            attempts=Job.attempts + 1,
            started_at=now,
            lease_expires_at=now + lease,
        )
        .returning(Job.attempts, Job.api_key_id)
    ).first()
    session.commit()
    if row is None:
        return None
    attempt, key_id = int(row[0]), str(row[1])
    if attempt > max_attempts:
        finish(
            session,
            Claim(job_id, attempt, key_id),
            error_body(job_id, "INTERNAL_ERROR", f"the job failed {max_attempts} times"),
            reasons=["attempts_exhausted"],
            refund_limit=refund_limit,
        )
        session.commit()
        return None
    return Claim(job_id, attempt, key_id)


def error_body(job_id: str, status: str, reason: str) -> dict[str, Any]:
    return {"status": status, "reason": reason, "request_id": job_id}


def finish(
    session: Session,
    claim: Claim,
    body: dict[str, Any],
    *,
    reasons: list[str] | None = None,
    model_versions: dict[str, str] | None = None,
    stage_ms: dict[str, float] | None = None,
    refund_limit: int | None = None,
    failed_steps: list[dict[str, str]] | None = None,
) -> Finished | None:
    """Record the result if this attempt still owns the job; None if it lost it (not committed).

    An INTERNAL_ERROR is refunded (once: ``refund`` is conditional on the job row), unless the
    key had ``refund_limit`` refunds today already (None or negative: no limit).
    """
    now = utcnow()
    final = SUCCEEDED if body.get("status") == "OK" else FAILED
    updated = rowcount(
        session.execute(
            update(Job)
            .where(Job.id == claim.job_id, Job.status == RUNNING, Job.attempts == claim.attempt)
            .values(
                status=final,
                finished_at=now,
                lease_expires_at=None,
                result_status=str(body.get("status")),
            )
        )
    )
    if updated != 1:
        return None
    if body.get("status") == "INTERNAL_ERROR" and not _refund(session, claim, refund_limit, now):
        # Failing every attempt is what a capture built to time out or crash the worker does:
        # past the limit its sender pays for it, as for any other analysis.
        body = {
            **body,
            "reason": f"{body.get('reason')}; not refunded: this API key had {refund_limit} "
            "failed jobs refunded today (ANTIHACK_POISON_REFUND_LIMIT)",
        }
        reasons = [*(reasons or []), "refund_limit_reached"]
    session.add(
        JobResult(
            job_id=claim.job_id,
            body=body,
            reasons=reasons or [],
            model_versions=model_versions or {},
            stage_ms=stage_ms or {},
            failed_steps=failed_steps or [],
            created_at=now,
        )
    )
    # The webhook, in the same transaction.
    return Finished(record_completion(session, claim.job_id))


def _refund(session: Session, claim: Claim, limit: int | None, now: datetime) -> bool:
    """Refund the job's charge unless the key's refunds of today reached ``limit``; False when
    it stays charged. The day's counter is taken by ``UPDATE … WHERE refunded < limit``, so
    concurrent failures never pass the limit (as quota.charge)."""
    if limit is None or limit < 0:
        refund(session, claim.job_id)  # our fault: the client is not charged
        return True
    pending = session.scalar(
        select(Job.charged_period).where(Job.id == claim.job_id, Job.refunded_at.is_(None))
    )
    if pending is None:
        return True  # not charged (no quota), or refunded already: nothing to limit
    day = f"{now:%Y-%m-%d}"
    dialect = session.get_bind().dialect.name
    insert = (postgresql if dialect == "postgresql" else sqlite).insert(RefundCounter)
    session.execute(
        insert.values(api_key_id=claim.api_key_id, day=day, refunded=0).on_conflict_do_nothing(
            index_elements=["api_key_id", "day"]
        )
    )
    taken = session.execute(
        update(RefundCounter)
        .where(
            RefundCounter.api_key_id == claim.api_key_id,
            RefundCounter.day == day,
            RefundCounter.refunded < limit,
        )
        .values(refunded=RefundCounter.refunded + 1)
    )
    if rowcount(taken) != 1:
        return False
    refund(session, claim.job_id)
    return True


def release(session: Session, claim: Claim) -> bool:
    """Give a job back to the queue after a transient failure (not committed)."""
    released = session.execute(
        update(Job)
        .where(Job.id == claim.job_id, Job.status == RUNNING, Job.attempts == claim.attempt)
        .values(status=QUEUED, lease_expires_at=None, enqueued_at=utcnow())
    )
    return rowcount(released) == 1


def due_for_publish(
    session: Session,
    stale_after: timedelta,
    limit: int = 500,
    *,
    held: Callable[[], set[str] | None] | None = None,
) -> list[str]:
    """Jobs whose message may be lost: QUEUED too long, or RUNNING past their lease (not
    committed). Each is moved to QUEUED with a fresh ``enqueued_at`` and returned to publish.

    ``held`` reads the ids the broker still holds for the analyze queue (waiting, or taken by
    a worker and not acknowledged; None when the broker cannot tell). A QUEUED job found there
    is not republished: in a backlog the broker has every message, and republishing each job
    every ``stale_after`` multiplied the queue. Its ``enqueued_at`` is refreshed instead, so the
    broker is read at most once per ``stale_after`` for it. A job whose message is gone (a
    Redis restart, a publish that failed after the commit) is absent and republished. A
    RUNNING job past its lease is always republished: its message is held by a worker that may
    be dead, and is redelivered only after the visibility timeout.
    """
    now = utcnow()
    stale_queued = and_(Job.status == QUEUED, Job.enqueued_at < now - stale_after)
    lapsed = and_(Job.status == RUNNING, Job.lease_expires_at < now)
    candidates = session.execute(
        select(Job.id, Job.status)
        .where(or_(stale_queued, lapsed))
        .order_by(Job.created_at)
        .limit(limit)
    ).all()
    in_broker: set[str] = set()
    if held is not None and any(status == QUEUED for _, status in candidates):
        # Read after the candidates: a message published since is for a job not among them.
        in_broker = held() or set()
    held_now = [job_id for job_id, status in candidates if status == QUEUED and job_id in in_broker]
    if held_now:
        session.execute(
            update(Job).where(Job.id.in_(held_now), stale_queued).values(enqueued_at=now)
        )
    ids: list[str] = []
    for job_id, status in candidates:
        if status == QUEUED and job_id in in_broker:
            continue
        moved = rowcount(
            session.execute(
                update(Job)
                .where(Job.id == job_id, or_(stale_queued, lapsed))
                .values(status=QUEUED, enqueued_at=now, lease_expires_at=None)
            )
        )
        if moved:
            ids.append(job_id)
    return ids


def capture_limits(settings: Settings) -> CaptureLimits:
    """The capture bounds both the API (at submission) and the worker enforce."""
    return CaptureLimits(
        max_bytes=settings.max_upload_bytes,
        max_frames=settings.max_frames,
        max_pixels_per_frame=settings.max_frame_pixels,
    )
