"""The baseline of bench_queue: a bare Celery app whose task does nothing but say it ran.

Started by bench_queue as ``celery -A bench.bare_celery worker`` on the same Redis, with the
same reliability options as antihack's analyze task (acks_late, prefetch 1).
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

DONE = "bench:bare:done"

app = Celery("bare", broker=os.environ.get("BARE_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)
_client: redis.Redis | None = None


@app.task(name="bench.bare.noop")
def noop(sent: float) -> None:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["BARE_REDIS_URL"])
    _client.rpush(DONE, f"{sent} {time.time()}")
