"""Challenge steps: did the person perform each drawn action, after its prompt, in order?

Pure functions on the per-frame model outputs (FaceMesh points, iris-contour EAR) and the
capture's timestamps and step prompts; no I/O. Every verdict is a function of the capture alone,
so it is the same on every run.

How each step is judged (the measure moves with the asked action only):

- TURN_LEFT / TURN_RIGHT / LOOK_UP / LOOK_DOWN: head yaw / pitch in degrees from
  a weak-perspective (scaled orthographic) fit of rigid FaceMesh points (forehead, brows,
  nose, eye corners, cheekbones; never lips or jaw) against a 3D model taken from the
  capture's own first face frame (its FaceMesh x, y, z). The angle is measured from the step's
  starting pose (the frames shown up to its prompt) and must reach ``TURN_MIN_DEG`` /
  ``LOOK_MIN_DEG`` in the asked direction. Frames are the camera's own, unmirrored: the
  person's left is the image's right, so TURN_LEFT moves the nose towards image +x (yaw > 0);
  LOOK_UP moves it towards image -y (pitch > 0).
- OPEN_MOUTH: inner-lip gap (mesh 13-14) over the inner mouth width (78-308) rises by
  ``OPEN_MOUTH_MIN_RISE`` from the step start and reaches ``OPEN_MOUTH_MIN``. A smile parts the
  lips a little and widens the mouth, so its ratio stays low.
- SMILE: mouth width (61-291) over face width (234-454) grows by ``SMILE_MIN_WIDEN`` while the
  lip gap stays under ``SMILE_MAX_GAP`` (an opened mouth narrows, a smile widens).
- BLINK: an eye-aspect-ratio dip relative to this capture's own open-eye baseline (median EAR
  of its frames): a frame <= ``BLINK_DIP`` x baseline, with open frames (>= ``BLINK_OPEN`` x
  baseline) before and after it within the step, the eyes back open within
  ``BLINK_MAX_CLOSED_MS``. One closed frame is enough, so a 100-ms blink is seen at 15 fps
  whatever its phase; the open frames either side must be different pictures (two stills
  alternated give the same mesh to the last decimal).
- MOVE_CLOSER: face size (square root of the mesh's 2D bounding-box area) grows by
  ``CLOSER_MIN_GROWTH`` from the step start (no planarity check: coming closer is nearly a
  similarity for a head as for a print).
- Legacy MOUTH / NOD / YAW keep their scale-free 2D proxies and thresholds (range over the
  step's frames), so older SDKs' captures are judged as before.

Timing: with ``Capture.prompts`` each step is judged on the frames from its prompt to
``window_ms`` after it; it must be met after its prompt, inside that window, and after the
previous step was met; the prompts must name the capture's challenges in order with increasing
times. Without prompts, frames tagged ``challenge_step`` are the step's frames, else all frames.

Planarity: in each TURN/LOOK step, on the frame whose landmarks moved most beyond a similarity
(``PLANAR_MIN_MOTION`` of the face width at least), a homography is fitted (least squares) from
the start frame's landmarks to that frame's. A 3D
head leaves a parallax residual (the nose moves against the cheek contour); a flat print or
screen turned in front of the camera is a homography exactly. A residual under
``PLANAR_MAX_RESIDUAL`` (RMS over the face width) is ``planar_face``, a strong signal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from antihack.shared.proto import liveness_pb2 as pb
from antihack.worker.pipeline.eyes import EyeState
from antihack.worker.pipeline.fusion import CERTAIN, STRONG, Signal
from antihack.worker.pipeline.landmarks import FaceLandmarks

Points = NDArray[np.float32]  # (468, 3) FaceMesh points in frame pixels

DEFAULT_WINDOW_MS = 4000
# Frames shown up to this long before a prompt give the step's starting pose.
START_SPAN_MS = 400

# Directional thresholds, in measured degrees from the step's starting pose. FaceMesh follows a
# turn only partly: a rendered 25-degree turn reads 17-21, a 15-degree tilt 8-12 (its depth
# profile is deeper than a head's). A still or talking person's sway reads under ~4 / ~3.
TURN_MIN_DEG = 12.0
LOOK_MIN_DEG = 6.0
# OPEN_MOUTH: inner-lip gap over the inner mouth width (78-308). Measured on the painted mouth
# (tests/mouth.py): closed 0.03-0.06, her teeth-showing smile 0.17, 16 px apart 0.23, 26 px
# 0.33-0.39. Over the face height the same openings read 0.02 / 0.07-0.09 / - / 0.11-0.14:
# a smile widens the mouth, an opening narrows it, so the width ratio parts them twice as far.
OPEN_MOUTH_MIN = 0.27
OPEN_MOUTH_MIN_RISE = 0.12
# SMILE: mouth width over face width grows by this fraction, lips at most this far apart.
SMILE_MIN_WIDEN = 0.10
SMILE_MAX_GAP = 0.12
# BLINK, relative to the capture's median EAR; open eyes read 0.15-0.45 (MODELS.md).
BLINK_DIP = 0.7
BLINK_OPEN = 0.8
BLINK_BASELINE_MIN = 0.15
BLINK_MAX_CLOSED_MS = 700
# The open frames either side of the dip may each lie up to a frame (~70 ms at 15 fps) away.
BLINK_FRAME_SLACK_MS = 70
SAME_MESH_PX = 0.02
# MOVE_CLOSER: relative growth of the face size.
CLOSER_MIN_GROWTH = 0.25
# Planarity: evaluated when the start-to-peak rotation is at least this; RMS residual of the
# homography fit over the face width below the threshold is a flat face.
# Measured (bench/bench_challenges.py): a print turned or tilted 10-30 degrees (focal 400 and
# 1000 px) moves its landmarks 0.003-0.028 of the face width beyond a similarity, with a
# homography residual of 0.002-0.015 (FaceMesh's own noise); a rendered 3D head turned 12+
# measured degrees leaves 0.018-0.040 (median 0.030): the threshold is midway.
PLANAR_MIN_MOTION = 0.0025
PLANAR_MAX_RESIDUAL = 0.0163

# Legacy challenges (crossframe.py before the directional vocabulary), unchanged.
MOUTH_OPEN_MIN = 0.20
MOUTH_MIN_RANGE = 0.15
YAW_MIN_RANGE = 0.12
NOD_MIN_RANGE = 0.08
UPPER_LIP, LOWER_LIP, MOUTH_LEFT, MOUTH_RIGHT = 13, 14, 78, 308
EYE_OUTER_LEFT, EYE_OUTER_RIGHT, NOSE_TIP = 33, 263, 1

# FaceMesh indices of the directional measures.
FOREHEAD, CHIN, CHEEK_LEFT, CHEEK_RIGHT = 10, 152, 234, 454
MOUTH_CORNER_LEFT, MOUTH_CORNER_RIGHT = 61, 291
# Points that move with the skull only: forehead, brows, nose bridge and tip, eye corners,
# cheekbones, temples (no lips, jaw or eyelids).
RIGID = np.array(
    [10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 33, 133, 362, 263, 70, 300, 105, 334,
     234, 454, 93, 323, 116, 345, 50, 280, 127, 356, 54, 284, 103, 332, 67, 297, 109, 338]
)  # fmt: skip

TURNS = {"TURN_LEFT": 1.0, "TURN_RIGHT": -1.0}
LOOKS = {"LOOK_UP": 1.0, "LOOK_DOWN": -1.0}
LEGACY = frozenset({"MOUTH", "NOD", "YAW"})
LIGHT = "LIGHT"  # judged by light.py


@dataclass(frozen=True)
class Prompt:
    """When the SDK showed a step's prompt (capture clock, ms)."""

    step: str
    shown_at_ms: int


@dataclass(frozen=True)
class FrameInput:
    """One frame as the judge sees it; ``mesh``/``ear`` are None where no face was found."""

    t_ms: int
    step: str | None
    mesh: Points | None
    ear: float | None


@dataclass(frozen=True, eq=False)
class Measure:
    """Per-frame measures (a face was found)."""

    index: int
    t_ms: int
    yaw: float  # degrees, > 0: nose towards image right (the person's left)
    pitch: float  # degrees, > 0: looking up
    gap: float  # inner-lip gap, px
    face_height: float
    face_width: float
    mouth_width: float
    inner_width: float  # inner mouth corners 78-308
    size: float  # sqrt of the mesh's 2D bounding box area, px
    ear: float | None
    xy: NDArray[np.float64]  # (468, 2)


@dataclass(frozen=True)
class StepVerdict:
    """One step's outcome: ``why`` says what was measured (and what was needed)."""

    step: str
    met: bool
    why: str
    at_ms: int | None = None
    planar: bool = False
    residual: float | None = None  # homography residual of the start-to-peak motion


@dataclass(frozen=True)
class ChallengeReport:
    """Per-step verdicts, ``observed`` per challenge name and the signals they raise."""

    verdicts: tuple[StepVerdict, ...]
    signals: tuple[Signal, ...]
    observed: dict[str, bool] = field(default_factory=dict)
    residuals: tuple[float, ...] = ()

    @property
    def failed_steps(self) -> list[dict[str, str]]:
        """``[{"step", "why"}]`` of the steps not met, in the drawn order."""
        return [{"step": v.step, "why": v.why} for v in self.verdicts if not v.met]


# --- per-frame measures -----------------------------------------------------------------------


def _dist(xy: NDArray[np.float64], a: int, b: int) -> float:
    return float(np.linalg.norm(xy[a] - xy[b]))


def _poses(model: NDArray[np.float64], points: NDArray[np.float64]) -> NDArray[np.float64]:
    """Yaw and pitch in degrees, (n, 2), of each frame's rigid points (n, k, 2) against the
    centred 3D ``model`` (k, 3), by a scaled orthographic fit.

    At arm's length a face is ~15 cm deep at 30-60 cm: a weak-perspective camera is right to a
    few percent, needs no focal length, and its least-squares fit has one solution (no local
    minimum, unlike an iterative PnP) for a non-planar model. Rows r1, r2 of the fitted
    projection are the camera's x and y axes in model coordinates; r3 = r1 x r2.
    """
    centred = points - points.mean(axis=1, keepdims=True)
    affine = np.einsum("jk,nkc->njc", np.linalg.pinv(model), centred)  # (n, 3, 2)
    r1 = affine[:, :, 0]
    r1 = r1 / np.maximum(np.linalg.norm(r1, axis=1, keepdims=True), 1e-9)
    r2 = affine[:, :, 1]
    r2 = r2 - np.sum(r2 * r1, axis=1, keepdims=True) * r1  # the image axes are orthogonal
    r2 = r2 / np.maximum(np.linalg.norm(r2, axis=1, keepdims=True), 1e-9)
    r3 = np.cross(r1, r2)
    # The model faces the camera along -z (its nose is nearest): facing = R (0, 0, -1).
    fx, fy, fz = -r1[:, 2], -r2[:, 2], -r3[:, 2]
    yaw = np.degrees(np.arctan2(fx, -fz))  # > 0: nose towards image right
    pitch = np.degrees(np.arctan2(-fy, -fz))  # > 0: nose up (image y grows downwards)
    return np.stack([yaw, pitch], axis=1)


def _dists(xy: NDArray[np.float64], a: int, b: int) -> NDArray[np.float64]:
    return np.asarray(np.maximum(np.linalg.norm(xy[:, a] - xy[:, b], axis=1), 1e-6), np.float64)


def measure_frames(frames: Sequence[FrameInput]) -> list[Measure | None]:
    """Pose, mouth, eye and size measures per frame; None where no face was found.

    The pose model is the first face frame's own FaceMesh points (x, y, z), so angles are
    relative to that frame; steps compare against their own start.
    """
    index = [i for i, f in enumerate(frames) if f.mesh is not None]
    out: list[Measure | None] = [None] * len(frames)
    if not index:
        return out
    meshes = np.stack([np.asarray(frames[i].mesh, dtype=np.float64) for i in index])
    model = meshes[0, RIGID] - meshes[0, RIGID].mean(axis=0)
    xy = meshes[:, :, :2]
    poses = _poses(model, xy[:, RIGID])
    gap = _dists(xy, UPPER_LIP, LOWER_LIP)
    height, width = _dists(xy, FOREHEAD, CHIN), _dists(xy, CHEEK_LEFT, CHEEK_RIGHT)
    mouth = _dists(xy, MOUTH_CORNER_LEFT, MOUTH_CORNER_RIGHT)
    inner = _dists(xy, MOUTH_LEFT, MOUTH_RIGHT)
    span = xy.max(axis=1) - xy.min(axis=1)
    size = np.sqrt(np.maximum(span[:, 0] * span[:, 1], 1e-6))
    for j, i in enumerate(index):
        out[i] = Measure(
            index=i,
            t_ms=frames[i].t_ms,
            yaw=float(poses[j, 0]),
            pitch=float(poses[j, 1]),
            gap=float(gap[j]),
            face_height=float(height[j]),
            face_width=float(width[j]),
            mouth_width=float(mouth[j]),
            inner_width=float(inner[j]),
            size=float(size[j]),
            ear=frames[i].ear,
            xy=xy[j],
        )
    return out


# --- planarity --------------------------------------------------------------------------------


def planar_residual(start: NDArray[np.float64], peak: NDArray[np.float64]) -> float:
    """RMS residual of the least-squares homography from ``start`` to ``peak`` landmarks,
    over the face width (0 for a flat face turned, a few percent for a turned head)."""
    h, _ = cv2.findHomography(start, peak, 0)
    if h is None:
        return 1.0
    moved = cv2.perspectiveTransform(start.reshape(-1, 1, 2), h).reshape(-1, 2)
    rms = float(np.sqrt(np.mean(np.sum((moved - peak) ** 2, axis=1))))
    return rms / (_dist(peak, CHEEK_LEFT, CHEEK_RIGHT) or 1e-6)


def non_similar_motion(start: NDArray[np.float64], moved: NDArray[np.float64]) -> float:
    """RMS of the landmark motion a similarity (shift, turn in the image plane, scale) cannot
    explain, over the face width: ~0 for a face that only moved or came closer, large when it
    turned, tilted, changed expression, or a print was turned (foreshortened)."""
    a = start - start.mean(axis=0)
    b = moved - moved.mean(axis=0)
    za, zb = a[:, 0] + 1j * a[:, 1], b[:, 0] + 1j * b[:, 1]
    k = np.vdot(za, zb) / (np.vdot(za, za) or 1e-9)  # least-squares scale and rotation
    rms = float(np.sqrt(np.mean(np.abs(zb - k * za) ** 2)))
    return rms / (_dist(moved, CHEEK_LEFT, CHEEK_RIGHT) or 1e-6)


def _planarity(head: Measure, window: Sequence[Measure]) -> float | None:
    """The homography residual from the start frame to the window's frame that moved most
    beyond a similarity, or None when no frame moved enough to tell (a print turned the wrong
    way, or not at all but foreshortened, is still judged)."""
    motion = [non_similar_motion(head.xy, m.xy) for m in window]
    most = int(np.argmax(motion))
    if motion[most] < PLANAR_MIN_MOTION:
        return None
    return planar_residual(head.xy, window[most].xy)


# --- one step ---------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return float(np.median(values)) if values else 0.0


def _start_pose(start: Sequence[Measure]) -> Measure:
    """The start frame: the one whose yaw is the median of the start frames (a real frame)."""
    ordered = sorted(start, key=lambda m: (m.yaw, m.index))
    return ordered[len(ordered) // 2]


def _first(window: Sequence[Measure], values: Sequence[float], need: float) -> Measure | None:
    return next((m for m, v in zip(window, values, strict=True) if v >= need), None)


def _turn(step: str, start: Sequence[Measure], window: Sequence[Measure]) -> StepVerdict:
    head = _start_pose(start)
    if step in TURNS:
        sign, need, axis = TURNS[step], TURN_MIN_DEG, "yaw"
        moved = [sign * (m.yaw - head.yaw) for m in window]
    else:
        sign, need, axis = LOOKS[step], LOOK_MIN_DEG, "pitch"
        moved = [sign * (m.pitch - head.pitch) for m in window]
    reached = max(moved)
    residual = _planarity(head, window)
    planar = residual is not None and residual < PLANAR_MAX_RESIDUAL
    met_at = _first(window, moved, need)
    if met_at is None:
        why = f"{axis} reached {reached:.0f}°, needs {need:.0f}°"
        return StepVerdict(step, False, why, planar=planar, residual=residual)
    why = f"{axis} reached {reached:.0f}°"
    return StepVerdict(step, True, why, met_at.t_ms, planar, residual)


def _open_mouth(start: Sequence[Measure], window: Sequence[Measure]) -> StepVerdict:
    # From the lips' closest point around the prompt: a person still talking when prompted
    # must not raise the bar.
    opening = [m.gap / m.inner_width for m in window]
    base = min([m.gap / m.inner_width for m in start] + opening[:1])
    need = max(OPEN_MOUTH_MIN, base + OPEN_MOUTH_MIN_RISE)
    met_at = _first(window, opening, need)
    peak = max(opening)
    if met_at is None:
        why = f"lips parted {peak:.2f} of the mouth width, needs {need:.2f}"
        return StepVerdict("OPEN_MOUTH", False, why)
    return StepVerdict("OPEN_MOUTH", True, f"lips parted {peak:.2f}", met_at.t_ms)


def _smile(start: Sequence[Measure], window: Sequence[Measure]) -> StepVerdict:
    base = _median([m.mouth_width / m.face_width for m in start])
    widen = [
        (m.mouth_width / m.face_width) / base - 1 if m.gap / m.face_height <= SMILE_MAX_GAP else 0.0
        for m in window
    ]
    met_at = _first(window, widen, SMILE_MIN_WIDEN)
    peak = max(widen)
    if met_at is None:
        why = (
            f"mouth widened {100 * peak:.0f}% with lips closed, needs {100 * SMILE_MIN_WIDEN:.0f}%"
        )
        return StepVerdict("SMILE", False, why)
    return StepVerdict("SMILE", True, f"mouth widened {100 * peak:.0f}%", met_at.t_ms)


def _closer(start: Sequence[Measure], window: Sequence[Measure]) -> StepVerdict:
    base = _median([m.size for m in start])
    growth = [m.size / base - 1 for m in window]
    met_at = _first(window, growth, CLOSER_MIN_GROWTH)
    peak = max(growth)
    if met_at is None:
        why = f"face grew {100 * peak:.0f}%, needs {100 * CLOSER_MIN_GROWTH:.0f}%"
        return StepVerdict("MOVE_CLOSER", False, why)
    return StepVerdict("MOVE_CLOSER", True, f"face grew {100 * peak:.0f}%", met_at.t_ms)


def _blink(
    start: Sequence[Measure], window: Sequence[Measure], baseline: float | None
) -> StepVerdict:
    if baseline is None or baseline < BLINK_BASELINE_MIN:
        return StepVerdict("BLINK", False, "eyes never clearly open in the capture")
    seq = list(dict.fromkeys([*start[-1:], *window]))  # the last start frame, then the step's
    seq = [m for m in seq if m.ear is not None]
    ears = [float(m.ear) for m in seq if m.ear is not None]
    dip, open_ = BLINK_DIP * baseline, BLINK_OPEN * baseline
    lowest = min(ears, default=baseline)
    for j, ear in enumerate(ears):
        if ear > dip or seq[j] not in window:
            continue
        before = [i for i in range(j) if ears[i] >= open_]
        after = [k for k in range(j + 1, len(ears)) if ears[k] >= open_]
        if not before or not after:
            continue
        i, k = before[-1], after[0]
        if seq[k].t_ms - seq[i].t_ms > BLINK_MAX_CLOSED_MS + 2 * BLINK_FRAME_SLACK_MS:
            continue
        if float(np.max(np.abs(seq[i].xy - seq[k].xy))) < SAME_MESH_PX:
            continue  # the open frames either side are the same picture
        return StepVerdict(
            "BLINK", True, f"eyes closed to {ear / baseline:.2f} of open", seq[j].t_ms
        )
    why = f"eyes closed to {lowest / baseline:.2f} of open, needs {BLINK_DIP:.2f} and reopening"
    return StepVerdict("BLINK", False, why)


def pose_measures_2d(xy: NDArray[np.float64]) -> tuple[float, float, float]:
    """Legacy scale-free (mouth ratio, yaw proxy, pitch proxy) of one face's 2D mesh."""
    left, right = xy[EYE_OUTER_LEFT], xy[EYE_OUTER_RIGHT]
    eye_vec = right - left
    eye_dist = float(np.linalg.norm(eye_vec)) or 1e-6
    along = eye_vec / eye_dist
    down = np.array([-along[1], along[0]])  # image y grows downwards
    eye_mid = (left + right) / 2
    mouth_mid = (xy[MOUTH_LEFT] + xy[MOUTH_RIGHT]) / 2
    mouth_width = float(np.linalg.norm(xy[MOUTH_RIGHT] - xy[MOUTH_LEFT])) or 1e-6
    nose = xy[NOSE_TIP] - eye_mid
    eye_to_mouth = float(np.dot(mouth_mid - eye_mid, down)) or 1e-6
    return (
        float(np.linalg.norm(xy[UPPER_LIP] - xy[LOWER_LIP])) / mouth_width,
        float(np.dot(nose, along)) / eye_dist,
        float(np.dot(nose, down)) / eye_to_mouth,
    )


def _legacy(step: str, window: Sequence[Measure]) -> StepVerdict:
    values = [pose_measures_2d(m.xy) for m in window]
    col = {"MOUTH": 0, "YAW": 1, "NOD": 2}[step]
    need = {"MOUTH": MOUTH_MIN_RANGE, "YAW": YAW_MIN_RANGE, "NOD": NOD_MIN_RANGE}[step]
    series = [v[col] for v in values]
    spread = max(series) - min(series) if len(series) >= 2 else 0.0
    met = spread >= need and (step != "MOUTH" or max(series, default=0.0) >= MOUTH_OPEN_MIN)
    why = f"{step.lower()} measure moved {spread:.2f}" + ("" if met else f", needs {need:.2f}")
    return StepVerdict(step, met, why, window[0].t_ms if met and window else None)


def judge_step(
    step: str, start: Sequence[Measure], window: Sequence[Measure], baseline: float | None
) -> StepVerdict:
    """One step on its start frames and its window (both non-empty, in time order)."""
    if step in TURNS or step in LOOKS:
        return _turn(step, start, window)
    if step == "OPEN_MOUTH":
        return _open_mouth(start, window)
    if step == "SMILE":
        return _smile(start, window)
    if step == "MOVE_CLOSER":
        # No planarity here: a head coming closer is itself nearly a similarity (its depth
        # is small against the distance), so a print brought closer cannot be told apart.
        return _closer(start, window)
    if step == "BLINK":
        return _blink(start, window, baseline)
    if step in LEGACY:
        return _legacy(step, window)
    raise ValueError(f"unknown challenge {step!r}")


# --- the capture ------------------------------------------------------------------------------


def _ear_baseline(measures: Sequence[Measure]) -> float | None:
    ears = [m.ear for m in measures if m.ear is not None]
    return _median(ears) if ears else None


def _fail(step: str, why: str) -> StepVerdict:
    return StepVerdict(step, False, why)


def _with_prompts(
    challenges: Sequence[str],
    prompts: Sequence[Prompt],
    measures: Sequence[Measure],
    window_ms: int,
    baseline: float | None,
) -> list[StepVerdict]:
    # A LIGHT prompt (judged by light.py) is not judged here, but it still closes the window of
    # the step before it: the frames after it are the light step's, not that step's.
    if [p.step for p in prompts if p.step != LIGHT] != list(challenges):
        return [_fail(c, "prompts do not follow the drawn steps") for c in challenges]
    times = [p.shown_at_ms for p in prompts]
    if any(b <= a for a, b in zip(times, times[1:], strict=False)):
        return [_fail(c, "prompts are not in time order") for c in challenges]
    verdicts: list[StepVerdict] = []
    last_met: int | None = None
    # A step's window closes when the next prompt shows (the SDK moves on once a step is done)
    # or window_ms after its own prompt, whichever is first.
    ends = [
        min(p.shown_at_ms + window_ms, n.shown_at_ms)
        for p, n in zip(prompts, prompts[1:], strict=False)
    ]
    ends.append(prompts[-1].shown_at_ms + window_ms)
    for prompt, end in zip(prompts, ends, strict=True):
        if prompt.step == LIGHT:
            continue
        p = prompt.shown_at_ms
        window = [m for m in measures if p < m.t_ms <= end]
        start = [m for m in measures if p - START_SPAN_MS <= m.t_ms <= p]
        if not window:
            verdicts.append(_fail(prompt.step, "no face frames within the step's window"))
            continue
        verdict = judge_step(prompt.step, start or window[:1], window, baseline)
        if verdict.met and last_met is not None and (verdict.at_ms or 0) <= last_met:
            verdict = _fail(prompt.step, "done before the previous step")
        if verdict.met:
            last_met = verdict.at_ms
        verdicts.append(verdict)
    return verdicts


def _by_tags(
    challenges: Sequence[str],
    steps: Sequence[str | None],
    measures: Sequence[Measure],
    baseline: float | None,
) -> list[StepVerdict]:
    verdicts = []
    for challenge in challenges:
        marked = [m for m in measures if steps[m.index] == challenge]
        window = marked or list(measures)
        if not window:
            verdicts.append(_fail(challenge, "no face in the step's frames"))
            continue
        verdicts.append(judge_step(challenge, window[:1], window, baseline))
    return verdicts


def judge_challenges(
    challenges: Sequence[str],
    frames: Sequence[FrameInput],
    prompts: Sequence[Prompt] = (),
    window_ms: int = DEFAULT_WINDOW_MS,
) -> ChallengeReport:
    """Judge every requested challenge; see the module docstring for the rules."""
    if not challenges:
        return ChallengeReport((), ())
    present = [m for m in measure_frames(frames) if m is not None]
    baseline = _ear_baseline(present)
    if prompts:
        if any(f.t_ms <= 0 for f in frames):
            verdicts = [
                _fail(c, "frames carry no timestamps to judge the prompts by") for c in challenges
            ]
        else:
            verdicts = _with_prompts(challenges, prompts, present, window_ms, baseline)
    else:
        verdicts = _by_tags(challenges, [f.step for f in frames], present, baseline)
    signals = [
        Signal("challenge_not_met", CERTAIN, f"{v.step}: {v.why}") for v in verdicts if not v.met
    ]
    if any(v.planar for v in verdicts):
        steps = ", ".join(v.step for v in verdicts if v.planar)
        signals.append(Signal("planar_face", STRONG, f"the face moved as a flat surface ({steps})"))
    observed: dict[str, bool] = {}
    for v in verdicts:
        observed[v.step] = observed.get(v.step, True) and v.met
    residuals = tuple(v.residual for v in verdicts if v.residual is not None)
    return ChallengeReport(tuple(verdicts), tuple(signals), observed, residuals)


def judge_capture(
    capture: pb.Capture,
    eyes: Sequence[EyeState | None],
    marks: Sequence[FaceLandmarks | None],
    window_ms: int = DEFAULT_WINDOW_MS,
) -> ChallengeReport:
    """Judge a capture's challenges from the pipeline's per-frame model outputs."""
    # LIGHT is judged on its own (worker/pipeline/light.py): not a movement of the face.
    names = [pb.Challenge.Name(c) for c in capture.challenges if c != pb.LIGHT]
    if not names:
        return ChallengeReport((), ())
    inputs = [
        FrameInput(
            t_ms=int(f.timestamp_ms),
            step=pb.Challenge.Name(f.challenge_step) if f.challenge_step else None,
            mesh=m.points if m is not None else None,
            ear=e.ear if e is not None else None,
        )
        for f, e, m in zip(capture.frames, eyes, marks, strict=True)
    ]
    prompts = [Prompt(pb.Challenge.Name(p.step), int(p.shown_at_ms)) for p in capture.prompts]
    return judge_challenges(names, inputs, prompts, window_ms)
