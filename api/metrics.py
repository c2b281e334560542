"""``GET /metrics`` (Prometheus) and the per-request counters behind it.

Counters and histograms come from every process that shares ``PROMETHEUS_MULTIPROC_DIR``
(gunicorn's processes, and the workers when they share the data dir); gauges that describe the
system (jobs by state, queue depth, quota used, fresh workers) are read at scrape time from the
database and Redis, so they are right whichever process answers.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from sqlalchemy import func, select

from antihack.api.context import services
from antihack.shared.domain.errors import ApiError
from antihack.shared.domain.quota import used_now
from antihack.shared.infra.heartbeat import fresh_workers
from antihack.shared.infra.metrics import metrics, recorded_registry
from antihack.shared.infra.queues import ALL_QUEUES
from antihack.shared.infra.tables import FAILED, QUEUED, RUNNING, SUCCEEDED, ApiKey, Job, utcnow

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)

# Quota gauges are per key: bound the label set (the first N keys with a quota, oldest first).
MAX_QUOTA_KEYS = 100
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
# kombu's Redis transport keeps one list per priority step besides the plain queue name.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


def instrument(app: Flask) -> None:
    """Count every answered request by its URL rule (not its path) and time it."""

    @app.before_request
    def _start_clock() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        try:
            rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
            method = request.method if request.method in METHODS else "OTHER"
            m = metrics()
            m.http_requests.labels(
                endpoint=rule, method=method, status=str(response.status_code)
            ).inc()
            started = g.get("metrics_started")
            if started is not None:
                m.http_seconds.labels(endpoint=rule, method=method).observe(
                    time.perf_counter() - started
                )
        except Exception:  # metrics must never cost a client its answer
            log.exception("could not record request metrics")
        return response


class SystemCollector:
    """Gauges read at scrape time: one cheap query or command per family."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily(
            "antihack_metrics_source_up",
            "Whether /metrics could read a source (database, redis) at this scrape.",
            labels=["source"],
        )
        families: list[Any] = []
        for source, read in (("database", self._database), ("redis", self._redis)):
            try:
                families += read(GaugeMetricFamily)
                up.add_metric([source], 1)
            except Exception as exc:
                log.warning("metrics: %s unavailable (%s)", source, type(exc).__name__)
                up.add_metric([source], 0)
        yield from families
        yield up

    def _database(self, gauge: Any) -> list[Any]:
        svc = services()
        jobs = gauge("antihack_jobs", "Jobs in the database by state.", labels=["state"])
        used = gauge(
            "antihack_quota_used",
            f"Quota used in the current period (the first {MAX_QUOTA_KEYS} keys with a quota).",
            labels=["api_id", "period"],
        )
        limit = gauge("antihack_quota_limit", "Quota per period.", labels=["api_id", "period"])
        with svc.sessions() as session:
            counts = dict.fromkeys((QUEUED, RUNNING, SUCCEEDED, FAILED), 0)
            for state, n in session.execute(select(Job.status, func.count()).group_by(Job.status)):
                counts[str(state)] = int(n)
            keys = list(
                session.execute(
                    select(ApiKey.id, ApiKey.quota_period, ApiKey.quota_limit)
                    .where(ApiKey.quota_limit.is_not(None), ApiKey.revoked_at.is_(None))
                    .order_by(ApiKey.created_at)
                    .limit(MAX_QUOTA_KEYS)
                )
            )
            counters = used_now(session, [(key_id, period) for key_id, period, _ in keys], utcnow())
        for state, n in counts.items():
            jobs.add_metric([state], n)
        for key_id, period, quota in keys:
            used.add_metric([key_id, period], counters.get(key_id, 0))
            limit.add_metric([key_id, period], quota)
        return [jobs, used, limit]

    def _redis(self, gauge: Any) -> list[Any]:
        svc = services()
        depth = gauge(
            "antihack_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"]
        )
        pipe = svc.redis.pipeline(transaction=False)
        for queue in ALL_QUEUES:
            pipe.llen(queue)
            for step in _PRIORITY_STEPS:
                pipe.llen(f"{queue}{_PRIORITY_SEP}{step}")
        sizes = pipe.execute()
        per_queue = 1 + len(_PRIORITY_STEPS)
        for i, queue in enumerate(ALL_QUEUES):
            depth.add_metric([queue], sum(sizes[i * per_queue : (i + 1) * per_queue]))
        max_age = svc.settings.worker_heartbeat_max_age_s
        n, _ = fresh_workers(svc.redis, max_age)
        workers = gauge(
            "antihack_workers_ready", f"Workers whose heartbeat is under {max_age:g} s old."
        )
        workers.add_metric([], n)
        return [depth, workers]


def _check_token() -> None:
    expected = services().settings.metrics_token
    if not expected:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        raise ApiError("UNAUTHORIZED", "/metrics needs Authorization: Bearer <metrics token>")


@bp.get("/metrics")
def scrape() -> Response:
    """Prometheus text format: recorded counters and histograms, then the scrape-time gauges."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    _check_token()
    system = CollectorRegistry()
    system.register(SystemCollector())
    body = generate_latest(recorded_registry()) + generate_latest(system)
    return Response(body, mimetype=None, content_type=CONTENT_TYPE_LATEST)
