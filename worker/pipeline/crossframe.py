"""Checks across the frames of one capture: a still image fed as video, motion, challenges."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from worker.pipeline.fusion import CERTAIN, STRONG, WEAK, Signal

Points = NDArray[np.float32]  # (468, 3) FaceMesh points in frame pixels

# Two frames are the same picture when no pixel moved by more than JPEG rounding, or when the
# mean change is far below any live sensor's noise (>= ~0.5 levels even on a static scene).
STATIC_MAX_ABS = 3
STATIC_MEAN_ABS = 0.1
# Motion energy is measured on frames shrunk to this square, grayscale.
MOTION_SIDE = 64
# Fraction of identical consecutive pairs above which repeated frames are worth a weak signal.
REPEATED_FRACTION = 0.5

# BLINK: the iris-contour EAR of open eyes is 0.15-0.45 and of closed eyes 0.06-0.10 (MODELS.md).
EAR_OPEN_MIN = 0.15
EAR_CLOSED_MAX = 0.12
# MOUTH: inner-lip gap (13-14) over inner mouth width (78-308). Measured on the mouth painted
# onto the astronaut (tests/mouth.py): closed 0.03-0.06, her teeth-showing smile 0.17, lips
# 16 px apart on a 39 px mouth 0.23, 26 px apart 0.33-0.37: FaceMesh under-reads an opening,
# so 0.20 lets a moderate one pass (a failed challenge is a certain hack), while the range
# keeps a smile alone from passing. No real clip has been measured yet.
MOUTH_OPEN_MIN = 0.20
MOUTH_MIN_RANGE = 0.15
# YAW: nose tip offset along the eye line over the eye-corner distance grows ~0.4 tan(yaw), so
# 0.12 is ~17 degrees of turn; a still head jitters by ~0.015.
YAW_MIN_RANGE = 0.12
# NOD: nose tip position between the eye line (0) and the mouth (1) moves ~0.1 per 15 degrees
# of pitch on a standard head; 0.08 is ~12 degrees, again far above jitter.
NOD_MIN_RANGE = 0.08

# FaceMesh indices.
UPPER_LIP, LOWER_LIP, MOUTH_LEFT, MOUTH_RIGHT = 13, 14, 78, 308
EYE_OUTER_LEFT, EYE_OUTER_RIGHT, NOSE_TIP = 33, 263, 1


@dataclass(frozen=True)
class PoseMeasures:
    """Per-frame measures the challenges are judged on."""

    mouth_ratio: float
    yaw: float
    pitch: float


@dataclass(frozen=True)
class CrossFrameReport:
    """Frame-to-frame findings; ``observed`` maps each requested challenge to its outcome."""

    static_pairs: int
    pair_count: int
    motion_energy: float
    observed: dict[str, bool]
    signals: tuple[Signal, ...]


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


def pose_measures(points: Points) -> PoseMeasures:
    """Mouth opening, yaw and pitch proxies from one face's mesh (2D, scale-free)."""
    xy = points[:, :2].astype(np.float64)
    left, right = xy[EYE_OUTER_LEFT], xy[EYE_OUTER_RIGHT]
    eye_vec = right - left
    eye_dist = float(np.linalg.norm(eye_vec)) or 1e-6
    along = eye_vec / eye_dist
    down = np.array([-along[1], along[0]])  # image y grows downwards
    eye_mid = (left + right) / 2
    mouth_mid = (xy[MOUTH_LEFT] + xy[MOUTH_RIGHT]) / 2
    mouth_width = float(np.linalg.norm(xy[MOUTH_RIGHT] - xy[MOUTH_LEFT])) or 1e-6
    nose = xy[NOSE_TIP] - eye_mid
    eye_to_mouth = float(np.dot(mouth_mid - eye_mid, down)) or 1e-6
    return PoseMeasures(
        mouth_ratio=float(np.linalg.norm(xy[UPPER_LIP] - xy[LOWER_LIP])) / mouth_width,
        yaw=float(np.dot(nose, along)) / eye_dist,
        pitch=float(np.dot(nose, down)) / eye_to_mouth,
    )


def blink_observed(ears: Sequence[float | None]) -> bool:
    """Eyes open, then closed, then open again (a real blink reopens within ~400 ms)."""
    state = 0  # 0: waiting for open, 1: open seen, 2: closed after open
    for ear in ears:
        if ear is None:
            continue
        if state == 0 and ear >= EAR_OPEN_MIN:
            state = 1
        elif state == 1 and ear < EAR_CLOSED_MAX:
            state = 2
        elif state == 2 and ear >= EAR_OPEN_MIN:
            return True
    return False


def _range(values: Sequence[float]) -> float:
    return max(values) - min(values) if len(values) >= 2 else 0.0


def challenge_observed(
    challenge: str, ears: Sequence[float | None], poses: Sequence[PoseMeasures | None]
) -> bool:
    """Whether the frames show ``challenge`` (BLINK, MOUTH, YAW or NOD)."""
    present = [p for p in poses if p is not None]
    if challenge == "BLINK":
        return blink_observed(ears)
    if challenge == "MOUTH":
        ratios = [p.mouth_ratio for p in present]
        return bool(ratios) and max(ratios) >= MOUTH_OPEN_MIN and _range(ratios) >= MOUTH_MIN_RANGE
    if challenge == "YAW":
        return _range([p.yaw for p in present]) >= YAW_MIN_RANGE
    if challenge == "NOD":
        return _range([p.pitch for p in present]) >= NOD_MIN_RANGE
    raise ValueError(f"unknown challenge {challenge!r}")


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
    challenges: Sequence[str],
    challenge_steps: Sequence[str | None],
    ears: Sequence[float | None],
    meshes: Sequence[Points | None],
) -> CrossFrameReport:
    """Judge the frame sequence; per-frame inputs are None where no face was found.

    ``challenge_steps[i]`` is the challenge frame i was recorded for (None if unmarked); a
    challenge is judged on its marked frames when there are any, else on all frames.
    """
    static = sum(_is_static(a, b) for a, b in zip(frames, frames[1:], strict=False))
    pairs = max(0, len(frames) - 1)
    signals = _still_signals(static, pairs)
    poses = [pose_measures(m) if m is not None else None for m in meshes]
    observed: dict[str, bool] = {}
    for challenge in challenges:
        marked = [i for i, step in enumerate(challenge_steps) if step == challenge]
        idx = marked or list(range(len(frames)))
        seen = challenge_observed(challenge, [ears[i] for i in idx], [poses[i] for i in idx])
        observed[challenge] = seen
        if not seen:
            detail = f"{challenge} was requested but not observed in the frames"
            signals.append(Signal("challenge_not_met", CERTAIN, detail))
    return CrossFrameReport(
        static_pairs=static,
        pair_count=pairs,
        motion_energy=motion_energy(frames),
        observed=observed,
        signals=tuple(signals),
    )
