"""Retention: the purge that bounds how long the service keeps anything about a capture, and the
delete that removes one job and everything derived from it at once.

A capture's traces are the job row and every row that hangs off it through foreign keys: its
input (the capture bytes), its result (score, reasons, and the best frame as ``image_base64``
when asked for), replay fingerprints, webhook deliveries and their attempts, and the capture
session it redeemed. Those tables are found from the schema (:func:`job_dependents`), so a new
table that references ``jobs`` is purged and deleted with them without a change here; the
tests check it against the live schema. H5 images and the per-key counters (quota, refunds)
do not reference a job and have their own rules.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, ForeignKey, Table, delete, or_, select
from sqlalchemy.orm import Session, sessionmaker

from antihack.shared.domain.errors import ApiError
from antihack.shared.infra.db import Base, rowcount, transaction
from antihack.shared.infra.tables import (
    FINAL_STATES,
    RUNNING,
    CaptureSession,
    Image,
    Job,
    JobInput,
    QuotaCounter,
    RefundCounter,
    utcnow,
)

log = logging.getLogger(__name__)

JOBS: Table = Job.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class Dependent:
    """A table whose rows belong to jobs through ``fks`` (columns that reference ``parent``)."""

    table: Table
    fks: tuple[ForeignKey, ...]
    parent: Dependent | None  # None: the foreign keys reference jobs.id itself

    def where(self, job_ids: Sequence[str]) -> ColumnElement[bool]:
        """The rows of this table that belong to ``job_ids``."""
        if self.parent is None:
            return or_(*(fk.parent.in_(job_ids) for fk in self.fks))
        owners = self.parent.where(job_ids)
        return or_(*(fk.parent.in_(select(fk.column).where(owners)) for fk in self.fks))


@functools.cache
def job_dependents() -> tuple[Dependent, ...]:
    """Every table whose rows hang off a job, through any chain of foreign keys, children
    before their parents (the order to delete them in); walked once (the schema is fixed)."""
    out: list[Dependent] = []

    def visit(parent_table: Table, parent: Dependent | None, path: frozenset[Table]) -> None:
        for table in Base.metadata.sorted_tables:
            if table in path:
                continue
            fks = tuple(fk for fk in table.foreign_keys if fk.column.table is parent_table)
            if fks:
                dep = Dependent(table, fks, parent)
                visit(table, dep, path | {table})
                out.append(dep)

    visit(JOBS, None, frozenset({JOBS}))
    return tuple(out)


def delete_jobs(session: Session, job_ids: Sequence[str]) -> Counter[str]:
    """Delete these jobs and every row that hangs off them (the caller's transaction); rows
    deleted per table. Capture sessions a job redeemed go too: a replayed nonce then counts as
    unknown, which the pipeline treats as a hack just as it does a reused one."""
    counts: Counter[str] = Counter()
    if not job_ids:
        return counts
    for dep in job_dependents():
        counts[dep.table.name] += rowcount(
            session.execute(delete(dep.table).where(dep.where(job_ids)))
        )
    counts[JOBS.name] += rowcount(session.execute(delete(JOBS).where(JOBS.c.id.in_(job_ids))))
    return counts


def delete_owned_job(session: Session, api_key_id: str, job_id: str) -> Counter[str]:
    """``DELETE /v1/jobs/<id>``: remove a job of this key and all its traces (not committed).

    404 for an unknown job or another key's; a RUNNING job is refused (409 INVALID_ARGUMENT),
    since its worker is about to write a result, fingerprints and a webhook for it. A QUEUED
    job is deleted (cancelled): its worker will find no job to claim. The row lock orders this
    against the worker's claim, which is an UPDATE of the same row.
    """
    row = session.execute(
        select(Job.api_key_id, Job.status).where(Job.id == job_id).with_for_update()
    ).first()
    if row is None or row.api_key_id != api_key_id:
        raise ApiError("NOT_FOUND", f"no job {job_id!r} for this API key")
    if row.status == RUNNING:
        raise ApiError(
            "INVALID_ARGUMENT",
            f"job {job_id} is RUNNING; delete it once it has finished (poll GET /v1/jobs/{job_id})",
            http_code=409,
        )
    return delete_jobs(session, [job_id])


# --- the purge (a beat task) ----------------------------------------------------------------


@dataclass(frozen=True)
class PurgeReport:
    """Rows deleted per table, and whether a deadline stopped the purge with more to do."""

    counts: dict[str, int]
    complete: bool


Step = Callable[[Session, int], tuple[int, Counter[str]]]


def _finished_jobs(cutoff: datetime) -> Step:
    def step(session: Session, batch: int) -> tuple[int, Counter[str]]:
        ids = list(
            session.scalars(
                select(Job.id)
                .where(Job.finished_at < cutoff, Job.status.in_(FINAL_STATES))
                .order_by(Job.finished_at)
                .limit(batch)
            )
        )
        return len(ids), delete_jobs(session, ids)

    return step


def _by_key(model: type[Base], key: str, condition: ColumnElement[bool]) -> Step:
    """Delete rows of ``model`` that match ``condition``, ``batch`` primary keys at a time."""
    table: Table = model.__table__  # type: ignore[assignment]
    column = table.c[key]

    def step(session: Session, batch: int) -> tuple[int, Counter[str]]:
        ids = list(session.scalars(select(column).where(condition).limit(batch)))
        if not ids:
            return 0, Counter()
        deleted = rowcount(session.execute(delete(table).where(column.in_(ids))))
        return len(ids), Counter({table.name: deleted})

    return step


def _ended_counters(cutoff: datetime) -> Step:
    """Per-key counters of periods that ended before ``cutoff``. Quota: ``day:D`` ends at D+1
    00:00 UTC and ``month:M`` on the first of the next month (string order is date order in
    both); the current period's counter and ``total`` are never touched, so quota stays exact.
    Refunds of poison captures: one row per key and day ``D``, ended likewise."""
    last_day = (cutoff - timedelta(days=1)).date().isoformat()
    period = QuotaCounter.period
    ended_quota = or_(
        (period >= "day:") & (period < f"day:{last_day}"),
        (period >= "month:") & (period < f"month:{cutoff:%Y-%m}"),
    )
    quota: Table = QuotaCounter.__table__  # type: ignore[assignment]
    refunds: Table = RefundCounter.__table__  # type: ignore[assignment]

    def step(session: Session, batch: int) -> tuple[int, Counter[str]]:
        # A few rows per key and period: one statement each, no batches needed.
        del batch
        return 0, Counter(
            {
                quota.name: rowcount(session.execute(delete(quota).where(ended_quota))),
                refunds.name: rowcount(
                    session.execute(delete(refunds).where(RefundCounter.day < last_day))
                ),
            }
        )

    return step


def purge(
    sessions: sessionmaker[Session],
    retention: timedelta,
    batch: int,
    *,
    now: datetime | None = None,
    deadline_s: float | None = None,
) -> PurgeReport:
    """Delete everything older than ``retention``, ``batch`` rows per transaction:

    - finished jobs (SUCCEEDED/FAILED) whose ``finished_at`` is older, with every row that hangs
      off them (results, fingerprints, webhook deliveries and attempts, capture sessions, inputs);
    - inputs older, whatever their job's state (a job still QUEUED then fails with
      "the job's input was deleted");
    - H5 images past their own expiry (``ANTIHACK_IMAGE_TTL_S``);
    - capture sessions that expired more than ``retention`` ago;
    - quota and refund counters of periods that ended more than ``retention`` ago.

    QUEUED and RUNNING jobs are never deleted. With ``deadline_s`` it stops between batches
    once that many seconds have passed (the next run goes on), so it stays inside its task's
    time limit however large the backlog.
    """
    if batch < 1 or retention < timedelta(0):
        raise ValueError("purge needs batch >= 1 and a retention >= 0")
    now = now or utcnow()
    cutoff = now - retention
    steps: list[Step] = [
        _finished_jobs(cutoff),
        _by_key(JobInput, "job_id", JobInput.created_at < cutoff),
        _by_key(Image, "id", Image.expires_at < now),
        _by_key(CaptureSession, "id", CaptureSession.expires_at < cutoff),
        _ended_counters(cutoff),
    ]
    started = time.monotonic()
    counts: Counter[str] = Counter()
    for step in steps:
        while True:
            with transaction(sessions) as session:
                selected, deleted = step(session, batch)
            counts.update(deleted)
            if selected < batch:
                break
            if deadline_s is not None and time.monotonic() - started >= deadline_s:
                return _report(counts, cutoff, complete=False)
    return _report(counts, cutoff, complete=True)


def _report(counts: Counter[str], cutoff: datetime, *, complete: bool) -> PurgeReport:
    report = PurgeReport({name: n for name, n in sorted(counts.items()) if n}, complete)
    log.info(
        "purge deleted %s (before %s)%s",
        ", ".join(f"{n} {name}" for name, n in report.counts.items()) or "nothing",
        cutoff.isoformat(timespec="seconds"),
        "" if complete else "; stopped at its deadline, the next run goes on",
        extra={"deleted": report.counts, "complete": complete},
    )
    return report
