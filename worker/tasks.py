"""Celery tasks: analyze a job, sweep lost jobs back into the queue, purge what retention ends."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from celery import current_app, shared_task
from celery.signals import (
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

from antihack.shared.domain import retention, webhooks
from antihack.shared.domain.capture import CaptureError, parse_capture
from antihack.shared.domain.jobs import (
    AttemptResult,
    Claim,
    ClaimedJob,
    Finished,
    capture_limits,
    due_for_publish,
    error_body,
    release,
)
from antihack.shared.domain.light import LightSequence
from antihack.shared.infra.broker import held_job_ids
from antihack.shared.infra.db import Base, transaction
from antihack.shared.infra.metrics import (
    count_attempt,
    count_finished,
    mark_dead,
    metrics,
    observe_stages,
)
from antihack.shared.infra.queues import (
    ANALYZE_QUEUE,
    ANALYZE_TASK,
    PURGE_TASK,
    SWEEP_TASK,
    done_key,
)
from antihack.shared.infra.secrets import decrypt
from antihack.shared.infra.settings import Settings
from antihack.shared.infra.tables import Fingerprint
from antihack.worker import bookkeeping
from antihack.worker.celery_app import AntihackCelery, AntihackTask
from antihack.worker.replay_index import DbHistory, replay_rows
from antihack.worker.state import WorkerState, current_state, get_state

log = logging.getLogger(__name__)


@shared_task(
    bind=True,
    name=ANALYZE_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def analyze(self: AntihackTask, job_id: str) -> str:
    """Run the pipeline on one job; safe to deliver any number of times."""
    settings, st = self.settings, self.state
    owned = _claim(st, settings, job_id)
    if owned is None:
        _notify(st, job_id)  # it may just have been failed for exhausted attempts
        count_attempt("skipped")
        return "skipped"
    started = time.perf_counter()
    try:
        outcome = _run(self, owned)
    except Exception as exc:
        # Our fault or a transient one (database, broker): retry while attempts remain.
        attempt = owned.claim.attempt
        log.exception("analyze failed", extra={"request_id": job_id, "attempt": attempt})
        if attempt < settings.max_attempts:
            with transaction(st.sessions) as session:
                released = release(session, owned.claim)
            if released:
                self.apply_async((job_id,), countdown=min(2**attempt, 30))
            count_attempt("retry")
            return "retry"
        body = error_body(job_id, "INTERNAL_ERROR", f"analysis failed: {type(exc).__name__}")
        outcome = _store(
            self,
            AttemptResult(
                owned.claim,
                body,
                reasons=["internal_error"],
                refund_limit=settings.poison_refund_limit,
            ),
        )
    metrics().analysis_seconds.observe(time.perf_counter() - started)
    _notify(st, job_id)
    return outcome


def _claim(st: WorkerState, settings: Settings, job_id: str) -> ClaimedJob | None:
    """Claim the job and read what analysing it needs, in one statement; with the threads
    pool, in one statement with the other threads' claims (worker/bookkeeping.py)."""
    keeper = bookkeeping.current()
    if keeper is not None:
        return keeper.claim(job_id)
    return _books(st, settings).claim([job_id]).get(job_id)


def _books(st: WorkerState, settings: Settings) -> bookkeeping.Books:
    """This process's bookkeeping statements, one job at a time (prefork)."""
    s = settings
    return bookkeeping.Books(
        st.sessions, st.autocommit, _lease(s), s.max_attempts, s.poison_refund_limit
    )


def _lease(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.task_time_limit_s + settings.lease_margin_s)


def _run(task: AntihackTask, owned: ClaimedJob) -> str:
    from antihack.worker.pipeline.run import PipelineContext

    st = task.state
    settings, claim = st.settings, owned.claim
    failure: CaptureError | None = None
    if owned.payload is None:
        failure = CaptureError("INVALID_ARGUMENT", "the job's input was deleted")
    else:
        try:
            capture = parse_capture(owned.payload, capture_limits(settings))
        except CaptureError as exc:
            failure = exc
    if failure is not None:
        return _store(
            task, AttemptResult(claim, error_body(claim.job_id, failure.status, failure.reason))
        )
    ctx = PipelineContext(
        require_signed=owned.require_signed,
        sdk_secret=decrypt(settings.secret_key, owned.sdk_secret_enc).encode(),
        seen_session_ids=_history(st, claim, capture.session_id),
        return_image=owned.return_image,
        now_ms=int(time.time() * 1000),
        limits=capture_limits(settings),
        session_check=owned.session_check,
        step_window_ms=round(settings.step_window_s * 1000),
        pad_hack_below=settings.pad_hack_below,
        # The LIGHT colours of the session this job redeemed (None: no session, or no LIGHT).
        light=LightSequence.from_json(owned.light),
        # Replay memory: every key's captures (deployment) or this key's, never this job's.
        history=DbHistory(
            st.sessions,
            claim.api_key_id if settings.replay_scope == "key" else None,
            claim.job_id,
        ),
    )
    try:
        analysis = st.pipeline.analyze(capture, ctx)
    except CaptureError as exc:
        return _store(task, AttemptResult(claim, error_body(claim.job_id, exc.status, exc.reason)))
    observe_stages(analysis.stage_ms)
    prints = replay_rows(claim.job_id, claim.api_key_id, analysis.frame_prints)
    if analysis.session_id:
        prints.append(
            Fingerprint(
                kind="session",
                value=analysis.session_id[:100],
                api_key_id=claim.api_key_id,
                job_id=claim.job_id,
            )
        )
    result = AttemptResult(
        claim,
        analysis.seed_body(claim.job_id, owned.return_extra),
        reasons=analysis.reasons,
        model_versions=analysis.model_versions,
        stage_ms=analysis.stage_ms,
        failed_steps=analysis.failed_steps,
    )
    return _store(task, result, prints)


def _history(st: WorkerState, owned: Claim, session_id: str) -> frozenset[str]:
    """This session id, if this key submitted it before (session ids are chosen by the
    client, so two partners' ids may coincide: they stay per key). Frame fingerprints are
    looked up by the pipeline through DbHistory (worker/replay_index.py)."""
    if not session_id:
        return frozenset()
    keeper = bookkeeping.current()
    if keeper is not None:
        seen = keeper.seen_before(owned, session_id)
    else:
        seen = owned.job_id in _books(st, st.settings).seen([(owned, session_id)])
    return frozenset([session_id[:100]]) if seen else frozenset()


def _store(task: AntihackTask, result: AttemptResult, rows: Sequence[Base] = ()) -> str:
    """Record the result (with its replay ``rows``) if this attempt still owns the job."""
    st = task.state
    job_id = result.claim.job_id
    keeper = bookkeeping.current()
    recording = bookkeeping.Recording(result, rows)
    finished: Finished | None
    if keeper is not None:
        finished = keeper.record(recording)
    else:
        finished = _books(st, st.settings).record([recording]).get(job_id)
    if finished is None:
        # Another attempt owns the job now (our lease ran out); its result will stand.
        count_attempt("lost_lease")
        return "lost-lease"
    count_finished(result.body)
    if finished.webhook_due and finished.delivery_id is not None:
        # Committed: the result's webhook delivery exists; send it now, not at the next dispatch.
        _send_webhook(task, job_id, finished.delivery_id)
    return str(result.body.get("status"))


def _send_webhook(task: AntihackTask, job_id: str, delivery_id: str) -> None:
    """Claim the delivery (one statement, by its id) and publish its send; a send that cannot
    be published is released for the dispatcher, as webhook_tasks.claim_and_publish does."""
    st = task.state
    settings = st.settings
    keeper = bookkeeping.current()
    # A threads pool's task threads keep no connection of their own: a transaction of the pool.
    books = _books(st, settings) if keeper is None else replace(keeper.books, autocommit=None)
    try:
        token = books.claim_delivery(delivery_id, webhooks.claim_lease(settings))
        if token is not None and webhooks.publish(task.app, [(delivery_id, token)]):
            with transaction(st.sessions) as session:
                webhooks.release_claim(session, delivery_id, token)
    except Exception:  # the dispatcher sends it (once its claim lapses, if it was taken)
        log.warning(
            "could not publish the job's webhook",
            extra={"request_id": job_id, "delivery_id": delivery_id},
        )


def _notify(st: WorkerState, job_id: str) -> None:
    try:
        pipe = st.redis.pipeline(transaction=False)
        pipe.rpush(done_key(job_id), 1)
        pipe.expire(done_key(job_id), 120)
        pipe.execute()
    except Exception:  # a waiting client falls back to polling the database
        log.warning("could not notify job completion", extra={"request_id": job_id})


@shared_task(bind=True, name=SWEEP_TASK, ignore_result=True)
def sweep(self: AntihackTask) -> int:
    """Re-publish jobs whose message was lost: QUEUED too long and not in the broker, or
    RUNNING past their lease."""
    settings, st = self.settings, self.state

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
def purge(self: AntihackTask) -> dict[str, int]:
    """Delete what is older than ANTIHACK_RETENTION_DAYS (shared/domain/retention.py says what), in
    batches of ANTIHACK_PURGE_BATCH; returns the rows deleted per table."""
    settings = self.settings
    report = retention.purge(
        self.state.sessions,
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
        app = current_app
        if isinstance(app, AntihackCelery):
            # Its threads' claims and results share statements (worker/bookkeeping.py).
            s = app.settings
            st = get_state(s)
            bookkeeping.start(
                st.sessions,
                _lease(s),
                s.max_attempts,
                s.poison_refund_limit,
                autocommit=st.autocommit,
            )


@worker_shutdown.connect
def _close_models(**_: Any) -> None:
    """After the pool has stopped: end the bookkeeping lanes and the model batcher's threads."""
    bookkeeping.stop()
    state = current_state()
    if state is not None:
        state.close()


@worker_process_shutdown.connect
def _metrics_bookkeeping(pid: int | None = None, **_: Any) -> None:
    """A pool process that exits keeps its counters; only its live gauges go."""
    mark_dead(pid or os.getpid())
