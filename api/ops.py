"""Operations endpoints: liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue
from sqlalchemy import text

from antihack.api.app_helpers import json_response
from antihack.api.context import db, services
from antihack.shared.infra.heartbeat import fresh_workers, stalled
from antihack.shared.infra.queues import ANALYZE_QUEUE

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process is up and answering."""
    return json_response({"status": "OK"})


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """The database and Redis answer, at least one worker's heartbeat is recent, and the analyze
    queue is consumed: not holding messages while no worker started or finished an analysis
    for ANTIHACK_WORKER_STALL_S (a live worker whose consumer stalled)."""
    svc = services()
    checks: dict[str, str] = {}
    try:
        db().execute(text("SELECT 1"))
        db().commit()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    workers = 0
    consuming = False
    max_age = svc.settings.worker_heartbeat_max_age_s
    try:
        stall = stalled(svc.redis, ANALYZE_QUEUE, svc.settings.worker_stall_after_s)
        consuming = stall is None
        checks["consumption"] = "ok" if stall is None else stall.reason()
        workers, last = fresh_workers(svc.redis, max_age)
        checks["redis"] = "ok"
        if workers:
            checks["workers"] = f"{workers} with a heartbeat within {max_age:g} s"
        elif last is None:
            checks["workers"] = "no worker heartbeat"
        else:
            checks["workers"] = f"none: the latest heartbeat is {last:.0f} s old"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
        checks["workers"] = "unknown"
        checks["consumption"] = "unknown"
    ready = checks["database"] == "ok" and checks["redis"] == "ok" and workers > 0 and consuming
    return json_response(
        {"status": "OK" if ready else "NOT_READY", "checks": checks}, 200 if ready else 503
    )
