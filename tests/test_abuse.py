"""Abuse: the API fuzzed from its own OpenAPI document (schemathesis), random multipart bodies
(hypothesis), hostile images and captures, a slow upload to the real gunicorn, header
injection, path traversal, secrets in logs and at rest, constant-time comparisons.

Every fuzzing run is bounded (a fixed number of examples, derandomized) so that CI is
deterministic and quick."""

from __future__ import annotations

import hmac
import io
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.openapi import document
from shared.db import transaction
from shared.keys import KeyOptions, create_key
from shared.models import ApiKey
from shared.secrets import hash_secret
from shared.settings import Settings
from tests.conftest import Key, create_test_app

ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

# --- 1. the OpenAPI document against the app (schemathesis) -----------------------------------

EXAMPLES_PER_OPERATION = 25
# The fuzzing key's credentials are fixed so that schemathesis itself sends them: it then knows
# which requests are authenticated, and its negative cases (a missing credential) stay negative.
FUZZ_API_ID = "ak_schemathesis"
FUZZ_API_SECRET = "schemathesis-api-secret-0123456789abcdef"
ST_CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20261126,
        "generation": {
            "max-examples": EXAMPLES_PER_OPERATION,
            "deterministic": True,
            "database": "none",
            "mode": "all",  # valid inputs and inputs that break the document
            # Unknown query parameters are ignored, as HTTP APIs commonly do.
            "allow-extra-parameters": True,
        },
        "auth": {
            "openapi": {
                "ApiId": {"api_key": FUZZ_API_ID},
                "ApiSecret": {"api_key": FUZZ_API_SECRET},
                "AdminToken": {"bearer": ADMIN_TOKEN},
            }
        },
    }
)
SCHEMA = schemathesis.openapi.from_dict(document(), config=ST_CONFIG)
URL_FIELDS = ("liveness_data_url", "callback_url", "webhook_url")


@SCHEMA.hook
def map_body(_context: Any, body: Any) -> Any:
    """Point generated URLs at a host that cannot exist (RFC 2606 ``.invalid``): the service
    still parses, checks and resolves them, but a fuzzing run never reaches a real server."""
    if not isinstance(body, dict):
        return body
    for name in URL_FIELDS:
        value = body.get(name)
        if not isinstance(value, str):
            continue
        try:
            host = urlsplit(value).hostname
        except ValueError:
            continue
        if host:
            body[name] = re.sub(re.escape(host), "fuzz.invalid", value, count=1, flags=re.I)
    return body


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def fuzz_app(base_settings: Settings, sessions: Any) -> Flask:
    # Public addresses only (as in production), a short sync wait (no worker runs here), and
    # a key of its own with the fixed credentials above.
    settings_ = base_settings.replace(
        allow_private_urls=False, sync_wait_s=0.2, download_timeout_s=1
    )
    with transaction(sessions) as s:
        if s.get(ApiKey, FUZZ_API_ID) is None:
            key, _ = create_key(
                s, settings_.secret_key, KeyOptions(name="schemathesis"), api_id=FUZZ_API_ID
            )
            key.secret_hash = hash_secret(settings_.secret_key, FUZZ_API_SECRET)
    return create_test_app(settings_)


@SCHEMA.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_the_app_conforms_to_its_openapi_document(case: Any, fuzz_app: Flask) -> None:
    checks = CHECKS
    if case.operation.path == "/readyz":
        # No worker runs here: 503 NOT_READY is this probe's documented answer, not a fault.
        checks = [c for c in CHECKS if c is not not_a_server_error]
    case.call_and_validate(app=fuzz_app, checks=checks)
