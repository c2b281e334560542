"""Build capture files from RGB images: test fixtures and ``antihack make-sample`` output."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

from shared.capture import CAPTURE_VERSION, CaptureLimits, parse_capture, sign_capture
from shared.proto import liveness_pb2 as pb

SDK_VERSION = "antihack-make-sample/1"
CHALLENGES = ("BLINK", "MOUTH", "NOD", "YAW")


def encode_jpeg(image: NDArray[np.uint8], quality: int = 90) -> bytes:
    """Encode an RGB uint8 image as JPEG."""
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("the image could not be encoded as JPEG")
    return buf.tobytes()


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
