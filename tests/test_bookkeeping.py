"""A threads-pool worker's job bookkeeping (worker/bookkeeping.py, domain/jobs.py): the requests
that queue while a statement runs go together into the next one, each job is still claimed
once and recorded only by the attempt that owns it, and a bad request fails alone."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from antihack.shared.domain.jobs import AttemptResult, claim_jobs, finish_jobs, sessions_seen
from antihack.shared.infra.db import transaction
from antihack.shared.infra.tables import Fingerprint, Job, JobResult
from antihack.worker.bookkeeping import Bookkeeper, GroupLane, Recording
from tests.conftest import Key
from tests.devstack import wait_until
from tests.helpers import new_jobs

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
    from antihack.shared.infra.tables import WebhookDelivery

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
