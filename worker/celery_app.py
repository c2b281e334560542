"""The Celery app, built from the same settings as the API (no heavy imports here), and the
base class of its tasks."""

from __future__ import annotations

import importlib
import math
import os
import time
from datetime import timedelta
from typing import Any

from celery import Celery, Task
from celery.signals import task_postrun, task_prerun, worker_ready, worker_shutdown

from antihack.shared.infra.heartbeat import Heartbeat, task_progress
from antihack.shared.infra.logs import request_id_var
from antihack.shared.infra.queues import (
    PURGE_TASK,
    SWEEP_TASK,
    TASK_QUEUES,
    WEBHOOK_DISPATCH_TASK,
    WEBHOOK_SEND_TASK,
)
from antihack.shared.infra.settings import Settings
from antihack.worker.state import WorkerState, get_state

# The modules whose tasks the worker registers (Celery imports them when a worker starts).
TASK_MODULES = ("antihack.worker.tasks", "antihack.worker.webhook_tasks")


class AntihackCelery(Celery):
    settings: Settings

    def finalize(self, auto: bool = False) -> None:
        """Register the tasks of ``include`` in-process too (tests, the CLI call ``app.tasks``
        without a worker); a publisher that only sends by name never imports them."""
        if not self.finalized:
            for module in self.conf.include or ():
                importlib.import_module(module)
        super().finalize(auto)


class AntihackTask(Task):
    """Every antihack task: the app's settings, this process's state (database, Redis, models),
    and its job id bound as the request id of every log line while it runs."""

    @property
    def settings(self) -> Settings:
        app = self.app
        assert isinstance(app, AntihackCelery)
        return app.settings

    @property
    def state(self) -> WorkerState:
        """This process's resources, made on first use after the fork (worker/state.py)."""
        return get_state(self.settings)

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        # Every analyze log line carries its job id (which is the request id) without passing it.
        job_id = args[0] if args and isinstance(args[0], str) else None
        request_id_var.set(job_id if job_id and job_id.startswith("TID") else None)

    def after_return(self, *_: Any, **__: Any) -> None:
        request_id_var.set(None)


def make_celery(settings: Settings) -> AntihackCelery:
    """A Celery app whose tasks read ``app.settings``; the API uses it only to publish."""
    app = AntihackCelery(
        "antihack", set_as_current=True, task_cls=AntihackTask, include=list(TASK_MODULES)
    )
    time_limit = settings.task_time_limit_s
    dispatch_every = settings.webhook_dispatch_interval_s
    app.conf.update(
        broker_url=settings.broker_url,
        broker_connection_retry_on_startup=True,
        # Redelivery of an unacknowledged message must wait longer than any task may run.
        broker_transport_options={"visibility_timeout": 2 * time_limit + 60},
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_time_limit=time_limit,
        task_soft_time_limit=max(time_limit * 0.8, time_limit - 10),
        task_routes={name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        task_default_queue="analyze",
        worker_prefetch_multiplier=1,
        worker_send_task_events=False,
        task_serializer="json",
        accept_content=["json"],
        beat_schedule={
            "sweep": {"task": SWEEP_TASK, "schedule": timedelta(seconds=settings.sweep_interval_s)},
            "purge": {"task": PURGE_TASK, "schedule": timedelta(hours=1)},
            "webhooks": {
                "task": WEBHOOK_DISPATCH_TASK,
                "schedule": timedelta(seconds=dispatch_every),
                # A dispatch that waited in a backlog is useless: the next one is coming.
                "options": {"expires": max(10 * dispatch_every, 30)},
            },
        },
        # A send is one POST bounded by the webhook timeout; its claim lasts longer than this
        # (antihack.shared.domain.webhooks.claim_lease), so it is never sent twice at the same time.
        task_annotations={
            WEBHOOK_SEND_TASK: {
                "time_limit": settings.webhook_timeout_s + 20,
                "soft_time_limit": settings.webhook_timeout_s + 10,
            }
        },
        timezone="UTC",
    )
    app.settings = settings
    return app


# --- worker lifecycle: readiness heartbeat, request id in the logs ----------------------------

_heartbeat: Heartbeat | None = None


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    """Beat in Redis while the worker consumes; /readyz wants a recent beat."""
    global _heartbeat
    app = getattr(sender, "app", None)
    if not isinstance(app, AntihackCelery) or _heartbeat is not None:
        return
    settings = app.settings
    node = str(getattr(sender, "hostname", "celery"))
    queues = sorted(app.amqp.queues.consume_from or app.amqp.queues)
    member = f"{node}:{os.getpid()}"
    interval = settings.worker_heartbeat_s
    _heartbeat = Heartbeat(settings.redis_client_url, member, interval, node, queues)
    _heartbeat.start()


@worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    global _heartbeat
    if _heartbeat is not None:
        _heartbeat.stop()
        _heartbeat = None


# When this process last recorded progress, per (node, queue).
_progress_at: dict[tuple[str, str], float] = {}


@task_prerun.connect
@task_postrun.connect
def _record_progress(task: Any = None, **_: Any) -> None:
    """Starting or finishing a task proves the node consumes its queue (/readyz, health check).

    Recorded at most every quarter of the stall threshold (and at most every second) per process:
    the record is a Redis round trip, twice per job otherwise, and a stall is judged in seconds.
    """
    app = getattr(task, "app", None)
    request = getattr(task, "request", None)
    if not isinstance(app, AntihackCelery) or request is None or not request.hostname:
        return  # called in-process (tests), not consumed from a queue
    queue = (request.delivery_info or {}).get("routing_key")
    if not queue:
        return
    now, which = time.monotonic(), (str(request.hostname), str(queue))
    if now - _progress_at.get(which, -math.inf) < min(1.0, app.settings.worker_stall_after_s / 4):
        return
    _progress_at[which] = now
    task_progress(app.settings.redis_client_url, request.hostname, queue)
