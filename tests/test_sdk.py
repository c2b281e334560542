"""The Python client against a real API and worker; webhook verification against the
``standardwebhooks`` library's own signatures."""

from __future__ import annotations

import base64
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from antihack.shared.sdk.client import Client, ClientError, verify_webhook
from tests.conftest import Key
from tests.helpers import no_face_capture


def test_submit_wait_usage_and_errors(start_api: Any, start_worker: Any, key: Key) -> None:
    start_worker()
    client = Client(start_api(), key.api_id, key.api_secret)
    capture = no_face_capture()
    accepted = client.submit(capture, idempotency_key="sdk-1")
    job = client.wait(accepted["request_id"], timeout=60)
    assert job["status"] == "SUCCEEDED" and job["result"]["status"] == "OK"
    assert client.submit(capture, idempotency_key="sdk-1")["request_id"] == job["request_id"]
    with pytest.raises(ClientError) as conflict:
        client.submit(no_face_capture(), idempotency_key="sdk-1")
    assert (conflict.value.http_status, conflict.value.status) == (422, "INVALID_ARGUMENT")
    assert client.usage()["days"][-1]["accepted"] >= 1
    assert client.deliveries()["deliveries"] == []  # no webhook configured for this key
    with pytest.raises(ClientError) as err:
        client.job("TID" + "0" * 32)
    assert (err.value.http_status, err.value.status) == (404, "NOT_FOUND")


def test_verify_webhook_accepts_what_standardwebhooks_signs() -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    body = json.dumps({"type": "liveness.completed", "data": {"request_id": "TIDx"}}).encode()
    now = int(time.time())
    signature = Webhook(secret).sign("msg_1", datetime.fromtimestamp(now, UTC), body.decode())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": signature}
    assert verify_webhook(secret, headers, body)["data"]["request_id"] == "TIDx"
    with pytest.raises(ValueError, match="signature"):
        verify_webhook(secret, headers, body + b" ")
    with pytest.raises(ValueError, match="tolerance"):
        verify_webhook(secret, headers, body, now=now + 3600)
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(ValueError):
        verify_webhook(other, headers, body)
