"""The browser capture SDK, ``/sdk/antihack.js``: one hand-written file, no build step."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

bp = Blueprint("sdk", __name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
SDK_FILE = "antihack.js"
# Integrators load the script from their own pages; a short max-age lets an upgraded server's
# SDK reach them within minutes, and the ETag makes a revalidation cheap.
SDK_MAX_AGE_S = 300


@bp.get("/sdk/antihack.js")
def antihack_js() -> Response:
    response = send_from_directory(
        STATIC_DIR, SDK_FILE, mimetype="text/javascript", max_age=SDK_MAX_AGE_S
    )
    # Any page may load it; CORS also lets an integrator pin it with Subresource Integrity.
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
