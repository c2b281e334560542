"""Filling in what the embedded default generates: data dir, server secret, admin token."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from antihack.shared.infra.settings import Settings


def _persisted_secret(path: Path) -> str:
    """Read a generated secret, creating it (mode 0600) on first use."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    value = secrets.token_urlsafe(32)
    # O_EXCL: when two processes race on first start, one writes and both read the same value.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


def prepare(settings: Settings) -> Settings:
    """Create the data dir and fill in generated secrets that the environment left empty."""
    data = settings.data_path
    data.mkdir(parents=True, exist_ok=True)
    changes: dict[str, object] = {}
    if not settings.secret_key:
        changes["secret_key"] = _persisted_secret(data / "secret_key")
    if not settings.admin_token:
        changes["admin_token"] = _persisted_secret(data / "admin_token")
    return settings.replace(**changes) if changes else settings
