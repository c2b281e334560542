"""Model inference: raw onnxruntime ms per model at batch 1 and 8, then each stage per frame
(crop/warp and decoding included), on skimage's astronaut. Prints a table, asserts nothing.

    python -m bench bench_models
    python bench/bench_models.py --runs 20 --pad-runs 3 [--providers CUDAExecutionProvider]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt

if __package__ in (None, ""):
    # Run as `python bench/bench_models.py`: import from the repository root.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import onnxruntime as ort  # noqa: E402

from antihack.worker.pipeline import detect, eyes, landmarks, mask, pad  # noqa: E402
from antihack.worker.pipeline.detect import FaceBox  # noqa: E402
from antihack.worker.pipeline.geometry import Frame, crop_box, letterbox, to_nchw, warp_rect  # noqa: E402
from antihack.worker.pipeline.landmarks import FaceLandmarks  # noqa: E402
from antihack.worker.pipeline.models import ModelSet  # noqa: E402

BATCHES = (1, 8)
Batch = npt.NDArray[np.float32]


def median_ms(step: Callable[[], object], runs: int) -> float:
    """Median wall time of ``step`` in ms over ``runs`` calls, after one warm-up call."""
    step()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def detector_batch(frames: Sequence[Frame]) -> Batch:
    """The face detector's input: each frame letterboxed, as ``detect_faces`` makes it."""
    images = [letterbox(frame, detect.INPUT_SIZE)[0] for frame in frames]
    return to_nchw(images, scale=1 / 127.5, offset=-1.0)


def landmarks_batch(frames: Sequence[Frame], boxes: Sequence[FaceBox]) -> Batch:
    """The face mesh model's input: one rotated face crop per frame."""
    crops = [
        warp_rect(frame, landmarks.face_roi(box), landmarks.INPUT_SIZE)
        for frame, box in zip(frames, boxes, strict=True)
    ]
    return to_nchw(crops, scale=1 / 255, offset=0.0)


def iris_batch(frames: Sequence[Frame], meshes: Sequence[FaceLandmarks]) -> Batch:
    """The iris model's input: both eyes of each frame, the second one mirrored."""
    crops = [
        warp_rect(frame, roi, eyes.INPUT_SIZE, flip=flip)
        for frame, mesh in zip(frames, meshes, strict=True)
        for roi, flip in zip(eyes.eye_rois(mesh.points), (False, True), strict=True)
    ]
    return to_nchw(crops, scale=1 / 255, offset=0.0)


def mask_batch(frames: Sequence[Frame], boxes: Sequence[FaceBox]) -> Batch:
    """The mask classifier's input: one face box crop per frame, NHWC."""
    size = mask.INPUT_SIZE
    crops = [
        crop_box(frame, box.x0, box.y0, box.x1, box.y1, size, size, clip=True)
        for frame, box in zip(frames, boxes, strict=True)
    ]
    return np.stack(crops).astype(np.float32) / 127.5 - 1.0


def model_rows(models: ModelSet, frames: Sequence[Frame]) -> dict[str, Batch]:
    """Real input rows for every model, made from ``frames`` by the stages' own crops: one row
    per frame (two eyes per frame for the iris model). Every frame must show a face."""
    found = detect.detect_faces(models, frames)
    if not all(found):
        raise ValueError("every frame must show a face")
    boxes = [faces[0] for faces in found]
    meshes = landmarks.face_landmarks(models, frames, boxes)
    return {
        "face_detector": detector_batch(frames),
        "face_landmarks": landmarks_batch(frames, boxes),
        "iris_landmarks": iris_batch(frames, meshes),
        "mask_classifier": mask_batch(frames, boxes),
        "pad": pad.pad_batch(frames, boxes),
    }


def model_inputs(models: ModelSet, frame: Frame) -> dict[str, Batch]:
    """One real preprocessed input per model (for the iris model, the first eye only)."""
    return {name: rows[:1] for name, rows in model_rows(models, [frame]).items()}


def add_providers_option(parser: argparse.ArgumentParser) -> None:
    """The ``--providers`` option of the model benchmarks."""
    parser.add_argument(
        "--providers",
        nargs="+",
        default=None,
        help="onnxruntime execution providers (default: CUDA if present)",
    )


def bench_models(models: ModelSet, frame: npt.NDArray[np.uint8], runs: int, pad_runs: int) -> None:
    """Print raw inference time per model and batch size."""
    inputs = model_inputs(models, frame)
    print(f"{'model':16s} {'batch':>5s} {'ms/call':>9s} {'ms/image':>9s}")
    for name, single in inputs.items():
        session: ort.InferenceSession = getattr(models, name)
        input_name = session.get_inputs()[0].name
        for batch in BATCHES:
            x = np.repeat(single, batch, axis=0)
            step = partial(session.run, None, {input_name: x})
            ms = median_ms(step, pad_runs if name == "pad" else runs)
            print(f"{name:16s} {batch:5d} {ms:9.2f} {ms / batch:9.2f}", flush=True)


def bench_stages(models: ModelSet, frame: npt.NDArray[np.uint8], runs: int, pad_runs: int) -> None:
    """Print each stage's time for one frame, preprocessing and decoding included."""
    (faces,) = detect.detect_faces(models, [frame])
    face = faces[0]
    (mesh,) = landmarks.face_landmarks(models, [frame], [face])
    stages: list[tuple[str, Callable[[], object], int]] = [
        ("detect_faces", lambda: detect.detect_faces(models, [frame]), runs),
        ("face_landmarks", lambda: landmarks.face_landmarks(models, [frame], [face]), runs),
        ("eye_states (2 eyes)", lambda: eyes.eye_states(models, [frame], [mesh]), runs),
        ("mask_probabilities", lambda: mask.mask_probabilities(models, [frame], [face]), runs),
        ("pad_scores", lambda: pad.pad_scores(models, [frame], [face]), pad_runs),
    ]
    print(f"\n{'stage (1 frame)':22s} {'ms':>9s}")
    total = 0.0
    for name, step, n in stages:
        ms = median_ms(step, n)
        total += ms
        print(f"{name:22s} {ms:9.2f}", flush=True)
    print(f"{'all stages':22s} {total:9.2f}")


def main(argv: Sequence[str] | None = None) -> None:
    """Parse options (none when run by ``python -m bench``) and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per figure")
    parser.add_argument("--pad-runs", type=int, default=3, help="timed runs for the FAS model")
    add_providers_option(parser)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ORT's)")
    args = parser.parse_args(list(argv) if argv is not None else [])
    from skimage import data

    frame = np.asarray(data.astronaut(), dtype=np.uint8)  # type: ignore[no-untyped-call]
    models = ModelSet.load(providers=args.providers, intra_threads=args.threads)
    print(
        f"onnxruntime {ort.__version__}, providers {', '.join(models.providers)}, "
        f"{os.cpu_count()} CPUs, image {frame.shape[1]}x{frame.shape[0]} (astronaut), "
        f"median of {args.runs} runs ({args.pad_runs} for pad)"
    )
    bench_models(models, frame, args.runs, args.pad_runs)
    bench_stages(models, frame, args.runs, args.pad_runs)


if __name__ == "__main__":
    main(sys.argv[1:])
