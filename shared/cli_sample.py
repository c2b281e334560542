"""``antihack make-sample``: build a liveness capture file from images or a video."""

from __future__ import annotations

from pathlib import Path

import click
import cv2
import numpy as np
from numpy.typing import NDArray

from shared.capture import CaptureError
from shared.sample import CHALLENGES, build_capture, fit_within

RgbImage = NDArray[np.uint8]


def read_image(path: Path) -> RgbImage | None:
    """Read an image file as RGB, or None when OpenCV cannot read it as an image."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def _open_video(path: Path) -> cv2.VideoCapture:
    video = cv2.VideoCapture(str(path))
    if not video.isOpened():
        raise click.BadParameter(f"{path} is neither an image nor a readable video")
    return video


def sample_video(path: Path, count: int) -> list[RgbImage]:
    """Read ``count`` frames spread evenly over a video (fewer if the video is shorter)."""
    # Container frame counts are often wrong and seeking is codec-dependent, so count with a
    # first pass of grab() and keep only the picked frames on the second: memory stays small.
    video = _open_video(path)
    total = 0
    while video.grab():
        total += 1
    video.release()
    if total == 0:
        raise click.BadParameter(f"{path} has no readable video frames")
    picks = {int(round(i)) for i in np.linspace(0, total - 1, num=min(count, total))}
    video = _open_video(path)
    frames: list[RgbImage] = []
    try:
        for index in range(total):
            if not video.grab():
                break
            if index in picks:
                ok, bgr = video.retrieve()
                if ok:
                    frames.append(np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8))
    finally:
        video.release()
    if not frames:
        raise click.BadParameter(f"{path} has no readable video frames")
    return frames


@click.command("make-sample")
@click.argument(
    "inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Capture file to write (.pb).",
)
@click.option(
    "--frames",
    "frame_count",
    type=click.IntRange(1, 64),
    default=10,
    show_default=True,
    help="Frames to sample evenly from a video (ignored for images).",
)
@click.option(
    "--challenge",
    type=click.Choice(CHALLENGES, case_sensitive=False),
    help="Challenge the capture claims was performed.",
)
@click.option("--session-id", help="Session id to record (default: a fresh random one).")
@click.option(
    "--sign-secret",
    envvar="ANTIHACK_SIGN_SECRET",
    help="API key's SDK secret; signs the capture (HMAC-SHA256). Env: ANTIHACK_SIGN_SECRET.",
)
@click.option(
    "--fps",
    type=click.FloatRange(min=0.1),
    default=15.0,
    show_default=True,
    help="Frame rate used for the frame timestamps.",
)
@click.option(
    "--max-side",
    type=click.IntRange(min=64),
    default=1280,
    show_default=True,
    help="Downscale frames whose longer side exceeds this (phone SDKs send about 720p).",
)
def make_sample(
    inputs: tuple[Path, ...],
    output: Path,
    frame_count: int,
    challenge: str | None,
    session_id: str | None,
    sign_secret: str | None,
    fps: float,
    max_side: int,
) -> None:
    """Build a capture file (-o) from INPUTS: images (one frame each) or one video."""
    images: list[RgbImage] = []
    for path in inputs:
        image = read_image(path)
        if image is None:
            if len(inputs) > 1:
                raise click.BadParameter(f"{path} is not an image; give images, or one video")
            images = sample_video(path, frame_count)
            break
        images.append(image)
    images = [fit_within(image, max_side) for image in images]
    try:
        data = build_capture(
            images,
            challenge=challenge.upper() if challenge else None,
            session_id=session_id,
            sign_secret=sign_secret.encode() if sign_secret is not None else None,
            fps=fps,
        )
    except CaptureError as exc:
        raise click.ClickException(f"the capture would be refused: {exc.reason}") from None
    output.write_bytes(data)
    signed = "signed" if sign_secret is not None else "unsigned"
    click.echo(f"wrote {output}: {len(images)} frames, {len(data)} bytes, {signed}", err=True)
