"""A YUV4MPEG2 writer, for Chromium's fake camera (``--use-file-for-fake-video-capture``).

Chromium reads 4:2:0 Y4M files and loops them; this writes the synthetic blink of tests/blink.py
as a camera would see it: 640x480 at 15 fps, a blink every second.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from tests.blink import blink_frames

Image = NDArray[np.uint8]

CAMERA_SIZE = (640, 480)
CAMERA_FPS = 15


def write_y4m(path: Path, frames: Iterable[Image], fps: int) -> Path:
    """Write RGB frames (even width and height, all the same size) as 4:2:0 YUV4MPEG2."""
    with path.open("wb") as out:
        size: tuple[int, int] | None = None
        for frame in frames:
            height, width = frame.shape[:2]
            if size is None:
                if width % 2 or height % 2:
                    raise ValueError(f"4:2:0 needs even sides, not {width}x{height}")
                size = (width, height)
                out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
            elif (width, height) != size:
                raise ValueError(f"frame is {width}x{height}, the video {size[0]}x{size[1]}")
            # OpenCV's I420 is the three planes one after another: what a Y4M frame holds.
            i420 = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2YUV_I420)
            out.write(b"FRAME\n")
            out.write(i420.tobytes())
        if size is None:
            raise ValueError("no frames")
    return path


def camera_view(image: Image) -> Image:
    """The 512x512 astronaut as a 640x480 webcam frames it: the top 4:3 band, scaled up."""
    height, width = image.shape[:2]
    band = image[: width * 3 // 4] if height * 4 > width * 3 else image
    return np.asarray(cv2.resize(band, CAMERA_SIZE, interpolation=cv2.INTER_LINEAR), np.uint8)


def write_blink_camera(path: Path, seconds: int = 4) -> Path:
    """``seconds`` of the astronaut blinking once a second (a 330 ms blink mid-second).

    Each second has its own sensor noise and sway (a different seed), so frames repeat only when
    Chromium loops the whole file.
    """
    frames = (
        camera_view(frame)
        for second in range(seconds)
        for frame in blink_frames(CAMERA_FPS, blink=True, seed=second)
    )
    return write_y4m(path, frames, CAMERA_FPS)
