"""The anti-hack pipeline: one parsed capture in, the seed's score and ``extra`` out.

Order: integrity -> decode -> detect -> landmarks -> eyes -> mask -> quality -> PAD (one frame)
-> cross-frame -> replay -> fusion. Each stage is a pure function; this module only wires them
and times them. The task around it reads the job and writes the result.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from antihack.shared.domain.capture import CaptureLimits, decode_frames, encode_jpeg
from antihack.shared.domain.light import LightSequence
from antihack.shared.proto import liveness_pb2 as pb
from antihack.worker.pipeline.challenges import judge_capture
from antihack.worker.pipeline.crossframe import crossframe_report
from antihack.worker.pipeline.detect import FaceBox, detect_faces
from antihack.worker.pipeline.eyes import EyeState, eye_states
from antihack.worker.pipeline.fusion import FusionInput, Signal, fuse
from antihack.worker.pipeline.integrity import integrity_signals, session_signals
from antihack.worker.pipeline.landmarks import FaceLandmarks, face_landmarks
from antihack.worker.pipeline.light import light_report
from antihack.worker.pipeline.mask import mask_probabilities
from antihack.worker.pipeline.models import ModelSet
from antihack.worker.pipeline.pad import live_probability, pad_scores, pad_signals
from antihack.worker.pipeline.quality import SCORE_THRESHOLD, QualityReport, frame_quality
from antihack.worker.pipeline.replay import (
    FramePrint,
    NoHistory,
    ReplayHistory,
    capture_prints,
    replay_signals,
)

RgbImage = NDArray[np.uint8]
IMAGE_JPEG_QUALITY = 90

# What each `extra` field means (the seed's names; every score's threshold is 0.5):
#   mask_proba          P(face covered by a mask), best frame; masked = mask_proba > 0.5
#   quality_score       frame quality in [0, 1] (sharpness, light, face and image size);
#                       quality_too_low = quality_score < 0.5
#   blur_or_dark        face crop's Laplacian variance < 40 or mean brightness < 65
#   has_no_face         no face in any frame
#   face_too_small      face box shorter side < 80 px; image_too_small: image side < 240 px
#   face_quality_score  FaceMesh face probability x crop sharpness and light; low < 0.5
#   live_proba          PAD live probability (uncalibrated); is_live = live_proba > 0.5
#   eye_score           P(eyes open) from the eye aspect ratio; eye_closed = eye_score < 0.5
# With no face, probabilities and scores are 0 and face flags false, except has_no_face,
# quality_too_low and face_quality_low, which are true.


@dataclass(frozen=True)
class PipelineContext:
    """What the pipeline needs besides the capture: the key's settings and its history."""

    require_signed: bool
    sdk_secret: bytes | None
    seen_session_ids: frozenset[str]
    return_image: bool
    now_ms: int
    limits: CaptureLimits = field(default_factory=CaptureLimits)
    # Why the capture session check failed at submission (jobs.session_check), or None.
    session_check: str | None = None
    # ANTIHACK_STEP_WINDOW_S: how long after its prompt a challenge step may be performed.
    step_window_ms: int = 4000
    # ANTIHACK_PAD_HACK_BELOW: live_proba below it is a strong signal (pad.pad_signals); 0 = off.
    pad_hack_below: float = 0.0
    # The capture session's LIGHT colours (worker/pipeline/light.py), when it has a LIGHT step.
    light: LightSequence | None = None
    # Earlier captures' frame fingerprints (worker/pipeline/replay.py): the worker's database
    # index, or a replay.MemoryHistory for `antihack eval --with-history` and tests.
    history: ReplayHistory = field(default_factory=NoHistory)

    @classmethod
    def fresh(cls, now_ms: int | None = None, **changes: Any) -> PipelineContext:
        """A key with no history that accepts unsigned captures; no image returned."""
        base = cls(
            require_signed=False,
            sdk_secret=None,
            seen_session_ids=frozenset(),
            return_image=False,
            now_ms=int(time.time() * 1000) if now_ms is None else now_ms,
        )
        return replace(base, **changes) if changes else base


@dataclass
class Analysis:
    """The outcome of one capture: the seed's fields plus what the job keeps for audit."""

    score: float
    extra: dict[str, float | bool]
    image_base64: str | None
    reasons: list[str]
    model_versions: dict[str, str]
    session_id: str
    frame_hashes: list[int]
    stage_ms: dict[str, float]
    signals: list[Signal] = field(default_factory=list)
    best_frame: int = 0
    pad_raw: float | None = None
    # The challenge steps not met, ``[{"step", "why"}]`` (GET /v1/jobs/<id> shows them).
    failed_steps: list[dict[str, str]] = field(default_factory=list)
    # Each face frame's replay fingerprint (frame_hashes are their hashes), for the history.
    frame_prints: list[FramePrint] = field(default_factory=list)

    def seed_body(self, request_id: str, return_extra: bool) -> dict[str, Any]:
        """The seed endpoint's response body for this analysis."""
        body: dict[str, Any] = {"request_id": request_id, "status": "OK", "score": self.score}
        if return_extra:
            body["extra"] = dict(self.extra)
        if self.image_base64 is not None:
            body["image_base64"] = self.image_base64
        return body


@dataclass(frozen=True)
class _Faces:
    """Per-frame model outputs, None where no face was detected."""

    boxes: list[FaceBox | None]
    marks: list[FaceLandmarks | None]
    eyes: list[EyeState | None]
    masks: list[float | None]


class _Timer:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = round((time.perf_counter() - start) * 1000, 2)


def _scatter(values: Sequence[Any], index: Sequence[int], n: int) -> list[Any]:
    out: list[Any] = [None] * n
    for i, value in zip(index, values, strict=True):
        out[i] = value
    return out


def _box(face: FaceBox | None) -> tuple[float, float, float, float] | None:
    return None if face is None else (face.x0, face.y0, face.x1, face.y1)


def choose_frame(
    quality: Sequence[QualityReport],
    has_face: Sequence[bool],
    marked_best: int | None,
    eyes_open: Sequence[bool] | None = None,
) -> int:
    """The frame to judge: the SDK's best if usable, else the best usable, else the best face.

    A frame caught mid-blink is not usable when an open-eyed one exists: the judged frame's
    eye_closed would otherwise report the challenge itself.
    """
    faces = [i for i, ok in enumerate(has_face) if ok]
    if not faces:
        return marked_best if marked_best is not None else 0
    usable = [i for i in faces if quality[i].usable]
    if eyes_open is not None and any(eyes_open[i] for i in usable):
        usable = [i for i in usable if eyes_open[i]]
    if marked_best is not None and marked_best in usable:
        return marked_best
    pool = usable or faces
    return max(pool, key=lambda i: (quality[i].quality_score, quality[i].face_quality_score))


class Pipeline:
    """The loaded models and the function that analyses one capture with them."""

    def __init__(self, models: ModelSet) -> None:
        self.models = models

    @classmethod
    def load(
        cls,
        model_dir: Path | None = None,
        providers: Sequence[str] | None = None,
        intra_threads: int = 0,
        inter_threads: int = 1,
    ) -> Pipeline:
        """Load and verify every model (ModelError on a missing or altered file)."""
        return cls(ModelSet.load(model_dir, providers, intra_threads, inter_threads))

    def _faces(self, frames: list[RgbImage], timer: _Timer) -> _Faces:
        n = len(frames)
        with timer.stage("detect"):
            found = detect_faces(self.models, frames)
        boxes: list[FaceBox | None] = [faces[0] if faces else None for faces in found]
        idx = [i for i, box in enumerate(boxes) if box is not None]
        sub = [frames[i] for i in idx]
        sub_boxes = [box for box in boxes if box is not None]
        with timer.stage("landmarks"):
            marks = face_landmarks(self.models, sub, sub_boxes) if idx else []
        with timer.stage("eyes"):
            eyes = eye_states(self.models, sub, marks) if idx else []
        with timer.stage("mask"):
            masks = mask_probabilities(self.models, sub, sub_boxes) if idx else []
        return _Faces(
            boxes, _scatter(marks, idx, n), _scatter(eyes, idx, n), _scatter(masks, idx, n)
        )

    def analyze(self, capture: pb.Capture, ctx: PipelineContext) -> Analysis:
        """Analyse a parsed capture; raise CaptureError (DETETION_FAILED) on undecodable frames."""
        timer = _Timer()
        started = time.perf_counter()
        with timer.stage("integrity"):
            signals = integrity_signals(
                capture,
                require_signed=ctx.require_signed,
                sdk_secret=ctx.sdk_secret,
                now_ms=ctx.now_ms,
            )
            signals += session_signals(ctx.session_check)
        with timer.stage("decode"):
            frames = decode_frames(capture, ctx.limits)
        faces = self._faces(frames, timer)
        has_face = [box is not None for box in faces.boxes]
        with timer.stage("quality"):
            quality = [
                frame_quality(frame, _box(box), mark.face_prob if mark is not None else 0.0)
                for frame, box, mark in zip(frames, faces.boxes, faces.marks, strict=True)
            ]
        marked = [i for i, f in enumerate(capture.frames) if f.best]
        eyes_open = [e is not None and e.open_proba >= 0.5 for e in faces.eyes]
        best = choose_frame(quality, has_face, marked[0] if marked else None, eyes_open)
        best_box = faces.boxes[best]
        pad_raw: float | None = None
        with timer.stage("pad"):
            if best_box is not None:
                pad_raw = pad_scores(self.models, [frames[best]], [best_box])[0]
        meshes = [m.points if m is not None else None for m in faces.marks]
        stamps = [f.timestamp_ms for f in capture.frames]
        with timer.stage("crossframe"):
            cross = crossframe_report(frames, meshes, stamps)
            signals += cross.signals
        with timer.stage("challenges"):
            steps = judge_capture(capture, faces.eyes, faces.marks, ctx.step_window_ms)
            signals += steps.signals
        light_step = [f.challenge_step == pb.LIGHT or f.light_index > 0 for f in capture.frames]
        if pb.LIGHT in capture.challenges or any(light_step):
            with timer.stage("light"):
                light = light_report(
                    frames,
                    faces.boxes,
                    meshes,
                    stamps,
                    [f.light_index for f in capture.frames],
                    light_step,
                    ctx.light,
                )
                signals += light.signals
        with timer.stage("replay"):
            prints = capture_prints(frames, meshes)
            candidates = ctx.history.lookup(prints) if prints else []
            signals += replay_signals(capture.session_id, prints, ctx.seen_session_ids, candidates)
        with timer.stage("fusion"):
            live = live_probability(pad_raw) if pad_raw is not None else 0.0
            # Compared as reported in extra, so an operator's calibration reads the same value.
            reported = round(live, 6) if pad_raw is not None else None
            signals += pad_signals(reported, ctx.pad_hack_below)
            mask = faces.masks[best] or 0.0
            report = quality[best]
            score = fuse(
                signals,
                FusionInput(
                    has_face=best_box is not None,
                    live_proba=live,
                    mask_proba=mask,
                    quality_score=report.quality_score,
                ),
            )
            eye = faces.eyes[best]
            extra = _extra(report, best_box is not None, live, mask, eye)
        image = None
        if ctx.return_image:
            with timer.stage("image"):
                jpeg = encode_jpeg(frames[best], IMAGE_JPEG_QUALITY)
                image = base64.b64encode(jpeg).decode("ascii")
        timer.ms["total"] = round((time.perf_counter() - started) * 1000, 2)
        return Analysis(
            score=round(score, 5),
            extra=extra,
            image_base64=image,
            reasons=list(dict.fromkeys(s.code for s in signals)),
            model_versions=dict(self.models.versions),
            session_id=capture.session_id,
            frame_hashes=[p.hash for p in prints],
            stage_ms=timer.ms,
            signals=signals,
            best_frame=best,
            pad_raw=pad_raw,
            failed_steps=steps.failed_steps,
            frame_prints=prints,
        )


def _extra(
    report: QualityReport, has_face: bool, live: float, mask: float, eye: EyeState | None
) -> dict[str, float | bool]:
    eye_score = eye.open_proba if eye is not None else 0.0
    return {
        "mask_proba": round(mask, 6),
        "quality_score": round(report.quality_score, 6),
        "quality_too_low": report.quality_too_low,
        "blur_or_dark": report.blur_or_dark,
        "has_no_face": not has_face,
        "face_too_small": report.face_too_small,
        "image_too_small": report.image_too_small,
        "masked": has_face and mask > SCORE_THRESHOLD,
        "face_quality_low": report.face_quality_low,
        "face_quality_score": round(report.face_quality_score, 6),
        "is_live": has_face and live > SCORE_THRESHOLD,
        "live_proba": round(live, 6),
        "eye_closed": eye is not None and eye_score < SCORE_THRESHOLD,
        "eye_score": round(eye_score, 6),
    }
