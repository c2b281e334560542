"""A worker's job bookkeeping: claims and results in as few statements, transactions and
round trips as they can take; many jobs' in one statement (group commit) in a threads pool.

``Books`` holds the statements, for one job (a prefork process) or many: what is one statement
(a claim, a session-id read, a result that brings nothing else) runs alone in autocommit on a
connection the thread keeps (no BEGIN, no COMMIT, no session, no pool checkout per job); the
rest (a result with replay rows, a refund or a webhook delivery) in one transaction.

A GPU worker runs many jobs at once in one process (Celery's threads pool) so that their model
calls share batches (worker/pipeline/batching.py). Claiming and recording each job on its own
costs a database round trip and some Python per job in that one process; under load the
bookkeeping, not the GPU, would set the pace. Here a task thread hands its claim (or its result)
to a lane, and the lane's thread runs every request that queued while its previous statement
ran as one (``Books``: jobs.take_jobs, jobs.finish_quiet_jobs / finish_jobs). There is no
waiting for a batch to fill: when idle a request runs at once, alone; under load the batches
grow with the backlog, up to ``max_batch``.

Every guarantee of the single-job path holds per job: a claim still takes a QUEUED job once,
a result is still recorded only by the attempt that owns the job, with its charge and webhook
row in the same transaction. A batch that fails is retried one request at a time, so a bad
request fails alone, in its own caller.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, TypeVar

from sqlalchemy import Connection
from sqlalchemy.orm import Session, sessionmaker

from antihack.shared.domain import webhooks
from antihack.shared.domain.jobs import (
    AttemptResult,
    Claim,
    ClaimedJob,
    Finished,
    finish_jobs,
    finish_quiet_jobs,
    sessions_seen,
    take_jobs,
)
from antihack.shared.infra.db import Base, KeptConnections, retry_on_disconnect, transaction

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")
T = TypeVar("T")


class LaneClosed(RuntimeError):
    """The lane was shut down: it takes no more requests."""


@dataclass
class LaneStats:
    batches: int = 0
    requests: int = 0
    max_requests: int = 0

    @property
    def mean_requests(self) -> float:
        return self.requests / self.batches if self.batches else 0.0


class GroupLane(Generic[In, Out]):
    """Runs the requests queued while its previous batch ran as one batch, in one thread.

    ``run(items)`` returns one answer per item, in order; ``key(item)`` names what may be in a
    batch once (a later request with the same key waits for the next batch). ``on_exit`` runs
    in the lane's thread when it stops (it gives back the connection the thread kept).
    """

    def __init__(
        self,
        name: str,
        run: Callable[[list[In]], list[Out]],
        key: Callable[[In], Hashable],
        max_batch: int = 64,
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.name = name
        self._run = run
        self._key = key
        self._on_exit = on_exit
        self.max_batch = max_batch
        self.stats = LaneStats()
        self._cond = threading.Condition()
        self._queue: deque[tuple[In, Future[Out]]] = deque()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"bookkeeping-{name}", daemon=True)
        self._thread.start()

    def submit(self, item: In) -> Out:
        """Run ``item`` in the next batch; block until its answer (or its error) is back."""
        future: Future[Out] = Future()
        with self._cond:
            if self._closed:
                raise LaneClosed(f"{self.name}: the bookkeeping lane is shut down")
            self._queue.append((item, future))
            self._cond.notify()
        return future.result()

    def close(self, timeout: float | None = 30.0) -> None:
        """Take no more requests, run those queued, stop the thread; idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _take(self) -> list[tuple[In, Future[Out]]]:
        taken: list[tuple[In, Future[Out]]] = []
        kept: deque[tuple[In, Future[Out]]] = deque()
        keys: set[Hashable] = set()
        for request in self._queue:
            key = self._key(request[0])
            if len(taken) < self.max_batch and key not in keys:
                taken.append(request)
                keys.add(key)
            else:
                kept.append(request)
        self._queue = kept
        return taken

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._closed:
                        self._cond.wait()
                    if not self._queue:
                        return  # closed and drained
                    batch = self._take()
                self._answer(batch)
        finally:
            with self._cond:
                self._closed = True
                left, self._queue = list(self._queue), deque()
            for _, future in left:
                future.set_exception(LaneClosed(f"{self.name}: bookkeeping stopped"))
            if self._on_exit is not None:
                self._on_exit()

    def _answer(self, batch: list[tuple[In, Future[Out]]]) -> None:
        try:
            answers = self._run([item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)  # this request's error, in its caller
                return
            # One bad request must not fail the others: each runs again on its own (the failed
            # batch's transaction was rolled back).
            log.warning("bookkeeping %s batch of %d failed; one by one", self.name, len(batch))
            for request in batch:
                self._answer([request])
            return
        except BaseException as exc:  # e.g. SystemExit: every caller gets its answer
            for _, future in batch:
                future.set_exception(exc)
            raise
        with self._cond:
            s = self.stats
            s.batches += 1
            s.requests += len(batch)
            s.max_requests = max(s.max_requests, len(batch))
        for (_, future), answer in zip(batch, answers, strict=True):
            future.set_result(answer)


@dataclass(frozen=True)
class Recording:
    """A result to record, with the rows it brings (replay fingerprints)."""

    result: AttemptResult
    rows: Sequence[Base] = ()


@dataclass(frozen=True)
class Books:
    """A worker's bookkeeping statements, for one job or many at a time, each unit of work as
    short as it can be: what is one statement runs alone in autocommit, on a connection this
    thread keeps (``autocommit``, PostgreSQL; no BEGIN and COMMIT round trips, no session),
    the rest in a transaction (``sessions``).

    - claim: one statement (jobs.take_jobs); failing the jobs that are past their attempts
      takes a transaction of its own.
    - record: a result that brings nothing else (no replay rows, no refund, no webhook) is one
      statement (jobs.finish_quiet_jobs); any other, or one whose job gained a webhook endpoint
      since its claim, goes in a transaction with its rows and its delivery (jobs.finish_jobs).
    - seen: one read (jobs.sessions_seen); claim_delivery: one statement.
    """

    sessions: sessionmaker[Session]
    autocommit: KeptConnections | None  # None: every unit in a transaction (SQLite)
    lease: timedelta
    max_attempts: int
    refund_limit: int | None

    def claim(self, job_ids: list[str]) -> dict[str, ClaimedJob]:
        """The jobs of ``job_ids`` that were QUEUED, now ours, with what analysing them needs."""
        taken, exhausted = self._alone(
            lambda connection: take_jobs(
                connection, job_ids, self.lease, self.max_attempts, refund_limit=self.refund_limit
            )
        )
        if exhausted:
            with transaction(self.sessions) as session:
                retry_on_disconnect(session, lambda: finish_jobs(session, exhausted))
        return taken

    def record(self, recordings: Sequence[Recording]) -> dict[str, Finished]:
        """Record the results whose attempts still own their jobs; returns those recorded."""
        done: dict[str, Finished] = {}
        quiet = [r.result for r in recordings if not r.rows]
        if quiet and self.autocommit is not None:
            done = self.autocommit.run(lambda connection: finish_quiet_jobs(connection, quiet))
        rest = [r for r in recordings if r.result.claim.job_id not in done]
        if rest:
            with transaction(self.sessions) as session:
                more = retry_on_disconnect(
                    session, lambda: finish_jobs(session, [r.result for r in rest])
                )
                for r in rest:
                    if r.result.claim.job_id in more:
                        session.add_all(r.rows)
            done.update(more)
        return done

    def seen(self, asked: Sequence[tuple[Claim, str]]) -> set[str]:
        """The jobs of ``asked`` whose key sent their capture session id in another job."""
        return self._alone(lambda connection: sessions_seen(connection, asked))

    def claim_delivery(self, delivery_id: str, lease: timedelta) -> str | None:
        """Claim a recorded result's webhook delivery to send it now (webhooks.claim_delivery):
        its claim token, or None if someone claimed it first."""
        return self._alone(
            lambda connection: webhooks.claim_delivery(connection, delivery_id, lease)
        )

    def _alone(self, work: Callable[[Connection], T]) -> T:
        """``work``, one statement: in autocommit on this thread's kept connection, else
        (SQLite) in a transaction of its own."""
        if self.autocommit is not None:
            return self.autocommit.run(work)
        with transaction(self.sessions) as session:
            # No pre-ping on checkout (shared/infra/db.py): a dead connection runs it once more.
            return retry_on_disconnect(session, lambda: work(session.connection()))


class Bookkeeper:
    """The claim lane and the record lane of one worker process."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        lease: timedelta,
        max_attempts: int,
        refund_limit: int | None,
        max_batch: int = 64,
        autocommit: KeptConnections | None = None,
    ) -> None:
        self.books = Books(sessions, autocommit, lease, max_attempts, refund_limit)
        self.pid = os.getpid()
        # Each lane's thread keeps its own connection (autocommit) while it runs.
        done = autocommit.close if autocommit is not None else None
        self.claims: GroupLane[str, ClaimedJob | None] = GroupLane(
            "claim", self._claim, lambda job_id: job_id, max_batch, done
        )
        self.records: GroupLane[Recording, Finished | None] = GroupLane(
            "record", self._record, lambda r: r.result.claim.job_id, max_batch, done
        )
        self.sessions_seen: GroupLane[tuple[Claim, str], bool] = GroupLane(
            "history", self._seen, lambda c: c[0].job_id, max_batch, done
        )

    def claim(self, job_id: str) -> ClaimedJob | None:
        """The job and what analysing it needs, if it was QUEUED (Books.claim)."""
        return self.claims.submit(job_id)

    def record(self, recording: Recording) -> Finished | None:
        """Record the result if its attempt still owns the job (Books.record); None if not."""
        return self.records.submit(recording)

    def seen_before(self, owned: Claim, session_id: str) -> bool:
        """Whether the job's key submitted this capture session id in another job."""
        return self.sessions_seen.submit((owned, session_id))

    def close(self) -> None:
        self.claims.close()
        self.records.close()
        self.sessions_seen.close()

    def _claim(self, job_ids: list[str]) -> list[ClaimedJob | None]:
        taken = self.books.claim(job_ids)
        return [taken.get(job_id) for job_id in job_ids]

    def _seen(self, asked: list[tuple[Claim, str]]) -> list[bool]:
        seen = self.books.seen(asked)
        return [owned.job_id in seen for owned, _ in asked]

    def _record(self, recordings: list[Recording]) -> list[Finished | None]:
        done = self.books.record(recordings)
        return [done.get(r.result.claim.job_id) for r in recordings]


_keeper: Bookkeeper | None = None
_keeper_lock = threading.Lock()


def start(
    sessions: sessionmaker[Session],
    lease: timedelta,
    max_attempts: int,
    refund_limit: int | None,
    max_batch: int = 64,
    autocommit: KeptConnections | None = None,
) -> Bookkeeper:
    """Batch this process's claims and records from now on (a threads-pool worker)."""
    global _keeper
    with _keeper_lock:
        if _keeper is not None and _keeper.pid == os.getpid():
            _keeper.close()
        _keeper = Bookkeeper(sessions, lease, max_attempts, refund_limit, max_batch, autocommit)
        return _keeper


def current() -> Bookkeeper | None:
    """This process's bookkeeper, or None: claim and record each job on its own."""
    keeper = _keeper
    return keeper if keeper is not None and keeper.pid == os.getpid() else None


def stop() -> None:
    """Back to one job at a time; the queued requests still run."""
    global _keeper
    with _keeper_lock:
        keeper, _keeper = _keeper, None
    if keeper is not None and keeper.pid == os.getpid():
        keeper.close()
