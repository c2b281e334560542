"""Authentication: client keys by the seed's headers, admins by a bearer token."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from flask import g, request

from antihack.api.context import db, services
from antihack.shared.domain.capture_sessions import UploadGrant, authorize_upload
from antihack.shared.domain.errors import ApiError
from antihack.shared.domain.keys import authenticate, check_usable
from antihack.shared.infra.tables import ApiKey

P = ParamSpec("P")
R = TypeVar("R")


def client_key(
    endpoint: str | None, *, upload_token: bool = False, cached: bool = False
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Require valid ``X-DF-API-ID``/``X-DF-API-SECRET`` permitted to call ``endpoint``
    (None: any valid key); submissions (POST) also pass the key's rate limit.

    With ``upload_token``, ``Authorization: Bearer <upload_token>`` (from POST /v1/sessions)
    may stand in for them: the request then acts as the capture session's key, and the view reads
    what the token allows from :func:`current_upload`.

    With ``cached``, the key may come from the process's key cache (ANTIHACK_KEY_CACHE_S), so
    the view sees its settings as they were up to that long ago: the submission and polling
    endpoints, which use only its id, permissions, quota and rate. Views that read the rest of
    the key (webhook state, usage) read it fresh.
    """

    def decorator(view: Callable[P, R]) -> Callable[P, R]:
        @wraps(view)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
            api_id = request.headers.get("X-DF-API-ID", "")
            api_secret = request.headers.get("X-DF-API-SECRET", "")
            bearer = _bearer()
            settings = services().settings
            if upload_token and bearer and not api_id and not api_secret:
                grant = authorize_upload(
                    db(), settings.secret_key, bearer, submitting=request.method == "POST"
                )
                key = check_usable(
                    db().get(ApiKey, grant.api_key_id),
                    grant.api_key_id,
                    "the upload token's API key was revoked",
                )
                g.upload = grant
            elif not api_id or not api_secret:
                if upload_token:
                    also = " (or Authorization: Bearer <upload_token>)"
                elif bearer:
                    also = "; an upload token submits a capture and reads its job, nothing else"
                else:
                    also = ""
                raise ApiError(
                    "UNAUTHORIZED", f"missing X-DF-API-ID or X-DF-API-SECRET header{also}"
                )
            else:
                cache = services().keys if cached else None
                key = authenticate(db(), settings.secret_key, api_id, api_secret, cache)
            if endpoint is not None and not key.permits(endpoint):
                raise ApiError("NO_PERMISSION", f"this API key may not call {endpoint}")
            g.key = key
            if request.method == "POST":
                rate_limit(key)
            return view(*args, **kwargs)

        return wrapped

    return decorator


def _bearer() -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def rate_limit(key: ApiKey, refusal: str | None = None) -> None:
    """Pass the key's rate limit, if it has one; ``refusal`` replaces the default reason."""
    if not key.rate_per_s:
        return
    decision = services().limiter.check(key.id, key.rate_per_s, key.burst)
    g.rate_limit = decision  # its headers go on the response, error or not
    if decision is not None and not decision.allowed:
        what = refusal or f"more than {key.rate_per_s:g} requests/s (burst {decision.limit})"
        raise ApiError(
            "RATE_LIMIT_EXCEEDED", f"{what}; retry in {decision.headers()['Retry-After']} s"
        )


def current_key() -> ApiKey:
    key: ApiKey = g.key
    return key


def current_upload() -> UploadGrant | None:
    """The upload token's grant when the request was authenticated by one, else None."""
    grant: UploadGrant | None = g.get("upload")
    return grant


def admin_only(view: Callable[P, R]) -> Callable[P, R]:
    """Require ``Authorization: Bearer <ANTIHACK_ADMIN_TOKEN>``."""

    @wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        expected = services().settings.admin_token
        if (
            scheme.lower() != "bearer"
            or not expected
            or not hmac.compare_digest(token.strip().encode(), expected.encode())
        ):
            raise ApiError("UNAUTHORIZED", "admin endpoints need Authorization: Bearer <token>")
        return view(*args, **kwargs)

    return wrapped
