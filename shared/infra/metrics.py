"""Prometheus metrics the API and the workers record, and where their processes keep them.

The worker is a prefork pool and the API runs several gunicorn processes, so counters live in
``prometheus_client``'s multiprocess mode: each process writes its own files under
``PROMETHEUS_MULTIPROC_DIR`` and whoever serves ``/metrics`` adds them up. ``antihack api`` and
``antihack worker`` point it at ``DATA_DIR/metrics`` unless it is set; when they share a data
dir (``antihack serve``, the tests), the API's ``/metrics`` includes the workers' counters.

``configure_multiprocess`` must run before anything imports ``prometheus_client`` (it picks
its storage at import), so this module imports it only inside functions until then.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from antihack.shared.infra.settings import Settings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Seconds: a synchronous submission may wait ANTIHACK_SYNC_WAIT_S (30 s) for its result.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
ANALYSIS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# Rows per model run of a batching (GPU) worker; ANTIHACK_BATCH_MAX is 32 by advice.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 128)


def _pid_of(path: Path) -> int | None:
    """The pid in ``counter_1234.db`` / ``gauge_livesum_1234.db``."""
    tail = path.stem.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_multiproc_dir(path: Path) -> int:
    """Remove the files of processes that no longer run; returns how many.

    Processes that share the directory start at different times (the supervisor restarts one
    that died), so a start must not wipe the files of siblings that still run.
    """
    removed = 0
    for f in path.glob("*.db"):
        pid = _pid_of(f)
        if pid is not None and not _alive(pid):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
                removed += 1
    return removed


def configure_multiprocess(settings: Settings) -> Path:
    """Use (and create) ``PROMETHEUS_MULTIPROC_DIR``, by default ``DATA_DIR/metrics``, and clean
    out dead processes' files. Call before ``prometheus_client`` is first imported."""
    if "prometheus_client" in sys.modules and not os.environ.get(MULTIPROC_ENV):
        log.warning("prometheus_client was imported before its multiprocess directory was set")
    path = Path(os.environ.get(MULTIPROC_ENV) or settings.data_path / "metrics")
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)
    clean_multiproc_dir(path)
    return path


def multiprocess_enabled() -> bool:
    path = os.environ.get(MULTIPROC_ENV)
    return bool(path) and Path(str(path)).is_dir()


def mark_dead(pid: int) -> None:
    """Bookkeeping when a pool or gunicorn child exits (drops its live gauges)."""
    if multiprocess_enabled():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def recorded_registry() -> CollectorRegistry:
    """A registry with everything the processes recorded: every process's files in
    multiprocess mode, else this process's own metrics."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    if not multiprocess_enabled():
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def serve_worker_metrics(port: int, addr: str = "0.0.0.0") -> None:
    """A worker's own ``/metrics`` on ``port`` (compose: each worker container is scraped)."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=addr, registry=recorded_registry())
    log.info("worker metrics on port %d", port)


class _Metrics:
    """The metric objects, created on first use (after the multiprocess directory is set)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.http_requests = Counter(
            "antihack_http_requests",
            "HTTP requests answered, by Flask URL rule, method and status code.",
            ["endpoint", "method", "status"],
        )
        self.http_seconds = Histogram(
            "antihack_http_request_duration_seconds",
            "Time to answer an HTTP request, by Flask URL rule and method.",
            ["endpoint", "method"],
            buckets=HTTP_BUCKETS,
        )
        self.stage_seconds = Histogram(
            "antihack_pipeline_stage_seconds",
            "Time spent in each stage of the anti-hack pipeline, per analysed capture.",
            ["stage"],
            buckets=STAGE_BUCKETS,
        )
        self.analysis_seconds = Histogram(
            "antihack_job_analysis_seconds",
            "Wall time of one analysis attempt in a worker (load, pipeline, store).",
            buckets=ANALYSIS_BUCKETS,
        )
        self.jobs_finished = Counter(
            "antihack_jobs_finished",
            "Results recorded by workers, by final job state and result status.",
            ["state", "status"],
        )
        self.attempts = Counter(
            "antihack_job_attempts",
            "Analysis attempts by what became of them "
            "(finished, retry, lost_lease: another attempt owns the job, skipped: not QUEUED).",
            ["outcome"],
        )
        self.batch_rows = Histogram(
            "antihack_model_batch_rows",
            "Rows (crops or frames) per model run of a worker that batches model calls across "
            "concurrent jobs (ANTIHACK_BATCH_MAX), by model.",
            ["model"],
            buckets=BATCH_BUCKETS,
        )
        self.batch_requests = Histogram(
            "antihack_model_batch_requests",
            "Model calls merged into one run by a batching worker, by model.",
            ["model"],
            buckets=BATCH_BUCKETS,
        )


_metrics: _Metrics | None = None
# gunicorn's threads answer at once: without the lock two of them could build the metrics
# together, and the second registration fails with DuplicateTimeseries.
_metrics_lock = threading.Lock()


def metrics() -> _Metrics:
    global _metrics
    if _metrics is None:
        with _metrics_lock:
            if _metrics is None:
                _metrics = _Metrics()
    return _metrics


def observe_stages(stage_ms: dict[str, float]) -> None:
    """One histogram sample per pipeline stage of an analysed capture."""
    hist = metrics().stage_seconds
    for stage, ms in stage_ms.items():
        hist.labels(stage=stage).observe(ms / 1000.0)


def count_finished(body: dict[str, Any]) -> None:
    status = str(body.get("status"))
    state = "SUCCEEDED" if status == "OK" else "FAILED"
    m = metrics()
    m.jobs_finished.labels(state=state, status=status).inc()
    m.attempts.labels(outcome="finished").inc()


def count_attempt(outcome: str) -> None:
    metrics().attempts.labels(outcome=outcome).inc()


def observe_batch(model: str, rows: int, requests: int) -> None:
    """One model run of a batching worker: its rows and the calls merged into it."""
    m = metrics()
    m.batch_rows.labels(model=model).observe(rows)
    m.batch_requests.labels(model=model).observe(requests)
