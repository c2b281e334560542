"""Capture sessions: the integrator's backend asks for a nonce and a random challenge that the
capture SDK shows, records and submits (see shared/domain/capture_sessions.py)."""

from __future__ import annotations

from flask import Blueprint, g, request
from flask.typing import ResponseReturnValue

from antihack.api.app_helpers import json_response
from antihack.api.auth import client_key, current_key
from antihack.api.context import db, services
from antihack.shared.domain.capture_sessions import (
    capture_session_view,
    create_capture_session,
    get_owned_capture_session,
)
from antihack.shared.domain.errors import ApiError
from antihack.shared.domain.schemas import NewSession, Session, shown

bp = Blueprint("capture_sessions", __name__)


def _no_options() -> None:
    """The body is optional and takes no options yet: absent, empty or ``{}``."""
    if not request.get_data(cache=True):
        return
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError("INVALID_ARGUMENT", "the body must be empty or a JSON object")
    if body:
        names = sorted(str(name)[:40] for name in body)[:10]
        raise ApiError("INVALID_ARGUMENT", f"unknown fields {names}; this endpoint takes none")


@bp.post("/v1/sessions")
@client_key("sessions")
def create() -> ResponseReturnValue:
    """A new capture session; not charged to the quota (its capture will be)."""
    _no_options()
    session = db()
    capture_session = create_capture_session(session, current_key(), services().settings)
    session.commit()
    fields = {"request_id": g.request_id, "status": "OK", **capture_session.body()}
    body = NewSession.model_validate(fields)
    return json_response(shown(body), 201)  # light absent, not null, without LIGHT


@bp.get("/v1/sessions/<session_id>")
@client_key("sessions")
def show(session_id: str) -> ResponseReturnValue:
    """A capture session's state, and the job that redeemed it."""
    capture_session = get_owned_capture_session(db(), current_key(), session_id)
    fields = {"request_id": g.request_id, "status": "OK", **capture_session_view(capture_session)}
    body = Session.model_validate(fields)
    return json_response(shown(body))
