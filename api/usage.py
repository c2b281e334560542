"""Usage: the calling key's quota and daily counts; every key's for admins."""

from __future__ import annotations

from flask import Blueprint, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from antihack.api.app_helpers import json_response
from antihack.api.auth import admin_only, client_key, current_key
from antihack.api.context import db
from antihack.shared.domain.errors import ApiError
from antihack.shared.domain.quota import key_usage
from antihack.shared.infra.tables import ApiKey

bp = Blueprint("usage", __name__)
MAX_DAYS = 366


def _days() -> int:
    raw = request.args.get("days", "31")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_DAYS:
        raise ApiError("INVALID_ARGUMENT", f"days must be an integer from 1 to {MAX_DAYS}")
    return int(raw)


@bp.get("/v1/usage")
@client_key(None)
def my_usage() -> ResponseReturnValue:
    return json_response(key_usage(db(), current_key(), _days()))


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
    return json_response({"keys": [key_usage(db(), k, days) for k in keys]})
