"""Real and manipulated images for the pipeline tests, generated in code from scikit-image."""

from __future__ import annotations

import functools

import cv2
import numpy as np
from numpy.typing import NDArray
from skimage import data

Image = NDArray[np.uint8]

# FaceMesh face-oval indices from the image-right cheek round the chin to the image-left cheek,
# and the nose point the top edge of a surgical mask passes over.
LOWER_FACE_OVAL = (
    454,
    323,
    361,
    288,
    397,
    365,
    379,
    378,
    400,
    377,
    152,
    148,
    176,
    149,
    150,
    136,
    172,
    58,
    132,
    93,
    234,
)
NOSE_BRIDGE = 197


@functools.cache
def astronaut() -> Image:
    """A public-domain photo of a real face (512x512 RGB); do not modify the returned array."""
    return np.ascontiguousarray(data.astronaut())  # type: ignore[no-untyped-call]


@functools.cache
def coffee() -> Image:
    """A real photo without a face (400x600 RGB)."""
    return np.ascontiguousarray(data.coffee())  # type: ignore[no-untyped-call]


def blurred(image: Image, sigma: float = 3.0) -> Image:
    """Out of focus: a Gaussian blur (Laplacian variance of the face drops to ~5)."""
    return np.asarray(cv2.GaussianBlur(image, (0, 0), sigma), dtype=np.uint8)


def darkened(image: Image, gain: float = 0.2) -> Image:
    """Underexposed: brightness of the face drops from ~160 to ~30."""
    return np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)  # type: ignore[no-any-return]


def printed(image: Image) -> Image:
    """Simulate a print: washed-out colour, low contrast and paper/sensor noise."""
    f = image.astype(np.float32)
    grey = f.mean(axis=2, keepdims=True)
    f = 128 + 0.6 * (grey + 0.5 * (f - grey) - 128)
    f += np.random.default_rng(0).normal(0, 6, f.shape)
    clipped: NDArray[np.float32] = np.clip(f, 0, 255)
    return clipped.astype(np.uint8)


def resized(image: Image, side: int) -> Image:
    """Downscaled to ``side`` x ``side`` (the face shrinks with it)."""
    return np.asarray(cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA), dtype=np.uint8)


def jittered(image: Image, count: int, seed: int = 0) -> list[Image]:
    """``count`` frames of a hand-held camera: sub-pixel shifts, 1% zoom steps, sensor noise."""
    rng = np.random.default_rng(seed)
    height, width = image.shape[:2]
    frames = []
    for i in range(count):
        rotation = cv2.getRotationMatrix2D(
            (width / 2, height / 2), 0.3 * (i % 3 - 1), 1 + 0.01 * (i % 3)
        )
        matrix = np.asarray(rotation, dtype=np.float64)
        matrix[:, 2] += rng.uniform(-1.5, 1.5, size=2)
        moved = cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)
        noisy = moved.astype(np.float32) + rng.normal(0, 2.0, moved.shape)
        frames.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return frames


def with_surgical_mask(image: Image, points: NDArray[np.float32]) -> Image:
    """Draw a pale-blue pleated surgical mask over the nose and mouth, from FaceMesh points."""
    xy = points[:, :2]
    outline = np.vstack([xy[list(LOWER_FACE_OVAL)], xy[NOSE_BRIDGE][None, :]]).astype(np.int32)
    out = image.copy()
    cv2.fillPoly(out, [outline], (178, 205, 226), lineType=cv2.LINE_AA)
    top, bottom = int(xy[NOSE_BRIDGE, 1]), int(xy[152, 1])
    left, right = int(xy[234, 0]), int(xy[454, 0])
    layer = np.zeros(image.shape[:2], dtype=np.uint8)
    cv2.fillPoly(layer, [outline], 255)
    pleats = out.copy()
    for k in range(1, 4):  # three horizontal pleats, as on a real mask
        y = top + k * (bottom - top) // 4
        cv2.line(pleats, (left, y), (right, y), (140, 165, 190), 2, lineType=cv2.LINE_AA)
    out[layer > 0] = pleats[layer > 0]
    # A little shading so it is not a flat colour (flat patches are missed by the classifier).
    shade = cv2.GaussianBlur(layer, (0, 0), 6).astype(np.float32) / 255.0
    out = (out.astype(np.float32) * (0.85 + 0.15 * shade[..., None])).clip(0, 255)
    return out.astype(np.uint8)


def on_canvas(image: Image, side: int, canvas: tuple[int, int] = (480, 640)) -> Image:
    """``image`` shrunk to ``side`` px and centred on a grey canvas (height, width)."""
    small = resized(image, side)
    out = np.full((*canvas, 3), 128, dtype=np.uint8)
    y, x = (canvas[0] - side) // 2, (canvas[1] - side) // 2
    out[y : y + side, x : x + side] = small
    return out
