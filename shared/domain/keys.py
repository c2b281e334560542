"""API keys: creation, authentication, updates, rotation and revocation."""

from __future__ import annotations

import base64
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from antihack.shared.choices import ENDPOINTS as ENDPOINTS
from antihack.shared.choices import QUOTA_PERIODS as QUOTA_PERIODS
from antihack.shared.domain.errors import ApiError
from antihack.shared.domain.schemas import MAX_NAME as MAX_NAME
from antihack.shared.domain.schemas import Key, KeyWithSecrets
from antihack.shared.domain.schemas import (
    KeyOptions as KeyOptions,  # the models also generate the document
)
from antihack.shared.infra.secrets import check_secret, decrypt, encrypt, hash_secret
from antihack.shared.infra.tables import ApiKey, utcnow
from antihack.shared.infra.urlguard import UrlRefused, UrlUnresolvable, resolve


@dataclass(frozen=True)
class NewSecrets:
    api_secret: str
    webhook_secret: str
    sdk_secret: str


def _new_secrets() -> NewSecrets:
    return NewSecrets(
        api_secret=secrets.token_urlsafe(32),
        # Standard Webhooks: "whsec_" + standard base64 of the key bytes. Receivers' libraries
        # decode it with the standard alphabet, so URL-safe base64 would sign with other bytes.
        webhook_secret="whsec_" + base64.b64encode(os.urandom(32)).decode(),
        sdk_secret=secrets.token_urlsafe(32),
    )


def _check_webhook_url(url: str, allow_private_urls: bool) -> None:
    """Refuse a malformed URL or one that points at us; a name that does not resolve yet is
    accepted, since every attempt checks the URL again before it connects."""
    try:
        resolve(url, allow_private=allow_private_urls)
    except UrlUnresolvable:
        pass
    except UrlRefused as exc:
        raise ApiError("INVALID_ARGUMENT", f"webhook_url refused: {exc.reason}") from None


def _apply(key: ApiKey, opts: KeyOptions, allow_private_urls: bool) -> None:
    # ``opts`` is valid (the model checked it); the URL's check needs the setting.
    if opts.webhook_url:
        _check_webhook_url(opts.webhook_url, allow_private_urls)
    if opts.name is not None:
        key.name = opts.name
    if opts.quota is not None:
        key.quota_limit = opts.quota
    if opts.quota_period is not None:
        key.quota_period = opts.quota_period
    if opts.rate is not None:
        key.rate_per_s = opts.rate
    if opts.burst is not None:
        key.burst = opts.burst
    if opts.expires_at is not None:
        key.expires_at = opts.expires_at
    if opts.permissions is not None:
        key.permissions = opts.permissions
    if opts.webhook_url is not None:
        key.webhook_url = opts.webhook_url or None
        key.webhook_disabled_at = None  # setting the URL again re-enables it after a 410
    if opts.require_signed is not None:
        key.require_signed = opts.require_signed
    if opts.require_session is not None:
        key.require_session = opts.require_session


def _store_secrets(key: ApiKey, secret_key: str, new: NewSecrets) -> None:
    key.secret_hash = hash_secret(secret_key, new.api_secret)
    if key.webhook_secret_enc:
        # The old secret keeps signing beside the new one for ANTIHACK_WEBHOOK_SECRET_OVERLAP_S.
        key.webhook_secret_prev_enc = key.webhook_secret_enc
        key.webhook_secret_rotated_at = utcnow()
    key.webhook_secret_enc = encrypt(secret_key, new.webhook_secret)
    key.sdk_secret_enc = encrypt(secret_key, new.sdk_secret)


def create_key(
    session: Session,
    secret_key: str,
    opts: KeyOptions,
    api_id: str | None = None,
    *,
    allow_private_urls: bool = False,
) -> tuple[ApiKey, NewSecrets]:
    """Create a key; the secrets are returned only here (and on rotate).

    ``allow_private_urls`` is ANTIHACK_ALLOW_PRIVATE_URLS, for the webhook URL's SSRF check.
    """
    key = ApiKey(
        id=api_id or "ak_" + secrets.token_hex(12),
        name=opts.name or "unnamed",
        permissions="",
        quota_period="month",
        require_signed=False,
        require_session=False,
        created_at=utcnow(),
    )
    new = _new_secrets()
    _store_secrets(key, secret_key, new)
    _apply(key, opts, allow_private_urls)
    session.add(key)
    session.flush()
    return key, new


def get_key(session: Session, api_id: str) -> ApiKey:
    key = session.get(ApiKey, api_id)
    if key is None:
        raise ApiError("NOT_FOUND", f"no API key {api_id!r}")
    return key


def update_key(
    session: Session, api_id: str, opts: KeyOptions, *, allow_private_urls: bool = False
) -> ApiKey:
    key = get_key(session, api_id)
    _apply(key, opts, allow_private_urls)
    return key


def rotate_key(session: Session, secret_key: str, api_id: str) -> tuple[ApiKey, NewSecrets]:
    key = get_key(session, api_id)
    new = _new_secrets()
    _store_secrets(key, secret_key, new)
    return key, new


def revoke_key(session: Session, api_id: str) -> ApiKey:
    key = get_key(session, api_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


class KeyCache:
    """Keys that authenticated recently, kept in this process for ``ttl_s`` seconds
    (ANTIHACK_KEY_CACHE_S; 0 turns it off), so that a request does not read its key.

    The bound: a change made to a key elsewhere (revoked, rotated, quota, rate or permissions
    changed, by the CLI or another API process) takes effect here within ``ttl_s`` seconds; a
    change made through this process's admin API at once (:meth:`forget`). Expiry is checked on
    every request, so it is exact; so is the secret: a secret the cached key refuses is checked
    against the database before the request is refused (a rotated key's new secret works at
    once, its old one for at most ``ttl_s``).
    """

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._keys: dict[str, tuple[float, ApiKey]] = {}

    def get(self, api_id: str) -> ApiKey | None:
        found = self._keys.get(api_id)
        if found is None:
            return None
        if self.clock() - found[0] >= self.ttl_s:
            self._keys.pop(api_id, None)
            return None
        return found[1]

    def put(self, session: Session, key: ApiKey) -> None:
        """Keep ``key``, taken out of ``session``: requests of other threads read it, and a
        rollback of its session would otherwise expire (and reload) its attributes under them."""
        if self.ttl_s <= 0:
            return
        session.expunge(key)
        self._keys[key.id] = (self.clock(), key)

    def forget(self, api_id: str) -> None:
        self._keys.pop(api_id, None)


def authenticate(
    session: Session,
    secret_key: str,
    api_id: str,
    api_secret: str,
    cache: KeyCache | None = None,
) -> ApiKey:
    """The key for these credentials, or the seed's 401 error; ``cache`` spares the read."""
    cached = cache.get(api_id) if cache is not None and api_id else None
    if cached is not None and check_secret(secret_key, api_secret, cached.secret_hash):
        return check_usable(cached, api_id)
    key = session.get(ApiKey, api_id) if api_id else None
    if cached is not None and key is not None and key.secret_hash == cached.secret_hash:
        # The cached key refused the secret and its secret has not changed since: refused,
        # with the one comparison every refusal makes (two stored hashes, no secret, compared).
        valid = False
    else:
        # Hash even when the key is unknown so that timing does not reveal which ids exist.
        stored = key.secret_hash if key is not None else "0" * 64
        valid = check_secret(secret_key, api_secret, stored)
    if key is None or not valid:
        raise ApiError("UNAUTHORIZED", "invalid X-DF-API-ID / X-DF-API-SECRET")
    if cache is not None:
        cache.put(session, key)
    return check_usable(key, api_id)


def check_usable(
    key: ApiKey | None, api_id: str, invalid: str = "invalid X-DF-API-ID / X-DF-API-SECRET"
) -> ApiKey:
    """The key if it is neither revoked nor expired, else the seed's 401 error."""
    if key is None or key.revoked_at is not None:
        raise ApiError("UNAUTHORIZED", invalid)
    if key.expires_at is not None and key.expires_at <= utcnow():
        raise ApiError("KEY_EXPIRED", f"API key {api_id} expired at {key.expires_at.isoformat()}")
    return key


def sdk_secret(key: ApiKey, secret_key: str) -> str:
    return decrypt(secret_key, key.sdk_secret_enc)


def key_view(key: ApiKey) -> dict[str, Any]:
    """A key as shown to admins: never any secret."""
    return _key(key).model_dump(mode="json")


def _key(key: ApiKey) -> Key:
    return Key.model_validate(
        {
            "api_id": key.id,
            "name": key.name,
            "created_at": key.created_at,
            "expires_at": key.expires_at,
            "revoked": key.revoked_at is not None,
            "permissions": [p for p in key.permissions.split(",") if p] or list(ENDPOINTS),
            "quota": key.quota_limit,
            "quota_period": key.quota_period,
            "rate": key.rate_per_s,
            "burst": key.burst,
            "webhook_url": key.webhook_url,
            "webhook_disabled_at": key.webhook_disabled_at,
            "webhook_secret_rotated_at": key.webhook_secret_rotated_at,
            "require_signed": key.require_signed,
            "require_session": key.require_session,
        }
    )


def secrets_view(key: ApiKey, new: NewSecrets) -> dict[str, Any]:
    """A key with its new secrets: only on create and rotate."""
    shown = KeyWithSecrets(
        **_key(key).model_dump(),
        api_secret=new.api_secret,
        webhook_secret=new.webhook_secret,
        sdk_secret=new.sdk_secret,
    )
    return shown.model_dump(mode="json")
