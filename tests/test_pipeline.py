"""The whole pipeline on captures built with make-sample's code from real (and altered) photos.

The PAD model's outputs are recorded (printed; see them with ``pytest -rP``), not asserted:
the model is uncalibrated.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import pytest

from antihack.shared.domain.capture import (
    DETECTION_FAILED,
    CaptureError,
    CaptureLimits,
    parse_capture,
)
from antihack.shared.proto import liveness_pb2 as pb
from antihack.shared.sdk.sample import build_capture
from antihack.worker.pipeline.detect import detect_faces
from antihack.worker.pipeline.fusion import HACK_THRESHOLD, NO_FACE_SCORE
from antihack.worker.pipeline.landmarks import face_landmarks
from antihack.worker.pipeline.replay import MemoryHistory
from antihack.worker.pipeline.run import Analysis, Pipeline, PipelineContext
from tests.fixtures_images import (
    astronaut,
    blurred,
    coffee,
    darkened,
    jittered,
    resized,
    with_surgical_mask,
)
from tests.genuine import genuine_frames as genuine_frames_of

SECRET = b"sdk-secret"
EXTRA_FIELDS = {
    "mask_proba": float,
    "quality_score": float,
    "quality_too_low": bool,
    "blur_or_dark": bool,
    "has_no_face": bool,
    "face_too_small": bool,
    "image_too_small": bool,
    "masked": bool,
    "face_quality_low": bool,
    "face_quality_score": float,
    "is_live": bool,
    "live_proba": float,
    "eye_closed": bool,
    "eye_score": float,
}
Record = Callable[[str, object], None]


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Record:
    """Print a measured value under the test's name (record_property warns under xunit2)."""

    def record(name: str, value: object) -> None:
        print(f"{request.node.name}: {name} = {value}")

    return record


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline.load()


def context(**changes: Any) -> PipelineContext:
    return PipelineContext.fresh(**{"sdk_secret": SECRET, **changes})


def analyze(
    pipeline: Pipeline,
    frames: list[np.ndarray],
    record: Record,
    ctx: PipelineContext | None = None,
    **build: object,
) -> Analysis:
    capture = parse_capture(build_capture(frames, **build), CaptureLimits())  # type: ignore[arg-type]
    analysis = pipeline.analyze(capture, ctx or context())
    record("score", analysis.score)
    record("live_proba", analysis.extra["live_proba"])
    record("pad_raw", analysis.pad_raw)
    record("reasons", analysis.reasons)
    return analysis


# A live capture (tests/genuine.py): 8 frames, the fewest the natural-motion check judges
# fully; this seed neither blinks nor gets any finding.
GENUINE_SEED, GENUINE_FRAMES = 9, 8


@pytest.fixture(scope="module")
def genuine_frames() -> list[np.ndarray]:
    return genuine_frames_of(GENUINE_SEED, n=GENUINE_FRAMES)


@pytest.fixture(scope="module")
def genuine(pipeline: Pipeline, genuine_frames: list[np.ndarray]) -> Analysis:
    capture = parse_capture(build_capture(genuine_frames, session_id="g-1"), CaptureLimits())
    return pipeline.analyze(capture, context(return_image=True))


def test_genuine_capture_scores_below_the_threshold(genuine: Analysis, record: Record) -> None:
    record("score", genuine.score)
    record("live_proba", genuine.extra["live_proba"])
    record("pad_raw", genuine.pad_raw)
    assert genuine.score < HACK_THRESHOLD
    assert genuine.reasons == []
    extra = genuine.extra
    assert not extra["has_no_face"] and not extra["blur_or_dark"]
    assert not extra["face_too_small"] and not extra["image_too_small"]
    assert not extra["quality_too_low"] and not extra["face_quality_low"]
    assert not extra["masked"] and extra["mask_proba"] < 0.1
    assert not extra["eye_closed"] and extra["eye_score"] > 0.9
    assert genuine.pad_raw is not None
    assert len(genuine.frame_hashes) == GENUINE_FRAMES and genuine.session_id == "g-1"
    assert set(genuine.model_versions) >= {"pad", "face_detector", "mask_classifier"}
    stages = {"integrity", "decode", "detect", "landmarks", "eyes", "mask", "quality", "pad"}
    assert stages | {"crossframe", "replay", "fusion", "total"} <= set(genuine.stage_ms)


def test_seed_body_has_exactly_the_seed_fields(genuine: Analysis) -> None:
    body = genuine.seed_body("TID" + "0" * 32, return_extra=True)
    assert set(body) == {"request_id", "status", "score", "extra", "image_base64"}
    assert body["status"] == "OK" and body["score"] == genuine.score
    assert {k: type(v) for k, v in body["extra"].items()} == EXTRA_FIELDS
    for name in ("mask_proba", "quality_score", "face_quality_score", "live_proba", "eye_score"):
        assert 0.0 <= body["extra"][name] <= 1.0
    assert body["extra"]["is_live"] == (body["extra"]["live_proba"] > 0.5)
    jpeg = base64.b64decode(body["image_base64"])
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (512, 512, 3)
    assert set(genuine.seed_body("TID1", return_extra=False)) == {
        "request_id",
        "status",
        "score",
        "image_base64",
    }


@pytest.mark.parametrize(
    ("name", "make", "flag"),
    [
        ("blurred", lambda: [blurred(astronaut())], "blur_or_dark"),
        ("dark", lambda: [darkened(astronaut())], "blur_or_dark"),
        ("face 55 px", lambda: [resized(astronaut(), 300)], "face_too_small"),
        ("image 200 px", lambda: [resized(astronaut(), 200)], "image_too_small"),
    ],
)
def test_quality_problems_are_flagged(
    pipeline: Pipeline,
    record: Record,
    name: str,
    make: Callable[[], list[np.ndarray]],
    flag: str,
) -> None:
    analysis = analyze(pipeline, make(), record)
    assert analysis.extra[flag] is True, analysis.extra
    assert analysis.extra["quality_too_low"] is True
    assert analysis.extra["has_no_face"] is False
    assert analysis.score < HACK_THRESHOLD  # poor quality is not proof of a hack


def test_no_face(pipeline: Pipeline, record: Record) -> None:
    analysis = analyze(pipeline, jittered(coffee(), 2), record)
    assert analysis.extra["has_no_face"] is True
    assert analysis.score == NO_FACE_SCORE
    assert analysis.pad_raw is None  # nothing to run the PAD model on
    assert analysis.extra["live_proba"] == 0.0 and analysis.extra["is_live"] is False
    assert analysis.frame_hashes == []


def test_masked_face(pipeline: Pipeline, record: Record) -> None:
    face = detect_faces(pipeline.models, [astronaut()])[0][0]
    points = face_landmarks(pipeline.models, [astronaut()], [face])[0].points
    frames = jittered(with_surgical_mask(astronaut(), points), 3)
    analysis = analyze(pipeline, frames, record)
    record("mask_proba", analysis.extra["mask_proba"])
    assert analysis.extra["has_no_face"] is False
    assert analysis.extra["mask_proba"] > 0.5 and analysis.extra["masked"] is True


def test_still_image_repeated_is_a_certain_hack(pipeline: Pipeline, record: Record) -> None:
    analysis = analyze(pipeline, [astronaut()] * 5, record)
    assert analysis.score >= 0.99
    assert "still_image_injected" in analysis.reasons


def test_blink_requested_on_a_still_is_a_certain_hack(pipeline: Pipeline, record: Record) -> None:
    analysis = analyze(pipeline, [astronaut()] * 5, record, challenge="BLINK")
    assert analysis.score >= 0.99
    assert {"still_image_injected", "challenge_not_met"} <= set(analysis.reasons)


def test_blink_requested_but_eyes_never_close(
    pipeline: Pipeline, genuine_frames: list[np.ndarray], record: Record
) -> None:
    analysis = analyze(pipeline, genuine_frames, record, challenge="BLINK")
    assert analysis.score >= 0.99
    assert analysis.reasons == ["challenge_not_met"]


def test_signed_capture_passes_when_signatures_are_required(
    pipeline: Pipeline, genuine_frames: list[np.ndarray], record: Record
) -> None:
    ctx = context(require_signed=True)
    analysis = analyze(pipeline, genuine_frames, record, ctx, sign_secret=SECRET)
    assert analysis.score < HACK_THRESHOLD and analysis.reasons == []


def test_tampered_after_signing_is_a_certain_hack(
    pipeline: Pipeline, genuine_frames: list[np.ndarray], record: Record
) -> None:
    capture = pb.Capture.FromString(build_capture(genuine_frames, sign_secret=SECRET))
    capture.frames[0].timestamp_ms += 40  # any change after signing
    analysis = pipeline.analyze(capture, context())
    record("score", analysis.score)
    assert analysis.score >= 0.99
    assert analysis.reasons == ["signature_invalid"]


def test_unsigned_when_required_is_a_certain_hack(
    pipeline: Pipeline, genuine_frames: list[np.ndarray], record: Record
) -> None:
    analysis = analyze(pipeline, genuine_frames, record, context(require_signed=True))
    assert analysis.score >= 0.99
    assert analysis.reasons == ["signature_missing"]


def test_replayed_session_id_is_a_certain_hack(
    pipeline: Pipeline, genuine_frames: list[np.ndarray], record: Record
) -> None:
    ctx = context(seen_session_ids=frozenset({"g-1"}))
    analysis = analyze(pipeline, genuine_frames, record, ctx, session_id="g-1")
    assert analysis.score >= 0.99
    assert analysis.reasons == ["session_replayed"]


def test_replayed_frames_are_a_certain_hack(
    pipeline: Pipeline, genuine: Analysis, genuine_frames: list[np.ndarray], record: Record
) -> None:
    # The same pictures re-encoded at another quality, under a fresh session id.
    def reencoded(frame: np.ndarray) -> np.ndarray:
        jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1]
        bgr = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
        assert bgr is not None
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    frames = [reencoded(f) for f in genuine_frames]
    history = MemoryHistory()
    history.add("genuine", "key", genuine.frame_prints)
    ctx = context(history=history)
    analysis = analyze(pipeline, frames, record, ctx, jpeg_quality=70)
    assert analysis.score >= 0.99
    assert analysis.reasons == ["frames_replayed"]
    # New frames of the same face (another take) are not a replay (tests/test_replay.py).
    other = analyze(pipeline, genuine_frames_of(1401)[:3], record, ctx)
    assert "frames_replayed" not in other.reasons


def test_device_flags_are_strong(pipeline: Pipeline, genuine_frames: list[np.ndarray]) -> None:
    capture = pb.Capture.FromString(build_capture(genuine_frames))
    capture.device.virtual_camera = True
    analysis = pipeline.analyze(capture, context())
    assert HACK_THRESHOLD <= analysis.score < 0.99
    assert analysis.reasons == ["virtual_camera"]


def test_undecodable_frame_is_detection_failed(pipeline: Pipeline) -> None:
    capture = pb.Capture.FromString(build_capture([resized(astronaut(), 256)]))
    image = capture.frames[0].image
    # Keep the JPEG headers, destroy the entropy-coded data and the end marker.
    start = image.index(b"\xff\xda")
    capture.frames[0].image = image[: start + 20]
    with pytest.raises(CaptureError) as err:
        pipeline.analyze(capture, context())
    assert err.value.status == DETECTION_FAILED
