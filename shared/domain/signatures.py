"""Standard Webhooks 1.0 signatures: what the service signs with and what a receiver checks.

Only the standard library: the Python client (shared/sdk/client.py) verifies webhooks with this
without loading the database layer."""

from __future__ import annotations

import base64
import hashlib
import hmac

SECRET_PREFIX = "whsec_"


def signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret, decoded exactly as the ``standardwebhooks`` library
    does (standard base64 of what follows the prefix), so that its verification matches ours."""
    raw = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    return base64.b64decode(raw + "==")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``."""
    digest = hmac.new(
        signing_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256
    ).digest()
    return "v1," + base64.b64encode(digest).decode()
