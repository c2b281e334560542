"""Generating, hashing and encrypting secrets; comparisons in constant time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken


def new_request_id() -> str:
    """``TID`` + 32 lowercase hex digits, as the seed's request ids look."""
    return "TID" + secrets.token_hex(16)


def new_token(prefix: str = "", nbytes: int = 32) -> str:
    return prefix + secrets.token_urlsafe(nbytes)


def hash_secret(secret_key: str, value: str) -> str:
    """Keyed hash for 256-bit random secrets (a slow password hash would cap throughput)."""
    return hmac.new(secret_key.encode(), value.encode(), hashlib.sha256).hexdigest()


def check_secret(secret_key: str, value: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret_key, value), stored_hash)


def _fernet(secret_key: str) -> Fernet:
    derived = hashlib.sha256(b"antihack-at-rest:" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt(secret_key: str, value: str) -> str:
    return _fernet(secret_key).encrypt(value.encode()).decode()


def decrypt(secret_key: str, token: str) -> str:
    try:
        return _fernet(secret_key).decrypt(token.encode()).decode()
    except InvalidToken:
        raise ValueError(
            "cannot decrypt: ANTIHACK_SECRET_KEY changed since it was stored"
        ) from None
