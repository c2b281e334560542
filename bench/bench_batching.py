"""Micro-batching of model calls (worker/pipeline/batching.py), measured on this machine:

1. per model, ms per crop at batch 1, 2, 4, 8, 16, 32 (real crops of the astronaut photo made by
   the stages' own preprocessing; sizes interleaved run by run; median);
2. ``Pipeline.analyze`` throughput (jobs/s) of N threads sharing one set of sessions, as a
   threads-pool worker does, with batching off and on, rounds interleaved (off, on, off, on...);
   median jobs/s, their ratio, and the batches formed (rows and merged calls per model run).

3. the job bookkeeping of a threads-pool (GPU) worker (worker/bookkeeping.py): jobs/s of the
   analyze task with the no-op pipeline on N threads of one process, each job claimed and
   recorded on its own ("off") against claims and records batched up to B jobs per statement;
   the database is ANTIHACK_DATABASE_URL's server (a fresh database) or the embedded SQLite.

Prints tables, asserts nothing. The batcher is meant for GPUs, where a batch of 32 costs little
more than one crop; on a few CPU cores the work grows with the rows and the wait is a cost.

    python -m bench bench_batching
    python bench/bench_batching.py --threads 8 --jobs 16 --rounds 3 \
        [--providers CUDAExecutionProvider] [--intra-threads 0]
    python bench/bench_batching.py --bookkeeping-only --bk-threads 32 --bk-jobs 400
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

if __package__ in (None, ""):
    # Run as `python bench/bench_batching.py`: import from the repository root.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import onnxruntime as ort  # noqa: E402

from antihack.shared.domain.capture import CaptureLimits, parse_capture  # noqa: E402
from antihack.shared.proto import liveness_pb2 as pb  # noqa: E402
from antihack.shared.sdk.sample import build_capture  # noqa: E402
from antihack.worker.pipeline.models import MODEL_NAMES, ModelSet  # noqa: E402
from antihack.worker.pipeline.run import Pipeline  # noqa: E402
from bench.bench_models import add_providers_option, model_rows  # noqa: E402
from bench.bench_pipeline import MODEL_STAGES, context, shifted  # noqa: E402
from bench.stack import load_average, ms_since  # noqa: E402

Batch = npt.NDArray[np.float32]
SIZES = (1, 2, 4, 8, 16, 32)
# Model -> the outputs its stage asks for (the batcher groups calls by them).
OUTPUTS = dict(MODEL_STAGES.values())


def _rows(batch: Batch, n: int) -> Batch:
    """``n`` rows cycled from ``batch``."""
    return np.ascontiguousarray(np.take(batch, np.arange(n) % batch.shape[0], axis=0))


def bench_batch_sizes(
    models: ModelSet, rows: dict[str, Batch], sizes: Sequence[int], runs: int, pad_runs: int
) -> None:
    """Print ms per crop of each model's raw session call by batch size."""
    print(
        f"\nms per crop by batch size (raw session.run; median of {runs} runs, {pad_runs} for "
        "pad; sizes interleaved); gain = ms/crop at the smallest batch / at the largest"
    )
    print(f"{'model':16s} " + " ".join(f"{f'b={n}':>8s}" for n in sizes) + f" {'gain':>7s}")
    for name in ("pad", *(m for m in MODEL_NAMES if m != "pad")):
        session = models.session(name)
        input_name = session.get_inputs()[0].name
        inputs = {n: _rows(rows[name], n) for n in sizes}
        session.run(OUTPUTS[name], {input_name: inputs[max(sizes)]})  # warm-up, largest arena
        times: dict[int, list[float]] = {n: [] for n in sizes}
        for _ in range(pad_runs if name == "pad" else runs):
            for n in sizes:
                start = time.perf_counter()
                session.run(OUTPUTS[name], {input_name: inputs[n]})
                times[n].append(ms_since(start) / n)
        per_crop = [statistics.median(times[n]) for n in sizes]
        print(
            f"{name:16s} "
            + " ".join(f"{ms:8.2f}" for ms in per_crop)
            + f" {per_crop[0] / per_crop[-1]:6.2f}x",
            flush=True,
        )


def _round(pipeline: Pipeline, captures: Sequence[pb.Capture], threads: int) -> float:
    """Analyse every capture with ``threads`` threads; return jobs per second."""
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(lambda c: pipeline.analyze(c, context()), captures):
            pass
    return len(captures) / (time.perf_counter() - start)


def bench_throughput(
    models: ModelSet,
    captures: Sequence[pb.Capture],
    threads: int,
    rounds: int,
    batch_max: int,
    wait_ms: float,
    wide: ModelSet | None = None,
) -> None:
    """Print jobs/s of ``threads`` threads with batching off and on (same sessions), and on with
    ``wide``'s sessions (more intra-op threads: a lane runs one batch of a model at a time)."""
    batched = models.batched(batch_max, wait_ms)
    assert batched.batcher is not None
    variants = {"off": Pipeline(models), "on": Pipeline(batched)}
    wide_batched = wide.batched(batch_max, wait_ms) if wide is not None else None
    if wide_batched is not None:
        variants["on, wide"] = Pipeline(wide_batched)
    for pipeline in variants.values():  # warm-up: arenas, lanes, caches
        _round(pipeline, captures[: max(2, threads)], threads)
    batched.batcher.reset_stats()
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, pipeline in variants.items():
            rates[name].append(_round(pipeline, captures, threads))
    stats = batched.batcher.stats()
    batched.close()
    if wide_batched is not None:
        wide_batched.close()
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    print(
        f"\nthroughput: {len(captures)} jobs per round, {threads} threads, batching "
        f"max {batch_max} rows / wait {wait_ms:g} ms; {rounds} rounds each, interleaved"
    )
    print(f"{'batching':10s} {'median jobs/s':>14s} {'min':>7s} {'max':>7s}")
    for name in variants:
        values = rates[name]
        print(f"{name:10s} {statistics.median(values):14.2f} {min(values):7.2f} {max(values):7.2f}")
    print(f"on/off ratio {on / off:.2f}x")
    if wide_batched is not None:
        print(f"on, wide/off ratio {statistics.median(rates['on, wide']) / off:.2f}x")
    print(f"\nbatches formed with batching on ({rounds} rounds)")
    print(f"{'model':16s} {'runs':>6s} {'rows/run':>9s} {'calls/run':>10s} {'max rows':>9s}")
    for name in MODEL_NAMES:
        s = stats.get(name)
        if s is not None:
            print(
                f"{name:16s} {s.batches:6d} {s.mean_rows:9.2f} {s.mean_requests:10.2f} "
                f"{s.max_rows:9d}"
            )


def bench_bookkeeping(threads: int, jobs: int, rounds: int, sizes: Sequence[int]) -> None:
    """Print jobs/s of the analyze task (no-op pipeline) on ``threads`` threads of this process,
    bookkeeping off (one statement per job) and batched up to each of ``sizes`` jobs."""
    from datetime import timedelta

    from antihack.shared.infra.queues import ANALYZE_TASK
    from antihack.worker import bookkeeping
    from antihack.worker.celery_app import make_celery
    from antihack.worker.state import get_state
    from bench.bench_queue import new_jobs
    from bench.stack import stack

    with stack() as st, ThreadPoolExecutor(threads) as pool:
        settings = st.settings.replace(bench_noop_pipeline=True)
        task: Any = make_celery(settings).tasks[ANALYZE_TASK]
        state = get_state(settings)  # as the worker runs it: kept autocommit connections
        sessions = state.sessions
        lease = timedelta(seconds=settings.task_time_limit_s + settings.lease_margin_s)

        def one_round(size: int | None) -> tuple[float, float, float]:
            ids = new_jobs(st, jobs)
            keeper = None
            if size is not None:
                keeper = bookkeeping.start(
                    sessions, lease, 3, None, max_batch=size, autocommit=state.autocommit
                )
            try:
                start = time.perf_counter()
                outcomes = list(pool.map(task.run, ids))
                rate = len(ids) / (time.perf_counter() - start)
            finally:
                bookkeeping.stop()
            assert outcomes == ["OK"] * len(ids), set(outcomes)
            if keeper is None:
                return rate, 1.0, 1.0
            return rate, keeper.claims.stats.mean_requests, keeper.records.stats.mean_requests

        variants: list[int | None] = [None, *sizes]
        one_round(None)  # warm-up: connections, statement caches
        figures: dict[int | None, list[tuple[float, float, float]]] = {v: [] for v in variants}
        for _ in range(rounds):
            for v in variants:
                figures[v].append(one_round(v))
    db = "PostgreSQL" if st.settings.database_url else "SQLite (embedded)"
    print(
        f"\njob bookkeeping: analyze task, no-op pipeline, {threads} threads in one process, "
        f"{jobs} jobs per round, {rounds} rounds interleaved, {db}"
    )
    print(f"{'batch max':>10s} {'median jobs/s':>14s} {'min':>7s} {'max':>7s} "
          f"{'claims/stmt':>12s} {'records/stmt':>13s}")  # fmt: skip
    for v in variants:
        rates = [f[0] for f in figures[v]]
        claims = statistics.median(f[1] for f in figures[v])
        records = statistics.median(f[2] for f in figures[v])
        print(
            f"{'off' if v is None else v:>10} {statistics.median(rates):14.1f} {min(rates):7.1f} "
            f"{max(rates):7.1f} {claims:12.2f} {records:13.2f}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Parse options (none when run by ``python -m bench``) and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--threads", type=int, default=8, help="concurrent jobs (threads)")
    parser.add_argument("--jobs", type=int, default=16, help="captures per throughput round")
    parser.add_argument("--frames", type=int, default=3, help="frames per capture")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per variant")
    parser.add_argument("--batch-max", type=int, default=32, help="rows per batch at most")
    parser.add_argument("--wait-ms", type=float, default=3.0, help="batching wait bound")
    parser.add_argument("--runs", type=int, default=5, help="runs per batch size")
    parser.add_argument("--pad-runs", type=int, default=2, help="runs per batch size for pad")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument(
        "--intra-threads",
        type=int,
        default=1,
        help="onnxruntime intra-op threads per call (1: what a threads-pool worker with more "
        "threads than cores uses; 0: ORT's default)",
    )
    add_providers_option(parser)
    parser.add_argument(
        "--wide-threads",
        type=int,
        default=None,
        help="also run batching on with sessions of this many intra-op threads (0: CPU count)",
    )
    parser.add_argument("--skip-sizes", action="store_true", help="only the throughput part")
    parser.add_argument(
        "--bookkeeping-only", action="store_true", help="only the job bookkeeping part (3.)"
    )
    parser.add_argument("--bk-threads", type=int, default=32, help="bookkeeping: task threads")
    parser.add_argument("--bk-jobs", type=int, default=400, help="bookkeeping: jobs per round")
    parser.add_argument("--bk-rounds", type=int, default=3, help="bookkeeping: rounds")
    parser.add_argument(
        "--bk-sizes", type=int, nargs="+", default=[1, 4, 16, 64], help="bookkeeping: batch max"
    )
    args = parser.parse_args(list(argv) if argv is not None else [])
    if args.bookkeeping_only:
        bench_bookkeeping(args.bk_threads, args.bk_jobs, args.bk_rounds, args.bk_sizes)
        return
    from skimage import data

    face = np.ascontiguousarray(data.astronaut(), dtype=np.uint8)  # type: ignore[no-untyped-call]
    models = ModelSet.load(providers=args.providers, intra_threads=args.intra_threads)
    print(
        f"onnxruntime {ort.__version__}, providers {', '.join(models.providers)}, "
        f"{os.cpu_count()} CPUs, intra-op threads {args.intra_threads or 'ORT default'}, "
        f"load average {load_average()} (1/5/15 min)"
    )
    if not args.skip_sizes:
        frames = shifted(face, 8)
        bench_batch_sizes(models, model_rows(models, frames), args.sizes, args.runs, args.pad_runs)
    limits = CaptureLimits()
    captures = [
        parse_capture(
            build_capture(shifted(np.roll(face, i, axis=1), args.frames), session_id=f"b{i}"),
            limits,
        )
        for i in range(args.jobs)
    ]
    wide = None
    if args.wide_threads is not None:
        wide_threads = args.wide_threads or os.cpu_count() or 1
        wide = ModelSet.load(providers=args.providers, intra_threads=wide_threads)
        print(f"'on, wide': batching on, sessions with {wide_threads} intra-op threads")
    bench_throughput(
        models, captures, args.threads, args.rounds, args.batch_max, args.wait_ms, wide
    )
    bench_bookkeeping(args.bk_threads, args.bk_jobs, args.bk_rounds, args.bk_sizes)
    print(f"\nload average at the end {load_average()}")


if __name__ == "__main__":
    main(sys.argv[1:])
