"""A YUV4MPEG2 writer, for Chromium's fake camera (``--use-file-for-fake-video-capture``).

Chromium reads 4:2:0 Y4M files and loops them; this writes a generated live person
(tests/genuine.py: the astronaut animated through its face mesh, blinking once a second) as a
camera would see it: 640x480 at 15 fps.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from tests.genuine import genuine_frames

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


def write_blink_camera(path: Path, seconds: int = 4, seed: int = 21) -> Path:
    """``seconds`` of a live person blinking once a second (tests/genuine.py, one BLINK step a
    second), as a webcam frames it.

    Not tests/blink.py's painted stills: a photo whose eyelids are painted shut and open again is
    the cycled-stills attack, which the motion check calls an injected still.
    """
    frames = genuine_frames(
        seed, n=CAMERA_FPS * seconds, fps=CAMERA_FPS, challenges=("BLINK",) * seconds
    )
    return write_y4m(path, (camera_view(frame) for frame in frames), CAMERA_FPS)
