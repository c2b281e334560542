"""Directional challenge steps (issue 14) on real model output.

Head turns and tilts are the astronaut's own FaceMesh mesh turned in 3D and rendered textured
(tests/genuine.py); mouths are painted (tests/mouth.py), blinks drawn (tests/blink.py), a print
turned in front of the camera is a perspective warp (tests/mouth.py photo_turned). Measured
values are printed (``pytest -s``).
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta
from typing import Any

import cv2
import numpy as np
import pytest

from antihack.shared.domain.capture import CaptureError, CaptureLimits, parse_capture
from antihack.shared.domain.capture_sessions import CaptureFacts, draw_steps
from antihack.shared.domain.jobs import claim, finish, job_resource
from antihack.shared.infra.db import transaction
from antihack.shared.infra.settings import CHALLENGE_AXES, Settings
from antihack.shared.infra.tables import Job
from antihack.shared.proto import liveness_pb2 as pb
from antihack.shared.sdk.sample import build_capture
from antihack.worker.pipeline import challenges as ch
from antihack.worker.pipeline.detect import detect_faces
from antihack.worker.pipeline.eyes import eye_states
from antihack.worker.pipeline.landmarks import face_landmarks
from antihack.worker.pipeline.run import Pipeline, PipelineContext
from tests.blink import close_eyes
from tests.conftest import Key
from tests.fixtures_images import astronaut, jittered
from tests.genuine import genuine_frames
from tests.helpers import new_jobs
from tests.mouth import mouth_frames, photo_turned

T0 = 1_800_000_000_000
FPS = 15.0
# Frames per step in the rendered sessions: 8 at 15 fps (0.53 s) hold a whole turn, tilt,
# approach or blink; rendering is the slow part of this file, so no more than that.
STEP = 8


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline.load()


def inputs(pipeline: Pipeline, frames: list[np.ndarray]) -> list[ch.FrameInput]:
    found = detect_faces(pipeline.models, frames)
    assert all(found), "a face was not detected"
    marks = face_landmarks(pipeline.models, frames, [f[0] for f in found])
    eyes = eye_states(pipeline.models, frames, marks)
    return [
        ch.FrameInput(T0 + round(i * 1000 / FPS), None, m.points, e.ear)
        for i, (m, e) in enumerate(zip(marks, eyes, strict=True))
    ]


def prompts_at(steps: list[str], frame_inputs: list[ch.FrameInput], every: int) -> list[ch.Prompt]:
    """Each step prompted just before its span of ``every`` frames starts."""
    return [ch.Prompt(s, frame_inputs[i * every].t_ms - 30) for i, s in enumerate(steps)]


def show(report: ch.ChallengeReport) -> None:
    for v in report.verdicts:
        print(f"  {v.step}: met={v.met} {v.why} residual={v.residual}")


# --- head turns and tilts, rendered in 3D -----------------------------------------------------

SESSIONS = [["TURN_LEFT", "LOOK_UP", "MOVE_CLOSER"], ["TURN_RIGHT", "LOOK_DOWN", "BLINK"]]


@pytest.fixture(scope="module")
def performed(pipeline: Pipeline) -> list[tuple[list[str], list[ch.FrameInput]]]:
    out = []
    for seed, steps in enumerate(SESSIONS):
        frames = genuine_frames(seed, n=STEP * len(steps), challenges=steps)
        out.append((steps, inputs(pipeline, frames)))
    return out


def test_a_person_performing_the_steps_passes(
    performed: list[tuple[list[str], list[ch.FrameInput]]],
) -> None:
    for steps, frame_inputs in performed:
        report = ch.judge_challenges(steps, frame_inputs, prompts_at(steps, frame_inputs, STEP))
        show(report)
        assert report.signals == () and report.failed_steps == []
        # A turned 3D head is far from a homography: its residual is above the flat threshold.
        assert all(r > ch.PLANAR_MAX_RESIDUAL for r in report.residuals)


def test_the_opposite_direction_fails_and_names_the_step(
    performed: list[tuple[list[str], list[ch.FrameInput]]],
) -> None:
    steps, frame_inputs = performed[0]
    asked = ["TURN_RIGHT", "LOOK_DOWN", "MOVE_CLOSER"]  # she turned left and looked up
    report = ch.judge_challenges(asked, frame_inputs, prompts_at(asked, frame_inputs, STEP))
    show(report)
    assert [f["step"] for f in report.failed_steps] == ["TURN_RIGHT", "LOOK_DOWN"]
    assert f"needs {ch.TURN_MIN_DEG:.0f}°" in report.failed_steps[0]["why"]
    assert [s.code for s in report.signals] == ["challenge_not_met", "challenge_not_met"]


@pytest.mark.parametrize("fault", ["before the prompt", "out of window", "out of order"])
def test_steps_outside_their_prompt_window_or_order_fail(
    performed: list[tuple[list[str], list[ch.FrameInput]]], fault: str
) -> None:
    steps, frame_inputs = performed[0]
    prompts = prompts_at(steps, frame_inputs, STEP)
    window = ch.DEFAULT_WINDOW_MS
    if fault == "before the prompt":  # the turn was over when its prompt came
        prompts[0] = replace(prompts[0], shown_at_ms=frame_inputs[STEP - 2].t_ms)
    elif fault == "out of window":
        window = 150
    else:
        prompts = [prompts[1], prompts[0], prompts[2]]
    report = ch.judge_challenges(steps, frame_inputs, prompts, window)
    show(report)
    assert "TURN_LEFT" in [f["step"] for f in report.failed_steps]


def test_a_light_prompt_closes_the_window_of_the_step_before_it(
    performed: list[tuple[list[str], list[ch.FrameInput]]],
) -> None:
    """LIGHT is judged by light.py, but its prompt ends the step before it: a LOOK_UP done only
    after the LIGHT prompt (the frames the screen flashes in) is not that step's."""
    _, frame_inputs = performed[0]  # frames: TURN_LEFT, then LOOK_UP, then MOVE_CLOSER
    prompts = [
        ch.Prompt("LOOK_UP", frame_inputs[0].t_ms - 30),
        ch.Prompt("LIGHT", frame_inputs[STEP].t_ms - 30),
    ]
    report = ch.judge_challenges(["LOOK_UP"], frame_inputs, prompts)
    show(report)
    assert [f["step"] for f in report.failed_steps] == ["LOOK_UP"]
    assert "pitch reached" in report.failed_steps[0]["why"]  # judged, not refused for the prompt
    # Without the LIGHT prompt the same frames pass: the head goes up within 4 s.
    alone = ch.judge_challenges(["LOOK_UP"], frame_inputs, prompts[:1])
    assert alone.failed_steps == []


def test_the_verdict_is_deterministic(
    performed: list[tuple[list[str], list[ch.FrameInput]]],
) -> None:
    steps, frame_inputs = performed[1]
    prompts = prompts_at(steps, frame_inputs, STEP)
    first = ch.judge_challenges(steps, frame_inputs, prompts)
    assert all(ch.judge_challenges(steps, frame_inputs, prompts) == first for _ in range(3))


@pytest.mark.parametrize(("yaw", "pitch", "focal"), [(25, 0, 400), (-20, 0, 1000), (0, 25, 400)])
def test_a_flat_photo_turned_is_a_planar_face(
    pipeline: Pipeline, yaw: float, pitch: float, focal: float
) -> None:
    ramp = [0, 0, 0, 0.3, 0.6, 1, 1, 0.6, 0.3]
    frames = [photo_turned(astronaut(), f * yaw, f * pitch, focal) for f in ramp]
    frame_inputs = inputs(pipeline, frames)
    step = "TURN_RIGHT" if yaw > 0 else "TURN_LEFT" if yaw < 0 else "LOOK_DOWN"
    report = ch.judge_challenges([step], frame_inputs, [ch.Prompt(step, frame_inputs[2].t_ms + 1)])
    show(report)
    assert "planar_face" in [s.code for s in report.signals]


# --- mouth and eyes ---------------------------------------------------------------------------


def smile_frames(widen: float) -> list[np.ndarray]:
    """The astronaut's mouth stretched sideways by ``widen`` (0.2: 20% wider) mid-clip."""
    base = astronaut()
    height, width = base.shape[:2]
    cx, cy, rx, ry = 223.0, 143.0, 40.0, 22.0  # mouth centre and the stretched region
    gx, gy = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    weight = np.clip(1 - ((gx - cx) / (2 * rx)) ** 2 - ((gy - cy) / (2 * ry)) ** 2, 0, 1)
    profile = [0, 0, 0, 0.3, 0.7, 1, 1, 1, 0.7, 0.3, 0]
    frames = []
    for k in profile:
        scale = 1 + widen * k * weight
        map_x = (cx + (gx - cx) / scale).astype(np.float32)
        frames.append(np.asarray(cv2.remap(base, map_x, gy, cv2.INTER_LINEAR), dtype=np.uint8))
    noisy = jittered(base, len(frames))
    return [
        np.clip(f.astype(np.int16) + n - base, 0, 255).astype(np.uint8)
        for f, n in zip(frames, noisy, strict=True)
    ]


def judge_one(pipeline: Pipeline, step: str, frames: list[np.ndarray]) -> ch.ChallengeReport:
    frame_inputs = inputs(pipeline, frames)
    report = ch.judge_challenges([step], frame_inputs, [ch.Prompt(step, frame_inputs[1].t_ms + 1)])
    show(report)
    return report


@pytest.mark.parametrize(("peak", "met"), [(26.0, True), (6.5, False), (0.0, False)])
def test_open_mouth_needs_the_lips_apart_not_a_smile(
    pipeline: Pipeline, peak: float, met: bool
) -> None:
    # 6.5 px is her own teeth-showing smile: lips barely apart.
    report = judge_one(pipeline, "OPEN_MOUTH", mouth_frames(True, peak=peak))
    assert report.observed == {"OPEN_MOUTH": met}


def test_a_smile_widens_the_mouth_and_an_opening_is_not_a_smile(pipeline: Pipeline) -> None:
    assert judge_one(pipeline, "SMILE", smile_frames(0.4)).observed == {"SMILE": True}
    assert judge_one(pipeline, "SMILE", mouth_frames(True)).observed == {"SMILE": False}
    assert judge_one(pipeline, "OPEN_MOUTH", smile_frames(0.4)).observed == {"OPEN_MOUTH": False}


@pytest.mark.parametrize("phase_ms", [0.0, 33.0, 55.0])
def test_a_100_ms_blink_is_seen_at_15_fps_whatever_its_phase(
    pipeline: Pipeline, phase_ms: float
) -> None:
    times = [i * 1000 / FPS for i in range(10)]
    start = 4 * 1000 / FPS - phase_ms
    closure = [float(np.interp(t - start, [0, 30, 70, 100], [0, 1, 1, 0])) for t in times]
    rng = np.random.default_rng(int(phase_ms))
    frames = [
        np.clip(close_eyes(astronaut(), c) + rng.normal(0, 2.0, astronaut().shape), 0, 255).astype(
            np.uint8
        )
        for c in closure
    ]
    assert judge_one(pipeline, "BLINK", frames).observed == {"BLINK": True}


# --- capture sessions and captures ------------------------------------------------------------


def test_capture_sessions_never_draw_one_axis_twice_in_a_row() -> None:
    settings = Settings()
    rng = random.Random(5)
    drawn = {tuple(draw_steps(settings.session_challenge_pool, 3, rng)) for _ in range(3000)}
    for steps in drawn:
        assert len(set(steps)) == 3
        assert all(
            CHALLENGE_AXES[a] != CHALLENGE_AXES[b] for a, b in zip(steps, steps[1:], strict=False)
        )
    assert len(drawn) > 200  # random: most of the 8 x 7 x 6 orders minus same-axis pairs
    # A tight pool still alternates (found by search when random draws rarely do).
    assert draw_steps(["TURN_LEFT", "TURN_RIGHT", "BLINK"], 3, rng)[1] == "BLINK"


def test_capture_times_must_lie_in_the_capture_session_lifetime() -> None:
    from datetime import UTC, datetime

    created = datetime.fromtimestamp(T0 / 1000, UTC)
    inside = CaptureFacts(first_ms=T0 + 1000, last_ms=T0 + 5000)
    assert inside.within(created, created + timedelta(seconds=30))
    assert not replace(inside, first_ms=T0 - 600_000).within(
        created, created + timedelta(seconds=30)
    )
    assert not replace(inside, last_ms=T0 + 600_000).within(
        created, created + timedelta(seconds=30)
    )


def test_prompts_are_bounded_at_parse() -> None:
    data = build_capture(jittered(astronaut(), 2), challenge="BLINK")
    capture = pb.Capture.FromString(data)
    capture.prompts.add(step=pb.TURN_LEFT, shown_at_ms=T0)
    parse_capture(capture.SerializeToString(), CaptureLimits())
    for bad in (
        pb.StepPrompt(step=pb.CHALLENGE_UNSPECIFIED, shown_at_ms=T0),
        pb.StepPrompt(step=pb.BLINK, shown_at_ms=-5),
    ):
        broken = pb.Capture.FromString(data)
        broken.prompts.append(bad)
        with pytest.raises(CaptureError):
            parse_capture(broken.SerializeToString(), CaptureLimits())


def test_the_pipeline_reports_failed_steps(pipeline: Pipeline) -> None:
    frames = mouth_frames(False)
    capture = pb.Capture.FromString(build_capture(frames, start_ms=T0))
    capture.challenges.extend([pb.OPEN_MOUTH])
    capture.prompts.add(step=pb.OPEN_MOUTH, shown_at_ms=T0 + 10)
    analysis = pipeline.analyze(capture, PipelineContext.fresh(now_ms=T0 + 5000))
    assert "challenge_not_met" in analysis.reasons and analysis.score >= 0.99
    assert [f["step"] for f in analysis.failed_steps] == ["OPEN_MOUTH"]
    assert "mouth width" in analysis.failed_steps[0]["why"]


def test_the_job_resource_names_the_failed_steps(sessions: Any, key: Key) -> None:
    [job_id] = new_jobs(sessions, key.api_id)
    with transaction(sessions) as s:
        owned = claim(s, job_id, timedelta(seconds=60), max_attempts=3)
    assert owned is not None
    failed = [{"step": "TURN_LEFT", "why": "yaw reached 4°, needs 12°"}]
    body = {"status": "OK", "request_id": job_id, "score": 0.995}
    with transaction(sessions) as s:
        assert finish(s, owned, body, reasons=["challenge_not_met"], failed_steps=failed)
    with transaction(sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None
        resource = job_resource(job)
    assert resource["failed_steps"] == failed and resource["reasons"] == ["challenge_not_met"]
