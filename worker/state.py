"""Per-process resources of a worker: database engine, Redis client and the loaded models.

They are created lazily in the process that uses them (after the prefork pool has forked), so
no connection or ONNX session is ever shared between processes. Under the threads pool (GPU
workers) one process serves many threads: the state and the models are created once, under a
lock, and shared; SQLAlchemy's engine and redis-py's client are thread-safe, and every task opens
its own database session.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis
from sqlalchemy.orm import Session, sessionmaker

from antihack.shared.infra.db import (
    KeptConnections,
    kept_connections,
    make_engine,
    make_sessionmaker,
)
from antihack.shared.infra.settings import Settings

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from antihack.worker.pipeline.noop import NoopPipeline
    from antihack.worker.pipeline.run import Pipeline


@dataclass
class WorkerState:
    settings: Settings
    sessions: sessionmaker[Session]
    # Connections of the same pool kept in autocommit, for the bookkeeping that is one
    # statement (worker/bookkeeping.py); None on SQLite.
    autocommit: KeptConnections | None
    redis: redis.Redis
    pid: int
    _pipeline: Pipeline | NoopPipeline | None = field(default=None)
    _pipeline_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def pipeline(self) -> Pipeline | NoopPipeline:
        if self._pipeline is None:
            with self._pipeline_lock:  # threads of one process load the models once
                if self._pipeline is None:
                    self._pipeline = load_pipeline(self.settings)
        return self._pipeline

    def close(self) -> None:
        """Stop the model batcher's threads (queued calls still run); idempotent."""
        from antihack.worker.pipeline.run import Pipeline

        pipeline = self._pipeline
        if isinstance(pipeline, Pipeline):
            pipeline.models.close()


def load_pipeline(settings: Settings) -> Pipeline | NoopPipeline:
    """Verify and load the models, batched across threads when ``batch_max`` is set."""
    from antihack.worker.pipeline.models import ModelSet
    from antihack.worker.pipeline.noop import NoopPipeline
    from antihack.worker.pipeline.run import Pipeline

    s = settings
    if s.bench_noop_pipeline:
        return NoopPipeline()
    models = ModelSet.load(
        model_dir=s.model_path,
        providers=s.providers,
        intra_threads=s.ort_intra_threads or default_intra_threads(s),
    )
    if s.batch_max > 0:
        from antihack.shared.infra.metrics import observe_batch

        models = models.batched(s.batch_max, s.batch_wait_ms, observe_batch)
    log.info(
        "models loaded: providers %s, batching %s",
        ",".join(models.providers),
        f"max {s.batch_max} rows, wait {s.batch_wait_ms:g} ms" if s.batch_max > 0 else "off",
    )
    return Pipeline(models)


def default_intra_threads(settings: Settings) -> int:
    """Split the cores between the pool's processes: with 2 processes on 2 cores, one thread
    each beats two spinning threads each by ~30% in throughput (bench_fas)."""
    cores = os.cpu_count() or 1
    return max(1, cores // max(1, settings.worker_concurrency or cores))


_state: WorkerState | None = None
_state_lock = threading.Lock()


def get_state(settings: Settings) -> WorkerState:
    """This process's resources, created on first use after a fork (once, whatever the pool's
    threads)."""
    global _state
    state = _state
    if state is None or state.pid != os.getpid():
        with _state_lock:
            if _state is None or _state.pid != os.getpid():
                engine = make_engine(settings.effective_database_url)
                _state = WorkerState(
                    settings=settings,
                    sessions=make_sessionmaker(engine),
                    autocommit=kept_connections(engine),
                    redis=redis.Redis.from_url(settings.redis_client_url, socket_timeout=10),
                    pid=os.getpid(),
                )
            state = _state
    return state


def current_state() -> WorkerState | None:
    """This process's resources if they were created here, else None."""
    state = _state
    return state if state is not None and state.pid == os.getpid() else None
