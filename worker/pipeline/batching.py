"""Micro-batching of model calls across threads, for a worker that analyses several jobs at once
in one process (Celery's threads pool on a GPU).

Each model gets a lane: a queue and one thread that runs it. A request (one caller's batch)
waits at most ``wait_ms`` after the oldest queued request for others of the same model, row
shape and outputs, up to ``max_rows`` rows; the lane runs them as one onnxruntime call and hands
every caller its own rows of each output. A GPU runs a batch of 32 crops in little more time
than one, so under load the throughput grows with the batch; on a CPU the work grows with the
rows and batching mostly adds the wait (bench/bench_batching.py measures both).

Requests are checked one by one before they join a batch, so a malformed one fails alone; an
error of the run itself reaches every caller of that batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float32]
# runner(model, batch, outputs) -> outputs, each with the batch's rows first (ModelSet.run).
Runner = Callable[[str, Array, Sequence[str] | None], list[Array]]
# input_dims(model) -> the input's dimensions after the batch one (None where dynamic);
# raises ValueError for an unknown model.
InputDims = Callable[[str], tuple[int | None, ...]]
# observe(model, rows, requests) once per batch run (the worker's Prometheus histogram).
Observer = Callable[[str, int, int], None]


class BatcherClosed(RuntimeError):
    """The batcher was shut down: it accepts no more requests."""


@dataclass
class BatchStats:
    """What one model's lane has run since the batcher started (or ``reset_stats``)."""

    batches: int = 0
    requests: int = 0
    rows: int = 0
    max_requests: int = 0
    max_rows: int = 0

    @property
    def mean_rows(self) -> float:
        return self.rows / self.batches if self.batches else 0.0

    @property
    def mean_requests(self) -> float:
        return self.requests / self.batches if self.batches else 0.0


@dataclass
class _Request:
    key: tuple[object, ...]
    batch: Array
    outputs: list[str] | None
    future: Future[list[Array]]
    arrived: float

    @property
    def rows(self) -> int:
        return int(self.batch.shape[0])


class _Lane:
    """One model's queue and the thread that runs its batches."""

    def __init__(self, owner: MicroBatcher, name: str) -> None:
        self.owner = owner
        self.name = name
        self.cond = threading.Condition()
        self.queue: deque[_Request] = deque()
        self.closed = False
        self.stats = BatchStats()
        self.thread = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self.thread.start()

    def submit(self, request: _Request) -> None:
        with self.cond:
            # Checked under the lane's lock: a request is either queued before the lane closes
            # (and then still run) or refused, never left behind.
            if self.closed:
                raise BatcherClosed(f"{self.name}: the model batcher is shut down")
            self.queue.append(request)
            self.cond.notify()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()

    def _loop(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.queue and not self.closed:
                        self.cond.wait()
                    if not self.queue:
                        return  # closed and drained
                    batch = self._collect()
                self._run(batch)
        finally:
            # Only reached on close, or if this thread dies of something unforeseen: then no
            # caller may be left waiting on a lane that no longer runs.
            with self.cond:
                self.closed = True
                left, self.queue = list(self.queue), deque()
            for request in left:
                request.future.set_exception(BatcherClosed(f"{self.name}: batcher stopped"))

    def _queued_rows(self, key: tuple[object, ...]) -> int:
        return sum(r.rows for r in self.queue if r.key == key)

    def _collect(self) -> list[_Request]:
        """Wait (lock held) until the oldest request's wait is over or its batch is full, then
        take it and the requests that can join it, in arrival order."""
        first = self.queue[0]
        deadline = first.arrived + self.owner.wait_s
        max_rows = self.owner.max_rows
        while not self.closed and self._queued_rows(first.key) < max_rows:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.cond.wait(remaining)
        taken: list[_Request] = []
        kept: deque[_Request] = deque()
        rows = 0
        full = False
        for request in self.queue:
            if request.key != first.key or full:
                kept.append(request)
            elif not taken or rows + request.rows <= max_rows:
                taken.append(request)
                rows += request.rows
            else:
                # Later requests wait for the next batch rather than overtake this one.
                full = True
                kept.append(request)
        self.queue = kept
        return taken

    def _run(self, requests: list[_Request]) -> None:
        first = requests[0]
        try:
            merged = (
                first.batch
                if len(requests) == 1
                else np.concatenate([r.batch for r in requests], axis=0)
            )
            outputs = self.owner.runner(self.name, merged, first.outputs)
            total = merged.shape[0]
            for i, out in enumerate(outputs):
                if out.ndim == 0 or out.shape[0] != total:
                    raise ValueError(
                        f"{self.name}: output {i} has shape {out.shape}, not {total} rows first; "
                        "it cannot be split between callers"
                    )
        except BaseException as exc:
            for request in requests:
                request.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise  # e.g. SystemExit: the lane stops, its callers have their answer
            return
        self._record(len(requests), total)
        start = 0
        for request in requests:
            stop = start + request.rows
            request.future.set_result([out[start:stop] for out in outputs])
            start = stop

    def _record(self, requests: int, rows: int) -> None:
        with self.cond:
            s = self.stats
            s.batches += 1
            s.requests += requests
            s.rows += rows
            s.max_requests = max(s.max_requests, requests)
            s.max_rows = max(s.max_rows, rows)
        if self.owner.observe is not None:
            try:
                self.owner.observe(self.name, rows, requests)
            except Exception:  # a metrics problem must not fail the callers' model call
                log.exception("batch observer failed")


class MicroBatcher:
    """Merges concurrent ``run`` calls of the same model from several threads into one run."""

    def __init__(
        self,
        runner: Runner,
        input_dims: InputDims,
        max_rows: int = 32,
        wait_ms: float = 3.0,
        observe: Observer | None = None,
    ) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, not {max_rows}")
        if wait_ms < 0:
            raise ValueError(f"wait_ms must not be negative, not {wait_ms}")
        self.runner = runner
        self.input_dims = input_dims
        self.max_rows = max_rows
        self.wait_s = wait_ms / 1000.0
        self.observe = observe
        self._lock = threading.Lock()
        self._lanes: dict[str, _Lane] = {}
        self._closed = False

    def run(self, name: str, batch: Array, outputs: Sequence[str] | None = None) -> list[Array]:
        """Run model ``name`` on ``batch`` together with other threads' concurrent calls; block
        until this call's rows of every output are back (or its batch's error is raised)."""
        self._check(name, batch)
        wanted = list(outputs) if outputs is not None else None
        key = (tuple(batch.shape[1:]), tuple(wanted) if wanted is not None else None)
        future: Future[list[Array]] = Future()
        self._lane(name).submit(_Request(key, batch, wanted, future, time.monotonic()))
        return future.result()

    def _check(self, name: str, batch: object) -> None:
        """Refuse a request that could not be merged with others, before it joins a batch."""
        dims = self.input_dims(name)
        if not isinstance(batch, np.ndarray) or batch.dtype != np.float32:
            kind = batch.dtype if isinstance(batch, np.ndarray) else type(batch).__name__
            raise ValueError(f"{name}: the batch must be a float32 array, not {kind}")
        if batch.ndim != len(dims) + 1:
            raise ValueError(
                f"{name}: the batch has shape {batch.shape}, expected {len(dims) + 1} dimensions"
            )
        if batch.shape[0] == 0:
            raise ValueError(f"{name}: empty batch")
        for got, want in zip(batch.shape[1:], dims, strict=True):
            if want is not None and got != want:
                expected = ("N", *("?" if d is None else d for d in dims))
                raise ValueError(f"{name}: the batch has shape {batch.shape}, expected {expected}")

    def _lane(self, name: str) -> _Lane:
        with self._lock:
            if self._closed:
                raise BatcherClosed(f"{name}: the model batcher is shut down")
            lane = self._lanes.get(name)
            if lane is None:
                lane = self._lanes[name] = _Lane(self, name)
            return lane

    def stats(self) -> dict[str, BatchStats]:
        """Per model, what has been run so far (a copy)."""
        with self._lock:
            lanes = list(self._lanes.values())
        out = {}
        for lane in lanes:
            with lane.cond:
                out[lane.name] = BatchStats(**vars(lane.stats))
        return out

    def queued(self) -> int:
        """Requests waiting in the lanes (not yet taken into a run)."""
        with self._lock:
            lanes = list(self._lanes.values())
        total = 0
        for lane in lanes:
            with lane.cond:
                total += len(lane.queue)
        return total

    def reset_stats(self) -> None:
        with self._lock:
            lanes = list(self._lanes.values())
        for lane in lanes:
            with lane.cond:
                lane.stats = BatchStats()

    def close(self, timeout: float | None = 30.0) -> None:
        """Refuse new requests, run those already queued, and stop the lanes' threads.
        Safe to call from any thread, more than once."""
        with self._lock:
            self._closed = True
            lanes = list(self._lanes.values())
        for lane in lanes:
            lane.close()
        for lane in lanes:
            if lane.thread is not threading.current_thread():
                lane.thread.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closed
