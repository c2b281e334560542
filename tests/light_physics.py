"""Captures of the LIGHT step made with a diffuse-reflection model of the screen's light.

No real clip of a face lit by a flashing screen ships with the project, so genuine captures are
made from a live person (tests/genuine.py: skimage's astronaut animated in 3D, with her head's
sway, blinks, speech, hand-held camera, sensor noise and JPEG; each frame cropped so the face
fills ~42% of the frame width, as the SDK asks) lit by the screen under this model, in linear
light:

    pixel = exposure * (base + base * s(t - latency) * rho * g(x, y)) + noise

- ``base`` is the person's frame (albedo x ambient light); ``s`` the screen's colour (RGB in [0, 1],
  black = screen off) at the time the camera saw the frame (``latency`` 40-200 ms after the
  SDK's stamp: camera pipeline and display refresh);
- ``rho`` is the white screen's illuminance on the face (~30 cm away) over the ambient's: a
  phone at full brightness gives ~40 lux there, so ``rho`` runs from 0.03 in a bright room
  (~1300 lux, near a window) to 0.4 in a dim one (~100 lux): "a few per cent" at the bright end;
- ``g = (d0 / d)^2 * max(0, n . l)``: Lambertian shading by the surface normal ``n`` and the
  inverse-square fall-off with distance ``d``. Depth and normals come from the photo's own
  FaceMesh points (z interpolated over the face, 14 cm across, at d0 = 30 cm; ``l`` points at
  the screen, beside the camera): measured on the first frame, then moved with the face onto
  every frame (a similarity fitted to that frame's FaceMesh points; the head turns only a few
  degrees while the step asks to hold still). Outside the head everything is a wall
  ``wall_m`` behind the camera plane (1-3 m), facing the screen;
- the camera: exposure that auto-exposure keeps the face at (darker and at higher gain in dim
  light: noise sigma 2-6 levels), a 1% exposure flicker, and JPEG at quality 85 (the SDK's);
  the hand-held camera's shake is the generator's (none for odd seeds: a person sitting still
  at a laptop). ``Geometry`` alone (one photo, a +-1 px shake) is kept for the browser loop.

Attacks change only the response: none at all (``rho = 0``: a screen replay or an injected
video), the same on the whole frame (``g = 1`` everywhere: a replay screen or a print that
fills the frame is one flat sheet at one distance), the right colours in another order, or a
response late by more than 500 ms.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np
from numpy.typing import NDArray
from scipy.interpolate import griddata

from antihack.shared.domain.capture import encode_jpeg
from antihack.shared.domain.light import LightSequence, draw_sequence
from antihack.shared.proto import liveness_pb2 as pb
from tests.fixtures_images import astronaut
from tests.genuine import genuine_frames

Image = NDArray[np.uint8]
FRAME_SIZE = (480, 360)  # width, height
FACE_WIDTH_CM = 14.0
FACE_DISTANCE_CM = 30.0
# The SDK records the LIGHT step at 16 frames per second: one frame as each colour is painted,
# then every 62.5 ms; a black screen for BASELINE_MS before the first colour.
FRAME_MS = 62.5
BASELINE_MS = 200
# The face-oval points the near (head) region is the hull of.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378,
             400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54,
             103, 67, 109)  # fmt: skip


@dataclass(frozen=True)
class Scene:
    """The lighting of one capture."""

    rho: float = 0.1  # white screen on the face over ambient
    exposure: float = 1.0  # auto-exposure's result (dim rooms come out darker)
    noise: float = 2.0  # sensor noise, levels (sigma)
    latency_ms: float = 100.0
    wall_m: float = 1.5
    # Attacks: "uniform" lights the whole frame alike; "order" is the order the response
    # follows (0-based colour indices), None for the true one.
    uniform: bool = False
    order: tuple[int, ...] | None = None


# Ambient levels from dim to bright: (name, rho, exposure, noise sigma).
AMBIENT = (
    ("dim", 0.4, 0.6, 6.0),
    ("evening", 0.2, 0.75, 4.0),
    ("office", 0.1, 0.9, 3.0),
    ("bright", 0.05, 1.0, 2.0),
    ("window", 0.03, 1.0, 2.0),
)


@dataclass(frozen=True)
class Geometry:
    """The cropped photo and its per-pixel lighting factor g for the face and the wall."""

    base: NDArray[np.float32]  # linear RGB in [0, 1]
    near: NDArray[np.float32]  # g on the head, 0 elsewhere
    head: NDArray[np.bool_]


def _linear(image: Image) -> NDArray[np.float32]:
    return np.power(image.astype(np.float32) / 255.0, 2.2)  # type: ignore[no-any-return]


_SRGB_LUT = (np.power(np.arange(4096, dtype=np.float32) / 4095, 1 / 2.2) * 255.0).astype(np.float32)


def _srgb(linear: NDArray[np.float32]) -> NDArray[np.float32]:
    """Back to sRGB levels (a 12-bit table: finer than the 8-bit output)."""
    index = np.clip(linear * 4095.0 + 0.5, 0, 4095).astype(np.int32)
    return _SRGB_LUT[index]  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Live:
    """A live person's frames for one capture (``ready`` before the LIGHT step, then one per
    step frame), cropped like ``face_crop()``, and each frame's lighting factor and head."""

    frames: tuple[Image, ...]
    near: tuple[NDArray[np.float32], ...]
    head: tuple[NDArray[np.bool_], ...]
    ready: int


def crop_matrix() -> NDArray[np.float64]:
    """The 512 px photo (or a tests/genuine.py frame) to ``face_crop()``'s frame."""
    _, box = face_crop()
    scale = FRAME_SIZE[0] / (box[2] - box[0])
    return np.array([[scale, 0, -box[0] * scale], [0, scale, -box[1] * scale]])


def live(frames: Sequence[Image], points: Sequence[NDArray[np.float32] | None], ready: int) -> Live:
    """``Live`` from cropped frames and their FaceMesh points (None where no face was found):
    depth and normals from the first frame's points, moved onto each frame with the face."""
    first = points[0]
    assert first is not None, "no face in the first frame"
    geo = geometry(first)
    head = geo.head.astype(np.uint8)
    near, heads = [], []
    for found in points:
        matrix = None
        if found is not None:
            matrix, _ = cv2.estimateAffinePartial2D(
                first[:, :2].astype(np.float32), found[:, :2].astype(np.float32)
            )
        if matrix is None:
            matrix = np.eye(2, 3)
        near.append(
            np.asarray(
                cv2.warpAffine(geo.near, matrix, FRAME_SIZE, flags=cv2.INTER_LINEAR),
                dtype=np.float32,
            )
        )
        heads.append(cv2.warpAffine(head, matrix, FRAME_SIZE, flags=cv2.INTER_NEAREST) > 0)
    return Live(frames=tuple(frames), near=tuple(near), head=tuple(heads), ready=ready)


def person_frames(seed: int, n: int) -> list[Image]:
    """``n`` frames of a live person (tests/genuine.py) at the SDK's 16 fps, cropped like
    ``face_crop()``: moving for even seeds, sitting still for odd ones."""
    matrix = crop_matrix()
    return [
        np.ascontiguousarray(cv2.warpAffine(f, matrix, FRAME_SIZE, flags=cv2.INTER_CUBIC))
        for f in genuine_frames(seed, n=n, fps=1000 / FRAME_MS, still=seed % 2 == 1)
    ]


@functools.cache
def face_crop() -> tuple[Image, tuple[float, float, float, float]]:
    """The astronaut cropped 4:3 so her face box is ~42% of the width, at FRAME_SIZE; and the
    crop's box in the photo (x0, y0, x1, y1)."""
    # The detector's box of her face in the 512 px photo (worker/pipeline/detect.py).
    x0, y0, x1, y1 = 178.1, 80.9, 272.1, 175.0
    width = (x1 - x0) / 0.42
    height = width * FRAME_SIZE[1] / FRAME_SIZE[0]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    box = (cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2)
    scale = FRAME_SIZE[0] / width
    matrix = np.array([[scale, 0, -box[0] * scale], [0, scale, -box[1] * scale]])
    crop = cv2.warpAffine(astronaut(), matrix, FRAME_SIZE, flags=cv2.INTER_CUBIC)
    return np.ascontiguousarray(crop), box


def geometry(points: NDArray[np.float32]) -> Geometry:
    """Depth, normals and the lighting factor from FaceMesh points of ``face_crop()``."""
    image, _ = face_crop()
    w, h = FRAME_SIZE
    xy = points[:, :2].astype(np.float64)
    face_px = float(np.linalg.norm(xy[454] - xy[234]))
    cm_per_px = FACE_WIDTH_CM / face_px
    grid_y, grid_x = np.mgrid[0:h, 0:w]
    z = griddata(xy, points[:, 2].astype(np.float64), (grid_x, grid_y), method="linear")
    hull = np.zeros((h, w), dtype=np.uint8)
    outline = xy[list(FACE_OVAL)]
    centre = outline.mean(axis=0)
    grown = centre + 1.15 * (outline - centre)  # forehead hair and ears answer too
    cv2.fillPoly(hull, [grown.astype(np.int32)], 1)
    head = hull > 0
    z = np.where(np.isnan(z), np.nanmax(z), z)
    z = cv2.GaussianBlur(z.astype(np.float32), (0, 0), 3)
    dz_dy, dz_dx = np.gradient(z)
    # Surface z(x, y), camera looking along +z: the normal towards the camera is
    # (dz/dx, dz/dy, -1); the screen sits 8 cm below the camera, 30 cm away.
    normal = np.stack([dz_dx, dz_dy, -np.ones_like(z)], axis=-1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    depth = FACE_DISTANCE_CM + z * cm_per_px  # z is on the x scale, in pixels
    light = np.stack(
        [
            (w / 2 - grid_x) * cm_per_px,
            (h / 2 - grid_y) * cm_per_px + 8.0,
            -depth,
        ],
        axis=-1,
    )
    dist = np.linalg.norm(light, axis=-1)
    lambert = np.clip((normal * light).sum(axis=-1) / dist, 0.0, None)
    g = (FACE_DISTANCE_CM / dist) ** 2 * lambert
    near = np.where(head, g, 0.0).astype(np.float32)
    return Geometry(base=_linear(image), near=near, head=head)


def timeline(sequence: LightSequence) -> list[tuple[float, int]]:
    """(stamp ms from the step's start, light_index) of each frame, as the SDK records them."""
    out = [(t, 0) for t in np.arange(0.0, BASELINE_MS, FRAME_MS)]
    onset = float(BASELINE_MS)
    for index, duration in enumerate(sequence.durations_ms, start=1):
        # No frame in the last 20 ms of a colour (the SDK's rule): the next one comes at once.
        out += [(onset + t, index) for t in np.arange(0.0, duration - 20, FRAME_MS)]
        onset += duration
    return out


def colour_at(
    sequence: LightSequence, t: float, order: Sequence[int] | None
) -> NDArray[np.float32]:
    """The screen colour shown at ``t`` ms (black outside the colours); ``order`` remaps it."""
    rgb = sequence.rgb()
    onset = float(BASELINE_MS)
    for i, duration in enumerate(sequence.durations_ms):
        if onset <= t < onset + duration:
            k = order[i] if order is not None else i
            return np.asarray(rgb[k], dtype=np.float32)
        onset += duration
    return np.zeros(3, dtype=np.float32)


def _lit(
    base: NDArray[np.float32],
    near: NDArray[np.float32],
    head: NDArray[np.bool_],
    screen: NDArray[np.float32],
    scene: Scene,
) -> NDArray[np.float32]:
    """The frame in linear light under ``screen`` (the model above, before the camera's noise)."""
    wall = (FACE_DISTANCE_CM / (scene.wall_m * 100 + FACE_DISTANCE_CM)) ** 2
    g = np.ones_like(near) if scene.uniform else np.where(head, near, wall)
    lit = base + base * g[..., None] * (scene.rho * screen)[None, None, :]
    return lit * scene.exposure


def render(
    geo: Geometry | Live, sequence: LightSequence, scene: Scene, seed: int
) -> tuple[list[Image], list[int], list[int]]:
    """The LIGHT step's frames, their stamps (ms from the start) and light indices.

    With a ``Geometry`` (one photo) the frames are that photo with a +-1 px shake; with ``Live``
    the person's own frames (it must hold ``ready`` + one per step frame)."""
    rng = np.random.default_rng(seed)
    frames, stamps, indices = [], [], []
    for k, (stamp, index) in enumerate(timeline(sequence)):
        jitter = stamp + rng.uniform(-4, 4)
        screen = colour_at(sequence, jitter - scene.latency_ms, scene.order)
        flicker = 1.0 + rng.normal(0, 0.01)
        if isinstance(geo, Live):
            i = geo.ready + k
            lit = _lit(_linear(geo.frames[i]), geo.near[i], geo.head[i], screen, scene) * flicker
        else:
            lit = _lit(geo.base, geo.near, geo.head, screen, scene) * flicker
            shift = np.array([[1, 0, rng.uniform(-1, 1)], [0, 1, rng.uniform(-1, 1)]])
            moved = cv2.warpAffine(lit, shift, FRAME_SIZE, borderMode=cv2.BORDER_REFLECT)
            lit = np.asarray(moved, dtype=lit.dtype)  # the same array: typed as lit
        out = _srgb(lit) + rng.normal(0, scene.noise, lit.shape).astype(np.float32)
        frames.append(np.clip(out, 0, 255).astype(np.uint8))
        stamps.append(round(jitter))
        indices.append(index)
    return frames, stamps, indices


def ready_frames(geo: Live, scene: Scene, seed: int) -> list[Image]:
    """The frames before the LIGHT step (screen off), through the same camera."""
    rng = np.random.default_rng(seed + 1)
    black = np.zeros(3, dtype=np.float32)
    out = []
    for i in range(geo.ready):
        lit = _lit(_linear(geo.frames[i]), geo.near[i], geo.head[i], black, scene)
        noisy = _srgb(lit) + rng.normal(0, scene.noise, lit.shape).astype(np.float32)
        out.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return out


def build_light_capture(
    frames: Sequence[Image],
    stamps: Sequence[float],
    indices: Sequence[int],
    start_ms: int,
    ready: int = 3,
    quality: int = 85,
    before: Sequence[Image] | None = None,
) -> bytes:
    """A capture as the SDK sends it: ``ready`` untagged frames (``before``, else copies of the
    first one), then the LIGHT step's frames tagged LIGHT with their light_index; challenges
    [LIGHT]."""
    capture = pb.Capture(
        version=1,
        session_id=f"light-{start_ms}",
        sdk_version="tests/light_physics",
        platform=pb.WEB,
        started_at_ms=start_ms,
        challenges=[pb.LIGHT],
    )
    capture.device.model = "light-physics"
    if before is not None:
        ready = len(before)
    for i in range(ready):
        image = before[i] if before is not None else frames[0]
        capture.frames.add(
            image=encode_jpeg(image, quality), timestamp_ms=start_ms + i * 100, best=i == ready - 1
        )
    step_start = start_ms + ready * 100 + 1000
    for frame, stamp, index in zip(frames, stamps, indices, strict=True):
        capture.frames.add(
            image=encode_jpeg(frame, quality),
            timestamp_ms=step_start + round(stamp),
            challenge_step=pb.LIGHT,
            light_index=index,
        )
    return capture.SerializeToString(deterministic=True)


def derangement(n: int, rng: np.random.Generator) -> tuple[int, ...]:
    """A random order of ``n`` colours in which no colour keeps its place."""
    while True:
        order = tuple(int(i) for i in rng.permutation(n))
        if all(order[i] != i for i in range(n)):
            return order


def scenes(seed: int) -> list[tuple[str, Scene]]:
    """The genuine scenes of one seed: every ambient level, a random latency and wall."""
    rng = np.random.default_rng(10_000 + seed)
    out = []
    for name, rho, exposure, noise in AMBIENT:
        scene = Scene(
            rho=rho,
            exposure=exposure,
            noise=noise,
            latency_ms=float(rng.uniform(40, 200)),
            wall_m=float(rng.uniform(1.0, 3.0)),
        )
        out.append((name, scene))
    return out


def attacks(seed: int, n: int) -> list[tuple[str, Scene]]:
    """The attack scenes of one seed (office light, so the response itself is strong)."""
    rng = np.random.default_rng(20_000 + seed)
    base = Scene(rho=0.1, exposure=0.9, noise=3.0, latency_ms=float(rng.uniform(40, 200)))
    return [
        ("no response", replace(base, rho=0.0)),
        ("uniform", replace(base, uniform=True)),
        ("wrong order", replace(base, order=derangement(n, rng))),
        ("late", replace(base, latency_ms=float(rng.uniform(500, 800)))),
    ]


def sequence_for(seed: int) -> LightSequence:
    import random

    return draw_sequence(rng=random.Random(seed))
