"""The Celery app, built from the same settings as the API (no heavy imports here)."""

from __future__ import annotations

from datetime import timedelta

from celery import Celery

from shared.queues import PURGE_TASK, SWEEP_TASK, TASK_QUEUES
from shared.settings import Settings


class AntihackCelery(Celery):
    settings: Settings


def make_celery(settings: Settings) -> AntihackCelery:
    """A Celery app whose tasks read ``app.settings``; the API uses it only to publish."""
    app = AntihackCelery("antihack", set_as_current=True)
    time_limit = settings.task_time_limit_s
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
        },
        timezone="UTC",
    )
    app.settings = settings
    import worker.tasks  # noqa: F401  (registers the tasks on this app)

    return app
