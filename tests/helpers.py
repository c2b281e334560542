"""Captures for service tests (built as ``antihack make-sample`` builds them) and the database
readings the tests assert on."""

from __future__ import annotations

import functools
from typing import Any

import cv2
import numpy as np
from sqlalchemy import func, select

from shared.db import transaction
from shared.models import ApiKey, Job, JobResult
from shared.quota import used
from shared.sample import build_capture
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
