"""Edits a replay attacker makes to recorded frames: rotation and scaling (the replay tests and
``bench/replay_goal.py``)."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
from numpy.typing import NDArray

Image = NDArray[np.uint8]


def rotate(degrees: float, scale: float = 1.0) -> Callable[[Image], Image]:
    """Turn by ``degrees`` (and scale by ``scale``) about the image's centre, same size."""

    def turn(image: Image) -> Image:
        h, w = image.shape[:2]
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, scale)
        return np.asarray(cv2.warpAffine(image, matrix, (w, h)), dtype=np.uint8)

    return turn


def rescale(factor: float) -> Callable[[Image], Image]:
    """Resize by ``factor`` (area averaging down, linear up)."""
    inter = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return lambda image: np.asarray(
        cv2.resize(image, None, fx=factor, fy=factor, interpolation=inter), dtype=np.uint8
    )
