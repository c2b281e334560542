"""Face detection with BlazeFace short range (MediaPipe), batched over frames."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

from antihack.worker.pipeline.geometry import Frame, Letterbox, check_frames, letterbox, to_nchw
from antihack.worker.pipeline.models import ModelSet

INPUT_SIZE = 128
# MediaPipe clips logits at 100; 80 keeps exp() finite in float32.
RAW_SCORE_LIMIT = 80.0
NMS_IOU = 0.3
NUM_KEYPOINTS = 6


@dataclass(frozen=True)
class FaceBox:
    """A detected face in frame pixels, with BlazeFace's 6 keypoints.

    Keypoints: 0 image-left eye, 1 image-right eye, 2 nose tip, 3 mouth centre, 4 image-left
    tragion, 5 image-right tragion. The box may extend past the frame's edges.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    keypoints: tuple[tuple[float, float], ...]

    @property
    def width(self) -> float:
        """Box width in pixels."""
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        """Box height in pixels."""
        return self.y1 - self.y0

    @property
    def center(self) -> tuple[float, float]:
        """Box centre (x, y) in pixels."""
        return ((self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2)


@cache
def ssd_anchors() -> npt.NDArray[np.float32]:
    """Anchor centres (896, 2) in [0, 1]: stride 8 with 2 anchors, stride 16 with 6."""
    centres = []
    for stride, per_cell in ((8, 2), (16, 6)):
        cells = INPUT_SIZE // stride
        grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        cell_centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(cell_centres, per_cell, axis=0))
    return np.concatenate(centres)


def decode(
    regressors: npt.NDArray[np.float32], logits: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Decode one image's raw outputs to boxes+keypoints (896, 8, 2) in [0, 1] and scores."""
    anchors = ssd_anchors()
    points = (regressors.reshape(-1, 2 + NUM_KEYPOINTS, 2) / INPUT_SIZE).astype(np.float32)
    centre, size = points[:, 0] + anchors, points[:, 1]
    decoded: npt.NDArray[np.float32] = np.empty_like(points)
    decoded[:, 0] = centre - size / 2
    decoded[:, 1] = centre + size / 2
    decoded[:, 2:] = points[:, 2:] + anchors[:, None, :]
    clipped = np.clip(logits.reshape(-1), -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)
    scores = (1.0 / (1.0 + np.exp(-clipped))).astype(np.float32)
    return decoded, scores


def _iou(box: npt.NDArray[np.float32], boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    top_left = np.maximum(box[0], boxes[:, 0])
    bottom_right = np.minimum(box[1], boxes[:, 1])
    intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
    area = np.prod(box[1] - box[0])
    areas = np.prod(boxes[:, 1] - boxes[:, 0], axis=1)
    union = area + areas - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1), 0).astype(np.float32)


def weighted_nms(
    detections: npt.NDArray[np.float32], scores: npt.NDArray[np.float32], iou: float = NMS_IOU
) -> list[tuple[npt.NDArray[np.float32], float]]:
    """MediaPipe's weighted NMS: average each cluster (IoU > ``iou``) weighted by score."""
    order = np.argsort(-scores, kind="stable")
    remaining_dets, remaining_scores = detections[order], scores[order]
    kept = []
    while len(remaining_scores):
        similar = _iou(remaining_dets[0, :2], remaining_dets[:, :2]) > iou
        # The top detection always joins its own cluster (IoU 1 unless degenerate).
        similar[0] = True
        weights = remaining_scores[similar]
        merged = np.tensordot(weights, remaining_dets[similar], axes=1) / weights.sum()
        kept.append((merged.astype(np.float32), float(remaining_scores[0])))
        remaining_dets, remaining_scores = remaining_dets[~similar], remaining_scores[~similar]
    return kept


def _to_face_box(points: npt.NDArray[np.float32], score: float, box: Letterbox) -> FaceBox:
    pixels = box.to_frame(points * INPUT_SIZE)
    return FaceBox(
        x0=float(pixels[0, 0]),
        y0=float(pixels[0, 1]),
        x1=float(pixels[1, 0]),
        y1=float(pixels[1, 1]),
        score=score,
        keypoints=tuple((float(x), float(y)) for x, y in pixels[2:]),
    )


def detect_faces(
    models: ModelSet, frames: Sequence[Frame], min_score: float = 0.5
) -> list[list[FaceBox]]:
    """Detect faces in each RGB frame; one list per frame, largest box first."""
    check_frames(frames)
    if not frames:
        return []
    boxed = [letterbox(frame, INPUT_SIZE) for frame in frames]
    batch = to_nchw([image for image, _ in boxed], scale=1 / 127.5, offset=-1.0)
    regressors, logits = models.run("face_detector", batch, ["regressors", "classificators"])
    results = []
    for (_, box), regs, logit in zip(boxed, regressors, logits, strict=True):
        decoded, scores = decode(regs, logit)
        valid = (scores >= min_score) & np.all(decoded[:, 1] > decoded[:, 0], axis=1)
        faces = [
            _to_face_box(points, score, box)
            for points, score in weighted_nms(decoded[valid], scores[valid])
        ]
        results.append(sorted(faces, key=lambda f: f.width * f.height, reverse=True))
    return results
