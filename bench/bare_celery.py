"""The baselines of bench_queue: a bare Celery app whose task does nothing but say it ran.

Started by bench_queue as ``celery -A bench.bare_celery worker`` on the same Redis, with the
same reliability options as antihack's analyze task (acks_late, prefetch 1). With
``BARE_RESULT_BACKEND`` set (``db+postgresql+psycopg://…``) it is the other peer: Celery that
stores every task's result in its own SQLAlchemy result backend (the ``celery_taskmeta`` table)
before acknowledging it, the durable path a Celery user gets without antihack's job rows.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

DONE = "bench:bare:done"
BACKEND = os.environ.get("BARE_RESULT_BACKEND") or None


def make_app(broker: str, backend: str | None) -> Celery:
    """The worker's app, or a client's to publish (and, with a backend, read results) with."""
    app = Celery("bare", broker=broker, backend=backend)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=backend is None,
        broker_connection_retry_on_startup=True,
    )
    return app


app = make_app(os.environ.get("BARE_BROKER_URL", "redis://127.0.0.1:6379/0"), BACKEND)
_client: redis.Redis | None = None


@app.task(name="bench.bare.noop")
def noop(sent: float) -> float:
    """Say it ran (bare) or return a result the backend stores (``BARE_RESULT_BACKEND``)."""
    global _client
    if BACKEND is not None:
        return sent
    if _client is None:
        _client = redis.Redis.from_url(os.environ["BARE_REDIS_URL"])
    _client.rpush(DONE, f"{sent} {time.time()}")
    return sent
