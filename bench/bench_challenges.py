"""Directional challenge steps (worker/pipeline/challenges.py): pass rates and cost.

Prints, on captures generated from the astronaut photo (tests/genuine.py renders her FaceMesh
mesh turned in 3D, with blinks, speech and a hand-held camera):

- genuine: drawn 3-step capture sessions (SMILE left out: the renderer cannot smile) performed
  after their prompts -> share of capture sessions passing;
- attacker: a 10-s recording of the person (talking, blinking, no head turns); for each drawn
  capture session the attacker picks, per step, any segment of the recording that passes it (the
  strongest splicer, who knows the rules) -> share of sessions passing;
- blink phase: a 100-ms blink against a 15 fps frame clock at every phase -> share seen;
- flat photo turned/tilted 10-30 degrees (focal 400 and 1000 px) -> planar_face share, and the
  homography residuals of genuine turns against flat ones;
- cost: median milliseconds of judge_challenges per capture (model outputs precomputed).

    .venv/bin/python -m bench.bench_challenges [--sessions 50] [--recordings 4]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Sequence

import numpy as np

from antihack.shared.domain.capture_sessions import draw_steps
from antihack.shared.infra.settings import Settings
from antihack.worker.pipeline import challenges as ch
from antihack.worker.pipeline.detect import detect_faces
from antihack.worker.pipeline.eyes import eye_states
from antihack.worker.pipeline.landmarks import face_landmarks
from antihack.worker.pipeline.models import ModelSet
from tests.blink import close_eyes
from tests.fixtures_images import astronaut
from tests.genuine import _step_spans, genuine_frames
from tests.mouth import photo_turned

FPS = 15.0
STEP_FRAMES = 20  # 1.33 s per step at 15 fps
T0 = 1_800_000_000_000


def inputs(models: ModelSet, frames: Sequence[np.ndarray], fps: float = FPS) -> list[ch.FrameInput]:
    """The judge's per-frame inputs (mesh, EAR) for frames shot at ``fps`` from T0."""
    found = detect_faces(models, list(frames))
    idx = [i for i, f in enumerate(found) if f]
    marks = face_landmarks(models, [frames[i] for i in idx], [found[i][0] for i in idx])
    eyes = eye_states(models, [frames[i] for i in idx], marks)
    out = [ch.FrameInput(T0 + round(i * 1000 / fps), None, None, None) for i in range(len(frames))]
    for j, i in enumerate(idx):
        out[i] = ch.FrameInput(out[i].t_ms, None, marks[j].points, eyes[j].ear)
    return out


def genuine_rate(models: ModelSet, sessions: int) -> tuple[float, list[float], list[float]]:
    # tests/genuine.py cannot paint a smile: SMILE is measured by tests/test_directional.py.
    settings = Settings()
    pool = tuple(c for c in settings.session_challenge_pool if c != "SMILE")
    length = settings.session_challenge_length
    rng = random.Random(1)
    passed, costs, residuals = 0, [], []
    for seed in range(sessions):
        steps = draw_steps(pool, length, rng)
        n = STEP_FRAMES * len(steps) + 4
        frames = genuine_frames(seed, n=n, challenges=steps)
        frame_inputs = inputs(models, frames)
        prompts = [ch.Prompt(c, frame_inputs[a].t_ms - 30) for c, a, _ in _step_spans(n, steps)]
        start = time.perf_counter()
        report = ch.judge_challenges(steps, frame_inputs, prompts=prompts)
        costs.append((time.perf_counter() - start) * 1000)
        residuals += list(report.residuals)
        ok = not report.signals
        passed += ok
        if not ok:
            print("  genuine fail", seed, [(v.step, v.why, v.planar) for v in report.verdicts])
    return passed / sessions, costs, residuals


def attacker_rate(models: ModelSet, recordings: int, sessions: int) -> float:
    pool, length = Settings().session_challenge_pool, Settings().session_challenge_length
    passable: list[set[str]] = []
    for seed in range(recordings):
        clip = inputs(models, genuine_frames(1000 + seed, n=150))
        ok: set[str] = set()
        for step in pool:
            for o in range(6, len(clip) - STEP_FRAMES):
                seg = clip[o - 6 : o + STEP_FRAMES]
                prompt = ch.Prompt(step, clip[o].t_ms + 1)
                if not ch.judge_challenges([step], seg, prompts=[prompt]).signals:
                    ok.add(step)
                    break
        print(f"  recording {seed}: steps a segment passes: {sorted(ok)}")
        passable.append(ok)
    rng = random.Random(2)
    wins = total = 0
    for _ in range(sessions):
        steps = draw_steps(pool, length, rng)
        for ok in passable:
            total += 1
            wins += all(s in ok for s in steps)
    return wins / total


def blink_phase(models: ModelSet, shut_ms: float, phases: int = 12) -> float:
    """A 100-ms blink (eyes shut ``shut_ms``, closing and opening in the rest) at each phase
    of a 15 fps frame clock."""
    seen = 0
    base = astronaut()
    for k in range(phases):
        phase = k * (1000 / FPS) / phases
        times = [i * 1000 / FPS for i in range(12)]
        blink_start = 5 * 1000 / FPS - phase
        ramp = (100 - shut_ms) / 2
        knots = [0, ramp, 100 - ramp, 100]
        closure = [float(np.interp(t - blink_start, knots, [0, 1, 1, 0])) for t in times]
        rng = np.random.default_rng(k)
        frames = []
        for c in closure:
            image = close_eyes(base, c).astype(np.float32) + rng.normal(0, 2.0, base.shape)
            frames.append(np.clip(image, 0, 255).astype(np.uint8))
        frame_inputs = inputs(models, frames)
        prompt = ch.Prompt("BLINK", frame_inputs[1].t_ms + 1)
        report = ch.judge_challenges(["BLINK"], frame_inputs, prompts=[prompt])
        seen += not report.signals
    return seen / phases


def flat_rate(models: ModelSet) -> tuple[float, list[float]]:
    flagged = total = 0
    residuals: list[float] = []
    for focal in (400, 1000):
        for step, axis in (("TURN_LEFT", 0), ("TURN_RIGHT", 0), ("LOOK_UP", 1), ("LOOK_DOWN", 1)):
            for peak in (10, 20, 30):
                sign = 1 if step in ("TURN_LEFT", "LOOK_UP") else -1
                angles = [0, 0, 0, 0.5 * peak, peak, peak, 0.5 * peak, 0]
                # photo_turned's positive angles face the print to image left / down.
                frames = [
                    photo_turned(astronaut(), -sign * a if axis == 0 else 0,
                                 -sign * a if axis == 1 else 0, focal)
                    for a in angles
                ]  # fmt: skip
                frame_inputs = inputs(models, frames)
                prompt = ch.Prompt(step, frame_inputs[2].t_ms + 1)
                report = ch.judge_challenges([step], frame_inputs, prompts=[prompt])
                residuals += list(report.residuals)
                total += 1
                flagged += any(s.code == "planar_face" for s in report.signals)
    return flagged / total, residuals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--recordings", type=int, default=4)
    parser.add_argument("--only", choices=["blink", "flat"], help="run one part only")
    args = parser.parse_args()
    models = ModelSet.load()
    if args.only == "blink":
        for shut in (70.0, 40.0):
            print(f"100-ms blink (shut {shut:.0f} ms): {100 * blink_phase(models, shut):.0f}%")
        return
    if args.only == "flat":
        flat, flat_res = flat_rate(models)
        print(f"flat: planar_face {100 * flat:.0f}%, residual max {max(flat_res):.4f}")
        return
    rate, costs, genuine_res = genuine_rate(models, args.sessions)
    print(f"genuine sessions passing: {100 * rate:.1f}% of {args.sessions}")
    print(f"judge cost per capture: median {statistics.median(costs):.2f} ms "
          f"({3 * STEP_FRAMES + 4} frames)")  # fmt: skip
    flat, flat_res = flat_rate(models)
    print(f"flat photo turned: planar_face {100 * flat:.0f}%")
    if genuine_res and flat_res:
        print(f"homography residual: genuine turns min {min(genuine_res):.4f} "
              f"median {statistics.median(genuine_res):.4f}; flat max {max(flat_res):.4f} "
              f"median {statistics.median(flat_res):.4f}; "
              f"threshold {ch.PLANAR_MAX_RESIDUAL}")  # fmt: skip
    for shut in (70.0, 40.0):
        seen = blink_phase(models, shut)
        print(f"100-ms blink (eyes shut {shut:.0f} ms) seen at 15 fps: {100 * seen:.0f}% of phases")
    attacker = attacker_rate(models, args.recordings, 1000)
    print(f"attacker with a 10-s recording: {100 * attacker:.1f}% of sessions pass")


if __name__ == "__main__":
    main()
