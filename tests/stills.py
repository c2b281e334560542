"""Still-image injection attacks: one photo (or two or three) re-noised, shifted, scaled,
rotated or re-encoded per frame so that no two frames are pixel-identical (issue #13).

Each variant takes the attacker's photo(s) and returns RGB frames as decoded from the JPEGs a
capture would carry; deterministic per seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

from antihack.shared.domain.capture import encode_jpeg

Image = NDArray[np.uint8]

STILL_VARIANTS = ("noise", "shift", "scale", "rotate", "jpeg", "all")


def _decode(data: bytes) -> Image:
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    assert bgr is not None, "not an image"
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def _affine(image: Image, dx: float, dy: float, scale: float, degrees: float) -> Image:
    height, width = image.shape[:2]
    matrix = np.asarray(
        cv2.getRotationMatrix2D((width / 2, height / 2), degrees, scale), dtype=np.float64
    )
    matrix[:, 2] += (dx, dy)
    moved = cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)
    return np.asarray(moved, dtype=np.uint8)


def perturbed(image: Image, variant: str, rng: np.random.Generator) -> Image:
    """One copy of ``image`` changed as ``variant`` says, JPEG-encoded and decoded."""
    out = image
    quality = 90
    if variant in ("shift", "all"):
        step = rng.integers(1, 4, size=2) * rng.choice([-1, 1], size=2)
        out = _affine(out, float(step[0]), float(step[1]), 1.0, 0.0)
    if variant in ("scale", "all"):
        out = _affine(out, 0.0, 0.0, float(rng.uniform(0.95, 1.05)), 0.0)
    if variant in ("rotate", "all"):
        out = _affine(out, 0.0, 0.0, 1.0, float(rng.uniform(-3, 3)))
    if variant in ("noise", "all"):
        amp = int(rng.integers(1, 4))
        noise = rng.integers(-amp, amp + 1, size=out.shape)
        out = np.clip(out.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    if variant in ("jpeg", "all"):
        quality = int(rng.integers(30, 96))
    return _decode(encode_jpeg(out, quality))


def still_frames(photo: Image, variant: str, n: int = 16, seed: int = 0) -> list[Image]:
    """``n`` copies of one photo, each perturbed by ``variant`` (one of STILL_VARIANTS)."""
    rng = np.random.default_rng(seed)
    return [perturbed(photo, variant, rng) for _ in range(n)]


def held_pattern(photos: int, n: int, rng: np.random.Generator, max_hold: int = 4) -> list[int]:
    """Which photo each of ``n`` frames shows: the photos in turn (with three, sometimes one
    skipped), each held for 1..``max_hold`` frames, as an attacker clicking through stills."""
    order: list[int] = []
    current = 0
    while len(order) < n:
        order += [current] * int(rng.integers(1, max_hold + 1))
        skip = rng.random() >= 0.7 and photos > 2
        current = (current + (2 if skip else 1)) % photos
    return order[:n]


def cycled_frames(
    photos: Sequence[Image], pattern: Sequence[int], variant: str = "all", seed: int = 0
) -> list[Image]:
    """Frames showing ``photos[pattern[i]]`` (e.g. eyes open, closed, open), each perturbed."""
    rng = np.random.default_rng(seed)
    return [perturbed(photos[k], variant, rng) for k in pattern]
