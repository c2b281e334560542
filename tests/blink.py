"""A synthetic blink video of a real face (skimage's astronaut), generated in code.

No real blink clip is available offline, so the blink is drawn: each eye opening is covered by
skin texture copied from just below the eye, up to a little above the upper lid, and a thin dark
lash line is drawn from corner to corner, sagging slightly (a closed eyelid). Partial closure
lowers the lid only part of the way. The face itself, its motion and its noise are real-looking,
but the eyelids are painted; it is the closest honest substitute for a real blink recording.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from tests.fixtures_images import astronaut

Image = NDArray[np.uint8]
Points = NDArray[np.float64]

# The astronaut's eye contours from FaceMesh (pinned face_landmark model, measured once on the
# untouched 512x512 photo), corner to corner: lower lid (mesh 33,7,163,144,145,153,154,155,133
# and 263,249,390,373,374,380,381,382,362), then the upper lid over the same corners (mesh
# 33,246,161,160,159,158,157,173,133 and 263,466,388,387,386,385,384,398,362).
EYE_LIDS: tuple[tuple[Points, Points], ...] = (
    (
        np.array(
            [
                [194.9, 100.1], [196.5, 101.0], [198.3, 101.8], [200.7, 102.5], [204.3, 103.1],
                [207.6, 103.2], [210.7, 103.0], [212.6, 102.9], [213.4, 102.7],
            ]
        ),
        np.array(
            [
                [194.9, 100.1], [195.9, 99.7], [197.3, 99.1], [199.5, 98.3], [203.0, 98.0],
                [206.5, 98.5], [209.9, 99.8], [212.3, 101.6], [213.4, 102.7],
            ]
        ),
    ),
    (
        np.array(
            [
                [255.2, 104.6], [253.6, 105.3], [251.7, 105.7], [249.1, 106.0], [245.5, 106.0],
                [242.1, 105.7], [239.0, 105.0], [237.2, 104.7], [236.4, 104.4],
            ]
        ),
        np.array(
            [
                [255.2, 104.6], [254.2, 104.0], [252.9, 103.2], [250.6, 102.1], [247.1, 101.3],
                [243.6, 101.3], [240.1, 102.1], [237.6, 103.5], [236.4, 104.4],
            ]
        ),
    ),
)  # fmt: skip
# The eyelid drawing, in pixels of the 512x512 photo: the cover reaches UPPER_MARGIN above the
# upper lid, LOWER_MARGIN below the lower lid and CORNER_MARGIN past each corner; the closed
# lid's 1 px lash line sags LASH_SAG below the lower lid in the middle. Chosen by measuring the
# iris-model EAR (open photo 0.357): skin over the opening alone gave 0.25, with a 2 px lash
# line 0.14, a cover only 1-2 px above the lid 0.12-0.14 (the upper lash edge shows through);
# these values give 0.086, inside the real closed range 0.06-0.10.
UPPER_MARGIN, LOWER_MARGIN, CORNER_MARGIN, LASH_SAG = 4.0, 2.0, 2.0, 1.5
LASH_RGB = (70, 45, 40)
FEATHER_SIGMA = 0.7
# Eyelid closure per frame around the blink's middle frame: mostly closed, closed x3, mostly
# closed (a 330 ms blink at 15 fps). Closure 0.65 reads as EAR ~0.22, between open (~0.36) and
# closed (~0.08). Three closed frames: sampling 12 of 15 frames evenly always keeps one.
BLINK_PROFILE = (0.65, 1.0, 1.0, 1.0, 0.65)


def _poly_mask(shape: tuple[int, ...], polygon: Points) -> NDArray[np.float32]:
    mask = np.zeros(shape[:2], dtype=np.uint8)
    fixed = np.round(polygon * 4).astype(np.int32)  # 2 bits of sub-pixel precision
    cv2.fillPoly(mask, [fixed], 255, lineType=cv2.LINE_AA, shift=2)
    return (mask / 255).astype(np.float32)


def close_eyes(image: Image, closure: float) -> Image:
    """The astronaut photo with both upper lids lowered by ``closure`` (0 open, 1 closed).

    ``image`` must be the untouched 512x512 photo: EYE_LIDS are where its eyes are.
    """
    if closure <= 0:
        return image.copy()
    height, width = image.shape[:2]
    out = image.astype(np.float32)
    for lower, upper in EYE_LIDS:
        along = (lower[-1] - lower[0]) / np.linalg.norm(lower[-1] - lower[0])
        bulge = np.sin(np.linspace(0, np.pi, len(lower)))  # 0 at the corners, 1 mid-lid
        top, bottom = upper.copy(), lower.copy()
        top[:, 1] -= UPPER_MARGIN * bulge
        bottom[:, 1] += LOWER_MARGIN * bulge
        for edge in (top, bottom):
            edge[0] -= along * CORNER_MARGIN
            edge[-1] += along * CORNER_MARGIN
        closed = lower.copy()
        closed[:, 1] += LASH_SAG * bulge
        lid = top + (closed - top) * min(1.0, closure)
        cover = _poly_mask(image.shape, np.vstack([top, lid[::-1]]))
        mask = cv2.GaussianBlur(cover, (0, 0), FEATHER_SIGMA)
        # Skin texture from just below the eye opening, moved up over it.
        shift = round(float(bottom[:, 1].max() - top[:, 1].min()) + 1)
        skin = cv2.warpAffine(
            image, np.array([[1, 0, 0], [0, 1, -shift]], dtype=np.float32), (width, height),
            borderMode=cv2.BORDER_REFLECT,
        ).astype(np.float32)  # fmt: skip
        out = out * (1 - mask[..., None]) + skin * mask[..., None]
        cv2.polylines(
            out, [np.round(lid * 4).astype(np.int32)], False, LASH_RGB, 1,
            lineType=cv2.LINE_AA, shift=2,
        )  # fmt: skip
    return np.clip(out, 0, 255).astype(np.uint8)


def blink_schedule(n: int) -> list[float]:
    """Eyelid closure per frame: open, then BLINK_PROFILE centred on frame n // 2, then open."""
    closure = [0.0] * n
    start = n // 2 - len(BLINK_PROFILE) // 2
    for offset, value in enumerate(BLINK_PROFILE):
        if 0 <= start + offset < n:
            closure[start + offset] = value
    return closure


def _camera(image: Image, index: int, rng: np.random.Generator) -> Image:
    """A hand-held frame: slow sub-degree head roll and drift, 1% zoom sway, sensor noise."""
    height, width = image.shape[:2]
    phase = 2 * np.pi * index / 12
    matrix = np.asarray(
        cv2.getRotationMatrix2D(
            (width / 2, height / 2), 0.6 * np.sin(phase), 1 + 0.01 * np.sin(phase / 2)
        ),
        dtype=np.float64,
    )
    matrix[:, 2] += np.array([1.5 * np.cos(phase), np.sin(phase)]) + rng.uniform(-0.3, 0.3, 2)
    moved = cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)
    noisy = np.asarray(moved, dtype=np.float32) + rng.normal(0, 2.0, moved.shape)
    return np.asarray(np.clip(noisy, 0, 255), dtype=np.uint8)


def blink_frames(n: int = 15, blink: bool = True, seed: int = 0) -> list[Image]:
    """``n`` RGB frames of the astronaut with a blink in the middle; deterministic per seed.

    ``blink=False`` gives the same video with the blink's frames (closure > 0) left out.
    """
    base = astronaut()
    cache: dict[float, Image] = {}
    rng = np.random.default_rng(seed)
    frames = []
    for index, closure in enumerate(blink_schedule(n)):
        if closure not in cache:
            cache[closure] = close_eyes(base, closure)
        frame = _camera(cache[closure], index, rng)  # always drawn: same noise either way
        if blink or closure == 0:
            frames.append(frame)
    return frames


def write_video(path: Path, frames: list[Image], fps: float = 15) -> Path:
    """Write RGB ``frames`` as an MPEG-4 Part 2 (mp4v) video; returns ``path``."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write an mp4v video to {path}")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def write_blink_video(path: Path, fps: float = 15, n: int = 15, blink: bool = True) -> Path:
    """Write ``blink_frames(n, blink)`` as a video (see :func:`write_video`)."""
    return write_video(path, blink_frames(n, blink), fps)
