"""The quick start ``antihack serve`` prints: a fresh sample capture and the curl that sends it.

A capture file ages: one older than a day is ``capture_too_old``, and frames already sent are a
replay. So every start writes a new ``sample.pb`` into the data dir: new timestamps, a new
``session_id`` (the capture's own id) and new frames. The frames are one real photo (the middle
frame of ``samples/astronaut.pb``) moved non-rigidly: a smooth displacement field, drawn afresh
for each start, that changes smoothly from frame to frame, so the capture shows natural motion
(not one photo repeated, which the still-image check flags) and differs from every earlier
start's.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from antihack.shared.proto import liveness_pb2 as pb
from antihack.shared.sdk.sample import build_capture

BASE_SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "astronaut.pb"
SAMPLE_FILE = "sample.pb"
FRAMES = 10
GRID = 5  # the displacement field's control grid (GRID x GRID points over the image)
AMPLITUDE_PX = 4.0  # the largest displacement of a control point, in pixels


def base_photo(path: Path = BASE_SAMPLE) -> NDArray[np.uint8]:
    """The middle frame of a capture file, as an RGB image."""
    capture = pb.Capture.FromString(path.read_bytes())
    if not capture.frames:
        raise ValueError(f"{path} has no frames")
    data = np.frombuffer(capture.frames[len(capture.frames) // 2].image, dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: the middle frame is not an image")
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def moving_frames(
    photo: NDArray[np.uint8], count: int = FRAMES, seed: int | None = None
) -> list[NDArray[np.uint8]]:
    """``count`` frames of ``photo`` under a smooth non-rigid motion (different per ``seed``).

    Each control point of a GRID x GRID lattice moves on its own slow sinusoid (random
    amplitude, frequency and phase); the field is interpolated bicubically over the image and
    applied with ``cv2.remap``. Neighbouring frames differ a little, the motion is not one 2D
    transform, and a little sensor noise makes no two frames byte-identical.
    """
    rng = np.random.default_rng(seed)
    height, width = photo.shape[:2]
    amp = rng.uniform(0.4, 1.0, size=(2, GRID, GRID)) * AMPLITUDE_PX
    freq = rng.uniform(0.5, 1.5, size=(2, GRID, GRID))
    phase = rng.uniform(0, 2 * np.pi, size=(2, GRID, GRID))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    frames: list[NDArray[np.uint8]] = []
    for index in range(count):
        t = index / max(1, count - 1)  # 0..1 over the capture
        control = (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)
        dx = cv2.resize(control[0], (width, height), interpolation=cv2.INTER_CUBIC)
        dy = cv2.resize(control[1], (width, height), interpolation=cv2.INTER_CUBIC)
        warped = cv2.remap(photo, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        noise = rng.normal(0, 1.5, size=warped.shape)
        frames.append(np.clip(warped + noise, 0, 255).astype(np.uint8))
    return frames


def write_fresh_sample(data_dir: Path, base: Path = BASE_SAMPLE) -> Path | None:
    """Write a new ``sample.pb`` into ``data_dir`` (None when the base sample is not there)."""
    if not base.exists():
        return None
    path = data_dir / SAMPLE_FILE
    path.write_bytes(build_capture(moving_frames(base_photo(base))))
    return path


def quickstart_text(base_url: str, api_id: str, api_secret: str, sample: Path | None) -> str:
    """The lines to copy: the demo key as shell variables and the curl that sends ``sample``."""
    if sample is None:
        return ""
    return (
        "  try it (a fresh capture, written at this start):\n"
        f"    export API_ID={shlex.quote(api_id)} API_SECRET={shlex.quote(api_secret)}\n"
        f"    curl -s -X POST {base_url}/face/liveness_anti_hack "
        '-H "X-DF-API-ID: $API_ID" -H "X-DF-API-SECRET: $API_SECRET" '
        f"-F liveness_data_file=@{shlex.quote(str(sample))} -F return_extra=1\n"
        "    (the first send is genuine; sending the same file again is a replay: a hack;\n"
        "     it is also too old after a day: restart serve for a new one)\n"
    )
