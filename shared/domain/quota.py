"""Per-key quota: charged once per accepted job, atomically; refunded once on INTERNAL_ERROR."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from antihack.shared.domain.errors import ApiError
from antihack.shared.infra.db import commit_pipelined
from antihack.shared.infra.tables import ApiKey, Job, QuotaCounter, iso, utcnow


def period_key(period: str, now: datetime) -> str:
    """The counter a request made at ``now`` (UTC) is charged to; periods roll over at UTC
    midnight and on the first of the month."""
    now = now.astimezone(UTC)
    # Formatted by hand: strftime cost more than the rest of the function, twice per submission.
    if period == "day":
        return f"day:{now.year:04d}-{now.month:02d}-{now.day:02d}"
    if period == "month":
        return f"month:{now.year:04d}-{now.month:02d}"
    return "total"


def period_bounds(period: str, now: datetime) -> tuple[datetime | None, datetime | None]:
    """Start and end (exclusive) of the current period; ``(None, None)`` for ``total``."""
    now = now.astimezone(UTC)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    if period == "month":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=32)).replace(day=1)
        return start, end
    return None, None


@functools.cache
def _charge_statement(dialect: str) -> Any:
    """``INSERT … used = 1 ON CONFLICT DO UPDATE SET used = used + 1 WHERE used < :limit
    RETURNING used``, made once per dialect (it runs for every accepted job)."""
    table = QuotaCounter.__table__
    upsert = (postgresql if dialect == "postgresql" else sqlite).insert(table)
    return (
        upsert.values(api_key_id=bindparam("api_key_id"), period=bindparam("period"), used=1)
        .on_conflict_do_update(
            index_elements=["api_key_id", "period"],
            set_={"used": table.c.used + 1},
            where=table.c.used < bindparam("limit"),
        )
        .returning(table.c.used)
    )


def charge(session: Session, key: ApiKey, now: datetime | None = None) -> str | None:
    """Take one unit of the key's quota in the caller's transaction, or raise OUT_OF_QUOTA.

    One statement: insert the period's counter at 1, or add one to it ``WHERE used < limit``.
    The database serialises concurrent statements on one row (the loser of an insert race
    takes the update path, and an update re-checks the condition on the row's latest version),
    so the limit is never overshot. The row stays locked until the caller's commit, which
    serialises the key's submissions: charge last, just before committing.
    Returns the charged period (None when the key has no quota).
    """
    period = charged_period(key, now or utcnow())
    if period is not None:
        _take(session, key, period)
    return period


def charged_period(key: ApiKey, now: datetime) -> str | None:
    """The counter a submission of ``key`` made at ``now`` is charged to; None without a quota."""
    return None if key.quota_limit is None else period_key(key.quota_period, now)


def _take(session: Session, key: ApiKey, period: str) -> None:
    """The charge that answers (``RETURNING``): one unit of ``period``, or OUT_OF_QUOTA."""
    taken = None
    if key.quota_limit is not None and key.quota_limit > 0:
        connection = session.connection()
        taken = connection.execute(
            _charge_statement(connection.dialect.name),
            {"api_key_id": key.id, "period": period, "limit": key.quota_limit},
        ).first()
    if taken is None:
        raise out_of_quota(key, period)


def out_of_quota(key: ApiKey, period: str) -> ApiError:
    return ApiError(
        "OUT_OF_QUOTA",
        f"quota of {key.quota_limit} per {key.quota_period} used up"
        + ("" if key.quota_period == "total" else f" (period {period.split(':', 1)[1]})"),
    )


def charge_sql(source: str | None = None) -> str:
    """PostgreSQL's charge that fails rather than answers: ``INSERT … used = 1 ON CONFLICT DO
    UPDATE SET used = CASE WHEN used < limit THEN used + 1 END``. At the limit the new count is
    NULL, which the column's NOT NULL refuses: the statement fails, and so does its transaction.

    Psycopg's ``%(api_key_id)s``, ``%(period)s`` and ``%(limit)s`` parameters; it answers the
    new count. ``source``: a CTE of the statement it ends, charged once per row of it (which
    then runs before the charge); None charges once."""
    table = QuotaCounter.__tablename__
    return (
        f"INSERT INTO {table} AS c (api_key_id, period, used) "
        "SELECT %(api_key_id)s, %(period)s, 1" + (f" FROM {source}" if source else "") + " "
        "ON CONFLICT (api_key_id, period) DO UPDATE "
        "SET used = CASE WHEN c.used < %(limit)s THEN c.used + 1 END RETURNING c.used"
    )


def is_refusal(error: IntegrityError) -> bool:
    """Whether ``error`` is :func:`charge_sql`'s NULL count (and not another constraint)."""
    diag = getattr(error.orig, "diag", None)
    return (
        getattr(error.orig, "sqlstate", None) == "23502"  # not_null_violation
        and getattr(diag, "table_name", None) == QuotaCounter.__tablename__
        and getattr(diag, "column_name", None) == "used"
    )


def charge_and_commit(session: Session, key: ApiKey, period: str) -> None:
    """:func:`charge` the key's quota for ``period`` and commit the caller's transaction, or
    raise OUT_OF_QUOTA with nothing committed.

    On PostgreSQL the charge and the COMMIT go to the server together (one round trip), so the
    key's counter row stays locked only while the server runs them, not while this process
    reads the charge's answer and then sends the COMMIT: with many threads on few cores that
    wait was most of the lock's hold, and every submission of the key queued behind it. The
    charge cannot answer whether it was taken before the COMMIT is sent, so it fails instead
    (:func:`charge_sql`); the database still serialises the key's charges on the row.
    """
    if key.quota_limit is None:
        session.commit()
        return
    if key.quota_limit <= 0:
        raise out_of_quota(key, period)
    session.flush()  # the ORM's pending work, if any, before the statement that reads nothing
    params = {"api_key_id": key.id, "period": period, "limit": key.quota_limit}
    try:
        if commit_pipelined(session, charge_sql(), params):
            return
    except IntegrityError as error:
        if not is_refusal(error):
            raise
        session.rollback()
        raise out_of_quota(key, period) from None
    _take(session, key, period)  # SQLite: the charge that answers, then the commit
    session.commit()


def refund(session: Session, job_id: str) -> bool:
    """Give back the job's charge, at most once (the caller's transaction)."""
    marked = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.refunded_at.is_(None), Job.charged_period.is_not(None))
        .values(refunded_at=utcnow())
        .returning(Job.api_key_id, Job.charged_period)
    ).first()
    if marked is None:
        return False
    session.execute(
        update(QuotaCounter)
        .where(QuotaCounter.api_key_id == marked[0], QuotaCounter.period == marked[1])
        .values(used=QuotaCounter.used - 1)
    )
    return True


def used(session: Session, key: ApiKey, now: datetime | None = None) -> int:
    period = period_key(key.quota_period, now or utcnow())
    value = session.scalar(
        select(QuotaCounter.used).where(
            QuotaCounter.api_key_id == key.id, QuotaCounter.period == period
        )
    )
    return int(value or 0)


def used_now(session: Session, keys: Iterable[tuple[str, str]], now: datetime) -> dict[str, int]:
    """Quota used in the current period of each ``(api id, quota period)``, in one query; a key
    with no counter for its period is absent."""
    current = {key_id: period_key(period, now) for key_id, period in keys}
    if not current:
        return {}
    rows = session.execute(
        select(QuotaCounter.api_key_id, QuotaCounter.period, QuotaCounter.used).where(
            QuotaCounter.api_key_id.in_(list(current)),
            QuotaCounter.period.in_(set(current.values())),
        )
    )
    return {key_id: int(n) for key_id, period, n in rows if current[key_id] == period}


def daily_usage(
    session: Session, key_ids: list[str] | None, since: date
) -> dict[str, dict[str, dict[str, int]]]:
    """Per key and UTC day: accepted (by creation), succeeded/failed (by finish), refunded."""
    start = datetime(since.year, since.month, since.day, tzinfo=UTC)
    out: dict[str, dict[str, dict[str, int]]] = {}

    def add(kind: str, column: Any, *conditions: Any) -> None:
        day = func.date(column)
        query = (
            select(Job.api_key_id, day, func.count())
            .where(column >= start, *conditions)
            .group_by(Job.api_key_id, day)
        )
        if key_ids is not None:
            query = query.where(Job.api_key_id.in_(key_ids))
        for key_id, d, n in session.execute(query):
            days = out.setdefault(key_id, {})
            counts = days.setdefault(
                str(d), {"accepted": 0, "succeeded": 0, "failed": 0, "refunded": 0}
            )
            counts[kind] = int(n)

    add("accepted", Job.created_at)
    add("succeeded", Job.finished_at, Job.status == "SUCCEEDED")
    add("failed", Job.finished_at, Job.status == "FAILED")
    add("refunded", Job.refunded_at)
    return out


def key_usage(session: Session, key: ApiKey, days: int) -> dict[str, Any]:
    """Quota position and per-day counts of one key, oldest day first."""
    now = utcnow()
    since = (now - timedelta(days=days - 1)).date()
    per_day = daily_usage(session, [key.id], since).get(key.id, {})
    start, end = period_bounds(key.quota_period, now)
    n = used(session, key, now)
    limit = key.quota_limit
    return {
        "api_id": key.id,
        "period": key.quota_period,
        "period_key": period_key(key.quota_period, now),
        "period_start": iso(start),
        "period_end": iso(end),
        "used": n,
        "limit": limit,
        "remaining": None if limit is None else max(0, limit - n),
        "days": [{"date": d, **counts} for d, counts in sorted(per_day.items())],
    }
