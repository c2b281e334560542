"""Submission: accepted/s and accept latency against /healthz on the same server, and the
submit→SUCCEEDED time of one job through a real worker.

    python -m bench bench_submit
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import requests

from antihack.shared.sdk.sample import build_capture
from bench.stack import median, pct, stack
from tests.devstack import start_api, start_worker

CONCURRENCY = (1, 8, 32, 64)
REQUESTS = 400


def capture_100k() -> bytes:
    """A ~100 KiB capture of a real photo without a face (fast through the pipeline)."""
    from skimage import data

    img = np.asarray(cv2.resize(data.coffee(), (480, 320)), dtype=np.uint8)  # type: ignore[no-untyped-call]
    frames = [np.roll(img, i, axis=1) for i in range(2)]
    return build_capture(frames, jpeg_quality=92)


def load(fn: object, concurrency: int, n: int) -> tuple[float, list[float], int]:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=concurrency)
    session.mount("http://", adapter)

    def one(_: int) -> tuple[int, float]:
        t0 = time.perf_counter()
        code = fn(session)  # type: ignore[operator]
        return code, time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    return n / wall, [t for _, t in results], sum(1 for c, _ in results if c >= 300)


def main() -> None:
    payload = capture_100k()
    print(f"capture: {len(payload) / 1024:.0f} KiB, {REQUESTS} requests per level")
    with stack() as st:
        api, base = start_api(st.settings, st.logs / "api.log", "--processes", "2")
        try:

            def health(s: requests.Session) -> int:
                return s.get(base + "/healthz", timeout=30).status_code

            def submit(s: requests.Session) -> int:
                files = {"liveness_data_file": ("c.pb", payload)}
                r = s.post(base + "/v1/jobs", files=files, headers=st.headers, timeout=60)
                return 200 if r.status_code == 202 else r.status_code

            load(health, 8, 100)  # warm-up
            print(f"{'clients':>7} {'healthz/s':>10} {'accepted/s':>11} {'ratio':>6} "
                  f"{'p50 ms':>7} {'p99 ms':>7} {'errors':>6}")  # fmt: skip
            for c in CONCURRENCY:
                h_rate, _, _ = load(health, c, REQUESTS)
                s_rate, lat, errors = load(submit, c, REQUESTS)
                print(
                    f"{c:>7} {h_rate:>10.0f} {s_rate:>11.0f} {s_rate / h_rate:>6.2f} "
                    f"{median(lat) * 1000:>7.1f} {pct(lat, 0.99) * 1000:>7.1f} {errors:>6}"
                )
        finally:
            api.stop()

    # One job end to end, on an idle worker: the seed endpoint's synchronous answer.
    from tests.helpers import face_capture

    with stack() as st:
        worker = start_worker(st.settings, st.logs / "worker.log", concurrency=1)
        api, base = start_api(st.settings, st.logs / "api2.log")
        try:
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                r = requests.post(
                    base + "/face/liveness_anti_hack",
                    files={"liveness_data_file": ("c.pb", face_capture(frames=3))},
                    headers=st.headers,
                    timeout=120,
                )
                assert r.status_code == 200, r.text
                times.append(time.perf_counter() - t0)
            print(f"submit→SUCCEEDED, one 3-frame face capture, idle worker: "
                  f"median {median(times) * 1000:.0f} ms over {len(times)}")  # fmt: skip
        finally:
            api.stop()
            worker.stop()


if __name__ == "__main__":
    main()
