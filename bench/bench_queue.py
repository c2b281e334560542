"""Queue: antihack end to end with the pipeline swapped for a no-op (ANTIHACK_BENCH_NOOP_PIPELINE)
against bare Celery no-op round trips on the same Redis, in the same run.

    python -m bench bench_queue
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import redis
import requests

from bench.bare_celery import DONE
from bench.stack import Stack, median, pct, stack
from shared.devstack import ROOT, start_api, start_worker, wait_until
from shared.settings import Settings
from tests.helpers import no_face_capture

SEQUENTIAL = 50
THROUGHPUT = 400
CLIENTS = 8


def bare(settings: Settings) -> tuple[list[float], float]:
    """Sequential round-trip latencies and throughput of a bare Celery no-op."""
    from bench.bare_celery import app

    broker, client_url = settings.broker_url, settings.redis_client_url
    env = {**os.environ, "BARE_BROKER_URL": broker, "BARE_REDIS_URL": client_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.bare_celery", "worker", "--concurrency", "2",
         "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    r = redis.Redis.from_url(client_url)
    app.conf.broker_url = broker
    try:
        r.delete(DONE)
        app.send_task("bench.bare.noop", args=(time.time(),))
        assert r.blpop([DONE], timeout=60), "bare worker did not start"
        latencies = []
        for _ in range(SEQUENTIAL):
            t0 = time.perf_counter()
            app.send_task("bench.bare.noop", args=(time.time(),))
            r.blpop([DONE], timeout=30)
            latencies.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(lambda _: app.send_task("bench.bare.noop", args=(time.time(),)),
                          range(THROUGHPUT)))  # fmt: skip
        wait_until(lambda: r.llen(DONE) >= THROUGHPUT, 300, "bare tasks", interval=0.05)
        rate = THROUGHPUT / (time.perf_counter() - t0)
        return latencies, rate
    finally:
        proc.terminate()
        proc.wait()


def antihack(st: Stack) -> tuple[list[float], float]:
    """Sequential round-trip latencies and throughput of antihack with a no-op pipeline."""
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


def main() -> None:
    with stack() as st:
        b_lat, b_rate = bare(st.settings)
        a_lat, a_rate = antihack(st)
    print(f"{'':<28} {'p50 ms':>8} {'p99 ms':>8} {'jobs/s':>8}")
    for name, lat, rate in (
        ("bare Celery no-op", b_lat, b_rate),
        ("antihack, no-op pipeline", a_lat, a_rate),
    ):
        print(f"{name:<28} {median(lat) * 1000:>8.1f} {pct(lat, 0.99) * 1000:>8.1f} {rate:>8.0f}")
    print(f"latency ratio {median(a_lat) / median(b_lat):.2f}x, throughput ratio "
          f"{b_rate / a_rate:.2f}x (goal <= 1.5x); {SEQUENTIAL} sequential round trips, "
          f"{THROUGHPUT} jobs from {CLIENTS} clients")  # fmt: skip


if __name__ == "__main__":
    main()
