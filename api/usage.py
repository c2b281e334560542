"""Usage: the calling key's quota and daily counts; every key's for admins."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Blueprint, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from api.app_helpers import json_response
from api.auth import admin_only, client_key, current_key
from api.context import db
from shared.errors import ApiError
from shared.models import ApiKey, utcnow
from shared.quota import daily_usage, period_bounds, period_key, used

bp = Blueprint("usage", __name__)
MAX_DAYS = 366


def _days() -> int:
    raw = request.args.get("days", "31")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_DAYS:
        raise ApiError("INVALID_ARGUMENT", f"days must be an integer from 1 to {MAX_DAYS}")
    return int(raw)


def key_usage(key: ApiKey, days: int) -> dict[str, Any]:
    """Quota position and per-day counts of one key, oldest day first."""
    now = utcnow()
    since = (now - timedelta(days=days - 1)).date()
    per_day = daily_usage(db(), [key.id], since).get(key.id, {})
    start, end = period_bounds(key.quota_period, now)
    n = used(db(), key, now)
    limit = key.quota_limit
    return {
        "api_id": key.id,
        "period": key.quota_period,
        "period_key": period_key(key.quota_period, now),
        "period_start": start.isoformat() if start else None,
        "period_end": end.isoformat() if end else None,
        "used": n,
        "limit": limit,
        "remaining": None if limit is None else max(0, limit - n),
        "days": [{"date": d, **counts} for d, counts in sorted(per_day.items())],
    }


@bp.get("/v1/usage")
@client_key(None)
def my_usage() -> ResponseReturnValue:
    return json_response(key_usage(current_key(), _days()))


@bp.get("/admin/usage")
@admin_only
def all_usage() -> ResponseReturnValue:
    days = _days()
    api_id = request.args.get("api_id")
    query = select(ApiKey).order_by(ApiKey.created_at)
    if api_id:
        query = query.where(ApiKey.id == api_id)
    keys = list(db().scalars(query))
    if api_id and not keys:
        raise ApiError("NOT_FOUND", f"no API key {api_id!r}")
    return json_response({"keys": [key_usage(k, days) for k in keys]})
