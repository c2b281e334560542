from __future__ import annotations
import time
from typing import Any
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from api.openapi import document
from shared.db import transaction
from shared.keys import KeyOptions, create_key
from tests.conftest import create_test_app

CONFIG = schemathesis.Config.from_dict({"seed": 1, "generation": {"max-examples": 25, "deterministic": True, "database": "none", "mode": "all"}})
SCHEMA = schemathesis.openapi.from_dict(document(), config=CONFIG)
SEEN: list = []

@pytest.fixture(scope="module")
def fz(base_settings, sessions):
    settings_ = base_settings.replace(allow_private_urls=False, sync_wait_s=0.2, download_timeout_s=1)
    app = create_test_app(settings_)
    with transaction(sessions) as s:
        key, new = create_key(s, settings_.secret_key, KeyOptions(name="fuzz"))
        kid = key.id
    return app, {"X-DF-API-ID": kid, "X-DF-API-SECRET": new.api_secret}

@SCHEMA.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_probe(case: Any, fz: Any) -> None:
    app, client = fz
    sec = case.operation.definition.raw.get("security")
    hdr = {"Authorization": "Bearer test-admin-token"} if sec == [{"AdminToken": []}] else client
    t = time.monotonic()
    resp = case.call(app=app, headers=hdr)
    SEEN.append((case.operation.label, resp.status_code, round(time.monotonic()-t, 3), str(case.body)[:150], str(case.query)[:80]))
    with open("/tmp/st/seen.txt", "a") as fh:
        fh.write(repr(SEEN[-1]) + "\n")
    assert resp.status_code < 500, (resp.status_code, resp.text[:300])
