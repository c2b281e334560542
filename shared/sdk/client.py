"""A Python client for antihack: submit, poll, wait, list deliveries, verify a webhook.

from antihack.shared.sdk.client import Client, verify_webhook
client = Client("http://127.0.0.1:8000", api_id, api_secret)
job = client.wait(client.submit(open("capture.pb", "rb").read())["request_id"])
capture_session = client.create_session()  # nonce, challenge and upload token for a capture SDK
steps = failed_steps(job)  # "Step 2, TURN_LEFT: yaw reached 4°, needs 12°" for each step not met
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import requests

from antihack.shared.domain.signatures import sign

FINAL = ("SUCCEEDED", "FAILED")
# Standard Webhooks: refuse timestamps further than this from now (replayed or delayed calls).
WEBHOOK_TOLERANCE_S = 300


class ClientError(Exception):
    """An error answer from the service: ``status`` and ``reason`` as in the seed's body."""

    def __init__(self, http_status: int, body: Mapping[str, Any]) -> None:
        self.http_status = http_status
        self.status = str(body.get("status", "INTERNAL_ERROR"))
        self.reason = str(body.get("reason", ""))
        super().__init__(f"HTTP {http_status} {self.status}: {self.reason}")


class Client:
    def __init__(self, base_url: str, api_id: str, api_secret: str, timeout: float = 60) -> None:
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.http = requests.Session()
        self.http.headers.update({"X-DF-API-ID": api_id, "X-DF-API-SECRET": api_secret})

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        resp = self.http.request(method, self.base + path, timeout=self.timeout, **kw)
        try:
            body: dict[str, Any] = resp.json()
        except ValueError:
            body = {"status": "INTERNAL_ERROR", "reason": f"HTTP {resp.status_code}, not JSON"}
        if resp.status_code >= 400:
            raise ClientError(resp.status_code, body)
        return body

    def submit(
        self,
        capture: bytes,
        *,
        return_image: bool = False,
        return_extra: bool = True,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/jobs``: the 202 body (``request_id``, ``status``, ``job_url``)."""
        data = {"return_image": str(int(return_image)), "return_extra": str(int(return_extra))}
        if callback_url:
            data["callback_url"] = callback_url
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        files = {"liveness_data_file": ("capture.pb", capture, "application/octet-stream")}
        return self._call("POST", "/v1/jobs", files=files, data=data, headers=headers)

    def create_session(self) -> dict[str, Any]:
        """A new capture session, ``POST /v1/sessions``: ``session_id``, ``nonce``,
        ``challenge`` (the steps the capture must show, in order), ``expires_at`` and the one-use
        ``upload_token`` for a browser."""
        return self._call("POST", "/v1/sessions")

    def session(self, session_id: str) -> dict[str, Any]:
        """A capture session, ``GET /v1/sessions/<id>``: its ``state`` (PENDING, USED, EXPIRED)
        and ``job_id``."""
        return self._call("GET", f"/v1/sessions/{session_id}")

    def job(self, request_id: str) -> dict[str, Any]:
        """``GET /v1/jobs/<id>``: the job resource; once finished, ``reasons`` (signal codes)
        and ``failed_steps`` (``[{"step": "TURN_LEFT", "why": "yaw reached 4°, needs 12°"}]``,
        the capture session's challenge steps not met, in the drawn order)."""
        return self._call("GET", f"/v1/jobs/{request_id}")

    def wait(self, request_id: str, timeout: float = 300, interval: float = 0.5) -> dict[str, Any]:
        """Poll until the job is SUCCEEDED or FAILED; TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(request_id)
            if job["status"] in FINAL:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {request_id} still {job['status']} after {timeout} s")
            time.sleep(interval)

    def usage(self, days: int = 31) -> dict[str, Any]:
        return self._call("GET", "/v1/usage", params={"days": days})

    def deliveries(self, status: str | None = None, limit: int = 50) -> dict[str, Any]:
        """``GET /v1/webhooks/deliveries``, optionally filtered by status."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        return self._call("GET", "/v1/webhooks/deliveries", params=params)

    def redeliver(self, delivery_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/webhooks/deliveries/{delivery_id}/redeliver")


def failed_steps(job: Mapping[str, Any], challenge: Sequence[str] = ()) -> list[str]:
    """The job's unmet challenge steps as lines: "Step 2, TURN_LEFT: yaw reached 4°, needs 12°".

    ``challenge`` is the capture session's drawn steps (``create_session()["challenge"]``), to
    number the steps; without it the lines have no number.
    """
    lines = []
    used: set[int] = set()
    for step in job.get("failed_steps") or []:
        name, why = str(step.get("step", "")), str(step.get("why", ""))
        index = next((i for i, c in enumerate(challenge) if c == name and i not in used), None)
        if index is None:
            lines.append(f"{name}: {why}")
        else:
            used.add(index)
            lines.append(f"Step {index + 1}, {name}: {why}")
    return lines


def verify_webhook(
    secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None
) -> dict[str, Any]:
    """Check a webhook call as Standard Webhooks 1.0 says and return its parsed body.

    Raises ValueError when a header is missing, the timestamp is outside the tolerance, or no
    ``v1`` signature in ``webhook-signature`` matches (during a rotation there are two).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id, stamp, signatures = (
            lower["webhook-id"], lower["webhook-timestamp"], lower["webhook-signature"]
        )  # fmt: skip
        timestamp = int(stamp)
    except (KeyError, ValueError):
        raise ValueError("missing or malformed webhook-id / -timestamp / -signature") from None
    if abs((now if now is not None else time.time()) - timestamp) > WEBHOOK_TOLERANCE_S:
        raise ValueError("webhook timestamp outside the tolerance")
    expected = sign(secret, msg_id, timestamp, body)
    if not any(hmac.compare_digest(expected, given) for given in signatures.split()):
        raise ValueError("no valid signature")
    parsed: dict[str, Any] = json.loads(body)
    return parsed
