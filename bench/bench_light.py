"""Cost of the LIGHT check (worker/pipeline/light.py) per capture, on the CPU: the light stage
alone, given the frames and the face boxes and meshes the pipeline already has. Goal: <= 20 ms.

Captures are tests/light_physics.py's genuine ones (the astronaut close to the screen, a 6-colour
sequence, ~40 frames at 480x360); the models run once per capture beforehand and are not timed.
Prints medians per ambient level, asserts nothing.

    python -m bench bench_light
    python bench/bench_light.py --runs 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from antihack.shared.domain.capture import CaptureLimits, decode_frames, parse_capture  # noqa: E402
from antihack.shared.proto import liveness_pb2 as pb  # noqa: E402
from antihack.worker.pipeline.detect import detect_faces  # noqa: E402
from antihack.worker.pipeline.landmarks import face_landmarks  # noqa: E402
from antihack.worker.pipeline.light import Points, light_report  # noqa: E402
from antihack.worker.pipeline.run import Pipeline  # noqa: E402
from bench.stack import load_average, median  # noqa: E402
from tests import light_physics as lp  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed calls per capture")
    args = parser.parse_args(argv)
    pipeline = Pipeline.load()
    image, _ = lp.face_crop()
    box = detect_faces(pipeline.models, [image])[0][0]
    geo = lp.geometry(face_landmarks(pipeline.models, [image], [box])[0].points)
    print(f"load average before: {load_average()}")
    print(
        f"{'ambient':10s} {'frames':>6s} {'median ms':>10s} {'cpu ms':>7s} {'max ms':>8s}  "
        "correlation"
    )
    everything: list[float] = []
    cpu_all: list[float] = []
    for name, scene in lp.scenes(0):
        sequence = lp.sequence_for(0)
        frames, stamps, indices = lp.render(geo, sequence, scene, 0)
        data = lp.build_light_capture(frames, stamps, indices, 1_760_000_000_000)
        capture = parse_capture(data, CaptureLimits())
        decoded = decode_frames(capture, CaptureLimits())
        boxes = [faces[0] if faces else None for faces in detect_faces(pipeline.models, decoded)]
        found = [i for i, b in enumerate(boxes) if b is not None]
        marks = face_landmarks(
            pipeline.models, [decoded[i] for i in found], [b for b in boxes if b is not None]
        )
        meshes: list[Points | None] = [None] * len(decoded)
        for i, mark in zip(found, marks, strict=True):
            meshes[i] = mark.points
        step = [f.challenge_step == pb.LIGHT or f.light_index > 0 for f in capture.frames]
        call = (
            decoded,
            boxes,
            meshes,
            [f.timestamp_ms for f in capture.frames],
            [f.light_index for f in capture.frames],
            step,
            sequence,
        )
        light_report(*call)  # warm-up
        times, cpu = [], []
        for _ in range(args.runs):
            start, start_cpu = time.perf_counter(), time.thread_time()
            report = light_report(*call)
            times.append((time.perf_counter() - start) * 1000)
            cpu.append((time.thread_time() - start_cpu) * 1000)
        everything += times
        cpu_all += cpu
        print(
            f"{name:10s} {sum(step):6d} {median(times):10.2f} {median(cpu):7.2f} "
            f"{max(times):8.2f}  {report.correlation:.3f}"
        )
    # On a shared machine wall time counts the waits for a core; the thread's CPU time does not.
    print(
        f"all captures: median {median(everything):.2f} ms wall, {median(cpu_all):.2f} ms CPU "
        "per capture (goal <= 20 ms)"
    )
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
