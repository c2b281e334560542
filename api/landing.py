"""``/``: a small landing page that links to what a newcomer looks for, and ``/favicon.ico``."""

from __future__ import annotations

from html import escape

from flask import Blueprint, Response, request

from antihack.api.context import services

bp = Blueprint("landing", __name__)

# A shield with a tick, in the admin page's blue: small enough to inline, any size renders it.
FAVICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    '<path d="M16 2 4 7v8c0 7.5 5.1 13.3 12 15 6.9-1.7 12-7.5 12-15V7z" fill="#1f6feb"/>'
    '<path d="m10 16 4 4 8-8" fill="none" stroke="#fff" stroke-width="3"/></svg>'
)
FAVICON_MAX_AGE_S = 86400

LANDING_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; base-uri 'none'"


def _links(demo: bool) -> list[tuple[str, str]]:
    links = [
        ("/docs", "API reference (Swagger UI) — /openapi.json is the OpenAPI 3.1 document"),
        ("/admin", "Admin dashboard: API keys, usage, webhook deliveries (admin token)"),
    ]
    if demo:
        links.append(("/demo", "Demo: try a liveness check with your webcam"))
    links += [
        ("/healthz", "Liveness: the process answers"),
        ("/readyz", "Readiness: database, Redis and a worker"),
    ]
    return links


@bp.get("/")
def landing() -> Response:
    items = "\n".join(
        f'    <li><a href="{escape(href)}">{escape(href)}</a> — {escape(text)}</li>'
        for href, text in _links(bool(services().settings.demo_api_id))
    )
    html = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>antihack</title>
  <link rel="icon" type="image/svg+xml" href="/favicon.ico">
  <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;
line-height:1.5}}a{{color:#1f6feb}}</style>
</head>
<body>
  <h1>antihack</h1>
  <p>Face liveness anti-spoofing: send a capture to
  <code>POST /face/liveness_anti_hack</code> and get a live probability back.</p>
  <ul>
{items}
  </ul>
</body>
</html>
"""
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = LANDING_CSP
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/favicon.ico")
def favicon() -> Response:
    response = Response(FAVICON_SVG, mimetype="image/svg+xml")
    response.headers["Cache-Control"] = f"public, max-age={FAVICON_MAX_AGE_S}"
    response.add_etag()
    response.make_conditional(request)
    return response
