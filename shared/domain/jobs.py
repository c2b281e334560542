"""Job lifecycle: QUEUED → RUNNING → SUCCEEDED | FAILED, each step an idempotent transition."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, and_, bindparam, insert, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from antihack.shared.domain.capture import CaptureLimits
from antihack.shared.domain.capture_sessions import (
    CaptureFacts,
    UploadGrant,
    redeem,
    spend_upload_token,
)
from antihack.shared.domain.errors import ApiError
from antihack.shared.domain.quota import (
    charge,
    charge_and_commit,
    charge_sql,
    charged_period,
    is_refusal,
    out_of_quota,
    refund,
)
from antihack.shared.domain.webhooks import Completion, completion_row
from antihack.shared.infra.db import Base, driver_rows, on_psycopg, rowcount
from antihack.shared.infra.secrets import new_request_id
from antihack.shared.infra.settings import Settings
from antihack.shared.infra.tables import (
    FAILED,
    PENDING,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    ApiKey,
    CaptureSession,
    Fingerprint,
    Job,
    JobInput,
    JobResult,
    RefundCounter,
    WebhookDelivery,
    iso,
    utcnow,
)

IDEMPOTENCY_WINDOW = timedelta(hours=24)
# An upload token's Idempotency-Key is stored under this prefix, its capture session's id and a
# digest of the key: the API takes only printable keys, so none of the key's own can start with it.
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


@dataclass(frozen=True)
class Accepted:
    """A submission's job as the API answers it; ``created`` is False for an Idempotency-Key
    replay (the original job, not charged again)."""

    id: str
    status: str
    created: bool
    # The quota period accept_job(defer_charge=True) left to commit_accepted to charge.
    charge_period: str | None = None


def accept_job(
    session: Session,
    key: ApiKey,
    sub: Submission,
    upload: UploadGrant | None = None,
    *,
    defer_charge: bool = False,
) -> Accepted:
    """Insert the job and its input and charge the quota (not committed).

    With an Idempotency-Key this key used in the last 24 h, the original job is returned
    instead (not charged again, no capture session redeemed again), or 422 if the payload
    differs. A capture with a session nonce, or any capture of a key that requires capture
    sessions, redeems its capture session in the same transaction; ``upload`` (a request
    authenticated by an upload token) spends the token there too, so a refused submission spends
    neither. An upload token's Idempotency-Key names jobs of its own capture session only
    (:func:`idempotency_scope`).

    The statements are Core ``INSERT``s (no unit of work), and the quota is charged last: the
    charge locks the key's counter row until the commit, which serialises the key's
    submissions, so nothing else of the transaction may run while it is held. With
    ``defer_charge`` a submission without an Idempotency-Key is not charged here: then
    :func:`commit_accepted` must end the transaction, and sends the charge with the COMMIT.
    """
    now = utcnow()
    idem = idempotency_scope(sub.idempotency_key, upload)
    job_id = new_request_id()
    if not idem:
        period = _insert(session, key, job_id, sub, upload, now, None, charge_now=not defer_charge)
        return Accepted(job_id, QUEUED, True, period if defer_charge else None)
    jobs = _table(Job)
    existing = _by_idempotency_key(session, key.id, idem)
    if existing is not None and existing.created_at > now - IDEMPOTENCY_WINDOW:
        return _same_or_conflict(existing, sub)
    if existing is not None:  # expired: the key may name a new job
        session.execute(update(jobs).where(jobs.c.id == existing.id).values(idempotency_key=None))
    try:
        # The insert, the redemption and the charge share a savepoint: losing the race below
        # undoes all three (the winner's job redeemed the session).
        with session.begin_nested():
            _insert(session, key, job_id, sub, upload, now, idem)
    except IntegrityError:
        # A concurrent request with the same key won the unique index: answer with its job.
        existing = _by_idempotency_key(session, key.id, idem)
        if existing is None:
            raise
        return _same_or_conflict(existing, sub)
    return Accepted(job_id, QUEUED, True)


def commit_accepted(session: Session, key: ApiKey, accepted: Accepted) -> None:
    """Commit :func:`accept_job`'s transaction; a charge it deferred goes with the COMMIT, in
    one round trip (:func:`antihack.shared.domain.quota.charge_and_commit`), or OUT_OF_QUOTA."""
    if accepted.charge_period is None:
        session.commit()
    else:
        charge_and_commit(session, key, accepted.charge_period)


def create_job(
    session: Session, key: ApiKey, sub: Submission, upload: UploadGrant | None = None
) -> tuple[Job, bool]:
    """:func:`accept_job`, answering the job as an ORM object: (job, created)."""
    accepted = accept_job(session, key, sub, upload)
    job = session.get(Job, accepted.id)
    assert job is not None
    return job, accepted.created


def idempotency_scope(idempotency_key: str | None, upload: UploadGrant | None) -> str | None:
    """What a submission's Idempotency-Key is stored (and looked up) as.

    The key's own credentials use it as given. A browser's upload token gets a namespace of
    its capture session: otherwise it could learn which keys the backend used (422 or 202, without
    spending the token) and claim one first, so that the backend's own submission fails.
    """
    if not idempotency_key or upload is None:
        return idempotency_key
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return f"{TOKEN_IDEMPOTENCY_PREFIX}{upload.session_id}:{digest}"


def _insert(
    session: Session,
    key: ApiKey,
    job_id: str,
    sub: Submission,
    upload: UploadGrant | None,
    now: datetime,
    idem: str | None,
    charge_now: bool = True,
) -> str | None:
    """Insert the job and its input, spend the upload token and redeem the capture session for
    it (both rows point at the job), then charge the quota (unless not ``charge_now``); returns
    the period charged (None without a quota)."""
    # Core on the session's connection, with statements made once: no unit of work, no ORM
    # execution layer (this is the API's hot path, every accepted request).
    period = charged_period(key, now)
    connection = session.connection()
    connection.execute(_insert_statement(Job, False), _job_row(key, job_id, sub, now, idem, period))
    connection.execute(_insert_statement(JobInput, False), _input_row(job_id, sub, now))
    if upload is not None:
        spend_upload_token(session, upload, job_id, now)
    if sub.capture.nonce or key.require_session:
        check = redeem(session, key.id, job_id, sub.capture, now)
        if check is not None:
            jobs = _table(Job)
            session.execute(update(jobs).where(jobs.c.id == job_id).values(session_check=check))
    if charge_now:
        charge(session, key, now)
    return period


def _job_row(
    key: ApiKey, job_id: str, sub: Submission, now: datetime, idem: str | None, period: str | None
) -> dict[str, Any]:
    """A new job's row (``period``: the quota period it is charged to, None without a quota)."""
    return dict(
        id=job_id,
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
        charged_period=period,
    )


def _input_row(job_id: str, sub: Submission, now: datetime) -> dict[str, Any]:
    return dict(job_id=job_id, payload=sub.payload, size=len(sub.payload), created_at=now)


def takes_one_statement(key: ApiKey, sub: Submission, upload: UploadGrant | None) -> bool:
    """Whether :func:`accept_in_one_statement` may accept this submission: one with no
    Idempotency-Key, no upload token and no capture session to redeem (the common case),
    which inserts its rows and charges, and reads nothing."""
    return (
        upload is None
        and not sub.idempotency_key
        and not sub.capture.nonce
        and not key.require_session
    )


def accept_in_one_statement(intake: Engine, key: ApiKey, sub: Submission) -> Accepted:
    """:func:`accept_job` and :func:`commit_accepted` for a submission
    :func:`takes_one_statement` allows, on PostgreSQL: the job, its input and the quota charge
    are one ``INSERT`` with two data-modifying CTEs, run in autocommit (``intake``: an engine
    in autocommit), so one round trip commits them, or OUT_OF_QUOTA commits nothing.

    The charge runs last (it reads its row from the input's insert), so the key's counter row
    is locked for the charge and the commit only, as with :func:`charge_and_commit`. A
    connection found dead is tried once more with the same job id: if the first try had
    committed after all (the server's answer lost), the second meets the job's primary key
    and the job stands as accepted, charged once.
    """
    now = utcnow()
    job_id = new_request_id()
    period = charged_period(key, now)
    if key.quota_limit is not None and key.quota_limit <= 0:
        raise out_of_quota(key, period or "")
    naive = _naive(now)
    row = _job_row(key, job_id, sub, naive, None, period)
    input_row = _input_row(job_id, sub, naive)
    sql = _one_statement_sql(tuple(row), tuple(input_row), key.quota_limit is not None)
    params = dict(row, limit=key.quota_limit, period=period)
    params.update({f"input_{name}": value for name, value in input_row.items()})
    for retry in (False, True):
        try:
            with intake.connect() as connection:
                driver_rows(connection, sql, params)
            break
        except IntegrityError as error:
            if is_refusal(error):
                raise out_of_quota(key, period or "") from None
            if not (retry and _constraint(error) == f"pk_{Job.__tablename__}"):
                raise
            break  # the first try committed: this job, charged once
        except DBAPIError as error:
            if retry or not error.connection_invalidated:
                raise
    return Accepted(job_id, QUEUED, True)


def _constraint(error: DBAPIError) -> str | None:
    return getattr(getattr(error.orig, "diag", None), "constraint_name", None)


@functools.cache
def _one_statement_sql(
    job_columns: tuple[str, ...], input_columns: tuple[str, ...], charged: bool
) -> str:
    """:func:`accept_in_one_statement`'s statement (the columns: its rows'): the job's insert,
    then its input's (its job id read from the job's insert, so after it), then the charge
    (:func:`charge_sql`, reading the input's)."""
    inputs = [c for c in input_columns if c != "job_id"]
    job = (
        f"INSERT INTO {Job.__tablename__} ({', '.join(job_columns)}) "
        f"VALUES ({', '.join(f'%({c})s' for c in job_columns)}) RETURNING id"
    )
    job_input = (
        f"INSERT INTO {JobInput.__tablename__} (job_id, {', '.join(inputs)}) "
        f"SELECT id, {', '.join(f'%(input_{c})s' for c in inputs)} FROM job RETURNING job_id"
    )
    last = charge_sql("input") if charged else "SELECT job_id FROM input"
    return f"WITH job AS ({job}), input AS ({job_input}) {last}"


def _by_idempotency_key(session: Session, key_id: str, idem: str) -> Any:
    """The job that holds ``idem`` for this key: a row of (id, status, created_at,
    payload_sha256), or None."""
    jobs = _table(Job)
    return session.execute(
        select(jobs.c.id, jobs.c.status, jobs.c.created_at, jobs.c.payload_sha256).where(
            jobs.c.api_key_id == key_id, jobs.c.idempotency_key == idem
        )
    ).first()


def _same_or_conflict(job: Any, sub: Submission) -> Accepted:
    if job.payload_sha256 != sub.fingerprint:
        raise ApiError(
            "INVALID_ARGUMENT",
            "Idempotency-Key already used with a different payload",
            http_code=422,
        )
    return Accepted(str(job.id), str(job.status), False)


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
    # Whether the job had a webhook endpoint when it was claimed (its callback_url or its key's
    # webhook_url); True where unknown. Without one its result may go by finish_quiet_jobs.
    webhook: bool = True


@dataclass(frozen=True)
class ClaimedJob:
    """A claim and what analysing its job needs, read by the statement that took it."""

    claim: Claim
    payload: bytes | None  # None: the input was deleted (retention)
    return_image: bool
    return_extra: bool
    session_check: str | None  # a failed capture session check, decided at submission
    light: Any  # the LIGHT colours of the capture session the job redeemed (JSON), or None
    require_signed: bool
    sdk_secret_enc: str


@dataclass(frozen=True)
class Finished:
    """A result recorded by the attempt that owned the job, with its webhook delivery if any:
    its id and status (``pending``, or ``disabled`` for an endpoint that may not receive)."""

    delivery_id: str | None = None
    delivery_status: str | None = None

    @property
    def webhook_due(self) -> bool:
        """A delivery to send now (not one recorded as disabled)."""
        return self.delivery_id is not None and self.delivery_status == PENDING


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt records when it finishes (:func:`finish_jobs`)."""

    claim: Claim
    body: dict[str, Any]
    reasons: list[str] | None = None
    model_versions: dict[str, str] | None = None
    stage_ms: dict[str, float] | None = None
    failed_steps: list[dict[str, str]] | None = None
    # INTERNAL_ERROR refunds of the key's day past which this one stays charged (None: no limit).
    refund_limit: int | None = None


def claim(
    session: Session,
    job_id: str,
    lease: timedelta,
    max_attempts: int,
    *,
    refund_limit: int | None = None,
) -> Claim | None:
    """:func:`claim_jobs` for one job, without what it read (not committed)."""
    taken = claim_jobs(session, [job_id], lease, max_attempts, refund_limit=refund_limit)
    return taken[job_id].claim if job_id in taken else None


def claim_jobs(
    session: Session,
    job_ids: Sequence[str],
    lease: timedelta,
    max_attempts: int,
    *,
    refund_limit: int | None = None,
) -> dict[str, ClaimedJob]:
    """Move the QUEUED ones of ``job_ids`` to RUNNING for this worker and read what analysing
    them needs, in one ``UPDATE … RETURNING`` (not committed). Returns the jobs that are ours to
    run; the others are absent.

    A RUNNING job is never taken over here, even when redelivered: its lease may still belong to
    a live worker. The sweeper requeues it when the lease has passed. A job past
    ``max_attempts`` is failed here (``refund_limit``: see :class:`AttemptResult`) and absent.
    The claim is one statement for any number of jobs: a threads-pool worker claims the jobs
    its threads were handed together (worker/bookkeeping.py).
    """
    taken, exhausted = take_jobs(
        session.connection(), job_ids, lease, max_attempts, refund_limit=refund_limit
    )
    if exhausted:
        finish_jobs(session, exhausted)
    return taken


def take_jobs(
    connection: Connection,
    job_ids: Sequence[str],
    lease: timedelta,
    max_attempts: int,
    *,
    refund_limit: int | None = None,
) -> tuple[dict[str, ClaimedJob], list[AttemptResult]]:
    """The statement of :func:`claim_jobs`: the jobs taken, and the results that fail those
    past ``max_attempts``, for the caller to record (:func:`finish_jobs`, in a transaction).

    Being one statement, it may run on a connection in autocommit, where it commits alone at
    once (no BEGIN and COMMIT round trips): the worker's way. Its commit never waits for the
    disk (PostgreSQL): a claim lost in a database crash leaves the job as it was (QUEUED, its
    attempts with it); the worker's record then matches no RUNNING attempt and writes nothing,
    and the sweeper publishes the job again. The result's commit (finish_jobs) stays
    synchronous: that one must not be lost once acknowledged.
    """
    if not job_ids:
        return {}, []
    now = utcnow()
    if on_psycopg(connection):
        rows = driver_rows(
            connection,
            _PG_CLAIM,
            {
                "job_ids": list(job_ids),
                "now": _naive(now),
                "lease_until": _naive(now + lease),
                "queued": QUEUED,
                "running": RUNNING,
            },
        )
    else:
        params: dict[str, Any] = {"claimed_at": now, "lease_until": now + lease}
        if len(job_ids) == 1:
            params.update(job_id=job_ids[0])
        else:
            params.update(job_ids=list(job_ids))
        # A Core statement on the connection: none of the session's execution layer.
        rows = [
            (*row, True) for row in connection.execute(_claim_statement(len(job_ids) == 1), params)
        ]
    taken: dict[str, ClaimedJob] = {}
    exhausted: list[AttemptResult] = []
    for job_id, attempt, key_id, image, extra, check, payload, light, signed, secret, hook in rows:
        owned = Claim(str(job_id), int(attempt), str(key_id), bool(hook))
        if owned.attempt > max_attempts:
            body = error_body(
                owned.job_id, "INTERNAL_ERROR", f"the job failed {max_attempts} times"
            )
            exhausted.append(
                AttemptResult(
                    owned, body, reasons=["attempts_exhausted"], refund_limit=refund_limit
                )
            )
            continue
        taken[owned.job_id] = ClaimedJob(
            owned,
            payload,
            bool(image),
            bool(extra),
            check,
            light,
            bool(signed),
            str(secret),
        )
    return taken, exhausted


# The claim on PostgreSQL, run on the driver (``driver_rows``); the same as _claim_statement
# for any number of jobs (``= ANY``: one statement text, prepared once per connection), and
# also telling whether the job has a webhook endpoint. set_config makes its commit
# asynchronous (take_jobs) without a SET statement of its own: it is the claim's transaction
# that commits, in autocommit too, before the setting ends with it.
_PG_CLAIM = """
UPDATE jobs SET status = %(running)s, attempts = jobs.attempts + 1,
    started_at = %(now)s, lease_expires_at = %(lease_until)s
FROM api_keys AS k
WHERE jobs.id = ANY(CAST(%(job_ids)s AS varchar[])) AND jobs.status = %(queued)s
    AND k.id = jobs.api_key_id
    AND set_config('synchronous_commit', 'off', true) IS NOT NULL
RETURNING jobs.id, jobs.attempts, jobs.api_key_id, jobs.return_image, jobs.return_extra,
    jobs.session_check,
    (SELECT i.payload FROM job_inputs AS i WHERE i.job_id = jobs.id),
    (SELECT s.light FROM capture_sessions AS s WHERE s.job_id = jobs.id LIMIT 1),
    k.require_signed, k.sdk_secret_enc,
    coalesce(jobs.callback_url, '') <> '' OR coalesce(k.webhook_url, '') <> ''
"""


def _naive(value: datetime) -> datetime:
    """A UTC datetime as the UTCDateTime columns store it, for a statement on the driver."""
    return value.astimezone(UTC).replace(tzinfo=None)


def _aware(value: datetime | None) -> datetime | None:
    """A datetime read on the driver from a UTCDateTime column, as SQLAlchemy gives it."""
    return None if value is None else value.replace(tzinfo=UTC)


@functools.cache
def _claim_statement(one: bool) -> Any:
    """The claim of :func:`claim_jobs`, built once: a Core ``UPDATE … RETURNING`` on the tables
    (no unit of work, no ORM synchronisation), its values bound per call. ``one``: for a single
    job, ``id = :id`` rather than an expanding ``IN`` (rendered anew on every execution)."""
    jobs, inputs, keys, capture_sessions = map(_table, (Job, JobInput, ApiKey, CaptureSession))

    def key_column(column: Any) -> Any:
        return select(column).where(keys.c.id == jobs.c.api_key_id).scalar_subquery()

    return (
        update(jobs)
        .where(
            jobs.c.id == bindparam("job_id")
            if one
            else jobs.c.id.in_(bindparam("job_ids", expanding=True)),
            jobs.c.status == QUEUED,
        )
        .values(
            status=RUNNING,
            attempts=jobs.c.attempts + 1,
            started_at=bindparam("claimed_at"),
            lease_expires_at=bindparam("lease_until"),
        )
        .returning(
            jobs.c.id,
            jobs.c.attempts,
            jobs.c.api_key_id,
            jobs.c.return_image,
            jobs.c.return_extra,
            jobs.c.session_check,
            select(inputs.c.payload).where(inputs.c.job_id == jobs.c.id).scalar_subquery(),
            select(capture_sessions.c.light)
            .where(capture_sessions.c.job_id == jobs.c.id)
            .limit(1)
            .scalar_subquery(),
            key_column(keys.c.require_signed),
            key_column(keys.c.sdk_secret_enc),
        )
    )


@functools.cache
def _finish_statement(one: bool) -> Any:
    """The move of :func:`finish_jobs`' jobs that share a result status, built once (``one``:
    see :func:`_claim_statement`)."""
    jobs, keys = _table(Job), _table(ApiKey)
    owner = (
        and_(jobs.c.id == bindparam("job_id"), jobs.c.attempts == bindparam("attempt"))
        if one
        else tuple_(jobs.c.id, jobs.c.attempts).in_(bindparam("owners", expanding=True))
    )
    return (
        update(jobs)
        .where(owner, jobs.c.status == RUNNING)
        .values(
            status=bindparam("final"),
            finished_at=bindparam("finished"),
            lease_expires_at=None,
            result_status=bindparam("result"),
        )
        .returning(
            jobs.c.id,
            # What deciding the job's webhook delivery needs (webhooks.Completion): no query
            # of the job or its key afterwards.
            jobs.c.api_key_id,
            jobs.c.callback_url,
            *(
                select(column).where(keys.c.id == jobs.c.api_key_id).scalar_subquery()
                for column in (keys.c.webhook_url, keys.c.revoked_at, keys.c.webhook_disabled_at)
            ),
        )
    )


def _insert_rows(connection: Connection, model: type[Base], rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` into ``model``'s table with one Core statement, built once per table."""
    if len(rows) == 1:
        connection.execute(_insert_statement(model, False), rows[0])
    elif rows:
        connection.execute(_insert_statement(model, True), rows)


@functools.cache
def _insert_statement(model: type[Base], many: bool) -> Any:
    """``many``: with a ``RETURNING``, which makes a list of rows one multi-row
    ``INSERT … VALUES (…), (…)`` (SQLAlchemy's "insertmanyvalues") rather than one statement
    per row."""
    table = _table(model)
    statement = insert(table)
    return statement.returning(*table.primary_key.columns) if many else statement


def sessions_seen(session: Session | Connection, asked: Sequence[tuple[Claim, str]]) -> set[str]:
    """The jobs of ``asked`` (a claim and its capture's session id) whose key submitted that
    session id in another job before, in one query. Session ids are chosen by the client, so
    two partners' ids may coincide: they are compared per key."""
    pairs = [(owned.api_key_id, sid[:100]) for owned, sid in asked if sid]
    if not pairs:
        return set()
    connection = session if isinstance(session, Connection) else session.connection()
    if on_psycopg(connection):
        rows: Any = driver_rows(
            connection,
            _PG_SEEN,
            {"keys": [k for k, _ in pairs], "values": [v for _, v in pairs], "kind": "session"},
        )
    else:
        rows = connection.execute(_seen_statement(), {"pairs": pairs})
    found: dict[tuple[str, str], set[str]] = {}
    for key_id, value, job_id in rows:
        found.setdefault((str(key_id), str(value)), set()).add(str(job_id))
    return {
        owned.job_id
        for owned, sid in asked
        if found.get((owned.api_key_id, sid[:100]), set()) - {owned.job_id}
    }


# sessions_seen on PostgreSQL, run on the driver: the same as _seen_statement, one text for
# any number of pairs.
_PG_SEEN = """
SELECT f.api_key_id, f.value, f.job_id
FROM unnest(CAST(%(keys)s AS varchar[]), CAST(%(values)s AS varchar[])) AS q(api_key_id, value)
JOIN fingerprints AS f
    ON f.api_key_id = q.api_key_id AND f.kind = %(kind)s AND f.value = q.value
"""


@functools.cache
def _seen_statement() -> Any:
    prints = _table(Fingerprint).c
    return select(prints.api_key_id, prints.value, prints.job_id).where(
        prints.kind == "session",
        tuple_(prints.api_key_id, prints.value).in_(bindparam("pairs", expanding=True)),
    )


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


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
    """:func:`finish_jobs` for one attempt: its Finished, or None if it lost the job."""
    outcome = AttemptResult(
        claim, body, reasons, model_versions, stage_ms, failed_steps, refund_limit
    )
    return finish_jobs(session, [outcome]).get(claim.job_id)


def finish_jobs(session: Session, outcomes: Sequence[AttemptResult]) -> dict[str, Finished]:
    """Record each result whose attempt still owns its job (not committed); returns those
    recorded, by job id. An attempt that lost its job (its lease ran out and another attempt
    took it) is absent and changes nothing.

    The job rows are moved by one ``UPDATE`` guarded by (id, attempt) and the results added by
    one ``INSERT``, for any number of jobs (on PostgreSQL one statement does both, on the
    driver); a job whose result has a webhook endpoint gets its delivery in the same
    transaction (the outbox), decided by ``webhooks.completion_row`` from what the
    ``UPDATE … RETURNING`` read (the callback_url, the key's webhook fields) and written by one
    more ``INSERT``. All Core statements built once, on the session's connection (no unit of
    work). An INTERNAL_ERROR is refunded (once: ``refund`` is conditional on the job row),
    unless the key had the result's ``refund_limit`` refunds today already (None or negative:
    no limit).
    """
    if not outcomes:
        return {}
    _one_per_job(outcomes)
    now = utcnow()
    connection = session.connection()  # Core statements: no unit of work, no ORM layer
    moved: list[Any] = []
    rest = list(outcomes)
    if on_psycopg(connection):
        moved += _finish_at_once(connection, [o for o in rest if not _refundable(o)], now, False)
        rest = [o for o in rest if _refundable(o)]
    moved += _move_and_store(session, rest, now)
    if not moved:
        return {}
    # The webhook deliveries (the outbox), in the same transaction, decided from what the
    # UPDATE returned: one INSERT for all of them, nothing read.
    finished: dict[str, Finished] = {}
    deliveries = []
    for job_id, key_id, callback_url, webhook_url, revoked_at, disabled_at in moved:
        done = Completion(
            str(job_id), str(key_id), callback_url, webhook_url, revoked_at, disabled_at
        )
        row = completion_row(done, now)
        if row is None:
            finished[done.job_id] = Finished()
            continue
        deliveries.append(row)
        finished[done.job_id] = Finished(row["id"], row["status"])
    _insert_rows(connection, WebhookDelivery, deliveries)
    return finished


def finish_quiet_jobs(
    connection: Connection, outcomes: Sequence[AttemptResult]
) -> dict[str, Finished]:
    """Record, in one statement, those of ``outcomes`` that bring nothing but their result: no
    refund (not INTERNAL_ERROR) and no webhook delivery (claimed without an endpoint, and the
    statement checks that the job and its key still have none). Returns those recorded, as
    :func:`finish_jobs` does; the others are left as they were, for finish_jobs.

    Being one statement, it may run on a connection in autocommit, where it commits alone
    (synchronously: a result is never lost once recorded), without BEGIN and COMMIT round
    trips: the worker's way for most results. PostgreSQL only; elsewhere it records nothing.
    """
    quiet = [o for o in outcomes if not o.claim.webhook and not _refundable(o)]
    if not quiet or not on_psycopg(connection):
        return {}
    _one_per_job(quiet)
    moved = _finish_at_once(connection, quiet, utcnow(), True)
    return {str(row[0]): Finished() for row in moved}


def _one_per_job(outcomes: Sequence[AttemptResult]) -> None:
    if len({o.claim.job_id for o in outcomes}) != len(outcomes):
        raise ValueError("one result per job in a call")


def _refundable(outcome: AttemptResult) -> bool:
    """An INTERNAL_ERROR: our fault, refunded (``_refund``, statements of its own)."""
    return outcome.body.get("status") == "INTERNAL_ERROR"


# finish_jobs on PostgreSQL for results without a refund: the job rows moved (guarded by id
# and attempt, as _finish_statement) and the results inserted for those moved, one statement
# for any number of jobs, run on the driver; the results travel as one JSON document.
# ``quiet``: only jobs without a webhook endpoint (finish_quiet_jobs); the others stay RUNNING.
_PG_FINISH = """
WITH done AS (
    SELECT * FROM json_to_recordset(CAST(%(done)s AS json)) AS d(
        job_id varchar, attempt integer, final varchar, result varchar, body json,
        reasons json, model_versions json, stage_ms json, failed_steps json)
), moved AS (
    UPDATE jobs SET status = done.final, finished_at = %(now)s, lease_expires_at = NULL,
        result_status = done.result
    FROM done, api_keys AS k
    WHERE jobs.id = ANY(CAST(%(job_ids)s AS varchar[])) AND jobs.status = %(running)s
        AND done.job_id = jobs.id AND done.attempt = jobs.attempts AND k.id = jobs.api_key_id
        AND NOT (%(quiet)s AND (coalesce(jobs.callback_url, '') <> ''
                                OR coalesce(k.webhook_url, '') <> ''))
    RETURNING jobs.id, jobs.api_key_id, jobs.callback_url, k.webhook_url, k.revoked_at,
        k.webhook_disabled_at
), stored AS (
    INSERT INTO job_results (job_id, body, reasons, model_versions, stage_ms, failed_steps,
        created_at)
    SELECT done.job_id, done.body, done.reasons, done.model_versions, done.stage_ms,
        done.failed_steps, %(now)s
    FROM done JOIN moved ON moved.id = done.job_id
)
SELECT * FROM moved
"""


def _finish_at_once(
    connection: Connection, outcomes: Sequence[AttemptResult], now: datetime, quiet: bool
) -> list[Any]:
    """_PG_FINISH for ``outcomes`` (none refunded); the moved jobs' rows, as _finish_statement
    returns them."""
    if not outcomes:
        return []
    done = []
    for o in outcomes:
        status = str(o.body.get("status"))
        done.append(
            {
                "job_id": o.claim.job_id,
                "attempt": o.claim.attempt,
                "final": SUCCEEDED if status == "OK" else FAILED,
                "result": status,
                "body": o.body,
                "reasons": o.reasons or [],
                "model_versions": o.model_versions or {},
                "stage_ms": o.stage_ms or {},
                "failed_steps": o.failed_steps or [],
            }
        )
    params = {
        "done": json.dumps(done),
        "job_ids": [o.claim.job_id for o in outcomes],
        "now": _naive(now),
        "running": RUNNING,
        "quiet": quiet,
    }
    rows = driver_rows(connection, _PG_FINISH, params)
    return [(*row[:4], _aware(row[4]), _aware(row[5])) for row in rows]


def _move_and_store(
    session: Session, outcomes: Sequence[AttemptResult], now: datetime
) -> list[Any]:
    """finish_jobs' Core statements: the job rows moved (one UPDATE per result status), the
    INTERNAL_ERRORs refunded, the results inserted. Returns the moved jobs' rows."""
    if not outcomes:
        return []
    connection = session.connection()
    by_status: dict[str, list[tuple[str, int]]] = {}
    for o in outcomes:
        by_status.setdefault(str(o.body.get("status")), []).append(
            (o.claim.job_id, o.claim.attempt)
        )
    moved: list[Any] = []
    for result_status, owners in by_status.items():  # one statement unless the statuses differ
        final = SUCCEEDED if result_status == "OK" else FAILED
        params = {"final": final, "finished": now, "result": result_status}
        if len(owners) == 1:
            params.update(job_id=owners[0][0], attempt=owners[0][1])
        else:
            params.update(owners=owners)
        moved += connection.execute(_finish_statement(len(owners) == 1), params).all()
    owned = {str(row[0]) for row in moved}
    results = []
    for o in outcomes:
        if o.claim.job_id not in owned:
            continue
        body, reasons = o.body, o.reasons or []
        limit = o.refund_limit
        if _refundable(o) and not _refund(session, o.claim, limit, now):
            # Failing every attempt is what a capture built to time out or crash the worker
            # does: past the limit its sender pays for it, as for any other analysis.
            body = {
                **body,
                "reason": f"{body.get('reason')}; not refunded: this API key had {limit} "
                "failed jobs refunded today (ANTIHACK_POISON_REFUND_LIMIT)",
            }
            reasons = [*reasons, "refund_limit_reached"]
        results.append(
            {
                "job_id": o.claim.job_id,
                "body": body,
                "reasons": reasons,
                "model_versions": o.model_versions or {},
                "stage_ms": o.stage_ms or {},
                "failed_steps": o.failed_steps or [],
                "created_at": now,
            }
        )
    _insert_rows(connection, JobResult, results)
    return moved


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
