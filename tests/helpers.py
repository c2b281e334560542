"""Captures for service tests (built as ``antihack make-sample`` builds them), the requests and
rows that make jobs, and the database readings the tests assert on."""

from __future__ import annotations

import contextlib
import functools
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import requests
from sqlalchemy import func, select

from antihack.shared.domain.jobs import Submission, create_job
from antihack.shared.domain.quota import used
from antihack.shared.infra.db import transaction
from antihack.shared.infra.settings import Settings
from antihack.shared.infra.tables import ApiKey, Job, JobResult
from antihack.shared.sdk.sample import build_capture
from tests import devstack
from tests.conftest import Key
from tests.devstack import Proc, wait_until
from tests.fixtures_images import astronaut, coffee, jittered


@functools.cache
def small_coffee() -> np.ndarray:
    """A real photo without a face at 320 px: the pipeline answers quickly (no PAD model run)."""
    return np.ascontiguousarray(cv2.resize(coffee(), (320, 214)))


def face_capture(frames: int = 3, **kw: object) -> bytes:
    return build_capture(jittered(astronaut(), frames), **kw)  # type: ignore[arg-type]


def no_face_capture(frames: int = 2, **kw: object) -> bytes:
    return build_capture(jittered(small_coffee(), frames), **kw)  # type: ignore[arg-type]


def png_bytes(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_with_header(
    width: int, height: int, idat: bytes, bit_depth: int = 8, colour_type: int = 2
) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` (8-bit RGB unless told), with the given
    IDAT stream."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def submit(
    base: str,
    key: Key,
    payload: bytes,
    path: str = "/v1/jobs",
    headers: dict[str, str] | None = None,
    **data: str,
) -> requests.Response:
    """POST a capture to a running API as ``key``; ``data`` are the other form fields."""
    return requests.post(
        base + path,
        files={"liveness_data_file": ("c.pb", payload)},
        data=data,
        headers={**key.headers, **(headers or {})},
        timeout=120,
    )


def new_jobs(sessions: Any, api_id: str, count: int = 1) -> list[str]:
    """``count`` jobs of a faceless capture, created as the API creates them (never published)."""
    with transaction(sessions) as s:
        api_key = s.get(ApiKey, api_id)
        assert api_key is not None
        ids = []
        for _ in range(count):
            job, created = create_job(
                s, api_key, Submission(payload=no_face_capture(), source="file")
            )
            assert created
            ids.append(job.id)
        return ids


def wait_running(sessions: Any, job_id: str) -> None:
    def running() -> bool:
        with transaction(sessions) as s:
            job = s.get(Job, job_id)
            return job is not None and job.status == "RUNNING"

    wait_until(running, 60, "the job to start", interval=0.01)


def job_count(sessions: Any, api_id: str) -> int:
    """How many jobs the key has."""
    with transaction(sessions) as s:
        n = s.scalar(select(func.count()).select_from(Job).where(Job.api_key_id == api_id))
        return int(n or 0)


def job_states(sessions: Any, ids: list[str]) -> dict[str, tuple[str, int, int]]:
    """Job id → (status, attempts, result rows)."""
    with transaction(sessions) as s:
        rows = s.execute(
            select(Job.id, Job.status, Job.attempts, func.count(JobResult.job_id))
            .outerjoin(JobResult, JobResult.job_id == Job.id)
            .where(Job.id.in_(ids))
            .group_by(Job.id, Job.status, Job.attempts)
        ).all()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def quota_used(sessions: Any, api_id: str) -> int:
    """What the key has used of its quota in the current period."""
    with transaction(sessions) as s:
        api_key = s.get(ApiKey, api_id)
        assert api_key is not None
        return used(s, api_key)


@contextlib.contextmanager
def running_stack(settings: Settings, logs: Path) -> Iterator[str]:
    """A worker, beat and API on ``settings`` (logs under ``logs``); yields the API's URL."""
    worker = devstack.start_worker(settings, logs / "worker.log", concurrency=2)
    beat = Proc(settings, "beat", log=logs / "beat.log")
    api = None
    try:
        api, base = devstack.start_api(settings, logs / "api.log")
        yield base
    finally:
        for proc in (api, beat, worker):
            if proc is not None:
                proc.stop()
