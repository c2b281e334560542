"""Celery tasks: analyze a job, sweep lost jobs back into the queue, purge what retention ends."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from celery import Task, current_app, shared_task
from celery.signals import (
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import retention
from shared.broker import held_job_ids
from shared.capture import CaptureError, parse_capture
from shared.db import Base, transaction
from shared.jobs import (
    Claim,
    capture_limits,
    claim,
    due_for_publish,
    error_body,
    finish,
    release,
)
from shared.keys import sdk_secret
from shared.light import LightSequence
from shared.metrics import count_attempt, count_finished, mark_dead, metrics, observe_stages
from shared.models import ApiKey, CaptureSession, Fingerprint, Job
from shared.queues import ANALYZE_QUEUE, ANALYZE_TASK, PURGE_TASK, SWEEP_TASK, done_key
from worker.celery_app import AntihackCelery, task_settings
from worker.replay_index import DbHistory, replay_rows
from worker.state import WorkerState, current_state, get_state
from worker.webhook_tasks import publish_for_job

log = logging.getLogger(__name__)


@shared_task(
    bind=True,
    name=ANALYZE_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def analyze(self: Task, job_id: str) -> str:
    """Run the pipeline on one job; safe to deliver any number of times."""
    settings = task_settings(self)
    st = get_state(settings)
    lease = timedelta(seconds=settings.task_time_limit_s + settings.lease_margin_s)
    with transaction(st.sessions) as session:
        owned = claim(
            session, job_id, lease, settings.max_attempts, refund_limit=settings.poison_refund_limit
        )
    if owned is None:
        _notify(st, job_id)  # it may just have been failed for exhausted attempts
        count_attempt("skipped")
        return "skipped"
    started = time.perf_counter()
    try:
        outcome = _run(st, owned)
    except Exception as exc:
        # Our fault or a transient one (database, broker): retry while attempts remain.
        log.exception("analyze failed", extra={"request_id": job_id, "attempt": owned.attempt})
        if owned.attempt < settings.max_attempts:
            with transaction(st.sessions) as session:
                released = release(session, owned)
            if released:
                self.apply_async((job_id,), countdown=min(2**owned.attempt, 30))
            count_attempt("retry")
            return "retry"
        body = error_body(job_id, "INTERNAL_ERROR", f"analysis failed: {type(exc).__name__}")
        outcome = _store(
            st, owned, body, reasons=["internal_error"], refund_limit=settings.poison_refund_limit
        )
    metrics().analysis_seconds.observe(time.perf_counter() - started)
    _notify(st, job_id)
    return outcome


def _run(st: WorkerState, owned: Claim) -> str:
    from worker.pipeline.run import PipelineContext

    settings = st.settings
    limits = capture_limits(settings)
    # One read transaction: the job, its key and the key's replay history.
    with transaction(st.sessions) as session:
        job = session.get(Job, owned.job_id)
        key = session.get(ApiKey, owned.api_key_id)
        assert job is not None and key is not None
        payload = job.input.payload if job.input is not None else None
        require_signed = key.require_signed
        secret = sdk_secret(key, settings.secret_key).encode()
        return_extra, return_image = job.return_extra, job.return_image
        session_check = job.session_check  # a failed capture session check, decided at submission
        # The LIGHT colours of the session this job redeemed (None: no session, or no LIGHT).
        light = LightSequence.from_json(
            session.scalars(
                select(CaptureSession.light).where(CaptureSession.job_id == owned.job_id)
            ).first()
        )
        failure: CaptureError | None = None
        if payload is None:
            failure = CaptureError("INVALID_ARGUMENT", "the job's input was deleted")
        else:
            try:
                capture = parse_capture(payload, limits)
            except CaptureError as exc:
                failure = exc
        if failure is None:
            seen_sessions = _history(session, owned, capture.session_id)
    if failure is not None:
        body = error_body(owned.job_id, failure.status, failure.reason)
        return _store(st, owned, body)
    ctx = PipelineContext(
        require_signed=require_signed,
        sdk_secret=secret,
        seen_session_ids=seen_sessions,
        return_image=return_image,
        now_ms=int(time.time() * 1000),
        limits=limits,
        session_check=session_check,
        step_window_ms=round(settings.step_window_s * 1000),
        pad_hack_below=settings.pad_hack_below,
        light=light,
        # Replay memory: every key's captures (deployment) or this key's, never this job's.
        history=DbHistory(
            st.sessions,
            owned.api_key_id if settings.replay_scope == "key" else None,
            owned.job_id,
        ),
    )
    try:
        analysis = st.pipeline.analyze(capture, ctx)
    except CaptureError as exc:
        body = error_body(owned.job_id, exc.status, exc.reason)
        return _store(st, owned, body)
    observe_stages(analysis.stage_ms)
    body = analysis.seed_body(owned.job_id, return_extra)
    prints = replay_rows(owned.job_id, owned.api_key_id, analysis.frame_prints)
    if analysis.session_id:
        prints.append(
            Fingerprint(
                kind="session",
                value=analysis.session_id[:100],
                api_key_id=owned.api_key_id,
                job_id=owned.job_id,
            )
        )
    return _store(
        st,
        owned,
        body,
        reasons=analysis.reasons,
        model_versions=analysis.model_versions,
        stage_ms=analysis.stage_ms,
        failed_steps=analysis.failed_steps,
        fingerprints=prints,
    )


def _history(session: Session, owned: Claim, session_id: str) -> frozenset[str]:
    """This session id, if this key submitted it before (session ids are chosen by the
    client, so two partners' ids may coincide: they stay per key). Frame fingerprints are
    looked up by the pipeline through DbHistory (worker/replay_index.py)."""
    if not session_id:
        return frozenset()
    return frozenset(
        session.scalars(
            select(Fingerprint.value).where(
                Fingerprint.api_key_id == owned.api_key_id,
                Fingerprint.job_id != owned.job_id,
                Fingerprint.kind == "session",
                Fingerprint.value == session_id[:100],
            )
        )
    )


def _store(
    st: WorkerState,
    owned: Claim,
    body: dict[str, Any],
    *,
    fingerprints: Sequence[Base] | None = None,
    **extra: Any,
) -> str:
    with transaction(st.sessions) as session:
        finished = finish(session, owned, body, **extra)
        if finished is None:
            # Another attempt owns the job now (our lease ran out); its result will stand.
            session.rollback()
            count_attempt("lost_lease")
            return "lost-lease"
        session.add_all(fingerprints or [])
    count_finished(body)
    if finished.webhook_due:
        # Committed: the result's webhook delivery exists; send it now, not at the next dispatch.
        publish_for_job(st.settings, current_app, owned.job_id)
    return str(body.get("status"))


def _notify(st: WorkerState, job_id: str) -> None:
    try:
        pipe = st.redis.pipeline()
        pipe.rpush(done_key(job_id), 1)
        pipe.expire(done_key(job_id), 120)
        pipe.execute()
    except Exception:  # a waiting client falls back to polling the database
        log.warning("could not notify job completion", extra={"request_id": job_id})


@shared_task(bind=True, name=SWEEP_TASK, ignore_result=True)
def sweep(self: Task) -> int:
    """Re-publish jobs whose message was lost: QUEUED too long and not in the broker, or
    RUNNING past their lease."""
    settings = task_settings(self)
    st = get_state(settings)

    def held() -> set[str] | None:
        try:
            return held_job_ids(st.redis, ANALYZE_QUEUE)
        except Exception as exc:  # the broker cannot tell: republish every stale job
            log.warning("sweeper could not read the analyze queue: %s", type(exc).__name__)
            return None

    with transaction(st.sessions) as session:
        stale = timedelta(seconds=settings.queued_stale_s)
        ids = due_for_publish(session, stale, held=held)
    for job_id in ids:
        self.app.send_task(ANALYZE_TASK, args=(job_id,), queue=ANALYZE_QUEUE)
    if ids:
        log.info("sweeper re-published %d jobs", len(ids))
    return len(ids)


@shared_task(bind=True, name=PURGE_TASK, ignore_result=True)
def purge(self: Task) -> dict[str, int]:
    """Delete what is older than ANTIHACK_RETENTION_DAYS (shared/retention.py says what), in
    batches of ANTIHACK_PURGE_BATCH; returns the rows deleted per table."""
    settings = task_settings(self)
    report = retention.purge(
        get_state(settings).sessions,
        timedelta(days=settings.retention_days),
        settings.purge_batch,
        # Stop between batches well inside the task's time limit; the next run goes on.
        deadline_s=settings.task_time_limit_s / 2,
    )
    return report.counts


@worker_process_init.connect
def _load_models(**_: Any) -> None:
    """Load the models in each pool process right after the fork, before the first job."""
    app = current_app
    if isinstance(app, AntihackCelery):
        get_state(app.settings).pipeline  # noqa: B018


@worker_init.connect
def _load_models_once(sender: Any = None, **_: Any) -> None:
    """The threads pool forks no children (no worker_process_init): its one process loads the
    models before it consumes, and all its threads share them (and their batcher)."""
    from celery.concurrency import get_implementation
    from celery.concurrency.thread import TaskPool as ThreadPool

    pool = getattr(sender, "pool_cls", None)
    if isinstance(pool, str):
        pool = get_implementation(pool)
    if isinstance(pool, type) and issubclass(pool, ThreadPool):
        _load_models()


@worker_shutdown.connect
def _close_models(**_: Any) -> None:
    """After the pool has stopped: end the model batcher's threads."""
    state = current_state()
    if state is not None:
        state.close()


@worker_process_shutdown.connect
def _metrics_bookkeeping(pid: int | None = None, **_: Any) -> None:
    """A pool process that exits keeps its counters; only its live gauges go."""
    mark_dead(pid or os.getpid())
