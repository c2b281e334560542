"""Natural motion (issue #13): a still re-noised, moved or re-encoded per frame, or two or three
stills cycled (held 1-4 frames each), is an injected still; shuffled frames are a hack; genuine
captures (tests/genuine.py), including a person sitting very still, are not. Real models
throughout; measured values print with ``pytest -s``."""

from __future__ import annotations

import time

import numpy as np
import pytest

from antihack.shared.domain.capture import CaptureLimits, encode_jpeg, parse_capture
from antihack.shared.proto import liveness_pb2 as pb
from antihack.shared.sdk.sample import build_capture
from antihack.worker.pipeline.fusion import HACK_THRESHOLD
from antihack.worker.pipeline.run import Analysis, Pipeline, PipelineContext
from tests.blink import close_eyes
from tests.fixtures_images import astronaut, coffee, resized
from tests.genuine import genuine_capture, genuine_frames
from tests.stills import STILL_VARIANTS, cycled_frames, held_pattern, still_frames


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline.load()


def analyze(pipeline: Pipeline, capture: pb.Capture | bytes) -> Analysis:
    if isinstance(capture, bytes):
        capture = parse_capture(capture, CaptureLimits())
    analysis = pipeline.analyze(capture, PipelineContext.fresh())
    print(f"  score {analysis.score} reasons {analysis.reasons}")
    return analysis


@pytest.mark.parametrize("variant", STILL_VARIANTS)
def test_one_still_changed_per_frame_is_injected(pipeline: Pipeline, variant: str) -> None:
    frames = still_frames(astronaut(), variant, n=12, seed=3)
    analysis = analyze(pipeline, build_capture(frames))
    assert "still_image_injected" in analysis.reasons
    assert analysis.score >= HACK_THRESHOLD


def test_two_stills_cycled_are_injected(pipeline: Pipeline) -> None:
    photos = [astronaut(), close_eyes(astronaut(), 1.0)]
    frames = cycled_frames(photos, [0, 1] * 6, seed=0)
    analysis = analyze(pipeline, build_capture(frames))
    assert "still_image_injected" in analysis.reasons
    assert analysis.score >= HACK_THRESHOLD


@pytest.mark.parametrize(("photos", "variant"), [(2, "shift"), (3, "jpeg"), (3, "noise")])
def test_stills_held_one_to_four_frames_are_injected(
    pipeline: Pipeline, photos: int, variant: str
) -> None:
    # Held for several frames, two photos whose faces barely differ (frames of a person sitting
    # still) or three whose groups are as loose as a live face's: only the noise-floor states
    # (each photo's copies differ by fresh noise, with no drift) give them away.
    frames = genuine_frames(21, n=16, still=photos == 2)
    chosen = [frames[8], frames[0], frames[15]][:photos]
    pattern = held_pattern(photos, 16, np.random.default_rng(photos))
    assert max(pattern.count(k) for k in range(photos)) < 16 and len(set(pattern)) == photos
    analysis = analyze(pipeline, build_capture(cycled_frames(chosen, pattern, variant, seed=5)))
    assert "still_image_injected" in analysis.reasons
    assert analysis.score >= HACK_THRESHOLD


@pytest.mark.parametrize(
    ("seed", "still", "code"),
    [(9, False, "frames_out_of_order"), (12, True, "still_image_injected")],
    ids=["moving", "sitting-still"],
)
def test_shuffled_frames_are_a_hack(pipeline: Pipeline, seed: int, still: bool, code: str) -> None:
    # Moving: the face's path in timestamp order is far longer than through the same frames in
    # another order. Sitting still (no readable path): shuffled, the face's fields keep no drift
    # from one frame to the next, as copies of one photo.
    frames = genuine_frames(seed, n=16, still=still)
    order = np.random.default_rng(1000 + seed).permutation(16)
    analysis = analyze(pipeline, build_capture([frames[i] for i in order]))
    assert code in analysis.reasons
    assert analysis.score >= HACK_THRESHOLD
    # The same frames in their order: a pass.
    assert analyze(pipeline, build_capture(frames)).score < HACK_THRESHOLD


@pytest.mark.parametrize("still", [False, True], ids=["moving", "sitting-still"])
def test_genuine_capture_passes(pipeline: Pipeline, still: bool) -> None:
    analysis = analyze(pipeline, genuine_capture(11, n=12, still=still))
    assert "still_image_injected" not in analysis.reasons
    assert analysis.score < HACK_THRESHOLD


def test_one_frame_gives_no_motion_verdict(pipeline: Pipeline) -> None:
    analysis = analyze(pipeline, genuine_capture(12, n=1))
    assert "still_image_injected" not in analysis.reasons
    assert "frames_out_of_order" not in analysis.reasons


def test_frames_of_different_sizes(pipeline: Pipeline) -> None:
    frames = genuine_frames(13, n=12, still=True)
    mixed = [resized(f, 400) if i % 3 == 0 else f for i, f in enumerate(frames)]
    assert "still_image_injected" not in analyze(pipeline, build_capture(mixed)).reasons
    still = [
        resized(f, 400) if i % 3 == 0 else f
        for i, f in enumerate(still_frames(astronaut(), "noise", 12))
    ]
    assert "still_image_injected" in analyze(pipeline, build_capture(still)).reasons


def test_face_missing_in_some_frames(pipeline: Pipeline) -> None:
    blank = resized(coffee()[:, 100:500], 512)
    frames = genuine_frames(14, n=12)
    frames[2] = frames[7] = blank
    analysis = analyze(pipeline, build_capture(frames))
    assert "still_image_injected" not in analysis.reasons
    still = still_frames(astronaut(), "shift", n=14, seed=1)
    still[0] = still[5] = blank
    assert "still_image_injected" in analyze(pipeline, build_capture(still)).reasons


def test_a_face_in_only_two_frames_is_not_judged(pipeline: Pipeline) -> None:
    blank = np.asarray(resized(coffee()[:, 100:500], 512))
    frames = [blank] * 4 + still_frames(astronaut(), "noise", n=2)
    now = int(time.time() * 1000)
    capture = pb.Capture(version=1, session_id="two-faces", started_at_ms=now)
    for i, frame in enumerate(frames):
        capture.frames.add(image=encode_jpeg(frame), timestamp_ms=now + 67 * i)
    analysis = analyze(pipeline, capture)
    # Two face frames: no motion verdict at all, neither a still nor an order.
    assert not {"frames_out_of_order", "still_image_injected", "still_image_suspected"} & set(
        analysis.reasons
    )


def test_a_short_capture_of_a_still_is_only_suspected(pipeline: Pipeline) -> None:
    """Below MIN_CERTAIN_FRAMES face frames a still is a weak signal, never a certain hack:
    8- and 10-frame genuine captures were called stills at 8 (bench.make_genuine seeds 601-612,
    641-652)."""
    analysis = analyze(pipeline, build_capture(still_frames(astronaut(), "noise", 10)))
    assert "still_image_suspected" in analysis.reasons
    assert "still_image_injected" not in analysis.reasons
    assert analysis.score < HACK_THRESHOLD
    longer = analyze(pipeline, build_capture(still_frames(astronaut(), "noise", 12)))
    assert "still_image_injected" in longer.reasons
