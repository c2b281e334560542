"""Captures for service tests, built with the same code as ``antihack make-sample``."""

from __future__ import annotations

import functools

import cv2
import numpy as np

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
