"""Celery tasks: analyze a job, sweep lost jobs back into the queue, purge old inputs."""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta
from typing import Any

from celery import Task, current_app, shared_task
from celery.signals import (
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from shared.capture import CaptureError, parse_capture
from shared.db import rowcount, transaction
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
from shared.metrics import count_attempt, count_finished, mark_dead, metrics, observe_stages
from shared.models import ApiKey, CaptureSession, Fingerprint, Image, Job, JobInput, utcnow
from shared.queues import ANALYZE_QUEUE, ANALYZE_TASK, PURGE_TASK, SWEEP_TASK, done_key
from worker.celery_app import AntihackCelery, task_settings
from worker.state import WorkerState, current_state, get_state
from worker.webhook_tasks import publish_for_job

log = logging.getLogger(__name__)

# Replay detection compares a capture's frame hashes with this many recent ones of the key.
REPLAY_HISTORY = 5000


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
        owned = claim(session, job_id, lease, settings.max_attempts)
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
        outcome = _store(st, owned, body, reasons=["internal_error"])
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
        failure: CaptureError | None = None
        if payload is None:
            failure = CaptureError("INVALID_ARGUMENT", "the job's input was deleted")
        else:
            try:
                capture = parse_capture(payload, limits)
            except CaptureError as exc:
                failure = exc
        if failure is None:
            seen_sessions, seen_hashes = _history(session, owned, capture.session_id)
    if failure is not None:
        body = error_body(owned.job_id, failure.status, failure.reason)
        return _store(st, owned, body)
    ctx = PipelineContext(
        require_signed=require_signed,
        sdk_secret=secret,
        seen_session_ids=seen_sessions,
        seen_frame_hashes=seen_hashes,
        return_image=return_image,
        now_ms=int(time.time() * 1000),
        limits=limits,
        session_check=session_check,
    )
    try:
        analysis = st.pipeline.analyze(capture, ctx)
    except CaptureError as exc:
        body = error_body(owned.job_id, exc.status, exc.reason)
        return _store(st, owned, body)
    observe_stages(analysis.stage_ms)
    body = analysis.seed_body(owned.job_id, return_extra)
    prints = [Fingerprint(kind="phash", value=f"{h:016x}") for h in analysis.frame_hashes]
    if analysis.session_id:
        prints.append(Fingerprint(kind="session", value=analysis.session_id[:100]))
    return _store(
        st,
        owned,
        body,
        reasons=analysis.reasons,
        model_versions=analysis.model_versions,
        stage_ms=analysis.stage_ms,
        fingerprints=prints,
    )


def _history(
    session: Session, owned: Claim, session_id: str
) -> tuple[frozenset[str], tuple[int, ...]]:
    """Session ids and frame hashes this key submitted before (for replay detection)."""
    base = select(Fingerprint.value).where(
        Fingerprint.api_key_id == owned.api_key_id, Fingerprint.job_id != owned.job_id
    )
    sessions = (
        frozenset(
            session.scalars(
                base.where(Fingerprint.kind == "session", Fingerprint.value == session_id[:100])
            )
        )
        if session_id
        else frozenset()
    )
    hashes = tuple(
        int(v, 16)
        for v in session.scalars(
            base.where(Fingerprint.kind == "phash")
            .order_by(Fingerprint.id.desc())
            .limit(REPLAY_HISTORY)
        )
    )
    return sessions, hashes


def _store(
    st: WorkerState,
    owned: Claim,
    body: dict[str, Any],
    *,
    fingerprints: list[Fingerprint] | None = None,
    **extra: Any,
) -> str:
    with transaction(st.sessions) as session:
        finished = finish(session, owned, body, **extra)
        if finished is None:
            # Another attempt owns the job now (our lease ran out); its result will stand.
            session.rollback()
            count_attempt("lost_lease")
            return "lost-lease"
        for fp in fingerprints or []:
            fp.api_key_id = owned.api_key_id
            fp.job_id = owned.job_id
            session.add(fp)
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
    """Re-publish jobs whose message was lost (QUEUED too long, or RUNNING past their lease)."""
    settings = task_settings(self)
    st = get_state(settings)
    with transaction(st.sessions) as session:
        ids = due_for_publish(session, timedelta(seconds=settings.queued_stale_s))
    for job_id in ids:
        self.app.send_task(ANALYZE_TASK, args=(job_id,), queue=ANALYZE_QUEUE)
    if ids:
        log.info("sweeper re-published %d jobs", len(ids))
    return len(ids)


@shared_task(bind=True, name=PURGE_TASK, ignore_result=True)
def purge(self: Task) -> int:
    """Delete inputs older than the retention period, expired H5 images, and capture sessions
    that expired more than the retention period ago."""
    settings = task_settings(self)
    st = get_state(settings)
    cutoff = utcnow() - timedelta(days=settings.retention_days)
    with transaction(st.sessions) as session:
        inputs = rowcount(session.execute(delete(JobInput).where(JobInput.created_at < cutoff)))
        images = rowcount(session.execute(delete(Image).where(Image.expires_at < utcnow())))
        stale = delete(CaptureSession).where(CaptureSession.expires_at < cutoff)
        sessions = rowcount(session.execute(stale))
    return inputs + images + sessions


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
