"""``antihack make-sample`` with directional challenge steps, and the Python helpers' view of
failed steps: what a developer building test captures by hand sees."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from numpy.typing import NDArray

from antihack.shared.cli.sample import make_sample
from antihack.shared.domain.capture import CaptureLimits, parse_capture
from antihack.shared.proto import liveness_pb2 as pb
from antihack.shared.sdk.client import failed_steps
from antihack.worker.pipeline.run import Pipeline, PipelineContext
from tests.fixtures_images import astronaut, jittered
from tests.genuine import genuine_frames
from tests.helpers import png_bytes

STEPS = ("TURN_LEFT", "BLINK", "OPEN_MOUTH")


def write_images(folder: Path, frames: Sequence[NDArray[np.uint8]]) -> list[str]:
    paths = []
    for i, frame in enumerate(frames):
        path = folder / f"f{i:02d}.png"
        path.write_bytes(png_bytes(frame))
        paths.append(str(path))
    return paths


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(make_sample, args)
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def performed(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """36 frames (2.4 s at 15 fps) of the astronaut turning left, blinking, opening her mouth."""
    frames = genuine_frames(5, n=36, still=True, challenges=STEPS)
    return write_images(tmp_path_factory.mktemp("performed"), frames)


def test_steps_are_tagged_in_runs_with_a_prompt_before_each(
    tmp_path: Path, performed: list[str]
) -> None:
    out = tmp_path / "steps.pb"
    args = [*performed, "-o", str(out), "--session-nonce", "n-1"]
    code, output = run([*args, *(a for s in STEPS for a in ("--challenge", s.lower()))])
    assert code == 0, output
    data = out.read_bytes()
    capture = parse_capture(data, CaptureLimits())
    assert capture.SerializeToString(deterministic=True) == data
    assert [pb.Challenge.Name(c) for c in capture.challenges] == list(STEPS)
    tags = [pb.Challenge.Name(f.challenge_step) for f in capture.frames]
    assert tags == [s for s in STEPS for _ in range(12)]
    stamps = [f.timestamp_ms for f in capture.frames]
    assert [pb.Challenge.Name(p.step) for p in capture.prompts] == list(STEPS)
    for prompt, first in zip(capture.prompts, (0, 12, 24), strict=True):
        # Shown just before the step's first frame, after the previous step's last.
        assert prompt.shown_at_ms < stamps[first]
        assert first == 0 or prompt.shown_at_ms > stamps[first - 1]
    assert capture.session_nonce == "n-1"

    code, output = run([*args, "--challenge", "TURN_LEFT", "--no-prompts"])
    assert code == 0, output
    assert not parse_capture(out.read_bytes(), CaptureLimits()).prompts


def test_the_pipeline_judges_make_samples_steps(tmp_path: Path, performed: list[str]) -> None:
    """Steps in the order the frames show them pass; steps claimed out of order are named."""
    pipeline = Pipeline.load()
    verdicts = {}
    for order in (STEPS, ("BLINK", "TURN_LEFT", "OPEN_MOUTH")):
        out = tmp_path / "c.pb"
        code, output = run(
            [*performed, "-o", str(out), *(a for s in order for a in ("--challenge", s))]
        )
        assert code == 0, output
        analysis = pipeline.analyze(
            parse_capture(out.read_bytes(), CaptureLimits()), PipelineContext.fresh()
        )
        print(order, analysis.reasons, analysis.failed_steps)
        verdicts[order] = analysis.failed_steps
    assert verdicts[STEPS] == []
    # BLINK's frames show her head turning; when TURN_LEFT's prompt came her head was already
    # turned, and turned back: both named, in order; OPEN_MOUTH, in its place, passes.
    assert [f["step"] for f in verdicts[("BLINK", "TURN_LEFT", "OPEN_MOUTH")]] == [
        "BLINK",
        "TURN_LEFT",
    ]


@pytest.mark.parametrize(
    ("count", "same", "challenges", "message"),
    [
        (1, True, ["BLINK"], "BLINK needs at least 3 frames of its own"),
        (5, False, ["TURN_LEFT", "BLINK"], "BLINK needs at least 3 frames of its own"),
        (1, True, ["TURN_LEFT"], "TURN_LEFT needs at least 2 frames"),
        (4, True, ["SMILE"], "SMILE's frames are all the same picture"),
    ],
)
def test_impossible_challenges_are_refused_with_the_reason(
    tmp_path: Path, count: int, same: bool, challenges: list[str], message: str
) -> None:
    frames = [astronaut()] * count if same else jittered(astronaut(), count)
    paths = write_images(tmp_path, frames)
    code, output = run(
        [*paths, "-o", str(tmp_path / "x.pb"), *(a for c in challenges for a in ("--challenge", c))]
    )
    assert code == 2  # a usage error: nothing written
    assert message in output
    assert not (tmp_path / "x.pb").exists()


def test_light_and_unknown_steps_are_not_make_sample_choices(tmp_path: Path) -> None:
    paths = write_images(tmp_path, jittered(astronaut(), 3))
    for name in ("LIGHT", "WINK"):
        code, output = run([*paths, "-o", str(tmp_path / "x.pb"), "--challenge", name])
        assert code == 2 and "turn_left" in output.lower()  # the choices are listed


def test_failed_steps_are_numbered_by_the_sessions_order() -> None:
    job = {
        "failed_steps": [
            {"step": "TURN_LEFT", "why": "yaw reached 4°, needs 12°"},
            {"step": "SMILE", "why": "mouth widened 2% with lips closed, needs 10%"},
        ]
    }
    assert failed_steps(job, ["BLINK", "TURN_LEFT", "SMILE"]) == [
        "Step 2, TURN_LEFT: yaw reached 4°, needs 12°",
        "Step 3, SMILE: mouth widened 2% with lips closed, needs 10%",
    ]
    assert failed_steps(job)[0] == "TURN_LEFT: yaw reached 4°, needs 12°"
    assert failed_steps({"failed_steps": []}) == failed_steps({}) == []
