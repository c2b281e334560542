"""Operations endpoints: liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue
from sqlalchemy import text

from api.app_helpers import json_response
from api.context import db, services

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process is up and answering."""
    return json_response({"status": "OK"})


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """The database and Redis answer and at least one worker replies to a ping."""
    svc = services()
    checks: dict[str, str] = {}
    try:
        db().execute(text("SELECT 1"))
        db().commit()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        svc.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    if checks["redis"] == "ok":
        try:
            replies = svc.celery.control.ping(timeout=1.0)
            checks["workers"] = f"{len(replies)} replied" if replies else "none replied"
        except Exception as exc:
            checks["workers"] = f"error: {type(exc).__name__}"
    else:
        checks["workers"] = "unknown"
    ready = (
        all(v == "ok" for k, v in checks.items() if k != "workers")
        and checks["workers"].endswith("replied")
        and not checks["workers"].startswith("none")
    )
    return json_response(
        {"status": "OK" if ready else "NOT_READY", "checks": checks}, 200 if ready else 503
    )
