"""What a request handler reaches: settings, a database session, Redis, the task publisher."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import redis
from flask import current_app, g
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from antihack.shared.domain.keys import KeyCache
from antihack.shared.domain.ratelimit import RateLimiter
from antihack.shared.infra.publisher import TaskPublisher
from antihack.shared.infra.settings import Settings


@dataclass(frozen=True)
class Services:
    settings: Settings
    sessions: sessionmaker[Session]
    redis: redis.Redis
    publisher: TaskPublisher
    limiter: RateLimiter
    keys: KeyCache
    # The database in autocommit, for a submission accepted in one statement (PostgreSQL with
    # psycopg; None elsewhere: shared/domain/jobs.py accept_in_one_statement).
    intake: Engine | None = None
    # A slot per concurrent liveness_data_url download; None when the number is unbounded.
    download_slots: threading.BoundedSemaphore | None = None


def services() -> Services:
    svc: Services = current_app.extensions["antihack"]
    return svc


def db() -> Session:
    """One session per request, closed at teardown."""
    if "db" not in g:
        g.db = services().sessions()
    session: Session = g.db
    return session
