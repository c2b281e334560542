"""Webhook tasks: the dispatcher (beat, every ANTIHACK_WEBHOOK_DISPATCH_INTERVAL_S) claims due
deliveries and publishes one send per claim; a send makes one signed POST and records it."""

from __future__ import annotations

import json
import logging
import time

from celery import shared_task
from sqlalchemy.orm import Session, sessionmaker

from antihack.shared.domain import webhooks
from antihack.shared.domain.jobs import job_resource
from antihack.shared.infra.db import transaction
from antihack.shared.infra.queues import WEBHOOK_DISPATCH_TASK, WEBHOOK_SEND_TASK
from antihack.shared.infra.settings import Settings
from antihack.shared.infra.tables import Job, utcnow
from antihack.shared.infra.urlguard import UrlRefused, post
from antihack.worker.celery_app import AntihackTask

log = logging.getLogger(__name__)

# A receiver's answer is only for the attempt log: read no more than this of it.
MAX_RESPONSE_BYTES = 4096


def event_body(job: Job) -> bytes:
    """The ``liveness.completed`` payload. A finished job does not change, so every attempt
    (and every redelivery) of it carries the same bytes."""
    event = {
        "type": webhooks.EVENT_COMPLETED,
        "timestamp": (job.finished_at or utcnow()).isoformat(),
        "data": job_resource(job),
    }
    return json.dumps(event, separators=(",", ":")).encode()


def claim_and_publish(
    sessions: sessionmaker[Session],
    settings: Settings,
    publisher: webhooks.Publisher,
) -> int:
    """Claim the due deliveries, commit, then publish a send for each; a claim that cannot be
    published is released for the next run (the dispatcher's work)."""
    with transaction(sessions) as session:
        claims = webhooks.claim_due(session, webhooks.claim_lease(settings))
    failed = webhooks.publish(publisher, claims)
    if failed:
        with transaction(sessions) as session:
            for delivery_id, token in failed:
                webhooks.release_claim(session, delivery_id, token)
    return len(claims) - len(failed)


def attempt(
    sessions: sessionmaker[Session], settings: Settings, delivery_id: str, token: str
) -> str:
    """Make the attempt that claim ``token`` stands for, at most once; returns the delivery's
    status afterwards, or ``skipped`` for a duplicate or stale message."""
    with transaction(sessions) as session:
        prepared = webhooks.start_attempt(session, settings, delivery_id, token)
    if isinstance(prepared, str):
        return prepared
    body = event_body(prepared.job)
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "webhook-id": prepared.delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": webhooks.signature_header(
            prepared.signing_secrets, prepared.delivery_id, timestamp, body
        ),
    }
    attempted_at = utcnow()
    started = time.monotonic()
    try:
        # The guard runs again here, not only at registration: DNS may have changed since.
        answer = post(
            prepared.url,
            body,
            headers,
            allow_private=settings.allow_private_urls,
            timeout=settings.webhook_timeout_s,
            max_response_bytes=MAX_RESPONSE_BYTES,
        )
    except UrlRefused as exc:
        outcome = webhooks.Outcome(
            attempted_at, _ms(started), error=f"refused or failed: {exc.reason}"
        )
    else:
        code = answer.status
        error = None
        if not 200 <= code < 300:
            error = f"HTTP {code}" + (": redirects are not followed" if 300 <= code < 400 else "")
        outcome = webhooks.Outcome(
            attempted_at,
            _ms(started),
            status_code=code,
            error=error,
            retry_after_s=webhooks.retry_after_seconds(answer.headers.get("retry-after"), utcnow()),
        )
    with transaction(sessions) as session:
        status = webhooks.finish_attempt(session, prepared, outcome, settings.webhook_schedule)
    log.info(
        "webhook attempt",
        extra={
            "delivery_id": delivery_id,
            "request_id": prepared.job.id,
            "status_code": outcome.status_code,
            "latency_ms": outcome.latency_ms,
            "delivery_status": status,
        },
    )
    return status


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


@shared_task(bind=True, name=WEBHOOK_DISPATCH_TASK, ignore_result=True)
def dispatch(self: AntihackTask) -> int:
    """Publish a send for every delivery that is due (beat runs this every few seconds)."""
    published = claim_and_publish(self.state.sessions, self.settings, self.app)
    if published:
        log.info("webhook dispatcher published %d sends", published)
    return published


@shared_task(
    bind=True,
    name=WEBHOOK_SEND_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def send(self: AntihackTask, delivery_id: str, token: str) -> str:
    """One attempt of one delivery; a duplicate message finds the claim taken and does nothing."""
    return attempt(self.state.sessions, self.settings, delivery_id, token)
