"""End to end on real processes: API, Celery worker, sweeper, with the real pipeline."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from antihack.shared.infra.db import transaction
from antihack.shared.infra.queues import SWEEP_TASK
from antihack.shared.infra.settings import Settings
from antihack.shared.infra.tables import Job, JobResult
from antihack.shared.sdk.sample import build_capture
from antihack.worker.celery_app import make_celery
from tests.conftest import Key
from tests.devstack import ROOT, wait_until
from tests.helpers import face_capture, new_jobs, no_face_capture, submit, wait_running

SEED_EXTRA = {
    "mask_proba", "quality_score", "quality_too_low", "blur_or_dark", "has_no_face",
    "face_too_small", "image_too_small", "masked", "face_quality_low", "face_quality_score",
    "is_live", "live_proba", "eye_closed", "eye_score",
}  # fmt: skip


def poll(base: str, key: Key, request_id: str, timeout: float = 120) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        body: dict[str, Any] = requests.get(
            f"{base}/v1/jobs/{request_id}", headers=key.headers, timeout=10
        ).json()
        return body if body["status"] in ("SUCCEEDED", "FAILED") else None

    return wait_until(final, timeout, f"job {request_id}")  # type: ignore[no-any-return]


def results_for(sessions: Any, job_id: str) -> int:
    with transaction(sessions) as s:
        return int(
            s.scalar(select(func.count()).select_from(JobResult).where(JobResult.job_id == job_id))
            or 0
        )


def test_submit_poll_and_sync_paths(start_api: Any, start_worker: Any, key: Key) -> None:
    start_worker()
    base = start_api()
    resp = submit(base, key, face_capture(), return_extra="1", return_image="1")
    assert resp.status_code == 202
    job = poll(base, key, resp.json()["request_id"])
    assert job["status"] == "SUCCEEDED", job
    result = job["result"]
    assert result["status"] == "OK" and result["request_id"] == job["request_id"]
    assert 0.0 <= float(result["score"]) <= 1.0
    assert set(result["extra"]) == SEED_EXTRA
    assert result["extra"]["has_no_face"] is False
    assert result["image_base64"]
    assert job["attempts"] == 1 and job["model_versions"] and isinstance(job["reasons"], list)

    # The seed's own path: synchronous, 200, the seed's body without extra unless asked.
    sync = submit(base, key, no_face_capture(), path="/face/liveness_anti_hack")
    assert sync.status_code == 200, sync.text
    body = sync.json()
    assert body["status"] == "OK" and "extra" not in body and "image_base64" not in body
    assert body["request_id"].startswith("TID")


def test_kill_9_worker_mid_job_finishes_once(
    base_settings: Settings,
    start_worker: Any,
    start_api: Any,
    start_beat: Any,
    key: Key,
    sessions: Any,
) -> None:
    settings = base_settings.replace(task_time_limit_s=15)
    worker = start_worker(settings, concurrency=1)
    start_beat(settings)
    base = start_api(settings)
    rid = submit(base, key, face_capture(frames=4), return_extra="1").json()["request_id"]
    wait_running(sessions, rid)
    worker.kill9()
    start_worker(settings, concurrency=1)
    job = poll(base, key, rid, timeout=120)
    assert job["status"] == "SUCCEEDED", job
    assert job["attempts"] == 2
    assert results_for(sessions, rid) == 1


def test_lost_publish_is_run_by_the_sweeper(
    base_settings: Settings, start_worker: Any, key: Key, sessions: Any
) -> None:
    start_worker()
    [job_id] = new_jobs(sessions, key.api_id)
    # Committed, never published: only the sweeper can find it, once older than queued_stale_s.
    time.sleep(base_settings.queued_stale_s + 0.5)
    app = make_celery(base_settings)
    assert app.tasks[SWEEP_TASK].apply().get() >= 1

    def done() -> bool:
        with transaction(sessions) as s:
            j = s.get(Job, job_id)
            return j is not None and j.status == "SUCCEEDED"

    wait_until(done, 60, "the swept job")
    assert results_for(sessions, job_id) == 1


def test_200_concurrent_submissions_all_finish_once(
    start_api: Any, start_worker: Any, key: Key, sessions: Any
) -> None:
    start_worker()
    base = start_api()
    payload = no_face_capture()
    http = requests.Session()

    def one(_: int) -> tuple[int, str, float]:
        t0 = time.perf_counter()
        r = http.post(
            base + "/v1/jobs",
            files={"liveness_data_file": ("c.pb", payload)},
            headers=key.headers,
            timeout=60,
        )
        return r.status_code, r.json().get("request_id", ""), time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(one, range(200)))
    elapsed = time.perf_counter() - t0
    assert [code for code, _, _ in answers] == [202] * 200
    ids = {rid for _, rid, _ in answers}
    assert len(ids) == 200
    lat = sorted(t for _, _, t in answers)
    print(
        f"\naccept: {200 / elapsed:.0f}/s, p50 {statistics.median(lat) * 1000:.0f} ms, "
        f"p99 {lat[197] * 1000:.0f} ms"
    )

    def all_final() -> bool:
        with transaction(sessions) as s:
            n = s.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.id.in_(ids), Job.status.in_(["SUCCEEDED", "FAILED"]))
            )
            return n == 200

    wait_until(all_final, 240, "200 jobs", interval=1)
    with transaction(sessions) as s:
        rows = s.execute(
            select(JobResult.job_id, func.count())
            .where(JobResult.job_id.in_(ids))
            .group_by(JobResult.job_id)
        ).all()
        statuses = set(s.scalars(select(Job.status).where(Job.id.in_(ids))))
    assert len(rows) == 200 and all(n == 1 for _, n in rows)
    assert statuses == {"SUCCEEDED"}


def test_worker_refuses_altered_models(base_settings: Settings, tmp_path: Path) -> None:
    from antihack.models import default_model_dir

    bad = tmp_path / "models"
    shutil.copytree(default_model_dir(), bad)
    victim = next((bad / "onnx").glob("*.onnx"))
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    env = {**base_settings.replace(model_dir=str(bad)).to_env(), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "antihack.shared.cli", "worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert victim.name in proc.stderr and "refusing to start" in proc.stderr


@pytest.mark.parametrize(
    "command",
    ["serve", "api", "worker", "beat", "migrate", "keys", "submit", "make-sample", "eval"],
)
def test_every_command_has_help(command: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "antihack.shared.cli", command, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "Usage:" in proc.stdout


def _tampered(payload: bytes) -> bytes:
    from antihack.shared.proto import liveness_pb2 as pb

    capture = pb.Capture.FromString(payload)
    capture.frames[0].timestamp_ms += 1  # any change after signing breaks the HMAC
    return capture.SerializeToString()


def test_attacks_score_as_hacks_through_the_api(
    start_api: Any, start_worker: Any, make_key: Any
) -> None:
    """Each deterministic attack, end to end: HTTP → job → real worker → seed body."""
    from tests.fixtures_images import astronaut

    start_worker()
    base = start_api()
    signed = make_key(require_signed=True)
    plain = make_key()
    # Its own key: the other cases' astronaut frames would already count as seen (a replay).
    fresh = make_key()
    replayed = face_capture(frames=3)
    still = build_capture([astronaut()] * 5)
    cases: list[tuple[str, Key, bytes, bool]] = [
        ("genuine, signed", signed, face_capture(sign_secret=signed.sdk_secret.encode()), False),
        ("unsigned for a signing key", signed, face_capture(), True),
        (
            "tampered after signing",
            signed,
            _tampered(face_capture(sign_secret=signed.sdk_secret.encode())),
            True,
        ),
        ("still image as video", plain, still, True),
        ("blink asked, not met", plain, face_capture(frames=6, challenge="BLINK"), True),
        ("first submission", fresh, replayed, False),
        ("replayed", fresh, replayed, True),
    ]
    scores: dict[str, float] = {}
    for name, key, payload, hack in cases:
        resp = submit(base, key, payload, path="/face/liveness_anti_hack", return_extra="1")
        assert resp.status_code == 200, (name, resp.text)
        score = float(resp.json()["score"])
        scores[name] = score
        assert (score >= 0.99) if hack else (score < 0.98), (name, score, resp.json())
    print("\n" + "\n".join(f"  {n:<28} {s:.5f}" for n, s in scores.items()))


def test_submit_cli_waits_for_results(
    start_api: Any, start_worker: Any, key: Key, tmp_path: Path
) -> None:
    start_worker()
    base = start_api()
    files = []
    for i in range(3):
        path = tmp_path / f"c{i}.pb"
        path.write_bytes(no_face_capture())
        files.append(str(path))
    env = {
        "ANTIHACK_URL": base,
        "ANTIHACK_API_ID": key.api_id,
        "ANTIHACK_API_SECRET": key.api_secret,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "antihack.shared.cli", "submit", *files, "--wait", "--json"],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["job"]["status"] for line in lines] == ["SUCCEEDED"] * 3
    assert "submitting" in proc.stderr  # the progress bar goes to stderr
