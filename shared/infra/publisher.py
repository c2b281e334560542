"""The API's task publisher: a Celery client that only sends tasks by name (shared/infra/queues.py).

It registers no task and imports nothing of ``worker`` (the pipeline, OpenCV, onnxruntime), has
no result backend, and keeps one broker connection and producer per thread: publishing a task
is Celery's message (protocol 2, built by Celery) sent as Celery sends it (the default exchange,
the queue's name as routing key, persistent, the same retry policy), one Redis round trip,
without a producer pool to acquire, routing, signals or a result object per call.

What Celery's ``send_task`` works out again for every message is worked out once here: the
retry policy, the message's ``origin`` (per process), the queue's declaration (once per
connection, as kombu's own ``maybe_declare`` cache does) and ``argsrepr`` (``repr`` of a
tuple of ids, where Celery's ``saferepr`` walks it piece by piece): together they were most of
a submission's publish, which the API pays on every accepted job.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery, uuid
from celery.utils.nodenames import anon_nodename

from antihack.shared.infra.settings import Settings


class _Thread(threading.local):
    """One thread's producer (its own broker connection) and the queues it declared."""

    producer: Any = None
    origin = ""
    declared: frozenset[str] = frozenset()


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
        self._retry_policy = dict(app.conf.task_publish_retry_policy)
        self._local = _Thread()

    def _thread(self) -> _Thread:
        local = self._local
        if local.producer is None:
            local.producer = self.app.amqp.Producer(self.app.connection_for_write())
            # Celery's origin names the sending process: computed here, after any fork.
            local.origin = anon_nodename()
        return local

    def send_task(self, name: str, args: Any = None, **options: Any) -> str:
        """Publish ``name(*args)`` to ``options["queue"]`` (the one option); returns the task id."""
        queue: str = options["queue"]
        task_id: str = uuid()
        local = self._thread()
        args = tuple(args or ())
        amqp = self.app.amqp
        argsrepr = repr(args)
        headers, properties, body, _sent = amqp.create_task_message(
            task_id,
            name,
            args,
            None,
            ignore_result=True,
            origin=local.origin,
            # As Celery's saferepr writes them, unless long enough for it to shorten.
            argsrepr=argsrepr if len(argsrepr) <= amqp.argsrepr_maxsize else None,
            kwargsrepr="{}",
        )
        declare = []
        if queue not in local.declared:
            declare = [amqp.queues[queue]]  # made as Celery makes a missing queue, once
        local.producer.publish(
            body,
            exchange="",
            routing_key=queue,
            serializer="json",
            delivery_mode=2,
            declare=declare,
            headers=headers,
            retry=True,
            retry_policy=self._retry_policy,
            **properties,
        )
        if declare:
            local.declared |= {queue}
        return task_id
