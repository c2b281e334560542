"""The OpenAPI 3.1 document (``/openapi.json``) and Swagger UI (``/docs``, assets from the
``flask-swagger-ui`` wheel, served from its installed directory: no CDN).

Every schema (``components/schemas``: the request and response bodies, the seed's result and
error, and the named vocabularies) is generated from the pydantic models in
``shared/domain/schemas.py``, which also validate the requests and shape the answers; the paths,
parameters, headers and responses are written here as a dict. ``tests/test_openapi.py`` validates
the document and checks that every URL rule of the app is in it.
"""

from __future__ import annotations

from functools import cache
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, send_from_directory
from flask.typing import ResponseReturnValue

from antihack.api.app_helpers import json_response
from antihack.api.webhooks import DEFAULT_PAGE
from antihack.shared.domain.schemas import UsageQuery, component_schemas, query_parameter
from antihack.shared.domain.webhooks import MAX_PAGE

bp = Blueprint("openapi", __name__)

JSON = "application/json"
MULTIPART = "multipart/form-data"

# --- building blocks ------------------------------------------------------------------------


def _schema(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _response(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _param(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


def _header(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


def _json(description: str, schema: str, **headers: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": _schema(schema)}},
    }
    if headers:
        out["headers"] = headers
    return out


RATE_HEADERS = {
    "RateLimit-Policy": _header("RateLimit-Policy"),
    "RateLimit": _header("RateLimit"),
}
Security = list[dict[str, list[str]]]
CLIENT: Security = [{"ApiId": [], "ApiSecret": []}]
# The submit and read endpoints a browser calls: a key, or a capture session's upload token.
CLIENT_OR_UPLOAD: Security = [*CLIENT, {"UploadToken": []}]
ADMIN: Security = [{"AdminToken": []}]
PUBLIC: Security = []

CLIENT_ERRORS = {
    "400": _response("BadRequest"),
    "401": _response("Unauthorized"),
    "403": _response("Forbidden"),
    "500": _response("InternalError"),
}
ADMIN_ERRORS = {
    "400": _response("BadRequest"),
    "401": _response("Unauthorized"),
    "500": _response("InternalError"),
}


def _op(
    tag: str,
    summary: str,
    responses: dict[str, Any],
    *,
    operation_id: str,
    security: Security,
    description: str | None = None,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"tags": [tag], "summary": summary, "operationId": operation_id}
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = body
    op["security"] = security
    # In order of status code, however the caller merged its parts (e.g. **CLIENT_ERRORS).
    op["responses"] = dict(sorted(responses.items()))
    return op


# --- schemas --------------------------------------------------------------------------------

# Every body and named type: the models of shared/domain/schemas.py generate them.
SCHEMAS: dict[str, Any] = component_schemas()

# --- reusable parts -------------------------------------------------------------------------

HEADERS: dict[str, Any] = {
    "RateLimit-Policy": {
        "description": "IETF httpapi draft: burst `q` per window `w` seconds "
        '(e.g. `"default";q=10;w=5`); on submissions by keys with a rate.',
        "schema": {"type": "string"},
    },
    "RateLimit": {
        "description": "Requests `r` left now and seconds `t` until the bucket is full "
        '(e.g. `"default";r=9;t=1`).',
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds until a refused request may be retried.",
        "schema": {"type": "integer", "minimum": 1},
    },
    "Location": {
        "description": "The job's URL (GET /v1/jobs/{request_id}).",
        "schema": {"type": "string", "format": "uri"},
    },
    "Preference-Applied": {
        "description": "`respond-async` when the request's Prefer header was honoured.",
        "schema": {"type": "string"},
    },
}

PARAMETERS: dict[str, Any] = {
    "IdempotencyKey": {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "Same key and payload within 24 h: the original job, not charged again; "
        "same key with another payload: 422.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    },
    "Prefer": {
        "name": "Prefer",
        "in": "header",
        "required": False,
        "description": "`respond-async` (RFC 7240): answer 202 at once instead of waiting.",
        "schema": {"type": "string", "examples": ["respond-async"]},
    },
    "RequestIdPath": {
        "name": "request_id",
        "in": "path",
        "required": True,
        "schema": _schema("RequestId"),
    },
    "ApiIdPath": {"name": "api_id", "in": "path", "required": True, "schema": {"type": "string"}},
    "SessionIdPath": {
        "name": "session_id",
        "in": "path",
        "required": True,
        "schema": _schema("SessionId"),
    },
    "ApiIdQuery": {
        "name": "api_id",
        "in": "query",
        "required": False,
        "description": "One key (default: every key).",
        "schema": {"type": "string"},
    },
    "Days": query_parameter(UsageQuery, "days"),
    "DeliveryIdPath": {
        "name": "delivery_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    },
    "DeliveryStatus": {
        "name": "status",
        "in": "query",
        "required": False,
        "schema": _schema("DeliveryState"),
    },
    "Limit": {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE},
    },
    "Before": {
        "name": "before",
        "in": "query",
        "required": False,
        "description": "`next_before` of the previous page.",
        "schema": {"type": "string"},
    },
    "DocsAsset": {
        "name": "filename",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    },
}


def _error(description: str, **headers: dict[str, str]) -> dict[str, Any]:
    return _json(description, "Error", **headers)


RESPONSES: dict[str, Any] = {
    "BadRequest": _error(
        "INVALID_ARGUMENT (missing or doubled source, bad return_*, empty, garbage or oversized "
        "capture, unknown image_id, not multipart, a NUL character in the path, query or "
        "headers, a body that did not arrive within ANTIHACK_UPLOAD_TIMEOUT_S), DETETION_FAILED "
        "(a frame does not decode), DOWNLOAD_ERROR (liveness_data_url refused or failed)."
    ),
    "Unauthorized": _error("UNAUTHORIZED (missing, wrong or revoked credentials) or KEY_EXPIRED."),
    "Forbidden": _error(
        "NO_PERMISSION, OUT_OF_QUOTA or RATE_LIMIT_EXCEEDED (with Retry-After).",
        **RATE_HEADERS,
        **{"Retry-After": _header("Retry-After")},
    ),
    "NotFound": _error("NOT_FOUND: unknown, or another key's."),
    "TooLarge": _error("INVALID_ARGUMENT: body larger than ANTIHACK_MAX_UPLOAD_BYTES."),
    "IdempotencyConflict": _error("INVALID_ARGUMENT: Idempotency-Key reused with another payload."),
    "InternalError": _error("INTERNAL_ERROR (never with a traceback)."),
}

# --- paths ----------------------------------------------------------------------------------

_SUBMIT_BODY = {
    "required": True,
    "content": {
        MULTIPART: {
            "schema": _schema("Submission"),
            "encoding": {"liveness_data_file": {"contentType": "application/octet-stream"}},
        }
    },
}
_SUBMIT_ERRORS = {
    **CLIENT_ERRORS,
    "413": _response("TooLarge"),
    "422": _response("IdempotencyConflict"),
}
_ACCEPTED = _json(
    "Accepted as a job.",
    "Accepted",
    Location=_header("Location"),
    **RATE_HEADERS,
)

_ADMIN_LOCATION = {"description": "/admin", "schema": {"type": "string"}}
_HTML_PAGE: dict[str, Any] = {
    "description": "HTML.",
    "content": {"text/html": {"schema": {"type": "string"}}},
}

PATHS: dict[str, Any] = {
    "/face/liveness_anti_hack": {
        "post": _op(
            "client",
            "Judge a liveness capture (the seed endpoint)",
            {
                "200": _json("The result (the seed's body).", "SeedResult", **RATE_HEADERS),
                "202": {
                    **_ACCEPTED,
                    "description": "Still running after ANTIHACK_SYNC_WAIT_S, or Prefer: "
                    "respond-async was sent; poll job_url.",
                    "headers": {
                        **_ACCEPTED["headers"],
                        "Preference-Applied": _header("Preference-Applied"),
                    },
                },
                **_SUBMIT_ERRORS,
            },
            operation_id="livenessAntiHack",
            security=CLIENT_OR_UPLOAD,
            description="Waits up to ANTIHACK_SYNC_WAIT_S for the analysis and answers with "
            "the seed's body: 200 with `score` (0.98 or more: hack), or the job's error with "
            "its seed HTTP code. Every submission is a job that can also be polled.",
            parameters=[_param("IdempotencyKey"), _param("Prefer")],
            body=_SUBMIT_BODY,
        )
    },
    "/v1/jobs": {
        "post": _op(
            "client",
            "Submit a capture as a job",
            {"202": _ACCEPTED, **_SUBMIT_ERRORS},
            operation_id="submitJob",
            security=CLIENT_OR_UPLOAD,
            description="The same fields as /face/liveness_anti_hack; always 202 at once. "
            "Both submit endpoints take a capture session's upload token in place of the "
            "key's headers, and answer CORS preflights (any origin; headers Authorization, "
            "Content-Type, Prefer, Idempotency-Key).",
            parameters=[_param("IdempotencyKey")],
            body=_SUBMIT_BODY,
        )
    },
    "/v1/jobs/{request_id}": {
        "parameters": [_param("RequestIdPath")],
        "get": _op(
            "client",
            "Read a job",
            {"200": _json("The job.", "Job"), "404": _response("NotFound"), **CLIENT_ERRORS},
            operation_id="getJob",
            security=CLIENT_OR_UPLOAD,
            description="With an upload token: only the job that token created, until 10 "
            "minutes after its session expired (CORS: any origin).",
        ),
        "delete": _op(
            "client",
            "Delete a job and every trace of it now",
            {
                "200": _json("Deleted; a second DELETE answers 404.", "JobInputDeleted"),
                "404": _response("NotFound"),
                "409": _error("INVALID_ARGUMENT: the job is RUNNING; delete it once finished."),
                **CLIENT_ERRORS,
            },
            operation_id="deleteJob",
            security=CLIENT,
            description="Removes the job row, its input (the capture), its result (with the "
            "best-frame image_base64), its replay fingerprints, its webhook deliveries and "
            "their attempts, and the capture session it redeemed; GET then answers 404. A "
            "QUEUED job is cancelled; a RUNNING one is refused (409). The quota charged for "
            "the job is not given back. Without a DELETE, all of it is purged "
            "ANTIHACK_RETENTION_DAYS after the job finished.",
        ),
    },
    "/v1/sessions": {
        "post": _op(
            "client",
            "Start a capture session: a nonce, a random challenge, an upload token",
            {
                "201": _json("The session.", "NewSession", **RATE_HEADERS),
                **CLIENT_ERRORS,
            },
            operation_id="createSession",
            security=CLIENT,
            description="Called by the integrator's backend (permission `sessions`; rate "
            "limited, not charged to the quota). The challenge is drawn at random from "
            "ANTIHACK_SESSION_CHALLENGES (ANTIHACK_SESSION_CHALLENGE_LENGTH distinct steps); "
            "the session expires after ANTIHACK_SESSION_TTL_S. A capture that carries the "
            "nonce is checked when submitted: a nonce of another key or unknown, expired or "
            "already used, other challenges, or tagged frames out of the challenge's order "
            "make the job a hack (score >= 0.99; reasons `session_unknown`, "
            "`session_expired`, `session_reused`, `session_challenge_mismatch`, "
            "`session_step_order`; `session_required` when a key that requires sessions "
            "sends a capture without one).",
            body={"required": False, "content": {JSON: {"schema": _schema("SessionOptions")}}},
        )
    },
    "/v1/sessions/{session_id}": {
        "parameters": [_param("SessionIdPath")],
        "get": _op(
            "client",
            "Read a capture session: its state and the job that used it",
            {
                "200": _json("The session.", "Session"),
                "404": _response("NotFound"),
                **CLIENT_ERRORS,
            },
            operation_id="getSession",
            security=CLIENT,
        ),
    },
    "/v1/jobs/{request_id}/redeliver": {
        "parameters": [_param("RequestIdPath")],
        "post": _op(
            "webhooks",
            "Send a finished job's webhook again, as a new delivery",
            {
                "202": _json("The new delivery, its first attempt queued.", "WebhookDelivery"),
                "404": _response("NotFound"),
                **CLIENT_ERRORS,
            },
            operation_id="redeliverJob",
            security=CLIENT,
        ),
    },
    "/face/liveness_image": {
        "post": _op(
            "client",
            "Upload an image for the H5 flow",
            {
                "200": _json("Stored; submit it by image_id.", "ImageUploaded", **RATE_HEADERS),
                "413": _response("TooLarge"),
                **CLIENT_ERRORS,
            },
            operation_id="uploadImage",
            security=CLIENT,
            description="The image is usable by the same key as `image_id` for "
            "ANTIHACK_IMAGE_TTL_S.",
            body={"required": True, "content": {MULTIPART: {"schema": _schema("ImageUpload")}}},
        )
    },
    "/v1/usage": {
        "get": _op(
            "client",
            "The calling key's quota position and per-day counts",
            {"200": _json("Usage.", "Usage"), **CLIENT_ERRORS},
            operation_id="myUsage",
            security=CLIENT,
            parameters=[_param("Days")],
        )
    },
    "/v1/webhooks/deliveries": {
        "get": _op(
            "webhooks",
            "The calling key's webhook deliveries, newest first",
            {
                "200": _json("A page of deliveries.", "WebhookDeliveryPage"),
                **CLIENT_ERRORS,
            },
            operation_id="myDeliveries",
            security=CLIENT,
            parameters=[_param("DeliveryStatus"), _param("Limit"), _param("Before")],
        )
    },
    "/v1/webhooks/deliveries/{delivery_id}": {
        "parameters": [_param("DeliveryIdPath")],
        "get": _op(
            "webhooks",
            "One delivery with its attempts",
            {
                "200": _json("The delivery.", "WebhookDelivery"),
                "404": _response("NotFound"),
                **CLIENT_ERRORS,
            },
            operation_id="myDelivery",
            security=CLIENT,
        ),
    },
    "/v1/webhooks/deliveries/{delivery_id}/redeliver": {
        "parameters": [_param("DeliveryIdPath")],
        "post": _op(
            "webhooks",
            "Send a delivery again (same webhook-id, schedule restarted)",
            {
                "202": _json("The delivery, its attempt queued.", "WebhookDelivery"),
                "404": _response("NotFound"),
                **CLIENT_ERRORS,
            },
            operation_id="redeliver",
            security=CLIENT,
        ),
    },
    "/admin/keys": {
        "get": _op(
            "admin",
            "List keys",
            {"200": _json("Every key.", "KeyList"), **ADMIN_ERRORS},
            operation_id="listKeys",
            security=ADMIN,
        ),
        "post": _op(
            "admin",
            "Create a key (its secrets are shown only here and on rotate)",
            {
                "201": _json("The key with its secrets.", "KeyWithSecrets"),
                **ADMIN_ERRORS,
            },
            operation_id="createKey",
            security=ADMIN,
            body={
                "required": True,
                "content": {JSON: {"schema": _schema("KeyCreate")}},
            },
        ),
    },
    "/admin/keys/{api_id}": {
        "parameters": [_param("ApiIdPath")],
        "get": _op(
            "admin",
            "Show a key",
            {"200": _json("The key.", "Key"), "404": _response("NotFound"), **ADMIN_ERRORS},
            operation_id="showKey",
            security=ADMIN,
        ),
        "patch": _op(
            "admin",
            "Change a key's limits, expiry, permissions or webhook",
            {
                "200": _json("The key.", "Key"),
                "404": _response("NotFound"),
                **ADMIN_ERRORS,
            },
            operation_id="updateKey",
            security=ADMIN,
            body={"required": True, "content": {JSON: {"schema": _schema("KeyOptions")}}},
        ),
        "delete": _op(
            "admin",
            "Revoke a key (its requests get 401 from now on)",
            {"200": _json("The key.", "Key"), "404": _response("NotFound"), **ADMIN_ERRORS},
            operation_id="revokeKey",
            security=ADMIN,
        ),
    },
    "/admin/keys/{api_id}/rotate": {
        "parameters": [_param("ApiIdPath")],
        "post": _op(
            "admin",
            "Replace a key's secrets",
            {
                "200": _json("The key with its new secrets.", "KeyWithSecrets"),
                "404": _response("NotFound"),
                **ADMIN_ERRORS,
            },
            operation_id="rotateKey",
            security=ADMIN,
        ),
    },
    "/admin/usage": {
        "get": _op(
            "admin",
            "Quota position and per-day counts of one key or every key",
            {
                "200": _json("Usage per key.", "UsageList"),
                "404": _response("NotFound"),
                **ADMIN_ERRORS,
            },
            operation_id="allUsage",
            security=ADMIN,
            parameters=[_param("ApiIdQuery"), _param("Days")],
        )
    },
    "/admin/webhooks/deliveries": {
        "get": _op(
            "admin",
            "Every key's webhook deliveries, newest first",
            {
                "200": _json("A page of deliveries.", "WebhookDeliveryPage"),
                **ADMIN_ERRORS,
            },
            operation_id="allDeliveries",
            security=ADMIN,
            parameters=[
                _param("ApiIdQuery"),
                _param("DeliveryStatus"),
                _param("Limit"),
                _param("Before"),
            ],
        )
    },
    "/admin/webhooks/deliveries/{delivery_id}": {
        "parameters": [_param("DeliveryIdPath")],
        "get": _op(
            "admin",
            "Any delivery with its attempts",
            {
                "200": _json("The delivery.", "WebhookDelivery"),
                "404": _response("NotFound"),
                **ADMIN_ERRORS,
            },
            operation_id="anyDelivery",
            security=ADMIN,
        ),
    },
    "/admin": {
        "get": _op(
            "admin",
            "The admin page (HTML): keys and quota, usage per day, failures, webhooks",
            {
                "200": _HTML_PAGE,
                "404": {
                    **_HTML_PAGE,
                    "description": "Signed in, `key` names no API key: the page for every "
                    "key, with that said.",
                },
            },
            operation_id="adminPage",
            security=[{}, {"AdminSession": []}],
            description="Without a valid session cookie: the sign-in form. With one: the "
            "dashboard, its usage chart for every key or for `key`.",
            parameters=[
                {
                    "name": "key",
                    "in": "query",
                    "required": False,
                    "description": "Show the usage chart of this API key only.",
                    "schema": {"type": "string"},
                }
            ],
        )
    },
    "/admin/login": {
        "post": _op(
            "admin",
            "Sign in to the admin page with ANTIHACK_ADMIN_TOKEN",
            {
                "303": {
                    "description": "Signed in: the session cookie is set; go to /admin.",
                    "headers": {"Location": _ADMIN_LOCATION},
                    "content": {"text/html": {"schema": {"type": "string"}}},
                },
                "401": {**_HTML_PAGE, "description": "Wrong token: the form again, no cookie."},
                "403": {
                    **_HTML_PAGE,
                    "description": "Refused: no Origin or Referer of this host (cross-site).",
                },
            },
            operation_id="adminLogin",
            security=PUBLIC,
            description="A form post from the sign-in page. The cookie is signed, HttpOnly, "
            "SameSite=Strict, Secure over HTTPS, and valid for 8 hours.",
            body={
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "properties": {"token": {"type": "string"}},
                            "required": ["token"],
                        }
                    }
                },
            },
        )
    },
    "/admin/logout": {
        "post": _op(
            "admin",
            "Sign out of the admin page",
            {
                "303": {
                    "description": "The session cookie is cleared; go to /admin.",
                    "headers": {"Location": _ADMIN_LOCATION},
                    "content": {"text/html": {"schema": {"type": "string"}}},
                },
                "403": {
                    **_HTML_PAGE,
                    "description": "Refused: cross-site, or the form's token does not match "
                    "the session.",
                },
            },
            operation_id="adminLogout",
            security=[{}, {"AdminSession": []}],
            body={
                "required": False,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "properties": {"csrf": {"type": "string"}},
                        }
                    }
                },
            },
        )
    },
    "/": {
        "get": _op(
            "ops",
            "Landing page: links to /docs, /admin, /demo (when on), /healthz and /readyz",
            {"200": _HTML_PAGE},
            operation_id="landing",
            security=PUBLIC,
        )
    },
    "/favicon.ico": {
        "get": _op(
            "ops",
            "The site icon (SVG; cached for a day, with an ETag)",
            {
                "200": {
                    "description": "SVG image.",
                    "content": {"image/svg+xml": {"schema": {"type": "string"}}},
                },
                "304": {"description": "Not modified (If-None-Match)."},
            },
            operation_id="favicon",
            security=PUBLIC,
        )
    },
    "/healthz": {
        "get": _op(
            "ops",
            "Liveness: the process answers",
            {"200": _json("Up.", "Health")},
            operation_id="healthz",
            security=PUBLIC,
        )
    },
    "/readyz": {
        "get": _op(
            "ops",
            "Readiness: database, Redis, a recent worker heartbeat and consumption",
            {
                "200": _json("Ready.", "Readiness"),
                "503": _json("Not ready; `checks` says what is missing.", "Readiness"),
            },
            operation_id="readyz",
            security=PUBLIC,
            description=(
                "`checks.consumption` is `stalled: …` when messages wait in a queue and no "
                "worker started or finished a task from it for ANTIHACK_WORKER_STALL_S."
            ),
        )
    },
    "/metrics": {
        "get": _op(
            "ops",
            "Prometheus metrics",
            {
                "200": {
                    "description": "Prometheus text exposition format 0.0.4.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": _response("Unauthorized"),
            },
            operation_id="metrics",
            security=[{}, {"MetricsToken": []}],
            description="Open unless ANTIHACK_METRICS_TOKEN is set, then bearer.",
        )
    },
    "/openapi.json": {
        "get": _op(
            "ops",
            "This document",
            {
                "200": {
                    "description": "OpenAPI 3.1.",
                    "content": {JSON: {"schema": {"type": "object"}}},
                }
            },
            operation_id="openapi",
            security=PUBLIC,
        )
    },
    "/docs": {
        "get": _op(
            "ops",
            "Swagger UI for this document",
            {"200": _HTML_PAGE},
            operation_id="docs",
            security=PUBLIC,
        )
    },
    "/docs/{filename}": {
        "parameters": [_param("DocsAsset")],
        "get": _op(
            "ops",
            "Swagger UI's assets (served from the installed package)",
            {"200": {"description": "The file."}, "404": _response("NotFound")},
            operation_id="docsAsset",
            security=PUBLIC,
        ),
    },
    "/sdk/antihack.js": {
        "get": _op(
            "browser",
            "The browser capture SDK (global `Antihack`; no build step)",
            {
                "200": {
                    "description": "JavaScript (ES2017). Cached for 5 minutes, with an ETag.",
                    "content": {"text/javascript": {"schema": {"type": "string"}}},
                }
            },
            operation_id="sdkScript",
            security=PUBLIC,
            description="`Antihack.capture({session, baseUrl, video, submit, onPrompt, "
            "onProgress, onError})` records the session's challenges with the camera and "
            "submits the capture directly (the session's upload token) or through a callback "
            "to the integrator's backend. See the README.",
        )
    },
    "/demo": {
        "get": _op(
            "browser",
            "The demo page: follow the prompts in front of a webcam, see the result",
            {
                "200": _HTML_PAGE,
                "404": _response("NotFound"),
            },
            operation_id="demoPage",
            security=PUBLIC,
            description="Served when ANTIHACK_DEMO_API_ID names the demo key (`antihack "
            "serve` sets it unless --no-demo); 404 otherwise.",
        )
    },
    "/demo/session": {
        "post": _op(
            "browser",
            "A capture session for the demo key (the demo page's backend)",
            {
                "201": _json("The session, as POST /v1/sessions answers.", "NewSession"),
                "401": _response("Unauthorized"),
                "403": _response("Forbidden"),
                "404": _response("NotFound"),
                "500": _response("InternalError"),
            },
            operation_id="demoSession",
            security=PUBLIC,
            description="What an integrator's backend does with its own key, done for the "
            "demo key; rate-limited by the demo key's rate. 404 when the demo is off.",
        )
    },
}

WEBHOOK_HEADERS = [
    {
        "name": "webhook-id",
        "in": "header",
        "required": True,
        "description": "The delivery id; the same on every retry (deduplicate on it).",
        "schema": {"type": "string"},
    },
    {
        "name": "webhook-timestamp",
        "in": "header",
        "required": True,
        "description": "Unix seconds of this attempt.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    {
        "name": "webhook-signature",
        "in": "header",
        "required": True,
        "description": "`v1,<base64 HMAC-SHA256 of id.timestamp.body>` with the key's whsec_ "
        "secret, space-separated while a rotated secret overlaps.",
        "schema": {"type": "string"},
    },
]

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "antihack",
        "summary": "Self-hosted face-liveness anti-hack service",
        "description": "`/face/liveness_anti_hack` is wire-compatible with the commercial "
        "endpoint it imitates (fields, status strings, HTTP codes); every submission is also a "
        "job that can be polled or delivered by a signed webhook. Every error body is "
        "`{status, reason, request_id}`.",
        "version": "0",
        "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
    },
    "servers": [{"url": "/"}],
    "tags": [
        {"name": "client", "description": "X-DF-API-ID + X-DF-API-SECRET"},
        {"name": "webhooks", "description": "deliveries of the liveness.completed webhook"},
        {"name": "admin", "description": "Authorization: Bearer ANTIHACK_ADMIN_TOKEN"},
        {"name": "ops", "description": "probes, metrics, this document"},
        {"name": "browser", "description": "the browser capture SDK and the demo page"},
    ],
    "paths": PATHS,
    "webhooks": {
        "liveness.completed": {
            "post": {
                "summary": "A job finished (sent to callback_url or the key's webhook_url)",
                "description": "Success is a 2xx within ANTIHACK_WEBHOOK_TIMEOUT_S; otherwise "
                "retried with back-off (ANTIHACK_WEBHOOK_SCHEDULE_S); 410 Gone disables the "
                "endpoint.",
                "operationId": "livenessCompleted",
                "parameters": WEBHOOK_HEADERS,
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _schema("LivenessCompleted")}},
                },
                "responses": {"2XX": {"description": "Received."}},
            }
        }
    },
    "components": {
        "schemas": SCHEMAS,
        "responses": RESPONSES,
        "parameters": PARAMETERS,
        "headers": HEADERS,
        "securitySchemes": {
            "ApiId": {"type": "apiKey", "in": "header", "name": "X-DF-API-ID"},
            "ApiSecret": {"type": "apiKey", "in": "header", "name": "X-DF-API-SECRET"},
            "AdminToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "ANTIHACK_ADMIN_TOKEN",
            },
            "UploadToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "A capture session's `upload_token` (POST /v1/sessions), in "
                "place of the key's headers, for a browser: it submits the one capture whose "
                "`session_nonce` is the session's (else 403), once (then 401), before the "
                "session expires, as the session's key (its permissions, rate and quota); "
                "then it reads that job only.",
            },
            "AdminSession": {
                "type": "apiKey",
                "in": "cookie",
                "name": "antihack_admin",
                "description": "the admin page's session, from POST /admin/login",
            },
            "MetricsToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "ANTIHACK_METRICS_TOKEN, when set",
            },
        },
    },
}


@cache
def document() -> dict[str, Any]:
    """The document with this installation's version filled in."""
    try:
        version = metadata.version("antihack")
    except metadata.PackageNotFoundError:
        version = "0"
    return {**DOCUMENT, "info": {**DOCUMENT["info"], "version": version}}


# --- Swagger UI -----------------------------------------------------------------------------

DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>antihack API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="stylesheet" href="/docs/index.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/swagger-ui-standalone-preset.js"></script>
  <script src="/docs/antihack-init.js"></script>
</body>
</html>
"""

# A file, not an inline script, so that the page works under a strict Content-Security-Policy.
INIT_FILE = "antihack-init.js"
INIT_JS = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,  // no badge fetched from swagger.io: nothing leaves this server
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout"
  });
};
"""

DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
)


@cache
def swagger_ui_dir() -> Path:
    """Swagger UI's ``dist`` folder inside the installed ``flask-swagger-ui`` package."""
    return Path(str(resources.files("flask_swagger_ui") / "dist"))


@bp.get("/openapi.json")
def openapi_json() -> ResponseReturnValue:
    return json_response(document())


@bp.get("/docs")
def docs() -> Response:
    response = Response(DOCS_HTML, mimetype="text/html")
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response


@bp.get("/docs/<path:filename>")
def docs_asset(filename: str) -> Response:
    if filename == INIT_FILE:
        return Response(INIT_JS, mimetype="text/javascript")
    return send_from_directory(swagger_ui_dir(), filename, max_age=86400)
