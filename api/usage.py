"""Usage: the calling key's quota and daily counts; every key's for admins."""

from __future__ import annotations

from flask import Blueprint, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from antihack.api.app_helpers import model_response
from antihack.api.auth import admin_only, client_key, current_key
from antihack.api.context import db
from antihack.shared.domain.errors import ApiError
from antihack.shared.domain.quota import key_usage
from antihack.shared.domain.schemas import Usage, UsageList, UsageQuery
from antihack.shared.infra.tables import ApiKey

bp = Blueprint("usage", __name__)


def _days() -> int:
    """Read in the view, after the key or admin check: a bad token is 401 before any 400."""
    return UsageQuery.parse(request.args.to_dict()).days


@bp.get("/v1/usage")
@client_key(None)
def my_usage() -> ResponseReturnValue:
    return model_response(Usage, key_usage(db(), current_key(), _days()))


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
    return model_response(UsageList, {"keys": [key_usage(db(), k, days) for k in keys]})
