"""Crops and warps shared by the model stages (pure functions on RGB uint8 frames).

Coordinates are continuous frame pixels: pixel (i, j) covers [i, i+1) x [j, j+1), so a model's
output in crop pixels maps back to the frame with the same affine transform as the crop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

Frame = npt.NDArray[np.uint8]
Points = npt.NDArray[np.float32]
PointLike = Sequence[float] | npt.NDArray[np.floating[Any]]


@dataclass(frozen=True)
class RotatedRect:
    """A rectangle in frame pixels around (cx, cy), turned by ``angle`` radians (clockwise)."""

    cx: float
    cy: float
    width: float
    height: float
    angle: float = 0.0


@dataclass(frozen=True)
class Letterbox:
    """How a frame was scaled and padded into a square model input."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float

    def to_frame(self, points: Points) -> Points:
        """Map (..., 2) points from input pixels back to frame pixels."""
        out = np.array(points, dtype=np.float32, copy=True)
        out[..., 0] = (out[..., 0] - self.pad_x) / self.scale_x
        out[..., 1] = (out[..., 1] - self.pad_y) / self.scale_y
        return out


def check_frames(frames: Sequence[Frame]) -> None:
    """Raise ValueError unless every frame is an RGB uint8 array of shape HxWx3."""
    for index, frame in enumerate(frames):
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(
                f"frame {index}: expected RGB uint8 HxWx3, got {frame.dtype} {frame.shape}"
            )
        if frame.shape[0] == 0 or frame.shape[1] == 0:
            raise ValueError(f"frame {index} is empty: {frame.shape}")


def eye_line_angle(start: PointLike, end: PointLike) -> float:
    """Angle in radians (clockwise on screen) of the line from ``start`` to ``end``."""
    return math.atan2(float(end[1]) - float(start[1]), float(end[0]) - float(start[0]))


def crop_to_frame_matrix(rect: RotatedRect, size: int, flip: bool = False) -> np.ndarray:
    """Return the 2x3 affine map from ``size``-pixel crop coordinates to frame coordinates."""
    cos, sin = math.cos(rect.angle), math.sin(rect.angle)
    sx = (-rect.width if flip else rect.width) / size
    sy = rect.height / size
    linear = np.array([[cos * sx, -sin * sy], [sin * sx, cos * sy]], dtype=np.float64)
    offset = np.array([rect.cx, rect.cy]) - linear @ np.array([size / 2, size / 2])
    return np.hstack([linear, offset[:, None]])


def warp_rect(frame: Frame, rect: RotatedRect, size: int, flip: bool = False) -> Frame:
    """Cut ``rect`` out of the frame as an upright ``size`` x ``size`` image (black outside)."""
    matrix = crop_to_frame_matrix(rect, size, flip)
    # warpAffine samples at integer pixel centres; shift in and out of the continuous convention.
    centred = matrix.copy()
    centred[:, 2] += matrix[:, :2] @ np.array([0.5, 0.5]) - 0.5
    warped = cv2.warpAffine(
        frame,
        centred,
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    return np.asarray(warped, dtype=np.uint8)


def crop_points_to_frame(
    points: npt.NDArray[np.floating], rect: RotatedRect, size: int, flip: bool = False
) -> Points:
    """Map (..., 2 or 3) points in crop pixels to frame pixels; z is scaled like x."""
    matrix = crop_to_frame_matrix(rect, size, flip)
    pts = np.asarray(points, dtype=np.float64)
    out = pts.copy()
    out[..., :2] = pts[..., :2] @ matrix[:, :2].T + matrix[:, 2]
    if pts.shape[-1] > 2:
        out[..., 2] = pts[..., 2] * rect.width / size
    return out.astype(np.float32)


def _resize(image: Frame, width: int, height: int) -> Frame:
    # Area averaging when shrinking avoids aliasing; cubic when growing, as the FAS package does.
    shrinking = width < image.shape[1] or height < image.shape[0]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return np.asarray(
        cv2.resize(image, (width, height), interpolation=interpolation), dtype=np.uint8
    )


def letterbox(frame: Frame, size: int) -> tuple[Frame, Letterbox]:
    """Scale the frame to fit ``size`` x ``size`` keeping its aspect, padding with black."""
    height, width = frame.shape[:2]
    scale = size / max(width, height)
    new_w = max(1, min(size, round(width * scale)))
    new_h = max(1, min(size, round(height * scale)))
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    resized = _resize(frame, new_w, new_h)
    boxed = cv2.copyMakeBorder(
        resized,
        pad_y,
        size - new_h - pad_y,
        pad_x,
        size - new_w - pad_x,
        borderType=cv2.BORDER_CONSTANT,
        value=(0, 0, 0),
    )
    return np.asarray(boxed, dtype=np.uint8), Letterbox(
        scale_x=new_w / width, scale_y=new_h / height, pad_x=float(pad_x), pad_y=float(pad_y)
    )


def crop_box(
    frame: Frame,
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    width: int,
    height: int,
    clip: bool,
) -> Frame:
    """Cut an axis-aligned box and resize it to ``width`` x ``height``.

    With ``clip`` the box is first cut to the frame (what the mask model was trained on);
    otherwise the part outside the frame is black (what the FAS package's padding does).
    """
    frame_h, frame_w = frame.shape[:2]
    left, top = math.floor(x0), math.floor(y0)
    right, bottom = max(left + 1, math.ceil(x1)), max(top + 1, math.ceil(y1))
    if clip:
        left, top = min(max(left, 0), frame_w - 1), min(max(top, 0), frame_h - 1)
        right, bottom = max(min(right, frame_w), left + 1), max(min(bottom, frame_h), top + 1)
        return _resize(np.ascontiguousarray(frame[top:bottom, left:right]), width, height)
    inside = frame[max(top, 0) : min(bottom, frame_h), max(left, 0) : min(right, frame_w)]
    padded = (
        cv2.copyMakeBorder(
            np.ascontiguousarray(inside),
            max(0, -top),
            max(0, bottom - frame_h),
            max(0, -left),
            max(0, right - frame_w),
            borderType=cv2.BORDER_CONSTANT,
            value=(0, 0, 0),
        )
        if inside.size
        else np.zeros((bottom - top, right - left, 3), dtype=np.uint8)
    )
    return _resize(np.asarray(padded, dtype=np.uint8), width, height)


def to_nchw(images: Sequence[Frame], scale: float, offset: float) -> npt.NDArray[np.float32]:
    """Stack HxWx3 uint8 images into an N x 3 x H x W float32 batch of ``x * scale + offset``."""
    batch = np.stack(images).astype(np.float32)
    batch *= scale
    batch += offset
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
