"""The demo page, ``/demo``: a person follows the prompts in front of a webcam and sees the result.

The page plays an integrator's part: its backend (``POST /demo/session``) makes a capture
session for the demo key (ANTIHACK_DEMO_API_ID, which ``antihack serve`` creates), and the
browser SDK (``/sdk/antihack.js``) records the challenge and submits the capture itself with the
capture session's short-lived upload token. With no demo key set, both routes answer 404.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, render_template
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import NotFound

from antihack.api.app_helpers import json_response
from antihack.api.auth import rate_limit
from antihack.api.context import db, services
from antihack.shared.domain.capture_sessions import create_capture_session
from antihack.shared.domain.errors import ApiError
from antihack.shared.domain.scoring import HACK_THRESHOLD
from antihack.shared.infra.tables import ApiKey, utcnow

bp = Blueprint("demo", __name__)

# Scripts from this server only; the best frame is shown as a data: URL; the camera's stream is
# attached in script (srcObject), which media-src does not govern.
DEMO_CSP = (
    "default-src 'self'; img-src 'self' data:; media-src 'self' blob: mediastream:; "
    "style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def _demo_key() -> ApiKey:
    """The demo's API key; 404 when the demo is off."""
    api_id = services().settings.demo_api_id
    if not api_id:
        raise NotFound()
    key = db().get(ApiKey, api_id)
    if key is None or key.revoked_at is not None:
        raise ApiError("NOT_FOUND", f"the demo is off: its API key {api_id} is missing or revoked")
    if key.expires_at is not None and key.expires_at <= utcnow():
        raise ApiError("KEY_EXPIRED", f"the demo's API key {api_id} has expired")
    return key


@bp.get("/demo")
def demo_page() -> Response:
    _demo_key()
    html = render_template("demo.html", hack_threshold=HACK_THRESHOLD)
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = DEMO_CSP
    response.headers["Permissions-Policy"] = "camera=(self)"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/demo/session")
def demo_capture_session() -> ResponseReturnValue:
    """A capture session for the demo key: what an integrator's backend asks POST /v1/sessions."""
    key = _demo_key()
    # Anyone may open the demo, so its capture sessions pass the demo key's rate limit as a
    # client's POST would; the capture itself then counts against the key's quota.
    rate_limit(key, "the demo is busy")
    session = db()
    capture_session = create_capture_session(session, key, services().settings)
    session.commit()
    body = {"request_id": g.request_id, "status": "OK", **capture_session.body()}
    return json_response(body, 201, **{"Cache-Control": "no-store"})
