"""468-point face mesh (MediaPipe FaceMesh) on the detected face, batched over frames."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from antihack.worker.pipeline.detect import FaceBox
from antihack.worker.pipeline.geometry import (
    Frame,
    RotatedRect,
    check_frames,
    crop_points_to_frame,
    eye_line_angle,
    to_nchw,
    warp_rect,
)
from antihack.worker.pipeline.models import ModelSet

INPUT_SIZE = 192
ROI_SCALE = 1.5
NUM_LANDMARKS = 468


@dataclass(frozen=True, eq=False)
class FaceLandmarks:
    """FaceMesh output: ``points`` (468, 3) in frame pixels (z on the x scale, read-only).

    ``face_prob`` is the mesh's own face probability (sigmoid of its face logit).
    """

    points: npt.NDArray[np.float32]
    face_prob: float


def face_roi(box: FaceBox) -> RotatedRect:
    """MediaPipe's mesh ROI: a square 1.5x the box's long side, turned to the eye line."""
    side = ROI_SCALE * max(box.width, box.height)
    cx, cy = box.center
    return RotatedRect(cx, cy, side, side, eye_line_angle(box.keypoints[0], box.keypoints[1]))


def face_landmarks(
    models: ModelSet, frames: Sequence[Frame], boxes: Sequence[FaceBox]
) -> list[FaceLandmarks]:
    """Run FaceMesh on one face per frame (``boxes[i]`` is the face in ``frames[i]``)."""
    check_frames(frames)
    if len(frames) != len(boxes):
        raise ValueError(f"{len(frames)} frames but {len(boxes)} boxes")
    if not frames:
        return []
    rois = [face_roi(box) for box in boxes]
    crops = [warp_rect(frame, roi, INPUT_SIZE) for frame, roi in zip(frames, rois, strict=True)]
    raw, logits = models.run(
        "face_landmarks", to_nchw(crops, scale=1 / 255, offset=0.0), ["landmarks", "face_flag"]
    )
    results = []
    for points, logit, roi in zip(raw, logits, rois, strict=True):
        in_frame = crop_points_to_frame(points.reshape(NUM_LANDMARKS, 3), roi, INPUT_SIZE)
        in_frame.setflags(write=False)
        face_prob = float(1.0 / (1.0 + np.exp(-np.clip(float(logit.ravel()[0]), -80, 80))))
        results.append(FaceLandmarks(points=in_frame, face_prob=face_prob))
    return results
