"""Genuine-looking captures of a real face, animated from one real photo (skimage's astronaut).

No real video ships with the project, so live captures are made by animating the astronaut
through her own FaceMesh landmarks (measured once per process with the pipeline's models):

- head motion: yaw, pitch and roll turn every landmark in 3D about the head centre using the
  mesh's own depth (z), then project orthographically, so a turn shows parallax (the nose moves
  more than the cheeks), not a flat homography; plus translation and a slow breathing-scale sway.
  A ring of anchors around the head moves with its 2D part, the frame border stays with the
  camera, and the image is warped piecewise-affinely (a Delaunay triangulation of landmarks and
  anchors) through the displacement;
- blinks (tests/blink.py eyelids), speech (tests/mouth.py lip gaps), small non-rigid
  micro-expressions (smooth bumps of landmark displacement, under a pixel);
- a hand-held camera's shake (none in ``still`` mode: a laptop on a desk), per-frame sensor
  noise, a slight exposure flicker, and JPEG encoding.

``still=True`` is a person sitting very still: head sway under a degree, no speech, a blink
only for some seeds. Everything is deterministic per seed. About 30-60 ms per frame.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray
from scipy.interpolate import LinearNDInterpolator

from antihack.shared.domain.capture import CAPTURE_VERSION, encode_jpeg
from antihack.shared.proto import liveness_pb2 as pb
from tests.blink import close_eyes
from tests.fixtures_images import astronaut
from tests.mouth import NATURAL_GAP_PX, mouth_gap

Image = NDArray[np.uint8]
Points = NDArray[np.float64]

# The displacement field is interpolated on a grid this many pixels apart, then resized.
FIELD_STEP = 4
# Anchors around the head (multiples of the face radius): the inner ring moves with the head's
# 2D motion (hair, neck), the outer ring with the camera only (the background).
HEAD_RING, BACKGROUND_RING, RING_POINTS = 1.35, 2.4, 24
RING_DEPTH = 0.6  # the inner ring's depth behind the head centre, in face radii
BLINK_CLOSURE = (0.35, 0.8, 1.0, 1.0, 0.8, 0.35)  # at 15 fps: a ~330 ms closure and reopening
MOUTH_OPEN_PX = 26.0  # OPEN_MOUTH / MOUTH challenge: lips 26 px apart (tests/mouth.py)
SDK_VERSION = "antihack-tests-genuine/1"
STILL_MIN_SWAY = 0.8  # degrees of yaw over a still capture (pitch 80% of it)


@dataclass(frozen=True)
class Mesh:
    """The astronaut's FaceMesh points (468, 3) on the untouched photo, and her head centre."""

    points: Points
    center: Points  # (3,) x, y, z
    radius: float  # half the face width, px


@functools.cache
def astronaut_mesh() -> Mesh:
    """Her FaceMesh landmarks, measured once per process with the pipeline's own models."""
    from antihack.worker.pipeline.detect import detect_faces
    from antihack.worker.pipeline.landmarks import face_landmarks
    from antihack.worker.pipeline.models import ModelSet

    models = ModelSet.load()
    image = astronaut()
    box = detect_faces(models, [image])[0][0]
    points = face_landmarks(models, [image], [box])[0].points.astype(np.float64)
    center = points.mean(axis=0)
    radius = float(np.ptp(points[:, 0])) / 2
    return Mesh(points=points, center=center, radius=radius)


def _rotation(yaw: float, pitch: float, roll: float) -> NDArray[np.float64]:
    """Yaw > 0 turns the nose to image right (the person's left), pitch > 0 looks up, roll > 0
    turns clockwise on screen; angles in degrees."""
    a, b, c = (math.radians(v) for v in (yaw, pitch, roll))
    turn = np.array([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]])
    tilt = np.array([[1, 0, 0], [0, math.cos(b), math.sin(b)], [0, -math.sin(b), math.cos(b)]])
    spin = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return spin @ tilt @ turn  # type: ignore[no-any-return]


def _smooth(
    rng: np.random.Generator, n: int, fps: float, amp: float, hz: float
) -> NDArray[np.float64]:
    """A smooth random wave: two sines near ``hz`` with random phases, peak about ``amp``."""
    t = np.arange(n) / fps
    out = np.zeros(n)
    for _ in range(2):
        f = hz * rng.uniform(0.6, 1.4)
        out += 0.5 * amp * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return out


@dataclass(frozen=True)
class _Motion:
    """Per-frame parameters of one capture."""

    yaw: NDArray[np.float64]
    pitch: NDArray[np.float64]
    roll: NDArray[np.float64]
    shift: NDArray[np.float64]  # (n, 2) head translation, px
    scale: NDArray[np.float64]  # head scale
    camera: NDArray[np.float64]  # (n, 3) camera shake: dx, dy, rotation (deg)
    closure: NDArray[np.float64]  # eyelid closure 0-1
    gap: NDArray[np.float64]  # inner-lip gap, px
    bumps: NDArray[np.float64]  # (n, k) weights of the micro-expression bumps
    gain: NDArray[np.float64]  # exposure gain
    noise: float  # sensor noise sigma
    quality: int  # JPEG quality


def _step_spans(n: int, challenges: Sequence[str]) -> list[tuple[str, int, int]]:
    if not challenges:
        return []
    edges = np.linspace(0, n, len(challenges) + 1).round().astype(int)
    return [(c, int(edges[i]), int(edges[i + 1])) for i, c in enumerate(challenges)]


def _bell(n: int, start: int, stop: int) -> NDArray[np.float64]:
    """0 outside [start, stop), rising to 1 and back inside (a smooth raised-cosine pulse)."""
    out = np.zeros(n)
    length = stop - start
    if length > 0:
        out[start:stop] = np.sin(np.pi * (np.arange(length) + 0.5) / length) ** 2
    return out


def _motion(
    seed: int, n: int, fps: float, still: bool, challenges: Sequence[str], k: int
) -> _Motion:
    rng = np.random.default_rng(seed)
    head = 0.6 if still else rng.uniform(1.5, 3.5)  # degrees of sway
    move = 0.6 if still else rng.uniform(2.0, 5.0)  # px of drift
    yaw = _smooth(rng, n, fps, head, 0.4)
    pitch = _smooth(rng, n, fps, 0.8 * head, 0.35)
    if still and n > 1:
        # Postural sway never stops: over a capture a seated head turns by at least ~0.8
        # degrees (an assumption of this generator, not a measurement of real people).
        yaw *= max(1.0, STILL_MIN_SWAY / max(float(np.ptp(yaw)), 1e-6))
        pitch *= max(1.0, 0.8 * STILL_MIN_SWAY / max(float(np.ptp(pitch)), 1e-6))
    roll = _smooth(rng, n, fps, 0.5 * head, 0.3)
    shift = np.stack([_smooth(rng, n, fps, move, 0.3), _smooth(rng, n, fps, move, 0.3)], 1)
    breath = _smooth(rng, n, fps, 1.0, 0.25)
    scale = 1 + 0.004 * breath
    shift[:, 1] += 0.8 * breath  # shoulders rise and the head with them
    if still:
        camera = np.zeros((n, 3))
    else:
        camera = np.stack(
            [
                _smooth(rng, n, fps, 1.5, 1.0) + rng.normal(0, 0.2, n),
                _smooth(rng, n, fps, 1.5, 1.0) + rng.normal(0, 0.2, n),
                _smooth(rng, n, fps, 0.3, 0.8),
            ],
            1,
        )
    closure = np.zeros(n)
    profile = np.interp(
        np.arange(0, len(BLINK_CLOSURE), 15 / fps), np.arange(len(BLINK_CLOSURE)), BLINK_CLOSURE
    )
    spans = _step_spans(n, challenges)
    blink_wanted = rng.uniform() < (0.3 if still else 0.7)
    blink_spans = [(a, b) for c, a, b in spans if c == "BLINK"]
    if not blink_spans and blink_wanted and n >= len(profile) + 2:
        start = int(rng.integers(1, n - len(profile)))
        blink_spans = [(start, start + len(profile))]
    for a, b in blink_spans:
        start = max(a, a + (b - a - len(profile)) // 2)
        part = profile[: max(0, min(len(profile), n - start))]
        closure[start : start + len(part)] = np.maximum(closure[start : start + len(part)], part)
    speaking = not still and rng.uniform() < 0.6
    if speaking:  # syllables at ~4 Hz: the lips close and part by a few px
        gap = np.clip(4 + _smooth(rng, n, fps, 10.0, 4.0), 0, 12)
    else:
        gap = np.full(n, NATURAL_GAP_PX)
    for c, a, b in spans:
        pulse = _bell(n, a, b)
        if c in ("MOUTH", "OPEN_MOUTH"):
            gap = gap + (MOUTH_OPEN_PX - gap) * pulse
        elif c in ("YAW", "TURN_LEFT"):
            yaw = yaw + 25 * pulse
        elif c == "TURN_RIGHT":
            yaw = yaw - 25 * pulse
        elif c in ("NOD", "LOOK_UP"):
            pitch = pitch + 15 * pulse
        elif c == "LOOK_DOWN":
            pitch = pitch - 15 * pulse
        elif c == "MOVE_CLOSER":
            ramp = np.clip((np.arange(n) - a) / max(1, b - a - 1), 0, 1)
            scale = scale * (1 + 0.35 * ramp)
    micro = 0.25 if still else 0.6
    bumps = np.stack([_smooth(rng, n, fps, micro, 0.7) for _ in range(k)], 1)
    gain = 1 + rng.normal(0, 0.008, n) + _smooth(rng, n, fps, 0.01, 0.5)
    return _Motion(
        yaw=yaw,
        pitch=pitch,
        roll=roll,
        shift=shift,
        scale=scale,
        camera=camera,
        closure=closure,
        gap=gap,
        bumps=bumps,
        gain=gain,
        noise=float(rng.uniform(1.5, 3.0)),
        quality=int(rng.integers(80, 93)),
    )


@functools.cache
def _painted(closure: float, gap: float) -> Image:
    """The photo with its lips ``gap`` px apart and its lids lowered by ``closure`` (cached)."""
    mouth = mouth_gap(astronaut(), gap)
    return close_eyes(mouth, closure) if closure > 0 else mouth


def _ring(mesh: Mesh, factor: float) -> Points:
    angles = np.linspace(0, 2 * np.pi, RING_POINTS, endpoint=False)
    r = factor * mesh.radius
    return np.stack([mesh.center[0] + r * np.cos(angles), mesh.center[1] + r * np.sin(angles)], 1)


def _border(width: int, height: int) -> Points:
    xs = np.linspace(0, width, 9)
    ys = np.linspace(0, height, 9)[1:-1]
    return np.vstack(
        [
            np.stack([xs, np.zeros_like(xs)], 1),
            np.stack([xs, np.full_like(xs, height)], 1),
            np.stack([np.zeros_like(ys), ys], 1),
            np.stack([np.full_like(ys, width), ys], 1),
        ]
    )


def _micro_basis(mesh: Mesh, k: int, seed: int) -> NDArray[np.float64]:
    """``k`` smooth displacement patterns over the landmarks, (k, 468, 2), unit peak."""
    rng = np.random.default_rng(seed + 7919)
    xy = mesh.points[:, :2]
    out = np.zeros((k, len(xy), 2))
    for j in range(k):
        centre = xy[rng.integers(len(xy))]
        weight = np.exp(-np.sum((xy - centre) ** 2, 1) / (2 * (0.35 * mesh.radius) ** 2))
        direction = rng.normal(size=2)
        out[j] = weight[:, None] * direction / np.linalg.norm(direction)
    return out


def _camera_map(points: Points, dx: float, dy: float, deg: float, cx: float, cy: float) -> Points:
    a = math.radians(deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (points - [cx, cy]) @ rot.T + [cx + dx, cy + dy]  # type: ignore[no-any-return]


def _render(
    seed: int, n: int, fps: float, still: bool, challenges: Sequence[str]
) -> tuple[list[Image], int]:
    """Raw (pre-JPEG) RGB frames of one capture at 512x512, and its JPEG quality."""
    mesh = astronaut_mesh()
    k = 4
    motion = _motion(seed, n, fps, still, challenges, k)
    basis = _micro_basis(mesh, k, seed)
    height, width = astronaut().shape[:2]
    cx, cy = width / 2, height / 2
    head_ring, background = _ring(mesh, HEAD_RING), _ring(mesh, BACKGROUND_RING)
    border = _border(width, height)
    ring_rel = np.column_stack(
        [head_ring - mesh.center[:2], np.full(RING_POINTS, RING_DEPTH * mesh.radius)]
    )
    source = np.vstack([mesh.points[:, :2], head_ring, background, border])
    gx, gy = np.meshgrid(
        np.arange(0, width + FIELD_STEP, FIELD_STEP, dtype=np.float64),
        np.arange(0, height + FIELD_STEP, FIELD_STEP, dtype=np.float64),
    )
    rng = np.random.default_rng(seed + 104729)
    frames = []
    for i in range(n):
        rot = _rotation(motion.yaw[i], motion.pitch[i], motion.roll[i])
        rel = mesh.points - mesh.center
        turned = (rel @ rot.T)[:, :2] * motion.scale[i] + mesh.center[:2] + motion.shift[i]
        turned += np.tensordot(motion.bumps[i], basis, axes=1)
        # The hair and neck turn with the head, as a shell just behind the face's edge.
        ring = (ring_rel @ rot.T)[:, :2] * motion.scale[i] + mesh.center[:2] + motion.shift[i]
        dest = np.vstack([turned, ring, background, border])
        dx, dy, deg = motion.camera[i]
        dest = _camera_map(dest, dx, dy, deg, cx, cy)
        # Backward map: each output pixel samples the photo where its content came from.
        field = LinearNDInterpolator(dest, source - dest, fill_value=0.0)(gx, gy)
        map_x = cv2.resize((gx + field[..., 0]).astype(np.float32), (width, height))
        map_y = cv2.resize((gy + field[..., 1]).astype(np.float32), (width, height))
        painted = _painted(round(float(motion.closure[i]), 2), round(float(motion.gap[i]), 1))
        warped = cv2.remap(painted, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        lit = warped.astype(np.float32) * motion.gain[i]
        lit += rng.normal(0, motion.noise, lit.shape).astype(np.float32)
        frames.append(np.clip(lit, 0, 255).astype(np.uint8))
    return frames, motion.quality


def _jpegs(
    seed: int, n: int, fps: float, still: bool, size: int, challenges: Sequence[str]
) -> list[bytes]:
    frames, quality = _render(seed, n, fps, still, tuple(challenges))
    if size != frames[0].shape[0]:
        frames = [
            np.asarray(cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA), dtype=np.uint8)
            for f in frames
        ]
    return [encode_jpeg(f, quality) for f in frames]


def _decode(data: bytes) -> Image:
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    assert bgr is not None, "not a JPEG"
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def genuine_frames(
    seed: int,
    n: int = 16,
    fps: float = 15.0,
    still: bool = False,
    size: int = 512,
    challenges: Sequence[str] = (),
) -> list[Image]:
    """``n`` RGB frames (``size`` square) of a live person, as decoded from the camera's JPEGs."""
    return [_decode(d) for d in _jpegs(seed, n, fps, still, size, challenges)]


def session_id_for(seed: int, still: bool = False) -> str:
    """A session id unique per seed (and mode), stable across runs."""
    digest = hashlib.sha256(f"genuine/{seed}/{still}".encode()).hexdigest()
    return f"genuine-{digest[:24]}"


def genuine_capture(
    seed: int,
    n: int = 16,
    fps: float = 15.0,
    still: bool = False,
    challenges: Sequence[str] = (),
    now_ms: int | None = None,
    size: int = 512,
) -> pb.Capture:
    """A genuine capture: JPEG frames at ``fps`` from ``started_at_ms`` (now by default).

    With ``challenges`` the frames are split into equal spans, one per challenge in order, each
    marked with its step and showing the action: BLINK, MOUTH/OPEN_MOUTH, YAW/TURN_LEFT/
    TURN_RIGHT (25 degrees), NOD/LOOK_UP/LOOK_DOWN (15 degrees), MOVE_CLOSER (+35%); other
    steps are only marked.
    """
    start = int(time.time() * 1000) if now_ms is None else now_ms
    capture = pb.Capture(
        version=CAPTURE_VERSION,
        session_id=session_id_for(seed, still),
        sdk_version=SDK_VERSION,
        platform=pb.OTHER,
        started_at_ms=start,
        challenges=list(challenges),
    )
    capture.device.model = "tests-genuine"
    steps = ["CHALLENGE_UNSPECIFIED"] * n
    for c, a, b in _step_spans(n, challenges):
        steps[a:b] = [c] * (b - a)
    for i, data in enumerate(_jpegs(seed, n, fps, still, size, challenges)):
        capture.frames.add(
            image=data,
            timestamp_ms=start + round(i * 1000 / fps),
            challenge_step=steps[i],
            best=i == n // 2,
        )
    return capture
