"""Attack captures made from genuine ones: the operator's kit behind ``antihack attacks make``.

Each attack is a pure function from a genuine capture's decoded frames (RGB uint8) and a seeded
random generator to the attack's frames plus how they are encoded; :func:`make_attack` wraps
them into a capture as an attacker would submit it. The physical model behind each transform
is written in its docstring, so an operator can tell what a pass or a miss means.

Every attack capture is unsigned, carries no capture-session nonce and has a **new session
id**, replays included: an attacker replaying a stolen capture changes the session id too (the
old one is a certain replay on its own), so only the frame fingerprints can catch a replay.
Frame timestamps keep the genuine capture's spacing and are moved to a later start, as an
attacker re-stamping a recording would; frame order in time is always increasing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from antihack.shared.domain.capture import encode_jpeg
from antihack.shared.proto import liveness_pb2 as pb

RgbImage = NDArray[np.uint8]
FloatImage = NDArray[np.float32]

DEFAULT_QUALITY = 90  # what a phone's camera pipeline writes


@dataclass
class AttackFrames:
    """An attack's frames, one JPEG quality per frame, and what was drawn (for the manifest)."""

    images: list[RgbImage]
    qualities: list[int]
    params: dict[str, object] = field(default_factory=dict)
    # Source frame index whose `best` mark and challenge step each frame takes.
    sources: list[int] | None = None


# --- small physical effects ---------------------------------------------------------------------


def _u8(image: NDArray[np.floating] | NDArray[np.integer]) -> RgbImage:
    return np.asarray(np.clip(np.rint(image), 0, 255), dtype=np.uint8)


def grey_noise(image: RgbImage, amplitude: int, rng: np.random.Generator) -> RgbImage:
    """Add integer noise uniform in [-amplitude, amplitude] grey levels to every sample.

    Model: what an attacker adds to defeat byte-exact copy detection; invisible (+-1..2 levels).
    """
    noise = rng.integers(-amplitude, amplitude + 1, size=image.shape, dtype=np.int16)
    return _u8(image.astype(np.int16) + noise)


def shifted(image: RgbImage, dx: float, dy: float) -> RgbImage:
    """Translate by (dx, dy) pixels, edges replicated (a crop window moved by a pixel or two)."""
    matrix = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float64)
    height, width = image.shape[:2]
    out = cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(out, dtype=np.uint8)


def jpeg_roundtrip(image: RgbImage, quality: int) -> RgbImage:
    """Encode as JPEG at ``quality`` and decode again (one generation of re-compression)."""
    data = np.frombuffer(encode_jpeg(image, quality), dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:  # cannot happen for what encode_jpeg wrote; keeps the type exact
        raise ValueError("JPEG round trip failed")
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def rotated(image: RgbImage, degrees: float, scale: float = 1.0) -> RgbImage:
    """Rotate (and scale) about the centre, keeping the size; edges reflected."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, scale)
    out = cv2.warpAffine(
        image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    return np.asarray(out, dtype=np.uint8)


def sensor_noise(image: FloatImage, sigma: float, rng: np.random.Generator) -> FloatImage:
    """Shot plus read noise of the recapturing camera: Gaussian, variance growing with level."""
    std = sigma * np.sqrt(0.35 + 0.65 * np.clip(image, 0, 255) / 255.0)
    noisy = image + rng.standard_normal(image.shape).astype(np.float32) * std
    return np.asarray(noisy, dtype=np.float32)


def _luma(image: FloatImage) -> FloatImage:
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.asarray((image @ weights)[..., None], dtype=np.float32)


def _hand_tremor(
    image: RgbImage | FloatImage, amount: float, rng: np.random.Generator
) -> FloatImage:
    """A rigid object held in a hand: each corner moves by up to ``amount`` px (a homography)."""
    height, width = image.shape[:2]
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    moved = corners + rng.uniform(-amount, amount, size=(4, 2)).astype(np.float32)
    matrix = cv2.getPerspectiveTransform(corners, moved)
    out = cv2.warpPerspective(
        image.astype(np.float32), matrix, (width, height), borderMode=cv2.BORDER_REFLECT
    )
    return np.asarray(out, dtype=np.float32)


# --- the physical models ------------------------------------------------------------------------


def print_photo(image: RgbImage, rng: np.random.Generator) -> tuple[FloatImage, dict[str, object]]:
    """A photo printed on paper, as the paper looks (before a camera films it).

    Model: an inkjet/laser print reflects light, so its dynamic range is bounded by the paper
    (white ~ 0.85-0.92 of a lit white surface) and the ink's density (black ~ 0.10-0.18);
    process inks cover a smaller gamut than a display or a face, so saturation drops (x0.6-0.8);
    colour is laid down as an amplitude-modulated halftone (a dot screen at ~45 degrees, 2.5-4
    px per dot at the filmed distance), which the camera only partly resolves; the paper has a
    low-frequency fibre texture (+-2-4% reflectance, 2-4 px grain) and a warm white under room
    light (blue x0.88-0.94, green x0.96-0.99); and the print's resolution and the print head
    leave it slightly soft (Gaussian sigma 0.7-1.2 px).
    """
    f = image.astype(np.float32)
    saturation = float(rng.uniform(0.6, 0.8))
    grey = _luma(f)
    f = grey + saturation * (f - grey)
    # Halftone: threshold each channel against a rotated cosine dot screen, then keep part of it
    # (the camera's lens and sensor integrate most dots away).
    height, width = f.shape[:2]
    period = float(rng.uniform(2.5, 4.0))
    angle = math.radians(float(rng.uniform(15, 75)))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u = (xx * math.cos(angle) + yy * math.sin(angle)) * (2 * math.pi / period)
    v = (-xx * math.sin(angle) + yy * math.cos(angle)) * (2 * math.pi / period)
    screen = (0.5 + 0.25 * (np.cos(u) + np.cos(v)))[..., None] * 255.0
    dots = np.where(f > screen, 255.0, 0.0).astype(np.float32)
    dots = np.asarray(cv2.GaussianBlur(dots, (0, 0), period / 3), dtype=np.float32)
    halftone_mix = float(rng.uniform(0.2, 0.35))
    f = (1 - halftone_mix) * f + halftone_mix * dots
    # Reflective dynamic range.
    black, white = float(rng.uniform(0.10, 0.18)), float(rng.uniform(0.85, 0.92))
    f = 255.0 * black + (white - black) * f
    # Paper fibre texture, multiplicative.
    grain = float(rng.uniform(2.0, 4.0))
    fibres = rng.standard_normal((height, width)).astype(np.float32)
    texture = np.asarray(cv2.GaussianBlur(fibres, (0, 0), grain), dtype=np.float32)
    texture *= float(rng.uniform(0.02, 0.04)) / max(float(texture.std()), 1e-6)
    f = f * (1.0 + texture[..., None])
    # Warm paper white under room light.
    balance = np.array([1.0, rng.uniform(0.96, 0.99), rng.uniform(0.88, 0.94)], dtype=np.float32)
    f = f * balance
    blur = float(rng.uniform(0.7, 1.2))
    f = np.asarray(cv2.GaussianBlur(f, (0, 0), blur), dtype=np.float32)
    params: dict[str, object] = {
        "saturation": round(saturation, 3),
        "halftone_period_px": round(period, 2),
        "halftone_mix": round(halftone_mix, 3),
        "black": round(black, 3),
        "white": round(white, 3),
        "paper_balance": [round(float(b), 3) for b in balance],
        "blur_sigma": round(blur, 2),
    }
    return np.asarray(f, dtype=np.float32), params


def tilted(image: FloatImage, tilt: float, rng: np.random.Generator) -> FloatImage:
    """The sheet held at an angle to the camera: a perspective (keystone) warp.

    Model: a plane turned by a few degrees about a vertical or horizontal axis images as a
    trapezoid; ``tilt`` is the fraction of the side by which the far edge shrinks (0.02-0.06
    is a 5-15 degree tilt at arm's length). Outside the sheet stays the sheet's edge colour.
    """
    height, width = image.shape[:2]
    src = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    dst = src.copy()
    inset = tilt * (width if rng.random() < 0.5 else height) / 2
    side = int(rng.integers(0, 4))  # which edge is farther from the camera
    if side == 0:  # top
        dst[0, 0] += inset
        dst[1, 0] -= inset
    elif side == 1:  # right
        dst[1, 1] += inset
        dst[2, 1] -= inset
    elif side == 2:  # bottom
        dst[3, 0] += inset
        dst[2, 0] -= inset
    else:  # left
        dst[0, 1] += inset
        dst[3, 1] -= inset
    matrix = cv2.getPerspectiveTransform(src, dst)
    out = cv2.warpPerspective(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(out, dtype=np.float32)


class ScreenModel:
    """A frame shown on a phone or laptop screen and filmed by another camera.

    Model: the screen shows the frame resampled to its own pixel grid, each pixel being three
    vertical R, G, B stripes with a dark gap between rows (the black matrix). The filming camera
    sees ``pitch`` of its pixels per screen pixel (1.6-2.6, not an integer) with the grid turned
    by 0.5-3 degrees; its sensor samples that grid below its frequency, and the aliasing is
    the moire pattern (rendered here by supersampling x3, a small optical blur and area
    averaging onto the camera's pixels). The screen's tone curve differs from the camera's:
    an extra gamma of 1.1-1.35 and a raised black (the backlight leaks, 3-7%). A lamp reflected
    on the glass is a soft elliptical highlight (+25-50% towards white). The screen refreshes
    with a PWM backlight the rolling-shutter camera catches as horizontal bands (3-7% depth,
    40-120 px period) that drift from frame to frame.
    """

    SUPERSAMPLE = 3

    def __init__(self, height: int, width: int, rng: np.random.Generator) -> None:
        self.height, self.width = height, width
        self.pitch = float(rng.uniform(1.6, 2.6))
        self.grid_angle = math.radians(
            float(rng.uniform(0.5, 3.0)) * (1 if rng.random() < 0.5 else -1)
        )
        self.gamma = float(rng.uniform(1.1, 1.35))
        self.black = float(rng.uniform(0.03, 0.07))
        self.glare_gain = float(rng.uniform(0.25, 0.5))
        self.band_depth = float(rng.uniform(0.03, 0.07))
        self.band_period = float(rng.uniform(40, 120))
        self.band_speed = float(rng.uniform(0.6, 2.4))  # radians per frame
        k = self.SUPERSAMPLE
        yy, xx = np.mgrid[0 : height * k, 0 : width * k].astype(np.float32)
        xx, yy = (xx + 0.5) / k, (yy + 0.5) / k  # camera pixel coordinates
        cos, sin = math.cos(self.grid_angle), math.sin(self.grid_angle)
        cx, cy = width / 2, height / 2
        gx = ((xx - cx) * cos + (yy - cy) * sin + cx) / self.pitch
        gy = (-(xx - cx) * sin + (yy - cy) * cos + cy) / self.pitch
        self.screen_w = max(2, int(math.ceil(width / self.pitch)) + 2)
        self.screen_h = max(2, int(math.ceil(height / self.pitch)) + 2)
        self.col = np.clip(np.floor(gx).astype(np.int32), 0, self.screen_w - 1)
        self.row = np.clip(np.floor(gy).astype(np.int32), 0, self.screen_h - 1)
        self.channel = np.clip(np.floor((gx - np.floor(gx)) * 3).astype(np.int32), 0, 2)
        # The black matrix: the lower 20% of each screen pixel row emits nothing.
        self.lit = ((gy - np.floor(gy)) < 0.8).astype(np.float32) * 3.0 / 0.8
        # Glare: fixed on the glass, so in the same place in every frame.
        gcx, gcy = rng.uniform(0.15, 0.85) * width, rng.uniform(0.1, 0.6) * height
        sx, sy = rng.uniform(0.08, 0.2) * width, rng.uniform(0.05, 0.15) * height
        py, px = np.mgrid[0:height, 0:width].astype(np.float32)
        self.glare = np.exp(-(((px - gcx) / sx) ** 2 + ((py - gcy) / sy) ** 2) / 2).astype(
            np.float32
        )
        self.rows = np.arange(height, dtype=np.float32)

    @property
    def params(self) -> dict[str, object]:
        return {
            "pitch_px": round(self.pitch, 3),
            "grid_angle_deg": round(math.degrees(self.grid_angle), 2),
            "gamma": round(self.gamma, 3),
            "black": round(self.black, 3),
            "glare_gain": round(self.glare_gain, 3),
            "band_depth": round(self.band_depth, 3),
            "band_period_px": round(self.band_period, 1),
        }

    def film(self, image: RgbImage, index: int) -> FloatImage:
        """One filmed frame (float, 0-255) of ``image`` as shown on the screen."""
        shown = cv2.resize(
            image, (self.screen_w - 2, self.screen_h - 2), interpolation=cv2.INTER_AREA
        )
        shown = cv2.copyMakeBorder(shown, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
        level = (shown.astype(np.float32) / 255.0) ** self.gamma
        level = self.black + (1 - self.black) * level
        fine = level[self.row, self.col, self.channel] * self.lit
        # Each supersample carries one sub-pixel's colour; spread it to its channel.
        k = self.SUPERSAMPLE
        planes = np.zeros((*fine.shape, 3), dtype=np.float32)
        for c in range(3):
            planes[..., c] = np.where(self.channel == c, fine, 0.0)
        planes = cv2.GaussianBlur(planes, (0, 0), 0.45 * k)
        out = cv2.resize(planes, (self.width, self.height), interpolation=cv2.INTER_AREA) * 255.0
        glare = self.glare_gain * self.glare[..., None]
        out = out * (1 - glare) + 255.0 * glare
        phase = self.band_speed * index
        bands = 1 - self.band_depth * (
            0.5 + 0.5 * np.sin(2 * math.pi * self.rows / self.band_period + phase)
        )
        return np.asarray(out * bands[:, None, None], dtype=np.float32)


def low_resolution(image: RgbImage, factor: float, blur: float, quality: int) -> RgbImage:
    """Recaptured by a low-resolution camera or re-streamed at a low bitrate.

    Model: the picture passes through ``factor`` (0.25-0.45) of its resolution (area
    downscale), is upscaled back (bilinear, as a player does), softened by the second lens
    (Gaussian ``blur``) and recompressed at a low JPEG ``quality`` (35-60).
    """
    height, width = image.shape[:2]
    small = cv2.resize(
        image,
        (max(8, round(width * factor)), max(8, round(height * factor))),
        interpolation=cv2.INTER_AREA,
    )
    back = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    back = cv2.GaussianBlur(back, (0, 0), blur)
    return jpeg_roundtrip(np.asarray(back, dtype=np.uint8), quality)


# --- attacks: genuine frames in, attack frames out ----------------------------------------------

Frames = Sequence[RgbImage]


def _still_index(frames: Frames, best: int | None) -> int:
    return best if best is not None else len(frames) // 2


def still_noise(frames: Frames, best: int | None, rng: np.random.Generator) -> AttackFrames:
    """One frame repeated; each copy gets +-1..2 grey levels of fresh noise."""
    still = frames[_still_index(frames, best)]
    amps = [int(rng.integers(1, 3)) for _ in frames]
    images = [grey_noise(still, a, rng) for a in amps]
    return AttackFrames(images, [DEFAULT_QUALITY] * len(images), {"amplitudes": amps})


def still_shift(frames: Frames, best: int | None, rng: np.random.Generator) -> AttackFrames:
    """One frame repeated; each copy shifted by 1-2 px in a random direction."""
    still = frames[_still_index(frames, best)]
    moves = [(int(rng.integers(-2, 3)), int(rng.integers(-2, 3))) for _ in frames]
    moves = [(dx, dy) if (dx, dy) != (0, 0) else (1, 0) for dx, dy in moves]
    images = [shifted(still, dx, dy) for dx, dy in moves]
    return AttackFrames(images, [DEFAULT_QUALITY] * len(images), {"shifts": moves})


def still_jpeg(frames: Frames, best: int | None, rng: np.random.Generator) -> AttackFrames:
    """One frame repeated; each copy encoded at another JPEG quality (60-95)."""
    still = frames[_still_index(frames, best)]
    qualities = [int(rng.integers(60, 96)) for _ in frames]
    return AttackFrames([still.copy() for _ in frames], qualities, {"qualities": qualities})


def still_mixed(frames: Frames, best: int | None, rng: np.random.Generator) -> AttackFrames:
    """One frame repeated with noise, a 1-2 px shift and another JPEG quality on every copy."""
    still = frames[_still_index(frames, best)]
    images, qualities = [], []
    for _ in frames:
        dx, dy = int(rng.integers(-2, 3)), int(rng.integers(-2, 3))
        images.append(grey_noise(shifted(still, dx, dy), int(rng.integers(1, 3)), rng))
        qualities.append(int(rng.integers(60, 96)))
    return AttackFrames(images, qualities)


def two_stills(frames: Frames, best: int | None, rng: np.random.Generator) -> AttackFrames:
    """Two stills cycled (e.g. eyes open, eyes closed) with +-1..2 levels of noise per copy.

    The second still is the genuine frame most different from the first (in a BLINK capture,
    usually the closed eyes); each is held for 2-4 frames in turn.
    """
    first = _still_index(frames, best)
    small = [cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA).astype(np.int16) for f in frames]
    second = int(np.argmax([np.abs(s - small[first]).mean() for s in small]))
    hold = int(rng.integers(2, 5))
    picks = [first if (i // hold) % 2 == 0 else second for i in range(len(frames))]
    images = [grey_noise(frames[p], int(rng.integers(1, 3)), rng) for p in picks]
    return AttackFrames(
        images,
        [DEFAULT_QUALITY] * len(images),
        {"stills": [first, second], "hold": hold},
        sources=picks,
    )


def replay_mirror(frames: Frames, best: int | None, rng: np.random.Generator) -> AttackFrames:
    """The genuine frames replayed mirrored left-right."""
    images = [np.ascontiguousarray(f[:, ::-1]) for f in frames]
    return AttackFrames(images, [DEFAULT_QUALITY] * len(images))


def replay_rotate(frames: Frames, best: int | None, rng: np.random.Generator) -> AttackFrames:
    """The genuine frames replayed rotated by 2-10 degrees (either way), scaled 0.9-1.1."""
    degrees = float(rng.uniform(2, 10)) * (1 if rng.random() < 0.5 else -1)
    scale = float(rng.uniform(0.9, 1.1))
    images = [rotated(f, degrees, scale) for f in frames]
    return AttackFrames(
        images,
        [DEFAULT_QUALITY] * len(images),
        {"degrees": round(degrees, 2), "scale": round(scale, 3)},
    )


def replay_crop(frames: Frames, best: int | None, rng: np.random.Generator) -> AttackFrames:
    """The genuine frames replayed cropped: 3-8% of the width and height cut, off-centre."""
    height, width = frames[0].shape[:2]
    fraction = float(rng.uniform(0.03, 0.08))
    cut_x, cut_y = max(1, round(width * fraction)), max(1, round(height * fraction))
    x0, y0 = int(rng.integers(0, cut_x + 1)), int(rng.integers(0, cut_y + 1))
    images = [
        np.ascontiguousarray(f[y0 : y0 + f.shape[0] - cut_y, x0 : x0 + f.shape[1] - cut_x])
        for f in frames
    ]
    return AttackFrames(
        images,
        [DEFAULT_QUALITY] * len(images),
        {"fraction": round(fraction, 3), "origin": [x0, y0]},
    )


def replay_jpeg(frames: Frames, best: int | None, rng: np.random.Generator) -> AttackFrames:
    """The genuine frames replayed re-encoded at JPEG quality 30-50, brightness/contrast +-10%."""
    quality = int(rng.integers(30, 51))
    gain, offset = float(rng.uniform(0.9, 1.1)), float(rng.uniform(-10, 10))
    images = [_u8(f.astype(np.float32) * gain + offset) for f in frames]
    return AttackFrames(
        images,
        [quality] * len(images),
        {"quality": quality, "gain": round(gain, 3), "offset": round(offset, 2)},
    )


def shuffled(frames: Frames, best: int | None, rng: np.random.Generator) -> AttackFrames:
    """The genuine frames in a random order (at least half moved), timestamps still increasing."""
    n = len(frames)
    order = list(range(n))
    for _ in range(100):
        order = [int(i) for i in rng.permutation(n)]
        if sum(i != j for i, j in enumerate(order)) * 2 >= n:
            break
    images = [frames[i].copy() for i in order]
    return AttackFrames(images, [DEFAULT_QUALITY] * n, {"order": order}, sources=order)


def print_attack(frames: Frames, best: int | None, rng: np.random.Generator) -> AttackFrames:
    """The best genuine frame printed (:func:`print_photo`), held tilted (:func:`tilted`) in a
    trembling hand (corners move 0.5-1.5 px per frame) and filmed: sensor noise sigma 1.5-2.5,
    exposure breathing +-2%, JPEG 85-92."""
    paper, params = print_photo(frames[_still_index(frames, best)], rng)
    tilt = float(rng.uniform(0.02, 0.06))
    paper = tilted(paper, tilt, rng)
    sigma = float(rng.uniform(1.5, 2.5))
    images, qualities = [], []
    for _ in frames:
        shot = _hand_tremor(paper, float(rng.uniform(0.5, 1.5)), rng)
        shot = shot * float(rng.uniform(0.98, 1.02))
        images.append(_u8(sensor_noise(shot, sigma, rng)))
        qualities.append(int(rng.integers(85, 93)))
    return AttackFrames(
        images, qualities, {**params, "tilt": round(tilt, 3), "noise": round(sigma, 2)}
    )


def screen_attack(frames: Frames, best: int | None, rng: np.random.Generator) -> AttackFrames:
    """The genuine video played on a screen and filmed (:class:`ScreenModel`), the filming phone
    hand-held (corners move 0.3-1 px per frame), sensor noise sigma 1.5-2.5, JPEG 85-92."""
    height, width = frames[0].shape[:2]
    model = ScreenModel(height, width, rng)
    sigma = float(rng.uniform(1.5, 2.5))
    images, qualities = [], []
    for index, frame in enumerate(frames):
        if frame.shape[:2] != (height, width):
            frame = np.asarray(cv2.resize(frame, (width, height)), dtype=np.uint8)
        shot = _hand_tremor(model.film(frame, index), float(rng.uniform(0.3, 1.0)), rng)
        images.append(_u8(sensor_noise(shot, sigma, rng)))
        qualities.append(int(rng.integers(85, 93)))
    return AttackFrames(images, qualities, {**model.params, "noise": round(sigma, 2)})


def lowres_attack(frames: Frames, best: int | None, rng: np.random.Generator) -> AttackFrames:
    """The genuine video recaptured at low resolution (:func:`low_resolution`)."""
    factor, blur = float(rng.uniform(0.25, 0.45)), float(rng.uniform(0.6, 1.2))
    quality = int(rng.integers(35, 61))
    images = [low_resolution(f, factor, blur, quality) for f in frames]
    return AttackFrames(
        images,
        [DEFAULT_QUALITY] * len(images),
        {"factor": round(factor, 3), "blur": round(blur, 2), "quality": quality},
    )


AttackFn = Callable[[Frames, "int | None", np.random.Generator], AttackFrames]

# Name (the label folder `antihack eval` reads) -> transform. Order is the default order.
ATTACKS: dict[str, AttackFn] = {
    "still_noise": still_noise,
    "still_shift": still_shift,
    "still_jpeg": still_jpeg,
    "still_mixed": still_mixed,
    "two_stills": two_stills,
    "replay_mirror": replay_mirror,
    "replay_rotate": replay_rotate,
    "replay_crop": replay_crop,
    "replay_jpeg": replay_jpeg,
    "shuffled": shuffled,
    "print": print_attack,
    "screen": screen_attack,
    "lowres": lowres_attack,
}


def attack_rng(seed: int, source: str, attack: str) -> np.random.Generator:
    """The generator for one (source file, attack): the same seed gives the same files."""
    words = [seed & 0xFFFFFFFF, *source.encode(), 0, *attack.encode()]
    return np.random.default_rng(np.random.SeedSequence(words))


def make_attack(
    source: pb.Capture, frames: Frames, attack: str, rng: np.random.Generator
) -> tuple[pb.Capture, dict[str, object]]:
    """The attack capture made from a genuine capture and its decoded frames, and its params.

    Envelope: the genuine capture's device, platform, SDK version and challenges; a new session
    id; no signature or session nonce; frame times keep the genuine spacing from a start 1-60
    minutes later (prompts move with them).
    """
    if not frames:
        raise ValueError("the genuine capture has no frames")
    marked = [i for i, f in enumerate(source.frames) if f.best]
    result = ATTACKS[attack](frames, marked[0] if marked else None, rng)
    capture = pb.Capture()
    capture.CopyFrom(source)
    capture.session_id = rng.bytes(16).hex()
    capture.ClearField("signature")
    capture.ClearField("session_nonce")
    del capture.frames[:]
    delay = int(rng.integers(60_000, 3_600_001))
    if capture.started_at_ms:
        capture.started_at_ms += delay
    for prompt in capture.prompts:
        if prompt.shown_at_ms:
            prompt.shown_at_ms += delay
    sources = result.sources or list(range(len(result.images)))
    for index, (image, quality) in enumerate(zip(result.images, result.qualities, strict=True)):
        original = source.frames[index]
        picked = source.frames[sources[index]]
        frame = capture.frames.add(
            image=encode_jpeg(image, quality),
            timestamp_ms=original.timestamp_ms + delay if original.timestamp_ms else 0,
            challenge_step=original.challenge_step,
            best=original.best,
            light_index=picked.light_index,
        )
        del frame  # fields set above; the frame's place in time is the genuine one
    return capture, {"delay_ms": delay, **result.params}
