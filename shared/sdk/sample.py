"""Build capture files from RGB images: test fixtures and ``antihack make-sample`` output."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

from antihack.shared.choices import FILE_CHALLENGES
from antihack.shared.domain.capture import (
    CAPTURE_VERSION,
    CaptureLimits,
    encode_jpeg,
    parse_capture,
    sign_capture,
)
from antihack.shared.proto import liveness_pb2 as pb

SDK_VERSION = "antihack-make-sample/1"
# Every step a capture built from files can show (shared/choices.py: all but LIGHT).
CHALLENGES = FILE_CHALLENGES
# The fewest frames a step's run must have for its action to be visible at all: a blink needs
# open, closed and open again; any other action a starting pose and the pose it reaches.
MIN_STEP_FRAMES = {"BLINK": 3}
MIN_FRAMES_DEFAULT = 2


def step_runs(n: int, challenges: Sequence[str]) -> list[str]:
    """Tags for ``n`` frames: each challenge in turn, in consecutive, nearly equal runs."""
    return [challenges[i * len(challenges) // n].upper() for i in range(n)]


def performable(images: Sequence[NDArray[np.uint8]], challenges: Sequence[str]) -> str | None:
    """Why ``images``, split into equal runs, cannot show ``challenges`` (None when they can).

    A capture that cannot show its challenge is refused up front, not judged a hack later: each
    run needs ``MIN_STEP_FRAMES`` frames, and a run of one picture repeated shows no action.
    """
    n, k = len(images), len(challenges)
    for index, name in enumerate(challenges):
        step = name.upper()
        need = MIN_STEP_FRAMES.get(step, MIN_FRAMES_DEFAULT)
        run = [images[i] for i in range(n) if i * k // n == index]
        if len(run) < need:
            what = "open, closed and open eyes" if step == "BLINK" else "a start and the action"
            return (
                f"{step} needs at least {need} frames of its own ({what}); {n} frame(s) for "
                f"{k} step(s) give it {len(run)}: give more images, or a video and --frames"
            )
        if all(np.array_equal(run[0], other) for other in run[1:]):
            return f"{step}'s frames are all the same picture: a still image shows no action"
    return None


def prompt_times(timestamps: Sequence[int], tags: Sequence[str | None]) -> list[tuple[str, int]]:
    """Plausible ``Capture.prompts``: each tagged run's prompt half a frame interval before its
    first frame (an SDK shows the prompt, then records)."""
    prompts: list[tuple[str, int]] = []
    for i, tag in enumerate(tags):
        if tag and (i == 0 or tags[i - 1] != tag):
            gap = timestamps[i] - timestamps[i - 1] if i else 66
            prompts.append((tag, timestamps[i] - max(1, gap // 2)))
    return prompts


def fit_within(image: NDArray[np.uint8], max_side: int) -> NDArray[np.uint8]:
    """Downscale so the longer side is at most ``max_side``; smaller images are returned as is."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def build_capture(
    images: Sequence[NDArray[np.uint8]],
    *,
    challenge: str | None = None,
    session_id: str | None = None,
    sign_secret: bytes | None = None,
    fps: float = 15,
    start_ms: int | None = None,
    jpeg_quality: int = 90,
) -> bytes:
    """Serialize RGB frames as a capture; ``session_id=None`` draws a fresh one ("" sets none)."""
    if not images:
        raise ValueError("a capture needs at least one frame")
    if fps <= 0:
        raise ValueError("fps must be positive")
    if challenge is not None and challenge.upper() not in CHALLENGES:
        raise ValueError(f"challenge must be one of {', '.join(CHALLENGES)}")
    start = int(time.time() * 1000) if start_ms is None else start_ms
    capture = pb.Capture(
        version=CAPTURE_VERSION,
        session_id=uuid.uuid4().hex if session_id is None else session_id,
        sdk_version=SDK_VERSION,
        platform=pb.OTHER,
        started_at_ms=start,
    )
    capture.device.model = "make-sample"
    # Enum fields accept their value names; unmarked frames stay CHALLENGE_UNSPECIFIED.
    step = challenge.upper() if challenge else "CHALLENGE_UNSPECIFIED"
    if challenge:
        capture.MergeFrom(pb.Capture(challenges=[step]))
    best = len(images) // 2  # the middle frame: away from the start and end of any motion
    for index, image in enumerate(images):
        capture.frames.add(
            image=encode_jpeg(image, jpeg_quality),
            timestamp_ms=start + round(index * 1000 / fps),
            challenge_step=step,
            best=index == best,
        )
    if sign_secret is not None:
        sign_capture(capture, sign_secret)
    data = capture.SerializeToString(deterministic=True)
    # What we hand out must be what the API accepts; CaptureError says which limit was hit.
    parse_capture(data, CaptureLimits())
    return data
