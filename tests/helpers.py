"""Captures for service tests, built with the same code as ``antihack make-sample``."""

from __future__ import annotations

import functools

import cv2
import numpy as np
from skimage import data

from shared.sample import build_capture


@functools.cache
def astronaut() -> np.ndarray:
    """A public-domain photo of a real face (512x512 RGB)."""
    return np.ascontiguousarray(data.astronaut())


@functools.cache
def coffee() -> np.ndarray:
    """A real photo without a face: the pipeline answers quickly (no PAD model run)."""
    return np.ascontiguousarray(cv2.resize(data.coffee(), (320, 214)))


def moving(image: np.ndarray, n: int) -> list[np.ndarray]:
    """n frames of one image, shifted a few pixels each, so they are not pixel-identical."""
    frames = []
    for i in range(n):
        m = np.float32([[1, 0, (i % 3) - 1], [0, 1, (i % 2)]])
        frames.append(
            cv2.warpAffine(
                image, m, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REFLECT
            )
        )
    return frames


def face_capture(frames: int = 3, **kw: object) -> bytes:
    return build_capture(moving(astronaut(), frames), **kw)  # type: ignore[arg-type]


def no_face_capture(frames: int = 2, **kw: object) -> bytes:
    return build_capture(moving(coffee(), frames), **kw)  # type: ignore[arg-type]


def png_bytes(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()
