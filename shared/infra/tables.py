"""Database models: API keys, jobs, their inputs and results, H5 images, replay fingerprints,
capture sessions, webhook deliveries and their attempts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column, relationship

from antihack.shared.infra.db import Base

QUEUED, RUNNING, SUCCEEDED, FAILED = "QUEUED", "RUNNING", "SUCCEEDED", "FAILED"
FINAL_STATES = frozenset({SUCCEEDED, FAILED})


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """A timestamp as the API and the CLI show it (None stays None)."""
    return value.isoformat() if value else None


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both backends (SQLite keeps no zone, so store naive UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # HMAC-SHA256(secret_key, api_secret): the secret is 256 random bits, so a fast keyed hash
    # is safe and keeps authentication off the submission hot path.
    secret_hash: Mapped[str] = mapped_column(String(64))
    # Recoverable secrets, encrypted with a key derived from the server secret.
    webhook_secret_enc: Mapped[str] = mapped_column(Text)
    sdk_secret_enc: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Comma-separated endpoint names; empty means every client endpoint.
    permissions: Mapped[str] = mapped_column(String(500), default="")
    quota_limit: Mapped[int | None] = mapped_column(Integer)
    quota_period: Mapped[str] = mapped_column(String(10), default="month")
    rate_per_s: Mapped[float | None] = mapped_column(Float)
    burst: Mapped[int | None] = mapped_column(Integer)
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    # After a rotation the previous webhook secret still signs (a second signature) for
    # ANTIHACK_WEBHOOK_SECRET_OVERLAP_S from the rotation, so receivers can switch without loss.
    webhook_secret_prev_enc: Mapped[str | None] = mapped_column(Text)
    webhook_secret_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set when the endpoint answered 410 Gone; setting webhook_url again clears it.
    webhook_disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    require_signed: Mapped[bool] = mapped_column(Boolean, default=False)
    # Every capture must carry the nonce of a capture session of this key (POST /v1/sessions).
    require_session: Mapped[bool] = mapped_column(Boolean, default=False)

    def permits(self, endpoint: str) -> bool:
        allowed = {p.strip() for p in self.permissions.split(",") if p.strip()}
        return not allowed or endpoint in allowed


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_enqueued_at", "status", "enqueued_at"),
        Index("ix_jobs_api_key_id_created_at", "api_key_id", "created_at"),
        Index("ix_jobs_api_key_id_idempotency_key", "api_key_id", "idempotency_key", unique=True),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    status: Mapped[str] = mapped_column(String(10), default=QUEUED)
    source: Mapped[str] = mapped_column(String(10))  # file | url | image
    return_image: Mapped[bool] = mapped_column(Boolean, default=False)
    return_extra: Mapped[bool] = mapped_column(Boolean, default=False)
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    payload_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Indexed for the retention purge (shared/domain/retention.py), which deletes by it in batches.
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    # A RUNNING job whose lease has passed belongs to a worker that died; the sweeper requeues it.
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result_status: Mapped[str | None] = mapped_column(String(30))
    # The quota period this job was charged to (None: the key had no quota), and when the
    # charge was given back because the job ended in INTERNAL_ERROR.
    charged_period: Mapped[str | None] = mapped_column(String(20))
    refunded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Why the capture session check failed at submission (a reason code such as
    # ``session_reused``), or None: it passed, or the capture used no session.
    session_check: Mapped[str | None] = mapped_column(String(40))

    input: Mapped[JobInput | None] = relationship(
        back_populates="job", cascade="all, delete-orphan"
    )
    result: Mapped[JobResult | None] = relationship(
        back_populates="job", cascade="all, delete-orphan"
    )


class JobInput(Base):
    """The submitted bytes, kept apart from the job row so that listing jobs never loads them."""

    __tablename__ = "job_inputs"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    job: Mapped[Job] = relationship(back_populates="input")


class JobResult(Base):
    """The one result of a job; the primary key makes a second row impossible."""

    __tablename__ = "job_results"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    model_versions: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    stage_ms: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    # Challenge steps not met, [{"step": "TURN_LEFT", "why": "yaw reached 4°, needs 12°"}];
    # NULL on results written before migration 0009.
    failed_steps: Mapped[list[dict[str, str]] | None] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    job: Mapped[Job] = relationship(back_populates="result")


class QuotaCounter(Base):
    """Requests charged to a key in one quota period (``day:2026-11-26``, ``month:2026-11``,
    ``total``); charged by a conditional UPDATE so that concurrency can never overshoot."""

    __tablename__ = "quota_counters"

    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    # Indexed on its own for the retention purge of ended periods (across all keys).
    period: Mapped[str] = mapped_column(String(20), primary_key=True, index=True)
    used: Mapped[int] = mapped_column(Integer, default=0)


class RefundCounter(Base):
    """Jobs of a key refunded for INTERNAL_ERROR on one UTC day (``2026-12-05``); past
    ANTIHACK_POISON_REFUND_LIMIT a failed job stays charged. Taken by a conditional UPDATE, as
    quota; a deleted job does not give its refund back."""

    __tablename__ = "refund_counters"

    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    refunded: Mapped[int] = mapped_column(Integer, default=0)


class Image(Base):
    """An image uploaded through the H5 flow, usable by its key until it expires."""

    __tablename__ = "images"
    __table_args__ = (Index("ix_images_expires_at", "expires_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Fingerprint(Base):
    """Session ids a key has already submitted, for replay detection (frame fingerprints are in
    ReplayCapture / ReplayBand; rows of kind ``phash`` are no longer written)."""

    __tablename__ = "fingerprints"
    __table_args__ = (Index("ix_fingerprints_key_kind_value", "api_key_id", "kind", "value"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    kind: Mapped[str] = mapped_column(String(10))  # session | phash
    value: Mapped[str] = mapped_column(String(100))
    # Indexed: deleting a job (purge, DELETE) deletes its fingerprints by it.
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReplayCapture(Base):
    """One analysed capture's frame fingerprints (``antihack.worker.pipeline.replay.pack_prints``),
    read back for the few earlier captures the band index names as candidates."""

    __tablename__ = "replay_captures"
    __table_args__ = (Index("ix_replay_captures_created_at", "created_at"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    prints: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReplayBand(Base):
    """The replay index: each 16-bit band of a capture's frame hashes (``band`` = band number *
    2^16 + its value), once per capture. A lookup reads the newest rows of each of its bands
    through (band, created_at) -- or (api_key_id, band, created_at) when replay memory is per
    key -- never all of history."""

    __tablename__ = "replay_bands"
    __table_args__ = (
        Index("ix_replay_bands_band_created_at", "band", "created_at"),
        Index("ix_replay_bands_key_band_created_at", "api_key_id", "band", "created_at"),
        Index("ix_replay_bands_created_at", "created_at"),
    )

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    band: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CaptureSession(Base):
    """A capture session (``POST /v1/sessions``): a nonce and a server-chosen challenge that one
    capture redeems, once, before ``expires_at``; and the upload token a browser may submit
    that capture with, in place of the key's secret."""

    __tablename__ = "capture_sessions"
    __table_args__ = (
        Index("ix_capture_sessions_nonce", "nonce", unique=True),
        Index("ix_capture_sessions_upload_token_hash", "upload_token_hash", unique=True),
        Index("ix_capture_sessions_expires_at", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # ses_ + 32 hex
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    nonce: Mapped[str] = mapped_column(String(100))
    challenge: Mapped[list[str]] = mapped_column(JSON)  # e.g. ["BLINK", "YAW"], in order
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Set by the one submission that redeemed the nonce (a conditional UPDATE), with its job.
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Indexed, as token_job_id: deleting a job (purge, DELETE) finds its capture sessions by them.
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    # HMAC-SHA256(secret_key, upload_token), as API secrets: the token itself is never stored.
    upload_token_hash: Mapped[str] = mapped_column(String(64))
    # The token's one submission and its job (the only job the token may read); it differs
    # from job_id when the nonce had already been redeemed with the key's own credentials.
    token_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    token_job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    # The LIGHT step's colours, {"colors": [...], "durations_ms": [...]} (domain/light.py), or
    # None when the session has no LIGHT step.
    light: Mapped[dict[str, Any] | None] = mapped_column(JSON)


# Delivery states: pending (an attempt is due or being made), delivered (a 2xx), failed (the
# schedule ran out), disabled (410 Gone, or the key's endpoint is disabled or revoked).
PENDING, DELIVERED, DELIVERY_FAILED, DISABLED = "pending", "delivered", "failed", "disabled"
DELIVERY_STATES = (PENDING, DELIVERED, DELIVERY_FAILED, DISABLED)


class WebhookDelivery(Base):
    """One event for one endpoint; its id is the ``webhook-id`` every attempt carries.

    Created in the transaction that finishes the job, so a crash cannot lose it; retries wait
    in ``next_attempt_at``, not in the broker.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_api_key_id_created_at", "api_key_id", "created_at"),
        Index("ix_webhook_deliveries_job_id", "job_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # msg_ + 32 hex
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(40))
    # "callback": the job's callback_url; "key": the key's webhook_url (410 disables the key's).
    target: Mapped[str] = mapped_column(String(10))
    url: Mapped[str] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(10), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Position in the retry schedule; a manual redelivery starts it again.
    step: Mapped[int] = mapped_column(Integer, default=0)
    # When the next attempt is due; while claimed, when the claim lapses.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set by the claim that published a send; "sending:" + it while the POST is in flight.
    claim_token: Mapped[str | None] = mapped_column(String(48))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))

    attempt_log: Mapped[list[WebhookAttempt]] = relationship(
        back_populates="delivery",
        cascade="all, delete-orphan",
        order_by="WebhookAttempt.id",
    )


class WebhookAttempt(Base):
    """One POST of a delivery: when, where, what came back, how long it took."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery_id", "delivery_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    url: Mapped[str] = mapped_column(String(2048))
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))

    delivery: Mapped[WebhookDelivery] = relationship(back_populates="attempt_log")
