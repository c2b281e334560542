"""Intake: accepted ``POST /v1/jobs``/s against ``/healthz``/s on the same API, in one run.

Rounds of ``/healthz`` and of submissions alternate (so that other load on the machine hits
both alike), each with CLIENTS keep-alive connections for ROUND_S seconds; the figures are the
medians over the rounds, and the ratio is accepted/s over ``/healthz``/s. The key has a quota
and a rate limit (both far from binding), so every submission takes the quota charge and the
rate-limit check it takes in production.

    ANTIHACK_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/postgres \\
    ANTIHACK_REDIS_URL=redis://127.0.0.1:6379/14 python -m bench bench_intake

BENCH_PROCESSES (default: the CPU count), BENCH_THREADS (16 per process), BENCH_CLIENTS (32),
BENCH_KEYS (1: every submission takes the same quota counter), BENCH_ROUNDS, BENCH_ROUND_S and
BENCH_CLIENT (raw: asyncio sockets, the cheapest client; requests: a requests.Session per
thread, as bench_submit) change the set-up. Beside the rates it prints the CPU time per
request of the API processes and of the local PostgreSQL server (user + system, from /proc),
which other load on the machine changes much less than the rates.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass, field

import psutil

from antihack.shared.domain.keys import KeyOptions, create_key
from antihack.shared.infra.db import make_engine, make_sessionmaker, transaction
from bench.stack import load_average, median, pct, stack
from tests.devstack import start_api

CLIENTS = int(os.environ.get("BENCH_CLIENTS", "32"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))
ROUND_S = float(os.environ.get("BENCH_ROUND_S", "4"))
# raw: asyncio sockets (the cheapest client); requests: a requests.Session per thread.
CLIENT = os.environ.get("BENCH_CLIENT", "raw")
# API keys the clients share out (each key's submissions serialise on its quota counter).
KEYS = int(os.environ.get("BENCH_KEYS", "1"))
# Threads per API process (antihack api --threads).
THREADS = int(os.environ.get("BENCH_THREADS", "16"))


def multipart(payload: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="liveness_data_file"; '
        'filename="c.pb"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    body += payload + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


async def _client(
    port: int, request: bytes, ok: int, until: float, lat: list[float], errs: list[int]
) -> int:
    """One keep-alive connection sending ``request`` until ``until``; returns answers counted."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    try:
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if status != ok:
                errs.append(status)
            n += 1
    finally:
        writer.close()
    return n


def _cpu_s(server: psutil.Process) -> float:
    """CPU seconds used so far by the API's processes (gunicorn's master and its workers)."""
    total = 0.0
    for proc in [server, *server.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _postgres_cpu() -> dict[int, float]:
    """CPU seconds used so far by each process of the local PostgreSQL server (none when it is
    not local): a submission's cost includes the database's."""
    found: dict[int, float] = {}
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] not in ("postgres", "postmaster"):
            continue
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        found[proc.pid] = times.user + times.system
    return found


def _postgres_cpu_since(before: dict[int, float]) -> float:
    """CPU seconds the server's processes that lived through the round used in it (the API's
    pooled connections do; short-lived backends of other clients are left out)."""
    after = _postgres_cpu()
    return sum(after[pid] - cpu for pid, cpu in before.items() if pid in after)


async def _go(port: int, requests: list[bytes], ok: int) -> tuple[int, list[float], list[int]]:
    lat: list[float] = []
    errs: list[int] = []
    until = time.perf_counter() + ROUND_S
    counts = await asyncio.gather(
        *(_client(port, requests[i % len(requests)], ok, until, lat, errs) for i in range(CLIENTS))
    )
    return sum(counts), lat, errs


@dataclass
class Rounds:
    """One kind of request's rounds: rates, CPU per request, latencies, unexpected statuses."""

    rates: list[float] = field(default_factory=list)
    api_cpu_ms: list[float] = field(default_factory=list)
    db_cpu_ms: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)

    def run(self, server: psutil.Process, port: int, requests: list[bytes], ok: int) -> str:
        """One round; returns its line of figures."""
        cpu0, db0, t0 = _cpu_s(server), _postgres_cpu(), time.perf_counter()
        if CLIENT == "requests":
            n, lat, errs = _go_requests(port, requests, ok)
        else:
            n, lat, errs = asyncio.run(_go(port, requests, ok))
        wall = time.perf_counter() - t0
        api_ms = (_cpu_s(server) - cpu0) * 1000 / max(n, 1)
        db_ms = _postgres_cpu_since(db0) * 1000 / max(n, 1)
        self.rates.append(n / wall)
        self.api_cpu_ms.append(api_ms)
        self.db_cpu_ms.append(db_ms)
        self.latencies += lat
        self.errors += errs
        return (
            f"{n / wall:>9.0f} {api_ms:>6.2f} {db_ms:>6.2f} "
            f"{median(lat) * 1000:>6.1f} {pct(lat, 0.99) * 1000:>6.1f}"
        )

    def summary(self) -> str:
        return (
            f"{median(self.rates):>9.0f} {median(self.api_cpu_ms):>6.2f} "
            f"{median(self.db_cpu_ms):>6.2f} {median(self.latencies) * 1000:>6.1f} "
            f"{pct(self.latencies, 0.99) * 1000:>6.1f}"
        )


def _go_requests(port: int, requests_: list[bytes], ok: int) -> tuple[int, list[float], list[int]]:
    """The same round with one ``requests`` session per client thread (as bench_submit): a
    client that costs more per request than the raw one, as most HTTP clients do."""
    import requests

    from bench.bench_submit import load

    base = f"http://127.0.0.1:{port}"
    head, _, body = requests_[0].partition(b"\r\n\r\n")
    method = head.split(b" ", 1)[0].decode()
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    headers.pop("Host", None)
    path = "/healthz" if method == "GET" else "/v1/jobs"

    def call(s: requests.Session) -> int:
        code = s.request(method, base + path, data=body or None, headers=headers, timeout=60)
        return 200 if code.status_code == ok else code.status_code

    # A number of requests that lasts about ROUND_S at the last round's rate.
    n = max(CLIENTS * 4, int(ROUND_S * _LAST_RATE[method]))
    rate, lat, errors = load(call, CLIENTS, n)
    _LAST_RATE[method] = rate
    return n, lat, [0] * errors


_LAST_RATE = {"GET": 500.0, "POST": 100.0}


def capture_140k() -> bytes:
    """A ~140 KiB capture of three frames of a photo without a face (as the issue measured)."""
    import cv2
    import numpy as np
    from skimage import data

    from antihack.shared.sdk.sample import build_capture

    img = cv2.resize(data.coffee(), (480, 320))  # type: ignore[no-untyped-call]
    return build_capture([np.roll(img, i, axis=1) for i in range(3)], jpeg_quality=92)


def main() -> None:
    processes = os.environ.get("BENCH_PROCESSES") or str(os.cpu_count() or 2)
    payload = capture_140k()
    body, ctype = multipart(payload)
    print(
        f"capture {len(payload) / 1024:.0f} KiB; API {processes} processes x {THREADS} threads; "
        f"{CLIENTS} keep-alive {CLIENT} clients, {KEYS} API key(s); {ROUNDS} x {ROUND_S:g} s "
        f"rounds each; load average {load_average()}"
    )
    with stack() as st:
        engine = make_engine(st.settings.effective_database_url)
        with transaction(make_sessionmaker(engine)) as session:
            opts = KeyOptions(
                name="intake", quota=10**9, quota_period="month", rate=1e6, burst=10**6
            )
            keys = [create_key(session, st.settings.secret_key, opts) for _ in range(KEYS)]
        api, base = start_api(
            st.settings, st.logs / "api.log", "--processes", processes, "--threads", str(THREADS)
        )
        port = int(base.rsplit(":", 1)[1])
        server = psutil.Process(api.proc.pid)
        host = f"Host: 127.0.0.1:{port}\r\n"
        health = [f"GET /healthz HTTP/1.1\r\n{host}\r\n".encode()]
        submit = [
            (
                f"POST /v1/jobs HTTP/1.1\r\n{host}X-DF-API-ID: {key.id}\r\n"
                f"X-DF-API-SECRET: {new.api_secret}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
            for key, new in keys
        ]
        try:
            Rounds().run(server, port, health, 200)  # warm-up
            Rounds().run(server, port, submit, 202)
            healthz, jobs = Rounds(), Rounds()
            columns = f"{'/s':>9} {'API ms':>6} {'DB ms':>6} {'p50':>6} {'p99':>6}"
            print(f"{'':>6} | {'GET /healthz':<38}| POST /v1/jobs")
            print(f"{'round':>6} | {columns} | {columns}")
            for i in range(ROUNDS):
                line = healthz.run(server, port, health, 200)
                print(f"{i + 1:>6} | {line} | {jobs.run(server, port, submit, 202)}")
            print(f"{'median':>6} | {healthz.summary()} | {jobs.summary()}")
            with engine.connect() as conn:
                n_jobs = conn.exec_driver_sql("SELECT count(*) FROM jobs").scalar_one()
                used = conn.exec_driver_sql("SELECT sum(used) FROM quota_counters").scalar_one()
            errors = healthz.errors + jobs.errors
            print(
                f"ratio accepted/s : healthz/s = {median(jobs.rates) / median(healthz.rates):.2f}; "
                f"errors {len(errors)} {sorted(set(errors))}; jobs in the database {n_jobs}, "
                f"quota used {used}; load average after {load_average()}"
            )
            print(
                "(API ms: CPU of the API processes per request; DB ms: CPU per request of the "
                "local PostgreSQL processes that lived through the round, other clients' "
                "included; p50/p99 in ms)"
            )
        finally:
            api.stop()
            engine.dispose()


if __name__ == "__main__":
    main()
