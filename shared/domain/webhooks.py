"""Webhook deliveries (Standard Webhooks 1.0): rows, signatures, claims and state transitions.

A delivery row is written in the transaction that finishes its job, so no crash can lose the
event. Sending is claimed with a conditional UPDATE (two dispatchers never send the same
attempt), retries wait in ``next_attempt_at`` rather than in the broker, and every attempt is
recorded. The HTTP exchange itself is the worker's (``worker/webhook_tasks.py``).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from sqlalchemy import Connection, and_, or_, select, update
from sqlalchemy.orm import Session

from antihack.shared.domain.errors import ApiError
from antihack.shared.domain.signatures import sign
from antihack.shared.infra.db import driver_rows, on_psycopg, rowcount
from antihack.shared.infra.queues import WEBHOOK_SEND_TASK, WEBHOOKS_QUEUE
from antihack.shared.infra.secrets import decrypt
from antihack.shared.infra.settings import Settings
from antihack.shared.infra.tables import (
    DELIVERED,
    DELIVERY_FAILED,
    DELIVERY_STATES,
    DISABLED,
    FINAL_STATES,
    PENDING,
    ApiKey,
    Job,
    WebhookAttempt,
    WebhookDelivery,
    iso,
    utcnow,
)

log = logging.getLogger(__name__)

EVENT_COMPLETED = "liveness.completed"
TARGET_CALLBACK, TARGET_KEY = "callback", "key"
SENDING = "sending:"
MAX_PAGE = 200
# A 429/503's Retry-After is honoured up to the schedule's longest wait, and at least this.
MAX_RETRY_AFTER_S = 3600.0

# --- signatures --------------------------------------------------------------------------------


def signature_header(signing_secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature per secret, space-separated (the current secret and, during a rotation's
    overlap, the previous one)."""
    return " ".join(sign(s, msg_id, timestamp, body) for s in signing_secrets)


def active_secrets(key: ApiKey, secret_key: str, overlap: timedelta, now: datetime) -> list[str]:
    """The key's current webhook secret, then the previous one while the overlap lasts."""
    found = [decrypt(secret_key, key.webhook_secret_enc)]
    rotated = key.webhook_secret_rotated_at
    if key.webhook_secret_prev_enc and rotated is not None and now < rotated + overlap:
        found.append(decrypt(secret_key, key.webhook_secret_prev_enc))
    return found


# --- creating deliveries -----------------------------------------------------------------------


def new_delivery_id() -> str:
    return "msg_" + secrets.token_hex(16)


class KeyState(Protocol):
    """What a key's webhook state is read from: an :class:`ApiKey`, or a :class:`Completion`."""

    @property
    def revoked_at(self) -> datetime | None: ...

    @property
    def webhook_disabled_at(self) -> datetime | None: ...


def _stop_reason(key: KeyState, target: str) -> str | None:
    """Why nothing may be sent for this key now, or None."""
    if key.revoked_at is not None:
        return "the API key is revoked"
    if target == TARGET_KEY and key.webhook_disabled_at is not None:
        return (
            "the key's webhook endpoint is disabled since it answered 410 Gone "
            f"({key.webhook_disabled_at.isoformat()}); setting webhook_url again re-enables it"
        )
    return None


def _endpoint(callback_url: str | None, webhook_url: str | None) -> tuple[str, str] | None:
    if callback_url:
        return callback_url, TARGET_CALLBACK
    if webhook_url:
        return webhook_url, TARGET_KEY
    return None


def _delivery_values(
    job_id: str, api_key_id: str, url: str, target: str, now: datetime
) -> dict[str, Any]:
    """A new ``liveness.completed`` delivery's row, due now."""
    return {
        "id": new_delivery_id(),
        "api_key_id": api_key_id,
        "job_id": job_id,
        "event_type": EVENT_COMPLETED,
        "target": target,
        "url": url,
        "status": PENDING,
        "attempts": 0,
        "step": 0,
        "next_attempt_at": now,
        "created_at": now,
        "last_error": None,
    }


@dataclass(frozen=True)
class Completion:
    """What deciding a finished job's delivery needs: the job's and its key's webhook fields
    (``jobs.finish_jobs`` reads them in the ``UPDATE … RETURNING`` that finishes it)."""

    job_id: str
    api_key_id: str
    callback_url: str | None
    webhook_url: str | None
    revoked_at: datetime | None
    webhook_disabled_at: datetime | None


def completion_row(done: Completion, now: datetime) -> dict[str, Any] | None:
    """The ``liveness.completed`` delivery row of a job that has just finished, or None when it
    has no endpoint (pure: no database; the caller writes it in the job's transaction).

    The endpoint is the job's callback_url, else the key's webhook_url. A delivery for a
    disabled endpoint is still recorded (as ``disabled``) so that the partner can see what it
    missed and ask for a redelivery.
    """
    endpoint = _endpoint(done.callback_url, done.webhook_url)
    if endpoint is None:
        return None
    row = _delivery_values(done.job_id, done.api_key_id, *endpoint, now)
    reason = _stop_reason(done, row["target"])
    if reason is not None:
        row.update(status=DISABLED, next_attempt_at=None, last_error=reason)
    return row


# --- claiming and publishing -------------------------------------------------------------------


class Publisher(Protocol):
    def send_task(self, name: str, args: Any = None, **options: Any) -> Any: ...


def claim_lease(settings: Settings) -> timedelta:
    """How long a claim holds a delivery: longer than the send task's hard time limit
    (``webhook_timeout_s`` + 20 s), so an attempt in flight is never claimed a second time."""
    return timedelta(seconds=settings.webhook_timeout_s + 60)


def claim_due(
    session: Session,
    lease: timedelta,
    *,
    job_id: str | None = None,
    delivery_id: str | None = None,
    limit: int = 500,
    now: datetime | None = None,
) -> list[tuple[str, str]]:
    """Claim deliveries due by ``now`` (not committed): ``[(delivery_id, claim_token)]``.

    Each claim is a conditional UPDATE that also pushes ``next_attempt_at`` to the end of the
    lease, so a concurrent dispatcher's UPDATE matches nothing; a claim whose sender died
    lapses and is taken again.
    """
    now = now or utcnow()
    due = and_(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now)
    query = select(WebhookDelivery.id).where(due)
    if job_id is not None:
        query = query.where(WebhookDelivery.job_id == job_id)
    if delivery_id is not None:
        query = query.where(WebhookDelivery.id == delivery_id)
    claims: list[tuple[str, str]] = []
    for found in list(
        session.scalars(query.order_by(WebhookDelivery.next_attempt_at).limit(limit))
    ):
        token = secrets.token_hex(16)
        claimed = session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == found, due)
            .values(claim_token=token, next_attempt_at=now + lease)
        )
        if rowcount(claimed):
            claims.append((found, token))
    return claims


def claim_delivery(
    connection: Connection, delivery_id: str, lease: timedelta, now: datetime | None = None
) -> str | None:
    """:func:`claim_due` for one delivery known by its id (the worker's, for the result it has
    just recorded): its claim token, or None when it is not due (someone claimed it first).
    One statement, so it may run in autocommit (on PostgreSQL on the driver: no SELECT, no
    session), where it commits alone."""
    now = now or utcnow()
    token = secrets.token_hex(16)
    if on_psycopg(connection):
        naive = now.astimezone(UTC).replace(tzinfo=None)  # as the UTCDateTime columns store it
        claimed = driver_rows(
            connection,
            _PG_CLAIM_DELIVERY,
            {
                "id": delivery_id,
                "token": token,
                "until": naive + lease,
                "now": naive,
                "pending": PENDING,
            },
        )
        return token if claimed else None
    taken = connection.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == PENDING,
            WebhookDelivery.next_attempt_at <= now,
        )
        .values(claim_token=token, next_attempt_at=now + lease)
    )
    return token if rowcount(taken) else None


_PG_CLAIM_DELIVERY = """
UPDATE webhook_deliveries SET claim_token = %(token)s, next_attempt_at = %(until)s
WHERE id = %(id)s AND status = %(pending)s AND next_attempt_at <= %(now)s
RETURNING id
"""


def release_claim(session: Session, delivery_id: str, token: str) -> None:
    """Make a claimed delivery due again at once (its send could not be published)."""
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.claim_token == token)
        .values(claim_token=None, next_attempt_at=utcnow())
    )


def publish(publisher: Publisher, claims: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Publish a send task per claim; returns the claims that could not be published."""
    failed: list[tuple[str, str]] = []
    for delivery_id, token in claims:
        try:
            publisher.send_task(WEBHOOK_SEND_TASK, args=(delivery_id, token), queue=WEBHOOKS_QUEUE)
        except Exception:
            log.warning("could not publish a webhook send", extra={"delivery_id": delivery_id})
            failed.append((delivery_id, token))
    return failed


# --- one attempt -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """Everything one attempt needs, read in a short transaction before the POST."""

    delivery_id: str
    sending_token: str
    api_key_id: str
    target: str
    url: str
    step: int
    job: Job
    signing_secrets: list[str]


def start_attempt(
    session: Session, settings: Settings, delivery_id: str, token: str
) -> Prepared | str:
    """Take the claim for sending (not committed). Returns what to send, or why not:
    ``"skipped"`` (a duplicate or stale message: someone else owns this attempt) or
    ``"disabled"`` (the endpoint or the key may no longer receive)."""
    now = utcnow()
    sending = SENDING + token
    taken = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.claim_token == token,
            WebhookDelivery.status == PENDING,
        )
        .values(claim_token=sending, next_attempt_at=now + claim_lease(settings))
    )
    if not rowcount(taken):
        return "skipped"
    delivery = session.get(WebhookDelivery, delivery_id)
    assert delivery is not None
    key = session.get(ApiKey, delivery.api_key_id)
    job = session.get(Job, delivery.job_id)
    assert key is not None and job is not None
    _ = job.result  # loaded now: the body is built after this session closes
    reason = _stop_reason(key, delivery.target)
    if delivery.target == TARGET_KEY and reason is None:
        if not key.webhook_url:
            reason = "the key no longer has a webhook_url"
        else:
            delivery.url = key.webhook_url  # the key's endpoint now, if it changed since
    if reason is not None:
        delivery.status, delivery.next_attempt_at = DISABLED, None
        delivery.claim_token, delivery.last_error = None, reason
        return "disabled"
    overlap = timedelta(seconds=settings.webhook_secret_overlap_s)
    return Prepared(
        delivery_id=delivery.id,
        sending_token=sending,
        api_key_id=key.id,
        target=delivery.target,
        url=delivery.url,
        step=delivery.step,
        job=job,
        signing_secrets=active_secrets(key, settings.secret_key, overlap, now),
    )


@dataclass(frozen=True)
class Outcome:
    """What one POST got: a status code (None when there was no HTTP answer) or an error."""

    attempted_at: datetime
    latency_ms: int
    status_code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A ``Retry-After`` header (delay-seconds or an HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


def finish_attempt(
    session: Session, prepared: Prepared, outcome: Outcome, schedule: tuple[float, ...]
) -> str:
    """Record the attempt and move the delivery on (not committed); returns its new status.

    2xx: delivered. 410 Gone: disabled (and the key's endpoint with it, when that is where it
    went). Anything else: the next step of the schedule, no sooner than a 429/503's
    Retry-After; ``failed`` once the schedule is spent.
    """
    now = utcnow()
    attempt = WebhookAttempt(
        delivery_id=prepared.delivery_id,
        attempted_at=outcome.attempted_at,
        url=prepared.url,
        status_code=outcome.status_code,
        latency_ms=outcome.latency_ms,
        error=outcome.error[:500] if outcome.error else None,
    )
    code = outcome.status_code
    values: dict[str, Any] = {
        "attempts": WebhookDelivery.attempts + 1,
        "claim_token": None,
        "last_status_code": code,
        "last_error": outcome.error[:500] if outcome.error else None,
    }
    if code is not None and 200 <= code < 300:
        values.update(status=DELIVERED, delivered_at=now, next_attempt_at=None)
    elif code == 410:
        values.update(status=DISABLED, next_attempt_at=None)
        if prepared.target == TARGET_KEY:
            # Only the URL that answered 410: an admin may have set a new one meanwhile.
            session.execute(
                update(ApiKey)
                .where(
                    ApiKey.id == prepared.api_key_id,
                    ApiKey.webhook_url == prepared.url,
                    ApiKey.webhook_disabled_at.is_(None),
                )
                .values(webhook_disabled_at=now)
            )
    else:
        step = prepared.step + 1
        if step >= len(schedule):
            values.update(status=DELIVERY_FAILED, next_attempt_at=None, step=step)
        else:
            delay = schedule[step]
            if code in (429, 503) and outcome.retry_after_s is not None:
                cap = max(*schedule, MAX_RETRY_AFTER_S)  # a receiver cannot park it forever
                delay = max(delay, min(outcome.retry_after_s, cap))
            values.update(next_attempt_at=now + timedelta(seconds=delay), step=step)
    moved = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == prepared.delivery_id,
            WebhookDelivery.claim_token == prepared.sending_token,
        )
        .values(**values)
    )
    if not rowcount(moved):
        if session.get(WebhookDelivery, prepared.delivery_id) is None:
            # Its job was deleted (DELETE /v1/jobs, retention) while the POST was in flight:
            # nothing is left to record the attempt against.
            return "deleted"
        # The claim lapsed (this attempt outlived its lease): the attempt is on record, the
        # delivery belongs to whoever claimed it since.
        session.add(attempt)
        return "lapsed"
    session.add(attempt)
    return str(values.get("status", PENDING))


# --- reading and redelivering (the API) -------------------------------------------------------


def owned_delivery(session: Session, key: ApiKey, delivery_id: str) -> WebhookDelivery:
    """The delivery if it belongs to this key; 404 otherwise (never reveal other keys')."""
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.api_key_id != key.id:
        raise ApiError("NOT_FOUND", f"no webhook delivery {delivery_id[:64]!r} for this API key")
    return delivery


def list_deliveries(
    session: Session,
    *,
    api_key_id: str | None,
    status: str | None,
    limit: int,
    before: str | None,
) -> list[WebhookDelivery]:
    """Newest first; ``before`` is the id of the last delivery of the previous page."""
    if status is not None and status not in DELIVERY_STATES:
        raise ApiError("INVALID_ARGUMENT", f"status must be one of {', '.join(DELIVERY_STATES)}")
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError("INVALID_ARGUMENT", f"limit must be an integer from 1 to {MAX_PAGE}")
    query = select(WebhookDelivery)
    if api_key_id is not None:
        query = query.where(WebhookDelivery.api_key_id == api_key_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if before:
        cursor = session.get(WebhookDelivery, before)
        if cursor is None or (api_key_id is not None and cursor.api_key_id != api_key_id):
            raise ApiError("INVALID_ARGUMENT", f"unknown delivery id in before: {before[:64]!r}")
        query = query.where(
            or_(
                WebhookDelivery.created_at < cursor.created_at,
                and_(
                    WebhookDelivery.created_at == cursor.created_at,
                    WebhookDelivery.id < cursor.id,
                ),
            )
        )
    query = query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
    return list(session.scalars(query.limit(limit)))


def redeliver(session: Session, key: ApiKey, delivery_id: str) -> WebhookDelivery:
    """Send a delivery again, same ``webhook-id``, the schedule started afresh (not committed).

    A delivery whose attempt is already claimed or in flight is left as it is.
    """
    delivery = owned_delivery(session, key, delivery_id)
    if delivery.status == PENDING and delivery.claim_token is not None:
        return delivery
    if delivery.target == TARGET_KEY:
        if not key.webhook_url:
            raise ApiError("INVALID_ARGUMENT", "this API key has no webhook_url")
        delivery.url = key.webhook_url
    reason = _stop_reason(key, delivery.target)
    if reason is not None:
        raise ApiError("INVALID_ARGUMENT", f"cannot redeliver: {reason}")
    delivery.status, delivery.step, delivery.claim_token = PENDING, 0, None
    delivery.next_attempt_at = utcnow()
    return delivery


def redeliver_job(session: Session, key: ApiKey, job: Job) -> WebhookDelivery:
    """A new delivery of a finished job's result (not committed)."""
    if job.status not in FINAL_STATES:
        raise ApiError("INVALID_ARGUMENT", f"job {job.id} has not finished yet")
    endpoint = _endpoint(job.callback_url, key.webhook_url)
    if endpoint is None:
        raise ApiError(
            "INVALID_ARGUMENT", "the job has no callback_url and this API key no webhook_url"
        )
    delivery = WebhookDelivery(**_delivery_values(job.id, key.id, *endpoint, utcnow()))
    reason = _stop_reason(key, delivery.target)
    if reason is not None:
        raise ApiError("INVALID_ARGUMENT", f"cannot redeliver: {reason}")
    session.add(delivery)
    return delivery


def delivery_view(delivery: WebhookDelivery, *, with_attempts: bool = False) -> dict[str, Any]:
    """A delivery as the API shows it; its ``id`` is the ``webhook-id`` header of every attempt."""
    view: dict[str, Any] = {
        "id": delivery.id,
        "event_type": delivery.event_type,
        "request_id": delivery.job_id,
        "api_id": delivery.api_key_id,
        "url": delivery.url,
        "target": delivery.target,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": iso(delivery.next_attempt_at) if delivery.status == PENDING else None,
        "created_at": iso(delivery.created_at),
        "delivered_at": iso(delivery.delivered_at),
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
    }
    if with_attempts:
        view["attempt_log"] = [
            {
                "attempted_at": iso(a.attempted_at),
                "url": a.url,
                "status_code": a.status_code,
                "latency_ms": a.latency_ms,
                "error": a.error,
            }
            for a in delivery.attempt_log
        ]
    return view
