"""The API's task publisher: a Celery client that only sends tasks by name (shared/infra/queues.py).

It registers no task and imports nothing of ``worker`` (the pipeline, OpenCV, onnxruntime), has
no result backend, and keeps one broker connection and producer per thread: publishing a task
is Celery's message (protocol 2, built by Celery) sent as Celery sends it (the default exchange,
the queue's name as routing key, persistent, the same retry policy), one Redis round trip,
without a producer pool to acquire, routing, signals or a result object per call.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery, uuid

from antihack.shared.infra.settings import Settings


class TaskPublisher:
    """Publishes tasks by name to the queue given (antihack.shared.domain.webhooks.Publisher)."""

    def __init__(self, settings: Settings) -> None:
        app = Celery("antihack-publisher", set_as_current=False)
        app.conf.update(
            broker_url=settings.broker_url,
            broker_connection_retry_on_startup=True,
            task_ignore_result=True,
            result_backend=None,
            task_serializer="json",
            accept_content=["json"],
            timezone="UTC",
        )
        self.app = app
        self._local = threading.local()

    def _producer(self) -> Any:
        producer = getattr(self._local, "producer", None)
        if producer is None:
            producer = self.app.amqp.Producer(self.app.connection_for_write())
            self._local.producer = producer
        return producer

    def send_task(self, name: str, args: Any = None, **options: Any) -> str:
        """Publish ``name(*args)`` to ``options["queue"]`` (the one option); returns the task id."""
        queue: str = options["queue"]
        task_id: str = uuid()
        headers, properties, body, _sent = self.app.amqp.create_task_message(
            task_id, name, args, None, ignore_result=True
        )
        declare = self.app.amqp.queues[queue]  # made as Celery makes a missing queue, once
        self._producer().publish(
            body,
            exchange="",
            routing_key=queue,
            serializer="json",
            delivery_mode=2,
            declare=[declare],
            headers=headers,
            retry=True,
            retry_policy=dict(self.app.conf.task_publish_retry_policy),
            **properties,
        )
        return task_id
