"""Image and face quality from plain measures: sharpness, brightness, face size, image size."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels

# The face crop is resized to this square before measuring: the Laplacian's variance grows
# roughly 4x per halving of resolution, so without it a 2x upscaled face reads as blurred and a
# downscaled one as sharp. At this size astronaut() measures 231, inside the real range below.
MEASURE_SIDE = 128

# Variance of the Laplacian on the face crop (MODELS.md): real 198-521, blurred 3-13, print 14-97.
# The flag sits well above blurred and below real; prints straddle it and are the PAD's job.
BLUR_MAX_LAPLACIAN_VAR = 40.0
SHARPNESS_BAD, SHARPNESS_GOOD = 13.0, 198.0  # score ramp (log scale) from blurred to real
# Mean brightness (0-255) of the face crop: dark 25-40, real 113-158.
DARK_MAX_BRIGHTNESS = 65.0
BRIGHTNESS_BAD, BRIGHTNESS_GOOD = 40.0, 113.0
# Overexposure: no measured range; a face averaging above ~215 has lost its skin texture.
OVEREXPOSED_START, OVEREXPOSED_BAD = 215.0, 250.0
# Face size = shorter side of the detector's box. The PAD reads a 256 px crop and FaceMesh a
# 192 px one; below 80 px both work on upscaled pixels.
FACE_MIN_PX = 80
FACE_SIZE_BAD, FACE_SIZE_GOOD = 48.0, 128.0
# Image size = shorter side. Capture SDKs send 480p or more; below 240 px the face is tiny.
IMAGE_MIN_PX = 240
IMAGE_SIZE_BAD, IMAGE_SIZE_GOOD = 160.0, 480.0
# The seed's recommended threshold for every score in `extra`.
SCORE_THRESHOLD = 0.5


@dataclass(frozen=True)
class QualityMeasures:
    """Raw measures of one frame; ``face_px`` is 0 when no face was found."""

    laplacian_var: float
    brightness: float
    face_px: float
    image_px: int
    face_prob: float


@dataclass(frozen=True)
class QualityReport:
    """Quality flags and scores of one frame, in the seed's terms."""

    measures: QualityMeasures
    blur_or_dark: bool
    face_too_small: bool
    image_too_small: bool
    quality_score: float
    face_quality_score: float
    quality_too_low: bool
    face_quality_low: bool

    @property
    def usable(self) -> bool:
        """Good enough for the PAD model, whose output on poor frames is meaningless."""
        return not (self.blur_or_dark or self.face_too_small or self.quality_too_low)


def _ramp(value: float, bad: float, good: float) -> float:
    """0 at ``bad``, 1 at ``good``, linear between (either direction)."""
    return float(min(1.0, max(0.0, (value - bad) / (good - bad))))


def _log_ramp(value: float, bad: float, good: float) -> float:
    return _ramp(math.log(max(value, 1e-6)), math.log(bad), math.log(good))


def _geomean(values: list[float]) -> float:
    if any(v <= 0.0 for v in values):
        return 0.0
    return float(math.exp(sum(math.log(v) for v in values) / len(values)))


def _crop(image: NDArray[np.uint8], box: Box | None) -> NDArray[np.uint8]:
    height, width = image.shape[:2]
    if box is None:
        return image
    x0, y0, x1, y1 = box
    left, top = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
    right, bottom = min(width, int(math.ceil(x1))), min(height, int(math.ceil(y1)))
    if right - left < 2 or bottom - top < 2:
        return image
    return image[top:bottom, left:right]


def measure(image: NDArray[np.uint8], box: Box | None, face_prob: float = 0.0) -> QualityMeasures:
    """Measure an RGB frame; sharpness and brightness on the face crop (whole frame if none)."""
    gray = cv2.cvtColor(_crop(image, box), cv2.COLOR_RGB2GRAY)
    shrinking = min(gray.shape[:2]) > MEASURE_SIDE
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    norm = cv2.resize(gray, (MEASURE_SIDE, MEASURE_SIDE), interpolation=interp)
    lap_var = float(cv2.Laplacian(norm, cv2.CV_64F).var())
    face_px = 0.0 if box is None else float(min(box[2] - box[0], box[3] - box[1]))
    return QualityMeasures(
        laplacian_var=lap_var,
        brightness=float(gray.mean()),
        face_px=max(0.0, face_px),
        image_px=int(min(image.shape[:2])),
        face_prob=float(face_prob),
    )


def assess(m: QualityMeasures) -> QualityReport:
    """Turn measures into the seed's quality flags and scores."""
    has_face = m.face_px > 0
    sharp = _log_ramp(m.laplacian_var, SHARPNESS_BAD, SHARPNESS_GOOD)
    lit = min(
        _ramp(m.brightness, BRIGHTNESS_BAD, BRIGHTNESS_GOOD),
        _ramp(m.brightness, OVEREXPOSED_BAD, OVEREXPOSED_START),
    )
    face_size = _ramp(m.face_px, FACE_SIZE_BAD, FACE_SIZE_GOOD) if has_face else 0.0
    image_size = _ramp(float(m.image_px), IMAGE_SIZE_BAD, IMAGE_SIZE_GOOD)
    quality = _geomean([sharp, lit, face_size, image_size])
    face_quality = m.face_prob * _geomean([sharp, lit]) if has_face else 0.0
    return QualityReport(
        measures=m,
        blur_or_dark=m.laplacian_var < BLUR_MAX_LAPLACIAN_VAR or m.brightness < DARK_MAX_BRIGHTNESS,
        face_too_small=has_face and m.face_px < FACE_MIN_PX,
        image_too_small=m.image_px < IMAGE_MIN_PX,
        quality_score=quality,
        face_quality_score=float(face_quality),
        quality_too_low=quality < SCORE_THRESHOLD,
        face_quality_low=face_quality < SCORE_THRESHOLD,
    )


def frame_quality(
    image: NDArray[np.uint8], box: Box | None, face_prob: float = 0.0
) -> QualityReport:
    """Measure and assess one frame."""
    return assess(measure(image, box, face_prob))
