"""Burst: N submissions (default 5,000) as fast as 32 clients can, through the real pipeline
(captures without a face, its fast path), then drain; nothing may be lost.

    python -m bench bench_burst            # BURST_N=1000 python -m bench bench_burst for less
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from sqlalchemy import func, select

from antihack.shared.infra.db import make_engine, make_sessionmaker, transaction
from antihack.shared.infra.tables import Job
from bench.stack import median, pct, stack
from tests.devstack import start_api, start_worker, wait_until
from tests.helpers import no_face_capture

CLIENTS = 32


def main() -> None:
    n = int(os.environ.get("BURST_N", "5000"))
    payload = no_face_capture()
    with stack() as st:
        worker = start_worker(st.settings, st.logs / "worker.log", concurrency=2)
        api, base = start_api(st.settings, st.logs / "api.log", "--processes", "2")
        http = requests.Session()
        http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=CLIENTS))
        engine = make_engine(st.settings.effective_database_url)
        sessions = make_sessionmaker(engine)
        try:

            def one(_: int) -> tuple[int, str]:
                try:
                    r = http.post(
                        base + "/v1/jobs",
                        files={"liveness_data_file": ("c.pb", payload)},
                        headers=st.headers,
                        timeout=120,
                    )
                    return r.status_code, r.json().get("request_id", "")
                except requests.RequestException:
                    return 0, ""

            t0 = time.perf_counter()
            with ThreadPoolExecutor(CLIENTS) as pool:
                answers = list(pool.map(one, range(n)))
            submit_s = time.perf_counter() - t0
            accepted = {rid for code, rid in answers if code == 202}

            def finished() -> int:
                with transaction(sessions) as s:
                    return int(
                        s.scalar(
                            select(func.count())
                            .select_from(Job)
                            .where(Job.status.in_(["SUCCEEDED", "FAILED"]))
                        )
                        or 0
                    )

            wait_until(lambda: finished() >= len(accepted), 3600, "the burst to drain", interval=1)
            drain_s = time.perf_counter() - t0
            with transaction(sessions) as s:
                rows = s.execute(select(Job.id, Job.status, Job.created_at, Job.finished_at)).all()
        finally:
            api.stop()
            worker.stop()
            engine.dispose()
    done = {r.id for r in rows if r.status in ("SUCCEEDED", "FAILED")}
    latency = [(r.finished_at - r.created_at).total_seconds() for r in rows if r.finished_at]
    refused = n - len(accepted)
    print(f"submitted {n} from {CLIENTS} clients in {submit_s:.1f} s ({n / submit_s:.0f}/s); "
          f"accepted {len(accepted)}, refused {refused}")  # fmt: skip
    print(f"completed {len(done & accepted)}, lost {len(accepted - done)}, "
          f"drain rate {len(done) / drain_s:.0f} jobs/s over {drain_s:.1f} s")  # fmt: skip
    print(f"submit→finished: median {median(latency):.1f} s, p99 {pct(latency, 0.99):.1f} s "
          f"(a burst queues: latency is the backlog)")  # fmt: skip


if __name__ == "__main__":
    main()
