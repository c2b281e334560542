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

from worker.pipeline import detect, eyes, landmarks, mask, pad  # noqa: E402
from worker.pipeline.geometry import crop_box, letterbox, to_nchw, warp_rect  # noqa: E402
from worker.pipeline.models import ModelSet  # noqa: E402

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


def model_inputs(models: ModelSet, frame: npt.NDArray[np.uint8]) -> dict[str, Batch]:
    """One real preprocessed input per model, made by the stages' own crops."""
    (faces,) = detect.detect_faces(models, [frame])
    if not faces:
        raise SystemExit("no face found in the benchmark image")
    face = faces[0]
    (mesh,) = landmarks.face_landmarks(models, [frame], [face])
    left_eye, _ = eyes.eye_rois(mesh.points)
    half = pad.CROP_SCALE * max(face.width, face.height) / 2
    cx, cy = face.center
    face_crop = crop_box(frame, face.x0, face.y0, face.x1, face.y1, 224, 224, clip=True)
    return {
        "face_detector": to_nchw([letterbox(frame, detect.INPUT_SIZE)[0]], 1 / 127.5, -1.0),
        "face_landmarks": to_nchw(
            [warp_rect(frame, landmarks.face_roi(face), landmarks.INPUT_SIZE)], 1 / 255, 0.0
        ),
        # One eye per image here; the eye stage sends both eyes of a frame as 2 images.
        "iris_landmarks": to_nchw([warp_rect(frame, left_eye, eyes.INPUT_SIZE)], 1 / 255, 0.0),
        "mask_classifier": (face_crop[np.newaxis].astype(np.float32) / 127.5 - 1.0),
        "pad": to_nchw(
            [crop_box(frame, cx - half, cy - half, cx + half, cy + half, 256, 256, clip=False)],
            1 / 128,
            -127 / 128,
        ),
    }


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
    parser.add_argument(
        "--providers",
        nargs="+",
        default=None,
        help="onnxruntime execution providers (default: CUDA if present)",
    )
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
