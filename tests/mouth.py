"""A synthetic mouth opening of a real face (skimage's astronaut), and a turned printed photo.

No real clip of a mouth opening is available offline, so it is drawn, as tests/blink.py draws
a blink. The astronaut smiles with her upper teeth showing (inner-lip gap ~6.6 px). A smaller
gap is drawn by squeezing the teeth band shut and pulling the lower lip and chin up; a larger
one by dropping the jaw: everything below the lower inner lip slides down, and the opening
under the upper lip is filled with a dark mouth interior. ``photo_turned`` is the attack a
head-turn challenge must reject: the whole photo is a flat print turned in front of a pinhole
camera, which is exactly a perspective warp.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from tests.fixtures_images import astronaut, jittered

Image = NDArray[np.uint8]
Points = NDArray[np.float64]

# The astronaut's inner lips from FaceMesh (pinned face_landmark model, measured once on the
# untouched 512x512 photo), corner to corner: upper mesh 78,191,80,81,82,13,312,311,310,415,308
# and lower mesh 78,95,88,178,87,14,317,402,318,324,308.
UPPER_INNER_LIP: Points = np.array(
    [
        [203.6, 139.6], [206.1, 139.0], [209.3, 139.5], [212.9, 140.4], [217.4, 141.4],
        [222.9, 142.4], [228.5, 142.5], [233.2, 142.4], [237.1, 142.2], [240.4, 142.3],
        [242.9, 143.4],
    ]
)  # fmt: skip
LOWER_INNER_LIP: Points = np.array(
    [
        [203.6, 139.6], [206.2, 142.6], [208.4, 144.4], [212.0, 146.3], [216.6, 147.9],
        [222.1, 148.9], [227.8, 149.0], [232.6, 148.3], [236.8, 147.0], [239.5, 145.8],
        [242.9, 143.4],
    ]
)  # fmt: skip
# Her own inner-lip gap at mesh 13-14 (the points mouth_ratio measures).
NATURAL_GAP_PX = 6.5
# The jaw moves whole down to JAW_FULL_Y (below the chin, mesh 152 at y 172), then the slide
# fades out by JAW_FADE_END_Y on the collar. Sideways the motion fades out at the mouth corners
# plus CORNER_MARGIN px, so the opening is lens-shaped and closed at the corners.
JAW_FULL_Y, JAW_FADE_END_Y = 176.0, 215.0
CORNER_MARGIN = 3.0
# The jaw drops across the lower face (BlazeFace box x 178-272), fading out towards its sides;
# beside the mouth the cheek stretches from STRETCH_TOP_Y (below the nose) down.
JAW_LEFT_X, JAW_RIGHT_X, STRETCH_TOP_Y = 178.0, 272.0, 120.0
# The mouth interior: dark red-brown, darker towards the throat; edge feathered by FEATHER_SIGMA.
MOUTH_RGB = (70, 25, 30)
THROAT_RGB = (35, 10, 15)
FEATHER_SIGMA = 0.8


def _column_map(
    height: int, upper: float, lower: float, squeeze: float, opening: float, jaw: float
) -> tuple[NDArray[np.float64], float]:
    """Source row for each output row of one column, and the row where the opening starts.

    The teeth band between the inner lips is squeezed by ``squeeze`` (0-1), the opening is
    ``opening`` px and the jaw below the lower lip drops ``jaw`` px (>= ``opening``); the cheek
    above the lips stretches by the difference.
    """
    src = np.arange(height, dtype=np.float64)
    fade = np.clip((JAW_FADE_END_Y - src) / (JAW_FADE_END_Y - JAW_FULL_Y), 0, 1)
    fade = 0.5 - 0.5 * np.cos(np.pi * fade)
    stretch = np.clip((src - STRETCH_TOP_Y) / max(upper - STRETCH_TOP_Y, 1.0), 0, 1)
    out = src + (jaw - opening) * stretch  # lips and above
    teeth = (src >= upper) & (src < lower)
    out[teeth] = upper + jaw - opening + (1 - squeeze) * (src[teeth] - upper)
    below = src >= lower
    out[below] = src[below] + (jaw - squeeze * (lower - upper)) * fade[below]
    top = upper + jaw - opening + (1 - squeeze) * (lower - upper)
    return np.interp(np.arange(height), out, src), top


def mouth_gap(image: Image, gap_px: float) -> Image:
    """The astronaut photo with her inner lips ``gap_px`` apart mid-mouth (0 closed, 6.5 hers).

    ``image`` must be the untouched 512x512 photo: the lip contours are where her mouth is.
    """
    if abs(gap_px - NATURAL_GAP_PX) < 0.05:
        return image.copy()
    height, width = image.shape[:2]
    map_x, map_y = np.meshgrid(
        np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
    )
    opening = np.zeros((height, width), dtype=np.float32)
    left = UPPER_INNER_LIP[0, 0] - CORNER_MARGIN
    right = UPPER_INNER_LIP[-1, 0] + CORNER_MARGIN
    squeeze = max(0.0, 1 - gap_px / NATURAL_GAP_PX)
    drop = max(0.0, gap_px - NATURAL_GAP_PX)
    rows = np.arange(height)
    for x in range(int(JAW_LEFT_X), int(JAW_RIGHT_X) + 1):
        lens = float(np.sqrt(np.sin(np.pi * np.clip((x - left) / (right - left), 0, 1))))
        side = min(
            1.0, (x - JAW_LEFT_X) / (left - JAW_LEFT_X), (JAW_RIGHT_X - x) / (JAW_RIGHT_X - right)
        )
        wide = 0.5 - 0.5 * np.cos(np.pi * max(0.0, side))
        upper = float(np.interp(x, UPPER_INNER_LIP[:, 0], UPPER_INNER_LIP[:, 1]))
        lower = max(upper, float(np.interp(x, LOWER_INNER_LIP[:, 0], LOWER_INNER_LIP[:, 1])))
        inverse, top = _column_map(height, upper, lower, squeeze * lens, drop * lens, drop * wide)
        map_y[:, x] = inverse
        opening[:, x] = (rows >= top) & (rows < top + drop * lens)
    moved = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if drop <= 0:
        return np.asarray(moved, dtype=np.uint8)
    depth = np.clip((rows[:, None] - LOWER_INNER_LIP[:, 1].max()) / drop, 0, 1)[..., None]
    interior = np.array(MOUTH_RGB) * (1 - depth) + np.array(THROAT_RGB) * depth
    mask = cv2.GaussianBlur(opening, (0, 0), FEATHER_SIGMA)[..., None]
    out = moved.astype(np.float32) * (1 - mask) + interior * mask
    return np.clip(out, 0, 255).astype(np.uint8)  # type: ignore[no-any-return]


# Inner-lip gap per frame (px): closed, opening, wide open x3, closing, closed (about 1 s at
# 15 fps). Measured mouth_ratio on the untouched photo: gap 0 -> 0.035, 6.5 (her smile) -> 0.17,
# 16 -> ~0.23, 26 -> ~0.33; FaceMesh puts the lower lip inside a wide painted opening.
MOUTH_PROFILE = (0.0, 0.0, 0.0, 0.0, 8.0, 16.0, 26.0, 26.0, 26.0, 16.0, 8.0, 0.0, 0.0, 0.0, 0.0)


def mouth_frames(opened: bool = True, seed: int = 0, peak: float = 26.0) -> list[Image]:
    """RGB frames of the astronaut opening and closing her mouth, from a hand-held camera.

    ``peak`` caps the lip gap (px) of MOUTH_PROFILE; ``opened=False`` gives the same video
    (same jitter and noise) with the lips kept closed.
    """
    base = astronaut()
    gaps = tuple(min(g, peak) if opened else 0.0 for g in MOUTH_PROFILE)
    # Same seed per gap: frame i gets the same camera motion and noise whatever the mouth does.
    videos = {g: jittered(mouth_gap(base, g), len(gaps), seed) for g in set(gaps)}
    return [videos[g][i] for i, g in enumerate(gaps)]


def photo_turned(image: Image, yaw_deg: float, pitch_deg: float, focal: float) -> Image:
    """``image`` as a flat print turned by yaw (vertical axis) and pitch (horizontal axis).

    The print is held so that, unturned, it fills the frame pixel for pixel in a pinhole camera
    of focal length ``focal`` px; it turns about its centre.
    """
    height, width = image.shape[:2]
    cx, cy = width / 2, height / 2
    yaw, pitch = np.radians(yaw_deg), np.radians(pitch_deg)
    turn_y = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    turn_x = np.array(
        [[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]]
    )
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    plane = np.column_stack([corners[:, 0] - cx, corners[:, 1] - cy, np.zeros(4)])
    moved = plane @ (turn_x @ turn_y).T
    depth = focal + moved[:, 2]
    seen = np.column_stack([cx + focal * moved[:, 0] / depth, cy + focal * moved[:, 1] / depth])
    matrix = cv2.getPerspectiveTransform(corners.astype(np.float32), seen.astype(np.float32))
    warped = cv2.warpPerspective(
        image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=(128, 128, 128)
    )
    return np.asarray(warped, dtype=np.uint8)
