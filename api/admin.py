"""Admin endpoints under ``/admin``: manage API keys (bearer ``ANTIHACK_ADMIN_TOKEN``)."""

from __future__ import annotations

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from antihack.api.app_helpers import json_response
from antihack.api.auth import admin_only
from antihack.api.context import db, services
from antihack.shared.domain.errors import ApiError
from antihack.shared.domain.keys import (
    create_key,
    get_key,
    key_view,
    list_keys,
    revoke_key,
    rotate_key,
    secrets_view,
    update_key,
)
from antihack.shared.domain.schemas import KeyCreate, KeyOptions

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _options(model: type[KeyOptions] = KeyOptions) -> KeyOptions:
    """The JSON body as ``model``; after ``admin_only``, so a bad token is 401 before any 400."""
    body = request.get_json(silent=True)
    if body is None and request.get_data(cache=True):
        raise ApiError("INVALID_ARGUMENT", "the body must be a JSON object")
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ApiError("INVALID_ARGUMENT", "the body must be a JSON object")
    return model.parse(body)


@bp.post("/keys")
@admin_only
def create() -> ResponseReturnValue:
    session = db()
    settings = services().settings
    key, new = create_key(
        session,
        settings.secret_key,
        _options(KeyCreate),
        allow_private_urls=settings.allow_private_urls,
    )
    session.commit()
    return json_response(secrets_view(key, new), 201)


@bp.get("/keys")
@admin_only
def index() -> ResponseReturnValue:
    return json_response({"keys": [key_view(k) for k in list_keys(db())]})


@bp.get("/keys/<api_id>")
@admin_only
def show(api_id: str) -> ResponseReturnValue:
    return json_response(key_view(get_key(db(), api_id)))


@bp.patch("/keys/<api_id>")
@admin_only
def update(api_id: str) -> ResponseReturnValue:
    session = db()
    allow = services().settings.allow_private_urls
    key = update_key(session, api_id, _options(), allow_private_urls=allow)
    session.commit()
    services().keys.forget(api_id)  # this process at once; others within the cache's bound
    return json_response(key_view(key))


@bp.post("/keys/<api_id>/rotate")
@admin_only
def rotate(api_id: str) -> ResponseReturnValue:
    session = db()
    key, new = rotate_key(session, services().settings.secret_key, api_id)
    session.commit()
    services().keys.forget(api_id)  # this process at once; others within the cache's bound
    return json_response(secrets_view(key, new))


@bp.delete("/keys/<api_id>")
@admin_only
def revoke(api_id: str) -> ResponseReturnValue:
    session = db()
    key = revoke_key(session, api_id)
    session.commit()
    services().keys.forget(api_id)  # this process at once; others within the cache's bound
    return json_response(key_view(key))
