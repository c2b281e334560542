"""Queue: antihack's job path with the pipeline swapped for a no-op (ANTIHACK_BENCH_NOOP_PIPELINE)
against two Celery peers on the same Redis and PostgreSQL, in the same run:

- bare Celery: a no-op task, no result stored (the broker round trip alone);
- Celery + database results: the same task with Celery's SQLAlchemy result backend on the same
  database (a durable result row per task, Celery's own way);
- antihack job path: jobs committed beforehand, then their analyze tasks published; the worker
  claims, reads, records the result (charge, webhook outbox) and notifies: the worker's side;
  again with one threads-pool process of 16 threads (how a GPU worker runs), whose claims and
  records go into shared statements (worker/bookkeeping.py);
- antihack end to end: through the API (``POST /face/liveness_anti_hack`` sequentially,
  ``POST /v1/jobs`` from the clients), intake included;
- the worker's CPU per job: the analyze task run in this process on one job after another,
  ``time.process_time`` around it (claim, read, parse, result, notify; no Celery, no pipeline),
  without and with a webhook (callback_url: the outbox row and its publish); and of its
  bookkeeping alone (claim and read, result, charge, webhook outbox: worker/bookkeeping.py);
- with ``--batch-sizes``: the GPU worker's bookkeeping by batch size, in this process: one
  statement claims N jobs, one reads their session ids, the no-op pipeline runs on each, one
  statement records the N results; jobs/s and CPU ms per job (this process's and the database
  server's) for each N.

All workers but the threads-pool one: 2 processes (prefork); all acks_late, prefetch 1. The
throughput runs end when every job has said it is done (bare: its Redis push; antihack: the
worker's completion notice, pushed after the result's commit), read with Redis calls on both
sides, and antihack's jobs are checked SUCCEEDED in the database afterwards.

    python -m bench bench_queue
    python bench/bench_queue.py --skip-api    # the peers and the job path only
    python bench/bench_queue.py --cpu-only    # the worker's CPU per job only
    python bench/bench_queue.py --batch-sizes 1 2 4 8 16 32 [--batch-jobs 640]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
import requests
import sqlalchemy as sa

if __package__ in (None, ""):
    # Run as `python bench/bench_queue.py`: import from the repository root.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from antihack.shared.domain.jobs import Submission, create_job
from antihack.shared.infra.db import kept_connections, make_engine, make_sessionmaker, transaction
from antihack.shared.infra.queues import ANALYZE_QUEUE, ANALYZE_TASK, done_key
from antihack.shared.infra.settings import Settings
from antihack.shared.infra.tables import ApiKey, Job
from bench.bare_celery import DONE
from bench.stack import Stack, load_average, median, pct, stack
from tests.devstack import ROOT, start_api, start_worker, wait_until
from tests.helpers import no_face_capture

SEQUENTIAL = 50
THROUGHPUT = 400
CLIENTS = 8
CPU_JOBS = 200
THREADS = 16  # the threads-pool worker's concurrency

Figures = tuple[list[float], float]  # sequential round-trip latencies (s), jobs/s


@contextmanager
def bare_worker(settings: Settings, backend: str | None = None) -> Iterator[Any]:
    """``celery -A bench.bare_celery worker`` (2 processes) and the app to publish with."""
    from bench.bare_celery import make_app

    env = {
        **os.environ,
        "BARE_BROKER_URL": settings.broker_url,
        "BARE_REDIS_URL": settings.redis_client_url,
        "BARE_RESULT_BACKEND": backend or "",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.bare_celery", "worker", "--concurrency", "2",
         "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield make_app(settings.broker_url, backend)
    finally:
        proc.terminate()
        proc.wait()


def bare(settings: Settings) -> Figures:
    """Sequential round trips and throughput of a bare Celery no-op (no result stored)."""
    r = redis.Redis.from_url(settings.redis_client_url)
    with bare_worker(settings) as app:
        r.delete(DONE)
        app.send_task("bench.bare.noop", args=(time.time(),))
        assert r.blpop([DONE], timeout=60), "bare worker did not start"
        latencies = []
        for _ in range(SEQUENTIAL):
            t0 = time.perf_counter()
            app.send_task("bench.bare.noop", args=(time.time(),))
            r.blpop([DONE], timeout=30)
            latencies.append(time.perf_counter() - t0)
        r.delete(DONE)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(lambda _: app.send_task("bench.bare.noop", args=(time.time(),)),
                          range(THROUGHPUT)))  # fmt: skip
        wait_until(lambda: r.llen(DONE) >= THROUGHPUT, 300, "bare tasks", interval=0.02)
        return latencies, THROUGHPUT / (time.perf_counter() - t0)


def celery_db(settings: Settings) -> Figures:
    """The same no-op with Celery's SQLAlchemy result backend on antihack's database: a round
    trip ends when the result row is readable (``AsyncResult.get``, polled every 2 ms)."""
    url = settings.effective_database_url
    engine = sa.create_engine(url)
    with bare_worker(settings, "db+" + url) as app:
        app.send_task("bench.bare.noop", args=(time.time(),)).get(timeout=60, interval=0.05)
        latencies = []
        for _ in range(SEQUENTIAL):
            t0 = time.perf_counter()
            app.send_task("bench.bare.noop", args=(time.time(),)).get(timeout=30, interval=0.002)
            latencies.append(time.perf_counter() - t0)
        with engine.connect() as conn:
            conn.exec_driver_sql("DELETE FROM celery_taskmeta")
            conn.commit()

        def stored() -> bool:
            with engine.connect() as conn:
                n = conn.exec_driver_sql(
                    "SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'"
                ).scalar()
            return int(n or 0) >= THROUGHPUT

        t0 = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(lambda _: app.send_task("bench.bare.noop", args=(time.time(),)),
                          range(THROUGHPUT)))  # fmt: skip
        wait_until(stored, 300, "celery results", interval=0.02)
        rate = THROUGHPUT / (time.perf_counter() - t0)
    engine.dispose()
    return latencies, rate


def new_jobs(st: Stack, n: int, **submission: Any) -> list[str]:
    """``n`` QUEUED jobs of the bench key, committed (as the API leaves them), not published."""
    engine = make_engine(st.settings.effective_database_url)
    payload = no_face_capture()
    ids = []
    with transaction(make_sessionmaker(engine)) as session:
        key = session.get(ApiKey, st.headers["X-DF-API-ID"])
        assert key is not None
        for _ in range(n):
            job, _ = create_job(session, key, Submission(payload, "file", **submission))
            ids.append(job.id)
    engine.dispose()
    return ids


def job_path(st: Stack, threads: int = 0) -> Figures:
    """antihack's worker side: a committed job's task published, the client woken by the
    worker's completion notice (sequential); a backlog published from the clients, timed until
    every job is SUCCEEDED (throughput). ``threads``: one process of Celery's threads pool
    (a GPU worker: claims and records batched, worker/bookkeeping.py) instead of 2 processes."""
    from antihack.worker.celery_app import make_celery

    settings = st.settings.replace(bench_noop_pipeline=True)
    if threads:
        settings = settings.replace(worker_pool="threads")
    log = st.logs / f"worker-path-{threads}.log"
    worker = start_worker(settings, log, concurrency=threads or 2)
    app = make_celery(settings)
    r = redis.Redis.from_url(settings.redis_client_url)
    engine = make_engine(settings.effective_database_url)

    def run_one(job_id: str) -> float:
        t0 = time.perf_counter()
        app.send_task(ANALYZE_TASK, args=(job_id,), queue=ANALYZE_QUEUE)
        assert r.blpop([done_key(job_id)], timeout=30), job_id
        return time.perf_counter() - t0

    try:
        ids = new_jobs(st, SEQUENTIAL + 1)
        latencies = [run_one(job_id) for job_id in ids][1:]  # the first warms the processes
        ids = new_jobs(st, THROUGHPUT)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(lambda j: app.send_task(ANALYZE_TASK, args=(j,), queue=ANALYZE_QUEUE),
                          ids))  # fmt: skip
        # Until every job's completion notice is there, one Redis call every 20 ms as for the
        # bare tasks (a database query over all the ids as often would cost this process and
        # the server more than the worker's bookkeeping, on the same cores).
        keys = [done_key(job_id) for job_id in ids]
        wait_until(lambda: r.exists(*keys) >= THROUGHPUT, 600, "antihack jobs", interval=0.02)
        rate = THROUGHPUT / (time.perf_counter() - t0)
        with engine.connect() as conn:
            succeeded = conn.execute(
                sa.select(sa.func.count())
                .select_from(Job)
                .where(Job.id.in_(ids), Job.status == "SUCCEEDED")
            ).scalar()
        assert succeeded == THROUGHPUT, f"{succeeded} of {THROUGHPUT} jobs SUCCEEDED"
        return latencies, rate
    finally:
        worker.stop()
        engine.dispose()


def antihack(st: Stack) -> Figures:
    """Sequential round trips and throughput of antihack end to end, through the API."""
    settings, headers = st.settings.replace(bench_noop_pipeline=True), st.headers
    worker = start_worker(settings, st.logs / "worker.log", concurrency=2)
    api, base = start_api(settings, st.logs / "api.log")
    http = requests.Session()
    payload = no_face_capture()
    files = {"liveness_data_file": ("c.pb", payload)}
    try:
        latencies = []
        for _ in range(SEQUENTIAL + 1):
            t0 = time.perf_counter()
            resp = http.post(
                base + "/face/liveness_anti_hack", files=files, headers=headers, timeout=60
            )
            assert resp.status_code == 200, resp.text
            latencies.append(time.perf_counter() - t0)
        latencies = latencies[1:]  # the first pays for connection set-up
        t0 = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            ids = list(pool.map(
                lambda _: http.post(base + "/v1/jobs", files=files, headers=headers, timeout=60)
                .json()["request_id"], range(THROUGHPUT)))  # fmt: skip

        def done() -> bool:
            pending = 0
            for rid in ids[-20:]:  # the last ones finish last; then check them all once
                job = http.get(f"{base}/v1/jobs/{rid}", headers=headers, timeout=30).json()
                pending += job["status"] != "SUCCEEDED"
            return pending == 0

        wait_until(done, 600, "antihack jobs", interval=0.1)
        rate = THROUGHPUT / (time.perf_counter() - t0)
        return latencies, rate
    finally:
        api.stop()
        worker.stop()


def worker_cpu(st: Stack, **submission: Any) -> tuple[float, float]:
    """CPU ms and wall ms per job of the analyze task run in this process, one job after
    another (median of 5 rounds of CPU_JOBS / 5 jobs)."""
    from antihack.worker.celery_app import make_celery

    settings = st.settings.replace(bench_noop_pipeline=True)
    task: Any = make_celery(settings).tasks[ANALYZE_TASK]
    run: Callable[[str], Any] = task.run
    for job_id in new_jobs(st, 5, **submission):  # warm-up: connections, statement caches
        run(job_id)
    ids = new_jobs(st, CPU_JOBS, **submission)
    cpu, wall = [], []
    per_round = CPU_JOBS // 5
    for i in range(0, CPU_JOBS, per_round):
        c0, w0 = time.process_time(), time.perf_counter()
        for job_id in ids[i : i + per_round]:
            assert run(job_id) == "OK"
        cpu.append((time.process_time() - c0) * 1000 / per_round)
        wall.append((time.perf_counter() - w0) * 1000 / per_round)
    return median(cpu), median(wall)


def worker_books(st: Stack) -> Any:
    """The worker's bookkeeping (worker/bookkeeping.py) on the stack's database, as a worker
    process has it."""
    from antihack.worker.bookkeeping import Books

    engine = make_engine(st.settings.effective_database_url)
    return Books(make_sessionmaker(engine), kept_connections(engine), timedelta(minutes=5), 3, None)


def bookkeeping_cpu(st: Stack, **submission: Any) -> float:
    """CPU ms per job of the bookkeeping alone, as the prefork worker does it, one job at a
    time: claim + read (``Books.claim``), then result, refund check and webhook outbox
    (``Books.record``)."""
    from antihack.shared.domain.jobs import AttemptResult
    from antihack.worker.bookkeeping import Recording

    keeper = worker_books(st)

    def one(job_id: str) -> None:
        owned = keeper.claim([job_id])[job_id].claim
        body = {"status": "OK", "request_id": job_id, "score": 0.5}
        assert keeper.record([Recording(AttemptResult(owned, body, reasons=["bench"]))])

    for job_id in new_jobs(st, 5, **submission):
        one(job_id)
    ids = new_jobs(st, CPU_JOBS, **submission)
    cpu = []
    per_round = CPU_JOBS // 5
    for i in range(0, CPU_JOBS, per_round):
        c0 = time.process_time()
        for job_id in ids[i : i + per_round]:
            one(job_id)
        cpu.append((time.process_time() - c0) * 1000 / per_round)
    return median(cpu)


def server_cpu(database: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL process serving ``database``, by pid (from /proc;
    none where the server is not on this machine)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if not cmdline.startswith("postgres:") or f" {database} " not in cmdline:
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(proc.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


def server_cpu_since(database: str, before: dict[int, float]) -> float:
    """CPU seconds the server's processes for ``database`` spent since ``before`` (one that
    ended in between is not counted)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in server_cpu(database).items())


def batch_sizes(
    st: Stack, sizes: Sequence[int], jobs: int
) -> list[tuple[int, float, float, float]]:
    """The GPU worker's bookkeeping by batch size N, in this process: ``jobs`` jobs taken N at a
    time, each batch one claim, one session-id read and one record statement (``Books``, as
    the threads-pool worker's lanes run them), the no-op pipeline on each job between (capture
    parsed, analysed, its body made). Rounds alternate the sizes, 3 each; per size the median
    round's jobs/s, this process's CPU ms per job and the database server's."""
    from antihack.shared.domain.capture import parse_capture
    from antihack.shared.domain.jobs import AttemptResult, capture_limits
    from antihack.worker.bookkeeping import Recording
    from antihack.worker.pipeline.noop import NoopPipeline
    from antihack.worker.pipeline.run import PipelineContext

    keeper, pipeline = worker_books(st), NoopPipeline()
    limits = capture_limits(st.settings)
    database = sa.make_url(st.settings.effective_database_url).database or ""

    def run(ids: list[str], size: int) -> None:
        for i in range(0, len(ids), size):
            batch = ids[i : i + size]
            taken = keeper.claim(batch)
            captures = {j: parse_capture(taken[j].payload or b"", limits) for j in batch}
            seen = keeper.seen([(taken[j].claim, captures[j].session_id) for j in batch])
            recordings = []
            for j in batch:
                ctx = PipelineContext.fresh(
                    seen_session_ids=frozenset([captures[j].session_id] if j in seen else [])
                )
                analysis = pipeline.analyze(captures[j], ctx)
                body = analysis.seed_body(j, taken[j].return_extra)
                recordings.append(
                    Recording(AttemptResult(taken[j].claim, body, reasons=analysis.reasons))
                )
            assert len(keeper.record(recordings)) == len(batch)

    run(new_jobs(st, 2 * max(sizes)), max(sizes))  # warm-up: connections, prepared statements
    figures: dict[int, list[tuple[float, float, float]]] = {n: [] for n in sizes}
    for _ in range(3):
        for size in sizes:
            ids = new_jobs(st, jobs)
            c0, s0, w0 = time.process_time(), server_cpu(database), time.perf_counter()
            run(ids, size)
            wall = time.perf_counter() - w0
            figures[size].append(
                (
                    jobs / wall,
                    (time.process_time() - c0) * 1000 / jobs,
                    server_cpu_since(database, s0) * 1000 / jobs,
                )
            )
    out = []
    for size in sizes:
        rounds = sorted(figures[size])
        rate, cpu, server = rounds[len(rounds) // 2]
        out.append((size, rate, cpu, server))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--skip-api", action="store_true", help="leave out the end-to-end run")
    parser.add_argument(
        "--cpu-only", action="store_true", help="only the worker's CPU per job (no Celery runs)"
    )
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        metavar="N",
        help="only the GPU worker's bookkeeping by batch size (e.g. 1 2 4 8 16 32)",
    )
    parser.add_argument(
        "--batch-jobs", type=int, default=640, help="jobs per round of --batch-sizes [640]"
    )
    args = parser.parse_args(list(argv) if argv is not None else [])
    print(f"load average {load_average()} (1/5/15 min)")
    if args.batch_sizes:
        with stack() as st:
            rows = batch_sizes(st, args.batch_sizes, args.batch_jobs)
        print(f"\nbookkeeping by batch size, no-op pipeline, {args.batch_jobs} jobs a round, "
              "median of 3 rounds")  # fmt: skip
        print(f"{'batch':>6} {'jobs/s':>8} {'CPU ms/job':>11} {'DB CPU ms/job':>14}")
        for size, rate, own_ms, server_ms in rows:
            print(f"{size:>6} {rate:>8.0f} {own_ms:>11.3f} {server_ms:>14.3f}")
        print(f"load average at the end {load_average()}")
        return
    figures: dict[str, Figures] = {}
    with stack() as st:
        if not args.cpu_only:
            figures["bare Celery no-op"] = bare(st.settings)
            figures["Celery + database results"] = celery_db(st.settings)
            figures["antihack job path"] = job_path(st)
            figures[f"job path, {THREADS} threads"] = job_path(st, THREADS)
        if not (args.skip_api or args.cpu_only):
            figures["antihack end to end (API)"] = antihack(st)
        hook = {"callback_url": "http://127.0.0.1:9/hook"}
        cpu, cpu_hook = worker_cpu(st), worker_cpu(st, **hook)
        books, books_hook = bookkeeping_cpu(st), bookkeeping_cpu(st, **hook)
    if figures:
        print(f"{'':<28} {'p50 ms':>8} {'p99 ms':>8} {'jobs/s':>8} {'vs bare':>8}")
        bare_rate = figures["bare Celery no-op"][1]
        for name, (lat, rate) in figures.items():
            print(f"{name:<28} {median(lat) * 1000:>8.1f} {pct(lat, 0.99) * 1000:>8.1f} "
                  f"{rate:>8.0f} {rate / bare_rate:>7.2f}x")  # fmt: skip
        print(f"{SEQUENTIAL} sequential round trips, {THROUGHPUT} jobs from {CLIENTS} clients; "
              "goal: antihack job path >= 0.5x bare")  # fmt: skip
    print(f"\nworker CPU per job, in-process, {CPU_JOBS} jobs one after another "
          "(goal <= 2 ms of bookkeeping)")  # fmt: skip
    print(f"{'':<28} {'task CPU ms':>12} {'task wall ms':>13} {'bookkeeping CPU ms':>19}")
    print(f"{'no webhook':<28} {cpu[0]:>12.2f} {cpu[1]:>13.2f} {books:>19.2f}")
    print(f"{'webhook (callback_url)':<28} {cpu_hook[0]:>12.2f} {cpu_hook[1]:>13.2f} "
          f"{books_hook:>19.2f}")  # fmt: skip
    print(f"load average at the end {load_average()}")


if __name__ == "__main__":
    main(sys.argv[1:])
