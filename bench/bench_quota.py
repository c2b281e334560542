"""What the quota and rate checks add to a submission.

    python -m bench bench_quota

Two keys on the same server, one without limits and one with a quota and a rate (both far
from exhausted), submitting alternately; medians and the ratio. Then the two checks alone,
in-process: one quota charge (its own transaction) and one GCRA decision.
"""

from __future__ import annotations

import statistics
import time

import redis
import requests

from antihack.shared.domain.keys import KeyOptions, create_key
from antihack.shared.domain.quota import charge
from antihack.shared.domain.ratelimit import RateLimiter
from antihack.shared.infra.db import make_engine, make_sessionmaker, transaction
from antihack.shared.infra.tables import ApiKey
from bench.stack import median, pct, stack
from tests.devstack import start_api
from tests.helpers import no_face_capture

ROUNDS = 300


def main() -> None:
    payload = no_face_capture()
    with stack() as st:
        engine = make_engine(st.settings.effective_database_url)
        sessions = make_sessionmaker(engine)
        with transaction(sessions) as s:
            key, new = create_key(
                s,
                st.settings.secret_key,
                KeyOptions(name="limited", quota=10**9, quota_period="day", rate=1e6, burst=10**6),
            )
            limited = {"X-DF-API-ID": key.id, "X-DF-API-SECRET": new.api_secret}
            limited_id = key.id
        api, base = start_api(st.settings, st.logs / "api.log")
        http = requests.Session()
        try:
            times: dict[str, list[float]] = {"plain": [], "quota+rate": []}
            for _ in range(ROUNDS):
                for name, headers in (("plain", st.headers), ("quota+rate", limited)):
                    t0 = time.perf_counter()
                    r = http.post(
                        base + "/v1/jobs",
                        files={"liveness_data_file": ("c.pb", payload)},
                        headers=headers,
                        timeout=30,
                    )
                    times[name].append(time.perf_counter() - t0)
                    assert r.status_code == 202, r.text
            plain, limited_t = median(times["plain"]), median(times["quota+rate"])
            print(f"one client, {ROUNDS} submissions per key, alternating:")
            for name, values in times.items():
                print(f"  {name:<11} median {median(values) * 1000:6.2f} ms   "
                      f"p99 {pct(values, 0.99) * 1000:6.2f} ms")  # fmt: skip
            print(f"  ratio quota+rate / plain: {limited_t / plain:.3f} "
                  f"(+{(limited_t - plain) * 1000:.2f} ms)")  # fmt: skip
        finally:
            api.stop()

        charge_us = []
        with transaction(sessions) as s:
            api_key = s.get(ApiKey, limited_id)
            assert api_key is not None
            s.expunge(api_key)
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            with transaction(sessions) as s:
                charge(s, api_key)
            charge_us.append((time.perf_counter() - t0) * 1e6)
        limiter = RateLimiter(redis.Redis.from_url(st.settings.redis_client_url), fail_open=False)
        gcra_us = []
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            limiter.check("bench", 1e6, 10**6)
            gcra_us.append((time.perf_counter() - t0) * 1e6)
        engine.dispose()
        print("in-process, median of", ROUNDS)
        print(f"  quota charge, own transaction: {statistics.median(charge_us):7.0f} µs")
        print(f"  GCRA decision, one EVALSHA:    {statistics.median(gcra_us):7.0f} µs")


if __name__ == "__main__":
    main()
