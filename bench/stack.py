"""A throw-away antihack stack for benchmarks: settings, servers, a key."""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shared.db import make_engine, make_sessionmaker, transaction
from shared.embedded import start_redis
from shared.keys import KeyOptions, create_key
from shared.migrate import upgrade
from shared.settings import Settings


@dataclass(frozen=True)
class Stack:
    settings: Settings
    headers: dict[str, str]
    logs: Path


@contextmanager
def stack(**overrides: object) -> Iterator[Stack]:
    """PostgreSQL/Redis from ANTIHACK_DATABASE_URL/ANTIHACK_REDIS_URL if set, else embedded."""
    with tempfile.TemporaryDirectory(prefix="antihack-bench-") as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            database_url=os.environ.get("ANTIHACK_DATABASE_URL", ""),
            redis_url=os.environ.get("ANTIHACK_REDIS_URL", ""),
            secret_key="bench",
            admin_token="bench",
        ).replace(**overrides)
        redis_proc = start_redis(settings) if settings.embedded_redis else None
        try:
            upgrade(settings.effective_database_url)
            engine = make_engine(settings.effective_database_url)
            with transaction(make_sessionmaker(engine)) as session:
                key, new = create_key(session, settings.secret_key, KeyOptions(name="bench"))
                headers = {"X-DF-API-ID": key.id, "X-DF-API-SECRET": new.api_secret}
            engine.dispose()
            yield Stack(settings, headers, Path(tmp))
        finally:
            if redis_proc is not None:
                redis_proc.terminate()
                redis_proc.wait()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(values: list[float]) -> float:
    return statistics.median(values)
