"""Eye openness from the MediaPipe iris model's 71-point eye contour, batched over frames.

FaceMesh's own eye points do not follow a blink (open and closed both give EAR ~0.25), so the
eye aspect ratio is measured on the iris model's contour instead (see MODELS.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from antihack.worker.pipeline.geometry import (
    Frame,
    RotatedRect,
    check_frames,
    crop_points_to_frame,
    eye_line_angle,
    to_nchw,
    warp_rect,
)
from antihack.worker.pipeline.landmarks import FaceLandmarks
from antihack.worker.pipeline.models import ModelSet

INPUT_SIZE = 64
ROI_SCALE = 2.3
# Mesh eye corners (start, end): the image-left eye, then the image-right eye.
IMAGE_LEFT_EYE = (33, 133)
IMAGE_RIGHT_EYE = (362, 263)
NUM_CONTOUR = 71
# On a real blink clip open eyes gave EAR 0.15-0.45 and closed 0.06-0.10 (MODELS.md).
EAR_SPLIT = 0.12
# Logistic scale: EAR 0.08 -> 0.12 and 0.16 -> 0.88; chosen from those ranges, not calibrated.
EAR_SCALE = 0.02


@dataclass(frozen=True)
class EyeState:
    """Eye aspect ratios of the image-left and image-right eye and their mean ``ear``.

    ``open_proba`` = 1 / (1 + exp(-(ear - 0.12) / 0.02)): 0.5 at the open/closed split.
    """

    left_ear: float
    right_ear: float
    ear: float
    open_proba: float


def eye_rois(points: npt.NDArray[np.float32]) -> tuple[RotatedRect, RotatedRect]:
    """Iris-model ROIs: centred between the corners, 2.3x their distance, along the corners."""
    rois = []
    for start, end in (IMAGE_LEFT_EYE, IMAGE_RIGHT_EYE):
        p0, p1 = points[start, :2], points[end, :2]
        side = ROI_SCALE * float(np.linalg.norm(p1 - p0))
        centre = (p0 + p1) / 2
        rois.append(
            RotatedRect(float(centre[0]), float(centre[1]), side, side, eye_line_angle(p0, p1))
        )
    return rois[0], rois[1]


def eye_aspect_ratio(contour: npt.NDArray[np.float32]) -> float:
    """EAR on the 71-point contour: (|p11-p3| + |p13-p5|) / (2 |p0-p8|); 0 if degenerate."""
    xy = contour[:, :2].astype(np.float64)
    width = float(np.linalg.norm(xy[0] - xy[8]))
    if width <= 0:
        return 0.0
    lids = float(np.linalg.norm(xy[11] - xy[3]) + np.linalg.norm(xy[13] - xy[5]))
    return lids / (2 * width)


def open_probability(ear: float) -> float:
    """Map an EAR to P(eye open): a logistic centred at 0.12 with scale 0.02 (uncalibrated)."""
    z = max(-80.0, min(80.0, (ear - EAR_SPLIT) / EAR_SCALE))
    return 1.0 / (1.0 + math.exp(-z))


def eye_states(
    models: ModelSet, frames: Sequence[Frame], landmarks: Sequence[FaceLandmarks]
) -> list[EyeState]:
    """Measure both eyes of one face per frame; both eyes of all frames run in one batch."""
    check_frames(frames)
    if len(frames) != len(landmarks):
        raise ValueError(f"{len(frames)} frames but {len(landmarks)} landmark sets")
    if not frames:
        return []
    crops, rois, flips = [], [], []
    for frame, face in zip(frames, landmarks, strict=True):
        # The model was trained on image-left eyes; the image-right one is mirrored to match.
        for roi, flip in zip(eye_rois(face.points), (False, True), strict=True):
            crops.append(warp_rect(frame, roi, INPUT_SIZE, flip=flip))
            rois.append(roi)
            flips.append(flip)
    (contours,) = models.run(
        "iris_landmarks",
        to_nchw(crops, scale=1 / 255, offset=0.0),
        ["output_eyes_contours_and_brows"],
    )
    ears = [
        eye_aspect_ratio(
            crop_points_to_frame(raw.reshape(NUM_CONTOUR, 3), roi, INPUT_SIZE, flip=flip)
        )
        for raw, roi, flip in zip(contours, rois, flips, strict=True)
    ]
    states = []
    for left, right in zip(ears[0::2], ears[1::2], strict=True):
        mean = (left + right) / 2
        states.append(EyeState(left, right, mean, open_probability(mean)))
    return states
