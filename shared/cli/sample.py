"""``antihack make-sample``: build a liveness capture file from images or a video.

It imports OpenCV at load time: the root group loads this module only when the command runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import click
import cv2
import numpy as np
from numpy.typing import NDArray

from antihack.shared.cli.common import json_option
from antihack.shared.cli.output import emit_json
from antihack.shared.domain.capture import CaptureError, CaptureLimits, parse_capture, sign_capture
from antihack.shared.proto import liveness_pb2 as pb
from antihack.shared.sdk.sample import (
    CHALLENGES,
    build_capture,
    fit_within,
    performable,
    prompt_times,
    step_runs,
)

RgbImage = NDArray[np.uint8]


def read_image(path: Path) -> RgbImage | None:
    """Read an image file as RGB, or None when OpenCV cannot read it as an image."""
    try:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # e.g. larger than OPENCV_IO_MAX_IMAGE_PIXELS (set by `shared`)
        raise click.BadParameter(
            f"{path} cannot be read: {exc.err or exc}; images over 8192x8192 px need "
            "OPENCV_IO_MAX_IMAGE_PIXELS set higher (frames are limited to 16.7 Mpx anyway)"
        ) from None
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


def for_capture_session(
    data: bytes,
    *,
    challenges: Sequence[str] = (),
    nonce: str = "",
    steps: Sequence[str | None] | None = None,
    sign_secret: bytes | None = None,
    prompts: bool = False,
) -> bytes:
    """A capture (as ``build_capture`` makes it, unsigned) set up for a capture session.

    ``challenges`` replaces the requested challenges, in order, and tags the frames with them
    in consecutive, nearly equal runs (BLINK, BLINK, YAW, YAW), as an SDK records one step after
    the other; ``steps`` gives each frame's tag instead (None: untagged). ``nonce`` is the
    capture session's. With ``prompts`` each tagged run gets a ``Capture.prompts`` entry half a
    frame interval before its first frame, as the SDK shows a step's prompt, then records it.
    The result is signed again with ``sign_secret``.
    """
    capture = pb.Capture.FromString(data)
    if challenges:
        del capture.challenges[:]
        capture.MergeFrom(pb.Capture(challenges=[c.upper() for c in challenges]))
        n = len(capture.frames)
        if steps is None:
            steps = step_runs(n, challenges)
    if steps is not None:
        if len(steps) != len(capture.frames):
            raise ValueError(f"{len(steps)} steps for {len(capture.frames)} frames")
        for frame, step in zip(capture.frames, steps, strict=True):
            name = step.upper() if step else "CHALLENGE_UNSPECIFIED"
            frame.challenge_step = cast("pb.Challenge", pb.Challenge.Value(name))
    if prompts or steps is not None:
        del capture.prompts[:]  # retagged frames: earlier prompts no longer fit
    if prompts:
        tags = [
            pb.Challenge.Name(f.challenge_step) if f.challenge_step else None
            for f in capture.frames
        ]
        for step, shown_at_ms in prompt_times([f.timestamp_ms for f in capture.frames], tags):
            capture.prompts.add(step=pb.Challenge.Value(step), shown_at_ms=shown_at_ms)
    capture.session_nonce = nonce
    capture.signature = b""
    if sign_secret is not None:
        sign_capture(capture, sign_secret)
    out = capture.SerializeToString(deterministic=True)
    parse_capture(out, CaptureLimits())  # CaptureError names the limit a bad nonce breaks
    return out


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
    "challenges",
    multiple=True,
    type=click.Choice(CHALLENGES, case_sensitive=False),
    help="Challenge step the frames show; repeat it for a sequence (a capture session's, in "
    "order): the frames are tagged with each in turn, in equal runs (at least 3 frames for "
    "BLINK, 2 for any other step, not all the same picture).",
)
@click.option(
    "--prompts/--no-prompts",
    default=True,
    show_default=True,
    help="Record when each step's prompt was shown (Capture.prompts): just before its first "
    "frame. The server then judges each step within its window after the prompt.",
)
@click.option(
    "--session-nonce",
    help="The nonce of a capture session (POST /v1/sessions) to put in the capture.",
)
@click.option(
    "--session-id",
    help="The capture's own session_id, unique per capture (default: a fresh random one).",
)
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
@json_option("Print what was written (output, frames, bytes, signed) as JSON on stdout.")
def make_sample(
    inputs: tuple[Path, ...],
    output: Path,
    frame_count: int,
    challenges: tuple[str, ...],
    prompts: bool,
    session_nonce: str | None,
    session_id: str | None,
    sign_secret: str | None,
    fps: float,
    max_side: int,
    as_json: bool,
) -> None:
    """Build a capture file from images or a video.

    Writes -o from INPUTS: images (one frame each) or one video.
    """
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
    impossible = performable(images, challenges)
    if impossible:
        raise click.UsageError(f"the capture could not show its challenge: {impossible}")
    secret = sign_secret.encode() if sign_secret is not None else None
    retag = bool(challenges) or bool(session_nonce)
    try:
        data = build_capture(
            images, session_id=session_id, sign_secret=None if retag else secret, fps=fps
        )
        if retag:
            data = for_capture_session(
                data,
                challenges=challenges,
                nonce=session_nonce or "",
                sign_secret=secret,
                prompts=prompts,
            )
    except CaptureError as exc:
        raise click.ClickException(f"the capture would be refused: {exc.reason}") from None
    output.write_bytes(data)
    if as_json:
        signed = sign_secret is not None
        emit_json(
            {"output": str(output), "frames": len(images), "bytes": len(data), "signed": signed}
        )
        return
    signed_word = "signed" if sign_secret is not None else "unsigned"
    click.echo(f"wrote {output}: {len(images)} frames, {len(data)} bytes, {signed_word}", err=True)
