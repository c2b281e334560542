"""Checks across the frames of one capture: a still image fed as video, motion.

Challenge steps are judged in challenges.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from antihack.worker.pipeline.fusion import CERTAIN, STRONG, WEAK, Signal
from antihack.worker.pipeline.motion import MotionReport, motion_report

# Two frames are the same picture when no pixel moved by more than JPEG rounding, or when the
# mean change is far below any live sensor's noise (>= ~0.5 levels even on a static scene).
STATIC_MAX_ABS = 3
STATIC_MEAN_ABS = 0.1
# Motion energy is measured on frames shrunk to this square, grayscale.
MOTION_SIDE = 64
# Fraction of identical consecutive pairs above which repeated frames are worth a weak signal.
REPEATED_FRACTION = 0.5


@dataclass(frozen=True)
class CrossFrameReport:
    """Frame-to-frame findings (still pictures fed as video, motion energy)."""

    static_pairs: int
    pair_count: int
    motion_energy: float
    signals: tuple[Signal, ...]
    # Natural motion and frame order of the face (motion.py); None when not judged.
    motion: MotionReport | None = None


def _is_static(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> bool:
    if a.shape != b.shape:
        return False
    diff = cv2.absdiff(a, b)
    return int(diff.max()) <= STATIC_MAX_ABS or float(diff.mean()) < STATIC_MEAN_ABS


def _small_gray(image: NDArray[np.uint8]) -> NDArray[np.float32]:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (MOTION_SIDE, MOTION_SIDE), interpolation=cv2.INTER_AREA)
    return np.asarray(small, dtype=np.float32)


def motion_energy(frames: Sequence[NDArray[np.uint8]]) -> float:
    """Mean absolute change (0-255) between consecutive frames, shrunk to 64x64 grayscale."""
    if len(frames) < 2:
        return 0.0
    smalls = [_small_gray(f) for f in frames]
    diffs = [float(np.abs(b - a).mean()) for a, b in zip(smalls, smalls[1:], strict=False)]
    return float(np.mean(diffs))


def _still_signals(static: int, pairs: int) -> list[Signal]:
    if pairs == 0 or static == 0:
        return []
    if static == pairs and pairs >= 2:
        detail = f"all {pairs + 1} frames are the same picture"
        return [Signal("still_image_injected", CERTAIN, detail)]
    if static == pairs:
        return [Signal("frames_identical", STRONG, "both frames are the same picture")]
    if static / pairs > REPEATED_FRACTION:
        return [Signal("frames_repeated", WEAK, f"{static} of {pairs} frame pairs are identical")]
    return []


def crossframe_report(
    frames: Sequence[NDArray[np.uint8]],
    meshes: Sequence[NDArray[np.float32] | None] | None = None,
    timestamps_ms: Sequence[int] | None = None,
) -> CrossFrameReport:
    """Judge the frame sequence for stills and motion (challenges: challenges.py).

    With ``meshes`` (FaceMesh points per frame, None where no face) the face's natural motion
    and frame order are judged too (motion.py): a still re-noised or moved per frame, or two
    or three stills cycled, is ``still_image_injected`` like exact copies.
    """
    static = sum(_is_static(a, b) for a, b in zip(frames, frames[1:], strict=False))
    pairs = max(0, len(frames) - 1)
    signals = _still_signals(static, pairs)
    motion = None
    if meshes is not None and len(meshes) == len(frames):
        stamps = list(timestamps_ms) if timestamps_ms is not None else [0] * len(frames)
        motion = motion_report(frames, meshes, stamps)
        known = {s.code for s in signals}
        signals += [s for s in motion.signals if s.code not in known]
    return CrossFrameReport(
        static_pairs=static,
        pair_count=pairs,
        motion_energy=motion_energy(frames),
        signals=tuple(signals),
        motion=motion,
    )
