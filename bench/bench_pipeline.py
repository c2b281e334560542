"""Pipeline overhead: ``Pipeline.analyze`` per stage against the raw inference of the same models
on the same inputs, for 5- and 10-frame astronaut captures and a no-face (coffee) capture.
Prints a table, asserts nothing.

Each timed round runs ``analyze`` once and, right after it in the same process, every model's
``InferenceSession.run`` directly on batches preprocessed from the same decoded frames with the
stages' own crops (detector on N frames, landmarks on N crops, iris on 2N eye crops, mask on N
crops, PAD on the frames the pipeline ran PAD on). Figures are medians over the rounds, after one
warm-up round. ``prep`` is the time to build those batches (crop/warp/normalise); what a stage
spends beyond raw + prep is output decoding and glue. The goal is pipeline/raw <= 1.15x.

    python -m bench bench_pipeline
    python bench/bench_pipeline.py --runs 9 [--providers CUDAExecutionProvider] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

if __package__ in (None, ""):
    # Run as `python bench/bench_pipeline.py`: import from the repository root.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import onnxruntime as ort  # noqa: E402

from antihack.shared.domain.capture import CaptureLimits, decode_frames, parse_capture  # noqa: E402
from antihack.shared.proto import liveness_pb2 as pb  # noqa: E402
from antihack.shared.sdk.sample import build_capture  # noqa: E402
from antihack.worker.pipeline import detect, landmarks, pad  # noqa: E402
from antihack.worker.pipeline.geometry import Frame  # noqa: E402
from antihack.worker.pipeline.run import Pipeline, PipelineContext  # noqa: E402
from bench.bench_models import (  # noqa: E402
    add_providers_option,
    detector_batch,
    iris_batch,
    landmarks_batch,
    mask_batch,
)
from bench.stack import load_average, median, ms_since  # noqa: E402

Batch = npt.NDArray[np.float32]

# Stage name in Analysis.stage_ms -> (ModelSet session, the outputs the stage asks for).
MODEL_STAGES: dict[str, tuple[str, list[str]]] = {
    "detect": ("face_detector", ["regressors", "classificators"]),
    "landmarks": ("face_landmarks", ["landmarks", "face_flag"]),
    "eyes": ("iris_landmarks", ["output_eyes_contours_and_brows"]),
    "mask": ("mask_classifier", ["probabilities"]),
    "pad": ("pad", ["output"]),
}
STAGES = (
    "integrity",
    "decode",
    "detect",
    "landmarks",
    "eyes",
    "mask",
    "quality",
    "pad",
    "crossframe",
    "replay",
    "fusion",
)


@dataclass(frozen=True)
class Case:
    """One benchmark capture: a label, the parsed capture and its frame count."""

    label: str
    capture: pb.Capture
    frames: int


@dataclass(frozen=True)
class RawStep:
    """One model's direct call on a preprocessed batch, and how to rebuild that batch."""

    stage: str
    images: int
    prep: Callable[[], Batch]
    run: Callable[[Batch], object]


def shifted(image: Frame, n: int) -> list[Frame]:
    """n frames of one image, shifted by up to a pixel each, so that no two are identical."""
    height, width = image.shape[:2]
    frames = []
    for i in range(n):
        shift = np.array([[1, 0, (i % 3) - 1], [0, 1, i % 2]], dtype=np.float32)
        warped = cv2.warpAffine(image, shift, (width, height), borderMode=cv2.BORDER_REFLECT)
        frames.append(np.asarray(warped, dtype=np.uint8))
    return frames


def cases() -> list[Case]:
    """5- and 10-frame 512x512 astronaut captures (frames shifted a few px) and a no-face one."""
    from skimage import data

    face = np.ascontiguousarray(data.astronaut(), dtype=np.uint8)  # type: ignore[no-untyped-call]
    cup = data.coffee()  # type: ignore[no-untyped-call]
    no_face = np.asarray(cv2.resize(cup, (320, 214)), dtype=np.uint8)
    limits = CaptureLimits()
    out = []
    for label, image, n in (
        ("astronaut 512x512", face, 5),
        ("astronaut 512x512", face, 10),
        ("coffee 320x214 (no face)", no_face, 5),
    ):
        capture = parse_capture(build_capture(shifted(image, n), session_id="bench"), limits)
        out.append(Case(f"{label}, {n} frames", capture, n))
    return out


def context() -> PipelineContext:
    """An unsigned capture, no history, no image returned."""
    return PipelineContext.fresh()


def _session_call(session: ort.InferenceSession, outputs: list[str]) -> Callable[[Batch], object]:
    input_name = session.get_inputs()[0].name

    def call(batch: Batch) -> object:
        return session.run(outputs, {input_name: batch})

    return call


def raw_steps(pipeline: Pipeline, case: Case, pad_frame: int | None) -> list[RawStep]:
    """The model calls ``analyze`` makes on this capture, as direct session calls."""
    models = pipeline.models
    frames = decode_frames(case.capture, CaptureLimits())
    found = detect.detect_faces(models, frames)
    idx = [i for i, faces in enumerate(found) if faces]
    sub = [frames[i] for i in idx]
    boxes = [found[i][0] for i in idx]
    meshes = landmarks.face_landmarks(models, sub, boxes) if idx else []

    def step(stage: str, images: int, prep: Callable[[], Batch]) -> RawStep:
        name, outputs = MODEL_STAGES[stage]
        return RawStep(stage, images, prep, _session_call(getattr(models, name), outputs))

    steps = [step("detect", len(frames), lambda: detector_batch(frames))]
    if idx:
        steps += [
            step("landmarks", len(sub), lambda: landmarks_batch(sub, boxes)),
            step("eyes", 2 * len(sub), lambda: iris_batch(sub, meshes)),
            step("mask", len(sub), lambda: mask_batch(sub, boxes)),
        ]
    if pad_frame is not None:
        frame, box = frames[pad_frame], found[pad_frame][0]
        steps.append(step("pad", 1, lambda: pad.pad_batch([frame], [box])))
    return steps


def bench_case(pipeline: Pipeline, case: Case, runs: int) -> None:
    """Time ``runs`` rounds (after one warm-up) of analyze + raw model calls; print a table."""
    first = pipeline.analyze(case.capture, context())
    pad_frame = first.best_frame if first.pad_raw is not None else None
    steps = raw_steps(pipeline, case, pad_frame)
    batches = {s.stage: s.prep() for s in steps}
    stage_ms: dict[str, list[float]] = {name: [] for name in (*STAGES, "total")}
    raw_ms: dict[str, list[float]] = {s.stage: [] for s in steps}
    prep_ms: dict[str, list[float]] = {s.stage: [] for s in steps}
    raw_total: list[float] = []
    for s in steps:  # warm-up of the direct calls (analyze was warmed up above)
        s.run(batches[s.stage])
    for _ in range(runs):
        analysis = pipeline.analyze(case.capture, context())
        for name in stage_ms:
            stage_ms[name].append(analysis.stage_ms.get(name, 0.0))
        total = 0.0
        for s in steps:
            start = time.perf_counter()
            s.prep()
            prep_ms[s.stage].append(ms_since(start))
            start = time.perf_counter()
            s.run(batches[s.stage])
            raw_ms[s.stage].append(ms_since(start))
            total += raw_ms[s.stage][-1]
        raw_total.append(total)

    n = case.frames
    images = {s.stage: s.images for s in steps}
    print(f"\n{case.label}: median of {runs} runs after 1 warm-up; min = fastest run")
    print(
        f"{'stage':14s} {'images':>6s} {'ms/job':>8s} {'ms/frame':>8s} {'raw':>8s} "
        f"{'prep':>7s} {'rest':>7s} {'pipe/raw':>8s} | {'min job':>8s} {'min raw':>8s} "
        f"{'min p/r':>7s}"
    )
    for name in STAGES:
        ms = median(stage_ms[name])
        line = f"{name:14s} {images.get(name, 0) or '':>6} {ms:8.2f} {ms / n:8.2f}"
        if name in raw_ms:
            raw, prep = median(raw_ms[name]), median(prep_ms[name])
            best, best_raw = min(stage_ms[name]), min(raw_ms[name])
            line += (
                f" {raw:8.2f} {prep:7.2f} {ms - raw - prep:7.2f} {ms / raw:7.2f}x"
                f" | {best:8.2f} {best_raw:8.2f} {best / best_raw:6.2f}x"
            )
        print(line)
    raw, best_raw = median(raw_total), min(raw_total)
    model_runs = [
        sum(stage_ms[name][r] for name in MODEL_STAGES) for r in range(len(stage_ms["total"]))
    ]
    for label, values in (("model stages", model_runs), ("total per job", stage_ms["total"])):
        ms, best = median(values), min(values)
        print(
            f"{label:14s} {'':6s} {ms:8.2f} {ms / n:8.2f} {raw:8.2f} {'':7s} {'':7s} "
            f"{ms / raw:7.2f}x | {best:8.2f} {best_raw:8.2f} {best / best_raw:6.2f}x"
        )
    print(
        f"spread: total per job {min(stage_ms['total']):.1f}-{max(stage_ms['total']):.1f} ms, "
        f"raw inference sum {min(raw_total):.1f}-{max(raw_total):.1f} ms",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Parse options (none when run by ``python -m bench``) and print one table per capture."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=7, help="timed rounds per capture (>= 7)")
    add_providers_option(parser)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ORT's)")
    args = parser.parse_args(list(argv) if argv is not None else [])
    runs = max(7, args.runs)
    pipeline = Pipeline.load(providers=args.providers, intra_threads=args.threads)
    print(
        f"onnxruntime {ort.__version__}, providers {', '.join(pipeline.models.providers)}, "
        f"{os.cpu_count()} CPUs, intra-op threads {args.threads or 'ORT default'}, "
        f"load average {load_average()} (1/5/15 min)\n"
        "Timings are wall clock on a shared machine: other load inflates pipeline and raw alike,"
        " and pipe/raw is steadier than either.\n"
        "ms/frame = ms/job / frames in the capture; images = batch size of the direct call; "
        "raw = direct session.run; prep = building its batch; rest = ms/job - raw - prep "
        "(decoding and glue); min p/r = fastest stage run / fastest raw run."
    )
    for case in cases():
        bench_case(pipeline, case, runs)
    print(f"\nload average at the end {load_average()}")


if __name__ == "__main__":
    main(sys.argv[1:])
