"""The LIGHT challenge: the screen flashed the session's colours; the face must answer them.

A face 30 cm from a screen reflects its light diffusely: each colour tints the skin by a few
per cent of its intensity, and the wall a metre or more behind the head, lit ~10x less (1/d²),
hardly moves. A screen replay or an injected video does not answer at all, and a replay screen
or a print that fills the frame answers everywhere alike (one sheet at one distance).

How it is judged, on the frames of the LIGHT step (``challenge_step == LIGHT`` or
``light_index > 0``) with the session's sequence:

1. **Regions.** Skin: three patches (forehead, both cheeks) placed by the FaceMesh points, or
   by the detector's box when a frame has no mesh; frames without a face borrow the nearest
   frame's regions. Background: beside the head (outside the face box widened 1.8x), above the
   face's centre line, where shoulders are not.
2. **Chroma.** Each region's mean RGB as chromaticity ``rgb / (r + g + b)``: auto-exposure and
   a brighter or dimmer room scale all three channels alike and cancel out.
3. **Expected response.** Adding a fraction ``rho`` of the screen colour ``s`` to a surface of
   baseline colour ``m`` (albedo x ambient) moves its chroma, to first order, by
   ``rho * u(s)`` with ``u(s) = (m*s - c * sum(m*s)) / sum(m)``, ``c = m / sum(m)``: a unit
   response per region, from the capture's own baseline (the mean over the step).
4. **Timing.** Colour ``i`` starts at the stamp of the first frame stamped ``light_index = i``
   (the SDK grabs one as it paints each colour) and the last one ends after its session
   duration. A frame's content lags its stamp by the camera's latency, found by a search over
   0-300 ms: the expected chroma of frame k at lag L is ``u`` of the colour shown at ``t_k - L``.
5. **Verdict.** Pearson correlation between the observed chroma changes (frames x 3 channels,
   each centred on the step's mean) and the expected ones, at the best lag; below
   ``CORRELATION_MIN`` -> ``light_not_reflected``. The response's gain (least squares, an
   estimate of ``rho``) on the face over the background's, at that lag: below
   ``FACE_RATIO_MIN`` -> ``light_uniform_response``. Both strong (score >= 0.985).

Thresholds (measured with tests/light_physics.py's physics on a live person, README "The light
challenge"): genuine captures correlate at >= 0.756 over the documented ambient and noise range
(the lowest: a moving person by a window), the attacks at <= 0.57; a genuine face answers
>= 11x its background (a wall 1-3 m behind), a uniform response 0.96-1.02x.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from antihack.shared.domain.light import LightSequence
from antihack.worker.pipeline.detect import FaceBox
from antihack.worker.pipeline.fusion import STRONG, Signal

RgbImage = NDArray[np.uint8]
Points = NDArray[np.float32]

NOT_REFLECTED = "light_not_reflected"
UNIFORM_RESPONSE = "light_uniform_response"

# Measured (tests/light_physics.py; README "The light challenge"): a person sitting still
# 0.88-1.00; a moving person (speech, sway, hand-held camera) by a window, where the screen adds
# least (3% of the ambient), down to 0.756; attacks -0.35-0.57 (the highest: colours in another
# order). 0.65 leaves ~0.1 on either side.
CORRELATION_MIN = 0.65
# A wall 0.5 m behind the head answers (30/80)^2 = 1/7 of the face; a flat sheet answers 1x.
FACE_RATIO_MIN = 2.5
# Camera latency searched (a frame shows the scene of up to this long before its stamp).
MAX_LAG_MS = 300
LAG_STEP_MS = 10
# FaceMesh points the skin patches are centred on: mid-forehead and the two mid-cheeks.
SKIN_POINTS = (151, 205, 425)
EYE_OUTER_LEFT, EYE_OUTER_RIGHT = 33, 263
# Patch half-side as a fraction of the eye-corner distance (~7 px for a 60 px eye line).
PATCH_SCALE = 0.15
# Background: outside the face box widened by this factor (ears, hair), above its centre.
BACKGROUND_WIDEN = 1.8
MIN_BACKGROUND_PIXELS = 400
# Below this many frames with a face (fraction of the step's frames) nothing can be judged.
MIN_FACE_FRACTION = 0.5

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1


@dataclass(frozen=True)
class LightReport:
    """The LIGHT step's measurements; ``correlation`` and the gains are NaN when not judged."""

    frames: int
    correlation: float = float("nan")
    lag_ms: int = 0
    face_gain: float = float("nan")
    background_gain: float = float("nan")
    signals: tuple[Signal, ...] = field(default=())

    @property
    def face_ratio(self) -> float:
        """The face's response over the background's (inf when the background did not move)."""
        if not self.background_gain > 0:
            return float("inf")
        return self.face_gain / self.background_gain


def _clip_rect(rect: Rect, width: int, height: int) -> Rect | None:
    x0, y0, x1, y1 = rect
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    return (x0, y0, x1, y1) if x1 - x0 >= 2 and y1 - y0 >= 2 else None


def skin_rects(points: Points | None, box: FaceBox | None) -> list[Rect]:
    """Forehead and cheek patches, from the mesh when there is one, else from the box."""
    if points is not None:
        eye = float(np.linalg.norm(points[EYE_OUTER_RIGHT, :2] - points[EYE_OUTER_LEFT, :2]))
        half = max(2, round(PATCH_SCALE * eye))
        out = []
        for i in SKIN_POINTS:
            x, y = round(float(points[i, 0])), round(float(points[i, 1]))
            out.append((x - half, y - half, x + half + 1, y + half + 1))
        return out
    if box is None:
        return []
    w, h = box.width, box.height
    half = max(2, round(0.08 * w))
    centres = [(0.5, 0.12), (0.25, 0.6), (0.75, 0.6)]  # forehead, cheeks (BlazeFace box)
    return [
        (
            round(box.x0 + fx * w) - half,
            round(box.y0 + fy * h) - half,
            round(box.x0 + fx * w) + half + 1,
            round(box.y0 + fy * h) + half + 1,
        )
        for fx, fy in centres
    ]


def background_rects(box: FaceBox, width: int, height: int) -> list[Rect]:
    """Beside the head, above the face's centre line."""
    cx, cy = box.center
    half = BACKGROUND_WIDEN * box.width / 2
    bottom = round(cy)
    return [(0, 0, round(cx - half), bottom), (round(cx + half), 0, width, bottom)]


def _mean_rgb(image: RgbImage, rects: Sequence[Rect]) -> tuple[NDArray[np.float64], int]:
    height, width = image.shape[:2]
    total = np.zeros(3, dtype=np.float64)
    count = 0
    for rect in rects:
        clipped = _clip_rect(rect, width, height)
        if clipped is None:
            continue
        x0, y0, x1, y1 = clipped
        pixels = (x1 - x0) * (y1 - y0)
        # cv2.mean reads the region in place (numpy's uint8 -> float sum is ~10x slower).
        total += np.asarray(cv2.mean(image[y0:y1, x0:x1])[:3], dtype=np.float64) * pixels
        count += pixels
    return (total / count if count else total), count


def unit_responses(
    baseline: NDArray[np.float64], colors: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Chroma change per unit of added screen light, one row per colour plus row 0 (none).

    ``baseline`` is the region's mean RGB (albedo x ambient), ``colors`` (n, 3) in [0, 1].
    """
    total = float(baseline.sum()) or 1.0
    chroma = baseline / total
    lit = baseline[None, :] * colors  # (n, 3): what each colour adds, up to the factor rho
    rows = (lit - chroma[None, :] * lit.sum(axis=1, keepdims=True)) / total
    return np.vstack([np.zeros((1, 3)), rows])


def _chroma(rgb: NDArray[np.float64]) -> NDArray[np.float64]:
    sums = rgb.sum(axis=1, keepdims=True)
    return rgb / np.where(sums > 0, sums, 1.0)


def _schedule(
    stamps: NDArray[np.int64], indices: Sequence[int], durations: Sequence[int]
) -> tuple[NDArray[np.float64], float]:
    """Colour onsets (one per colour) and the end of the last, from the frames' stamps."""
    n = len(durations)
    onsets = np.zeros(n, dtype=np.float64)
    for i in range(n):
        hits = [int(t) for t, k in zip(stamps, indices, strict=True) if k == i + 1]
        onsets[i] = min(hits) if hits else onsets[i - 1] + durations[i - 1]
    return onsets, float(onsets[-1] + durations[-1])


def _stamps_follow(indices: Sequence[int], n: int) -> bool:
    """The non-zero stamps run 1, 2, ..., n in order, every colour present."""
    runs = [k for j, k in enumerate(indices) if k and (j == 0 or k != indices[j - 1])]
    return runs == list(range(1, n + 1))


def _fit(
    observed: NDArray[np.float64], expected: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Correlation and gain of ``observed`` (K, 3) on each ``expected`` (L, K, 3)."""
    d = observed - observed.mean(axis=0)
    x = expected - expected.mean(axis=1, keepdims=True)
    dot = np.einsum("kc,lkc->l", d, x)
    xx = np.einsum("lkc,lkc->l", x, x)
    dd = float(np.einsum("kc,kc->", d, d))
    denom = np.sqrt(xx * dd)
    corr = np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), 0.0)
    gain = np.where(xx > 0, dot / np.where(xx > 0, xx, 1.0), 0.0)
    return corr, gain


def _not_reflected(frames: int, detail: str, **measured: float | int) -> LightReport:
    signal = Signal(NOT_REFLECTED, STRONG, detail)
    return LightReport(frames=frames, signals=(signal,), **measured)  # type: ignore[arg-type]


def light_report(
    frames: Sequence[RgbImage],
    boxes: Sequence[FaceBox | None],
    meshes: Sequence[Points | None],
    stamps: Sequence[int],
    light_indices: Sequence[int],
    in_step: Sequence[bool],
    sequence: LightSequence | None,
) -> LightReport:
    """Judge the LIGHT step: ``in_step[i]`` says whether frame i belongs to it (tagged LIGHT
    or stamped with a colour); per-frame inputs are None where no face was found."""
    idx = [i for i, inside in enumerate(in_step) if inside]
    n_frames = len(idx)
    if sequence is None:
        return _not_reflected(n_frames, "LIGHT was requested without a session light sequence")
    n = len(sequence.colors)
    if n_frames < n + 2:
        return _not_reflected(n_frames, f"{n_frames} frames cannot show {n} colours")
    indices = [int(light_indices[i]) for i in idx]
    if not _stamps_follow(indices, n):
        return _not_reflected(n_frames, "the frames' light stamps do not follow the sequence")
    times = np.array([int(stamps[i]) for i in idx], dtype=np.int64)
    if np.any(np.diff(times) <= 0):
        return _not_reflected(n_frames, "the light frames' timestamps do not increase")
    faced = [j for j, i in enumerate(idx) if boxes[i] is not None]
    if len(faced) < MIN_FACE_FRACTION * n_frames:
        return _not_reflected(n_frames, f"a face in {len(faced)} of {n_frames} light frames")

    face_rgb = np.zeros((n_frames, 3))
    back_rgb = np.zeros((n_frames, 3))
    back_pixels = []
    for j, i in enumerate(idx):
        # A frame without a face takes the regions of the nearest frame with one.
        near = idx[min(faced, key=lambda f: abs(f - j))]
        box = boxes[near]
        assert box is not None
        image = frames[i]
        face_rgb[j], _ = _mean_rgb(image, skin_rects(meshes[near], box))
        back_rgb[j], count = _mean_rgb(image, background_rects(box, image.shape[1], image.shape[0]))
        back_pixels.append(count)

    colors = np.asarray(sequence.rgb(), dtype=np.float64)
    onsets, end = _schedule(times, indices, sequence.durations_ms)
    lags = np.arange(0, MAX_LAG_MS + 1, LAG_STEP_MS, dtype=np.float64)
    shifted = times[None, :].astype(np.float64) - lags[:, None]
    shown = np.searchsorted(onsets, shifted, side="right")  # 0 before colour 1's onset
    shown[shifted >= end] = 0

    face_units = unit_responses(face_rgb.mean(axis=0), colors)
    corr, gain = _fit(_chroma(face_rgb), face_units[shown])
    best = int(np.argmax(corr))
    measured: dict[str, float | int] = {
        "correlation": round(float(corr[best]), 4),
        "lag_ms": int(lags[best]),
        "face_gain": round(float(gain[best]), 5),
    }
    if corr[best] < CORRELATION_MIN:
        detail = (
            f"the face's colour does not follow the screen: correlation {corr[best]:.2f} "
            f"(best lag {int(lags[best])} ms) < {CORRELATION_MIN}"
        )
        return _not_reflected(n_frames, detail, **measured)
    if min(back_pixels) < MIN_BACKGROUND_PIXELS:
        return LightReport(frames=n_frames, **measured)  # type: ignore[arg-type]
    back_units = unit_responses(back_rgb.mean(axis=0), colors)
    _, back_gain = _fit(_chroma(back_rgb), back_units[shown[best : best + 1]])
    report = LightReport(frames=n_frames, background_gain=round(float(back_gain[0]), 5), **measured)  # type: ignore[arg-type]
    if report.face_ratio < FACE_RATIO_MIN:
        detail = (
            f"the background answers the screen as much as the face: face/background "
            f"{report.face_ratio:.2f} < {FACE_RATIO_MIN}"
        )
        signal = Signal(UNIFORM_RESPONSE, STRONG, detail)
        return LightReport(
            frames=n_frames,
            correlation=report.correlation,
            lag_ms=report.lag_ms,
            face_gain=report.face_gain,
            background_gain=report.background_gain,
            signals=(signal,),
        )
    return report
