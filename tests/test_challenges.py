"""MOUTH, YAW and NOD on real model output: a painted mouth opening, and a turned flat photo.

The face is a real photo; the mouth opening is painted (tests/mouth.py) since no real clip is
available offline. A printed photo turned in front of the camera is simulated exactly by a
perspective warp: it must not pass a head-turn challenge. Measured values are printed
(``pytest -s``). No genuine head-turn clip exists offline, so YAW and NOD have no positive case
here beyond the hand-made meshes of tests/test_signals.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import tests.genuine
from antihack.shared.domain.capture import CaptureLimits, parse_capture
from antihack.shared.sdk.sample import build_capture
from antihack.worker.pipeline.challenges import (
    MOUTH_MIN_RANGE,
    MOUTH_OPEN_MIN,
    NOD_MIN_RANGE,
    YAW_MIN_RANGE,
    pose_measures_2d,
)
from antihack.worker.pipeline.detect import detect_faces
from antihack.worker.pipeline.fusion import CERTAIN, HACK_THRESHOLD
from antihack.worker.pipeline.landmarks import face_landmarks
from antihack.worker.pipeline.run import Analysis, Pipeline, PipelineContext
from tests.fixtures_images import astronaut
from tests.mouth import MOUTH_PROFILE, mouth_frames, photo_turned

# Closed lips read 0-0.05 (challenges.py); the painted closed mouth reads 0.03-0.06.
CLOSED_MAX = 0.08
# The print turns 0 -> +30 -> -30 -> 0 degrees, in 10 degree steps.
TURN_DEGREES = (0, 10, 20, 30, 20, 10, 0, -10, -20, -30, -20, -10, 0)
MOUTH_SEED = 0  # tests/genuine.py seed of the live mouth-opening captures


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline.load()


@dataclass(frozen=True)
class PoseMeasures:
    """The legacy scale-free measures (challenges.pose_measures_2d) of one frame."""

    mouth_ratio: float
    yaw: float
    pitch: float


def measures(pipeline: Pipeline, frames: list[np.ndarray]) -> list[PoseMeasures]:
    """The pose measures of each frame, from the pipeline's own detector and mesh."""
    found = detect_faces(pipeline.models, frames)
    assert all(found), "a face was not detected"
    marks = face_landmarks(pipeline.models, frames, [faces[0] for faces in found])
    return [PoseMeasures(*pose_measures_2d(m.points[:, :2].astype(np.float64))) for m in marks]


def analyze(pipeline: Pipeline, frames: list[np.ndarray], challenge: str) -> Analysis:
    """The frames as a capture whose every frame is marked with ``challenge``, analysed."""
    data = build_capture(frames, challenge=challenge)
    analysis = pipeline.analyze(parse_capture(data, CaptureLimits()), PipelineContext.fresh())
    print(f"  {challenge}: score {analysis.score}, reasons {analysis.reasons}")
    return analysis


def spread(values: list[float]) -> float:
    return max(values) - min(values)


def test_painted_mouth_reads_closed_then_open(pipeline: Pipeline) -> None:
    ratios = [m.mouth_ratio for m in measures(pipeline, mouth_frames())]
    print("mouth_ratio per frame:", [round(r, 3) for r in ratios])
    closed = [r for r, gap in zip(ratios, MOUTH_PROFILE, strict=True) if gap == 0]
    wide = [r for r, gap in zip(ratios, MOUTH_PROFILE, strict=True) if gap == max(MOUTH_PROFILE)]
    assert max(closed) < CLOSED_MAX
    assert min(wide) >= MOUTH_OPEN_MIN
    assert min(wide) - max(closed) >= MOUTH_MIN_RANGE


@pytest.mark.parametrize(
    ("opened", "peak"),
    [(True, 26.0), (True, 16.0), (False, 0.0)],
    ids=["mouth opened wide", "mouth opened moderately", "mouth kept closed"],
)
def test_mouth_challenge_needs_the_mouth_to_open(
    pipeline: Pipeline, opened: bool, peak: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    if opened:
        # A live person (tests/genuine.py) opening the mouth to ``peak`` px: mouth_frames'
        # painted stills on a moving camera are a still-image attack (worker/pipeline/motion.py).
        monkeypatch.setattr(tests.genuine, "MOUTH_OPEN_PX", peak)
        frames = tests.genuine.genuine_frames(MOUTH_SEED, n=10, challenges=("MOUTH",))
    else:
        frames = mouth_frames(opened, peak=peak)
    ratios = [m.mouth_ratio for m in measures(pipeline, frames)]
    print(f"opened={opened}: mouth_ratio range {spread(ratios):.3f}, max {max(ratios):.3f}")
    analysis = analyze(pipeline, frames, "MOUTH")
    if opened:
        assert "challenge_not_met" not in analysis.reasons
        assert not [s for s in analysis.signals if s.severity == CERTAIN]
        assert analysis.score < HACK_THRESHOLD
    else:
        assert "challenge_not_met" in analysis.reasons
        assert analysis.score >= 0.99


# Focal lengths: 400 px is a wide selfie camera on this 512 px frame (~65 degrees across), the
# strongest perspective a hand-held print gets; 1000 px a narrow one.
@pytest.mark.parametrize("focal", [400, 1000])
@pytest.mark.parametrize("challenge", ["YAW", "NOD"])
def test_turned_photo_does_not_pass_a_head_turn(
    pipeline: Pipeline, challenge: str, focal: int
) -> None:
    frames = [
        photo_turned(
            astronaut(), a if challenge == "YAW" else 0, a if challenge == "NOD" else 0, focal
        )
        for a in TURN_DEGREES
    ]
    poses = measures(pipeline, frames)
    yaws, pitches = [p.yaw for p in poses], [p.pitch for p in poses]
    print(f"{challenge} print, focal {focal}: yaw range {spread(yaws):.3f} "
          f"(YAW needs {YAW_MIN_RANGE}), pitch range {spread(pitches):.3f} (NOD needs "
          f"{NOD_MIN_RANGE})")  # fmt: skip
    assert spread(yaws) < YAW_MIN_RANGE
    assert spread(pitches) < NOD_MIN_RANGE
    assert "challenge_not_met" in analyze(pipeline, frames, challenge).reasons
