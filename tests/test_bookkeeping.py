"""A threads-pool worker's job bookkeeping (worker/bookkeeping.py, domain/jobs.py): the requests
that queue while a statement runs go together into the next one, each job is still claimed
once and recorded only by the attempt that owns it, and a bad request fails alone."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update

from antihack.shared.domain import webhooks
from antihack.shared.domain.jobs import AttemptResult, claim_jobs, finish_jobs, sessions_seen
from antihack.shared.infra.db import driver_rows, kept_connections, transaction
from antihack.shared.infra.settings import Settings
from antihack.shared.infra.tables import ApiKey, Fingerprint, Job, JobResult, WebhookDelivery
from antihack.worker.bookkeeping import Bookkeeper, Books, GroupLane, Recording
from tests.conftest import Key
from tests.devstack import wait_until
from tests.helpers import new_jobs, quota_used

LEASE = timedelta(seconds=60)


def test_requests_queued_during_a_batch_run_together_in_the_next() -> None:
    release = threading.Event()
    batches: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        batches.append(items)
        release.wait(30)  # the first batch holds the lane while the others queue
        return [i * 10 for i in items]

    lane: GroupLane[int, int] = GroupLane("test", run, key=lambda i: i % 100, max_batch=4)
    with ThreadPoolExecutor(7) as pool:
        first = pool.submit(lane.submit, 0)
        wait_until(lambda: batches, 10, "the first batch")
        # 5 and 105 share a key: the second waits for a later batch.
        rest = [pool.submit(lane.submit, i) for i in (1, 2, 5, 105, 3)]
        wait_until(lambda: len(lane._queue) == 5, 10, "the queued requests")
        release.set()
        answers = [first.result(), *(f.result() for f in rest)]
    lane.close()
    assert answers == [0, 10, 20, 50, 1050, 30]
    assert batches[0] == [0]
    assert sorted(batches[1]) == [1, 2, 3, 5]  # four at most, 105 not with 5
    assert batches[2:] == [[105]]
    assert lane.stats.max_requests == 4


def test_a_failed_batch_is_retried_one_by_one_so_only_the_bad_request_fails() -> None:
    release = threading.Event()
    calls: list[list[str]] = []

    def run(items: list[str]) -> list[str]:
        calls.append(items)
        release.wait(30)
        if "bad" in items:
            raise ValueError("bad request")
        return [s.upper() for s in items]

    lane: GroupLane[str, str] = GroupLane("test", run, key=lambda s: s)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(lane.submit, "first")
        wait_until(lambda: calls, 10, "the first batch")
        rest = [pool.submit(lane.submit, s) for s in ("a", "bad", "b")]
        wait_until(lambda: len(lane._queue) == 3, 10, "the queued requests")
        release.set()
        assert first.result() == "FIRST"
        assert [rest[0].result(), rest[2].result()] == ["A", "B"]
        with pytest.raises(ValueError, match="bad request"):
            rest[1].result()
    lane.close()
    assert sorted(calls[1]) == ["a", "b", "bad"] and len(calls) == 5  # the batch, then each


def test_concurrent_claims_take_each_job_once_and_results_are_recorded_by_their_owner(
    sessions: Any, key: Key
) -> None:
    ids = new_jobs(sessions, key.api_id, 6)
    keeper = Bookkeeper(sessions, LEASE, max_attempts=3, refund_limit=None)
    try:
        # Every job delivered twice, all at once: one delivery of each runs it.
        with ThreadPoolExecutor(12) as pool:
            claims = list(pool.map(keeper.claim, ids + ids))
        taken = [c for c in claims if c is not None]
        assert sorted(c.claim.job_id for c in taken) == sorted(ids)
        assert all(c.claim.attempt == 1 and c.payload for c in taken)

        # The last job's lease ran out and another attempt took it: the first one lost it.
        with transaction(sessions) as s:
            s.execute(update(Job).where(Job.id == ids[-1]).values(status="QUEUED"))
            [again] = claim_jobs(s, [ids[-1]], LEASE, 3).values()
        assert again.claim.attempt == 2

        def record(c: Any) -> Any:
            body = {"status": "OK", "request_id": c.claim.job_id, "score": 0.5}
            return keeper.record(Recording(AttemptResult(c.claim, body, reasons=["r"])))

        with ThreadPoolExecutor(6) as pool:
            recorded = pool.map(record, taken)
            finished = dict(zip([c.claim.job_id for c in taken], recorded, strict=True))
    finally:
        keeper.close()
    assert finished[ids[-1]] is None  # lost its job: nothing recorded
    assert all(finished[j] is not None and not finished[j].webhook_due for j in ids[:-1])
    with transaction(sessions) as s:
        rows = {r.job_id: r for r in s.scalars(select(JobResult).where(JobResult.job_id.in_(ids)))}
        status = {j: st for j, st in s.execute(select(Job.id, Job.status).where(Job.id.in_(ids)))}
    assert sorted(rows) == sorted(ids[:-1])
    assert all(rows[j].body["request_id"] == j and rows[j].reasons == ["r"] for j in ids[:-1])
    assert [status[j] for j in ids] == ["SUCCEEDED"] * 5 + ["RUNNING"]


def test_one_call_records_one_result_per_job(sessions: Any, key: Key) -> None:
    [job_id] = new_jobs(sessions, key.api_id)
    with transaction(sessions) as s:
        [owned] = claim_jobs(s, [job_id], LEASE, 3).values()
    body = {"status": "OK", "request_id": job_id}
    with transaction(sessions) as s, pytest.raises(ValueError, match="one result per job"):
        finish_jobs(s, [AttemptResult(owned.claim, body), AttemptResult(owned.claim, body)])


def test_a_session_id_is_seen_when_its_key_sent_it_in_another_job(
    sessions: Any, make_key: Any
) -> None:
    a, b = make_key(), make_key()
    first, again = new_jobs(sessions, a.api_id, 2)
    [other_key] = new_jobs(sessions, b.api_id)
    with transaction(sessions) as s:
        s.add(Fingerprint(kind="session", value="s1", api_key_id=a.api_id, job_id=first))
        claims = {
            c.claim.job_id: c.claim
            for c in claim_jobs(s, [first, again, other_key], LEASE, 3).values()
        }
    asked = [(claims[first], "s1"), (claims[again], "s1"), (claims[other_key], "s1")]
    with transaction(sessions) as s:
        assert sessions_seen(s, asked) == {again}  # not its own job, not another key's
    keeper = Bookkeeper(sessions, LEASE, max_attempts=3, refund_limit=None)
    try:
        with ThreadPoolExecutor(3) as pool:
            seen = list(pool.map(lambda q: keeper.seen_before(*q), asked))
    finally:
        keeper.close()
    assert seen == [False, True, False]


def test_result_charge_and_webhook_row_commit_together_or_not_at_all(
    sessions: Any, key: Key
) -> None:
    """A record whose transaction fails after finish_jobs (the commit never comes) leaves
    neither the result nor the webhook delivery, and the job RUNNING for its attempt: a
    redelivery's attempt records it once."""
    [job_id] = new_jobs(sessions, key.api_id)
    with transaction(sessions) as s:
        s.execute(update(Job).where(Job.id == job_id).values(callback_url="http://127.0.0.1:9/h"))
        [owned] = claim_jobs(s, [job_id], LEASE, 3).values()
    body = {"status": "OK", "request_id": job_id, "score": 0.5}
    with pytest.raises(RuntimeError, match="crash"), transaction(sessions) as s:
        assert finish_jobs(s, [AttemptResult(owned.claim, body)])[job_id].webhook_due
        raise RuntimeError("crash before the commit")

    def state() -> tuple[Any, int, int]:
        with transaction(sessions) as s:
            status = s.scalar(select(Job.status).where(Job.id == job_id))
            results = len(s.scalars(select(JobResult).where(JobResult.job_id == job_id)).all())
            hooks = s.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id))
            return status, results, len(hooks.all())

    assert state() == ("RUNNING", 0, 0)
    with transaction(sessions) as s:
        assert finish_jobs(s, [AttemptResult(owned.claim, body)])[job_id].webhook_due
    with transaction(sessions) as s:
        assert finish_jobs(s, [AttemptResult(owned.claim, body)]) == {}  # recorded already
    assert state() == ("SUCCEEDED", 1, 1)


def books(sessions: Any) -> Books:
    """The worker's bookkeeping as a prefork process has it: connections kept in autocommit
    for what is one statement (PostgreSQL; transactions on SQLite)."""
    return Books(sessions, kept_connections(sessions.kw["bind"]), LEASE, 3, refund_limit=None)


def test_a_result_whose_key_gained_a_webhook_since_the_claim_gets_its_delivery(
    sessions: Any, make_key: Any
) -> None:
    """A result without replay rows, refund or webhook is recorded by one statement on its
    own; the statement checks that the job still has no endpoint, so a key given a webhook_url
    between the claim and the result still gets its delivery, in the result's transaction."""
    plain, hooked = make_key(), make_key()
    [quiet] = new_jobs(sessions, plain.api_id)
    [loud] = new_jobs(sessions, hooked.api_id)
    keeper = books(sessions)
    taken = keeper.claim([quiet, loud])
    if keeper.autocommit is not None:  # PostgreSQL: the claim says whether a webhook is due
        assert not taken[quiet].claim.webhook and not taken[loud].claim.webhook
    with transaction(sessions) as s:
        s.execute(
            update(ApiKey)
            .where(ApiKey.id == hooked.api_id)
            .values(webhook_url="http://127.0.0.1:9/hook")
        )
    body = {"status": "OK", "score": 0.5}
    done = keeper.record(
        [Recording(AttemptResult(taken[j].claim, {**body, "request_id": j})) for j in (quiet, loud)]
    )
    assert not done[quiet].webhook_due and done[loud].webhook_due
    with transaction(sessions) as s:
        hooks = s.scalars(select(WebhookDelivery.job_id)).all()
        results = s.scalars(select(JobResult.job_id).where(JobResult.job_id.in_([quiet, loud])))
        assert sorted(results.all()) == sorted([quiet, loud])
    assert loud in hooks and quiet not in hooks
    assert keeper.record([Recording(AttemptResult(taken[quiet].claim, body))]) == {}  # once


def test_a_claim_past_its_attempts_fails_the_job_and_refunds_it(
    sessions: Any, make_key: Any
) -> None:
    key = make_key(quota=10, quota_period="total")
    [job_id] = new_jobs(sessions, key.api_id)
    assert quota_used(sessions, key.api_id) == 1
    with transaction(sessions) as s:
        s.execute(update(Job).where(Job.id == job_id).values(attempts=3))
    assert books(sessions).claim([job_id]) == {}
    with transaction(sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.status == "FAILED" and job.result is not None
        assert job.result.body["status"] == "INTERNAL_ERROR"
        assert job.result.reasons == ["attempts_exhausted"]
    assert quota_used(sessions, key.api_id) == 0


def test_a_delivery_is_claimed_for_sending_once(
    sessions: Any, base_settings: Settings, make_key: Any
) -> None:
    key = make_key()
    [job_id] = new_jobs(sessions, key.api_id)
    with transaction(sessions) as s:
        s.execute(update(Job).where(Job.id == job_id).values(callback_url="http://127.0.0.1:9/h"))
    keeper = books(sessions)
    owned = keeper.claim([job_id])[job_id].claim
    done = keeper.record([Recording(AttemptResult(owned, {"status": "OK", "request_id": job_id}))])
    delivery_id = done[job_id].delivery_id
    assert delivery_id is not None and done[job_id].webhook_due
    lease = webhooks.claim_lease(base_settings)
    token = keeper.claim_delivery(delivery_id, lease)
    assert token is not None
    assert keeper.claim_delivery(delivery_id, lease) is None  # taken: not due until the lease ends
    with transaction(sessions) as s:
        delivery = s.get(WebhookDelivery, delivery_id)
        assert delivery is not None and delivery.claim_token == token


def test_a_kept_connection_the_server_ended_is_replaced(sessions: Any, key: Key) -> None:
    engine = sessions.kw["bind"]
    if engine.dialect.name != "postgresql":
        pytest.skip("connections are kept on PostgreSQL only")
    first, second = new_jobs(sessions, key.api_id, 2)
    keeper = books(sessions)
    assert keeper.autocommit is not None
    assert first in keeper.claim([first])
    pid = keeper.autocommit.run(lambda c: driver_rows(c, "SELECT pg_backend_pid()", {}))[0][0]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    assert second in keeper.claim([second])  # once more, on a fresh connection
    again = keeper.autocommit.run(lambda c: driver_rows(c, "SELECT pg_backend_pid()", {}))
    assert again[0][0] != pid
