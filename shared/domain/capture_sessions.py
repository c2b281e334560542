"""Capture sessions: a server-chosen challenge and a nonce that one capture redeems, once.

The integrator's backend creates a capture session (``POST /v1/sessions``) and hands its
nonce, challenge and upload token to the capture SDK; the capture carries the nonce. At
submission the nonce is redeemed inside the transaction that creates the job, by one
conditional UPDATE, so of concurrent submissions of one nonce exactly one wins. A failed check
does not refuse the request: the job records why (``jobs.session_check``) and the pipeline
scores it as a certain hack, as a replayed or pre-recorded capture is one.

Names: ``session`` is always a SQLAlchemy session; a capture session is ``capture_session``
(its id keeps the public name ``session_id``).
"""

from __future__ import annotations

import hmac
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from antihack.shared.domain.errors import ApiError
from antihack.shared.domain.light import LIGHT, LightSequence, draw_sequence
from antihack.shared.infra.db import rowcount
from antihack.shared.infra.secrets import hash_secret
from antihack.shared.infra.settings import CHALLENGE_AXES, Settings
from antihack.shared.infra.tables import ApiKey, CaptureSession, utcnow
from antihack.shared.proto import liveness_pb2 as pb

CAPTURE_SESSION_ID_PREFIX = "ses_"
UPLOAD_TOKEN_PREFIX = "ut_"
NONCE_BYTES = 24  # 192 random bits, 32 URL-safe characters
# A capture's clock (frame and prompt times) may differ from the server's by this much; its
# time span must lie within the capture session's lifetime widened by it on both sides.
CLOCK_SKEW = timedelta(minutes=2)
# Random draws tried before a search, when a capture session's steps must alternate axes.
MAX_DRAWS = 1000
# An upload token may read the job it created for this long after its capture session expired.
TOKEN_READ_GRACE = timedelta(minutes=10)

PENDING, USED, EXPIRED = "PENDING", "USED", "EXPIRED"

# Reason codes of a failed capture session check (jobs.session_check, then the job's reasons);
# the codes keep their ``session_`` prefix: clients read them.
CAPTURE_SESSION_REQUIRED = "session_required"
CAPTURE_SESSION_UNKNOWN = "session_unknown"
CAPTURE_SESSION_EXPIRED = "session_expired"
CAPTURE_SESSION_REUSED = "session_reused"
CAPTURE_SESSION_CHALLENGE_MISMATCH = "session_challenge_mismatch"
CAPTURE_SESSION_STEP_ORDER = "session_step_order"
CAPTURE_SESSION_TIME = "session_time_outside"
CAPTURE_SESSION_CHECKS: dict[str, str] = {
    CAPTURE_SESSION_REQUIRED: (
        "this key requires a capture session; the capture has no session_nonce"
    ),
    CAPTURE_SESSION_UNKNOWN: "the capture's session_nonce is not a session of this key",
    CAPTURE_SESSION_EXPIRED: "the capture session expired before the capture was submitted",
    CAPTURE_SESSION_REUSED: "the capture session's nonce was already used by another submission",
    CAPTURE_SESSION_CHALLENGE_MISMATCH: "the capture's challenges are not the session's challenge",
    CAPTURE_SESSION_STEP_ORDER: (
        "the frames' challenge steps do not follow the session's challenge order"
    ),
    CAPTURE_SESSION_TIME: "the capture's frames and prompts are not within the session's lifetime",
}


@dataclass(frozen=True)
class NewCaptureSession:
    """A capture session as created: the only time its upload token exists in the clear."""

    session_id: str
    nonce: str
    challenge: list[str]
    expires_at: datetime
    upload_token: str
    light: LightSequence | None = None

    def body(self) -> dict[str, Any]:
        """The fields of ``POST /v1/sessions``'s answer (without request_id and status)."""
        body: dict[str, Any] = {
            "session_id": self.session_id,
            "nonce": self.nonce,
            "challenge": list(self.challenge),
            "expires_at": self.expires_at.isoformat(),
            "upload_token": self.upload_token,
        }
        if self.light is not None:  # only capture sessions with a LIGHT step have colours
            body["light"] = self.light.body()
        return body


@dataclass(frozen=True)
class CaptureFacts:
    """What the capture session check reads from a capture: its nonce, its requested
    challenges, the steps it shows (its step prompts in order, or else its tagged frames' steps,
    runs collapsed, untagged frames ignored) and the earliest and latest time it names (epoch
    ms, 0: none)."""

    nonce: str = ""
    challenges: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()
    first_ms: int = 0
    last_ms: int = 0

    @classmethod
    def of(cls, capture: pb.Capture) -> CaptureFacts:
        steps: list[str] = []
        for frame in capture.frames:
            if frame.challenge_step == pb.CHALLENGE_UNSPECIFIED:
                continue
            name = pb.Challenge.Name(frame.challenge_step)
            if not steps or steps[-1] != name:
                steps.append(name)
        if capture.prompts:
            steps = [pb.Challenge.Name(p.step) for p in capture.prompts]
        times = [f.timestamp_ms for f in capture.frames if f.timestamp_ms > 0]
        times += [p.shown_at_ms for p in capture.prompts if p.shown_at_ms > 0]
        return cls(
            nonce=capture.session_nonce,
            challenges=tuple(pb.Challenge.Name(c) for c in capture.challenges),
            steps=tuple(steps),
            first_ms=min(times, default=0),
            last_ms=max(times, default=0),
        )

    def within(self, created_at: datetime, until: datetime) -> bool:
        """Whether the capture's times lie in [created_at, until], give or take CLOCK_SKEW."""
        if not self.first_ms:
            return True  # no timestamps: integrity checks judge that
        low = (created_at - CLOCK_SKEW).timestamp() * 1000
        high = (until + CLOCK_SKEW).timestamp() * 1000
        return low <= self.first_ms and self.last_ms <= high


def _axes_alternate(steps: Sequence[str]) -> bool:
    return all(
        CHALLENGE_AXES[a] != CHALLENGE_AXES[b] for a, b in zip(steps, steps[1:], strict=False)
    )


def draw_steps(pool: Sequence[str], length: int, rng: random.Random) -> list[str]:
    """``length`` distinct steps of ``pool`` in random order, never two of one axis in a row.

    Uniform over the allowed sequences: random draws are retried until one alternates (about 4
    in 5 draws of the default pool do). A pool where that is rare (the settings refuse pools
    where it is impossible) falls back to a random depth-first search.
    """
    for _ in range(MAX_DRAWS):
        steps = rng.sample(list(pool), length)
        if _axes_alternate(steps):
            return steps
    found = _search([], list(pool), length, rng)
    if found is None:
        raise ValueError(f"{length} steps of {list(pool)} cannot alternate axes")
    return found


def _search(done: list[str], left: list[str], length: int, rng: random.Random) -> list[str] | None:
    if len(done) == length:
        return done
    for name in rng.sample(left, len(left)):
        if done and CHALLENGE_AXES[done[-1]] == CHALLENGE_AXES[name]:
            continue
        found = _search([*done, name], [n for n in left if n != name], length, rng)
        if found is not None:
            return found
    return None


def create_capture_session(session: Session, key: ApiKey, settings: Settings) -> NewCaptureSession:
    """Insert a capture session for ``key`` with a random challenge from the configured pool.

    Not committed: the caller commits (as with ``create_job`` and ``create_key``).
    """
    pool = settings.session_challenge_pool
    challenge = draw_steps(pool, settings.session_challenge_length, secrets.SystemRandom())
    if settings.session_light_always and LIGHT not in challenge:
        challenge.append(LIGHT)
    light = (
        draw_sequence(settings.light_colors, settings.light_min_ms, settings.light_max_ms)
        if LIGHT in challenge
        else None
    )
    now = utcnow()
    token = UPLOAD_TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = CaptureSession(
        id=CAPTURE_SESSION_ID_PREFIX + secrets.token_hex(16),
        api_key_id=key.id,
        nonce=secrets.token_urlsafe(NONCE_BYTES),
        challenge=challenge,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.session_ttl_s),
        upload_token_hash=hash_secret(settings.secret_key, token),
        light=light.body() if light is not None else None,
    )
    session.add(row)
    session.flush()
    return NewCaptureSession(row.id, row.nonce, list(challenge), row.expires_at, token, light)


def capture_session_state(row: CaptureSession, now: datetime | None = None) -> str:
    if row.used_at is not None:
        return USED
    return EXPIRED if row.expires_at <= (now or utcnow()) else PENDING


def capture_session_view(row: CaptureSession) -> dict[str, Any]:
    """A capture session as ``GET /v1/sessions/<id>`` shows it (never the nonce or the token)."""
    view: dict[str, Any] = {
        "session_id": row.id,
        "challenge": list(row.challenge),
        "expires_at": row.expires_at.isoformat(),
        "state": capture_session_state(row),
        "job_id": row.job_id,
    }
    if row.light is not None:
        view["light"] = row.light
    return view


def get_owned_capture_session(session: Session, key: ApiKey, session_id: str) -> CaptureSession:
    """The capture session if this key created it; 404 otherwise (never reveal other keys'
    capture sessions)."""
    row = session.get(CaptureSession, session_id) if session_id.isprintable() else None
    if row is None or row.api_key_id != key.id:
        raise ApiError("NOT_FOUND", f"no capture session {session_id[:64]!r} for this API key")
    return row


def redeem(
    session: Session, key_id: str, job_id: str, facts: CaptureFacts, now: datetime
) -> str | None:
    """Redeem the capture's nonce for ``job_id`` (in the job's transaction); the reason code
    when the check fails, else None. The nonce is spent even when the challenge is wrong."""
    if not facts.nonce:
        return CAPTURE_SESSION_REQUIRED
    # One conditional UPDATE: the database serialises concurrent redemptions of the row, and
    # only the first sees used_at still NULL.
    won = session.execute(
        update(CaptureSession)
        .where(
            CaptureSession.nonce == facts.nonce,
            CaptureSession.api_key_id == key_id,
            CaptureSession.used_at.is_(None),
            CaptureSession.expires_at > now,
        )
        .values(used_at=now, job_id=job_id)
        .returning(CaptureSession.challenge, CaptureSession.created_at)
    ).first()
    if won is None:
        found = session.execute(
            select(CaptureSession.used_at).where(
                CaptureSession.nonce == facts.nonce, CaptureSession.api_key_id == key_id
            )
        ).first()
        if found is None:
            return CAPTURE_SESSION_UNKNOWN  # no such nonce, or another key's: the same answer
        return CAPTURE_SESSION_REUSED if found[0] is not None else CAPTURE_SESSION_EXPIRED
    expected = tuple(won[0])
    if facts.challenges != expected:
        return CAPTURE_SESSION_CHALLENGE_MISMATCH
    if facts.steps != expected:
        return CAPTURE_SESSION_STEP_ORDER
    if not facts.within(_aware(won[1]), now):
        return CAPTURE_SESSION_TIME
    return None


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# --- upload tokens ----------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadGrant:
    """What a request authenticated by an upload token may do: submit the capture with this
    nonce (once), and read the job that submission created."""

    session_id: str
    api_key_id: str
    nonce: str
    job_id: str | None

    def nonce_matches(self, nonce: str) -> bool:
        return hmac.compare_digest(nonce.encode(), self.nonce.encode())


def authorize_upload(
    session: Session, secret_key: str, token: str, *, submitting: bool
) -> UploadGrant:
    """The grant of an upload token, or 401 UNAUTHORIZED saying why it cannot be used now.

    Submitting needs an unused token of an unexpired capture session; reading its job works
    until ``TOKEN_READ_GRACE`` after the capture session expired.
    """
    # Looked up by its keyed hash: timing can only reveal bits of an HMAC the caller cannot
    # relate to any token, as with API secrets.
    row = session.scalars(
        select(CaptureSession).where(
            CaptureSession.upload_token_hash == hash_secret(secret_key, token)
        )
    ).first()
    if row is None:
        raise ApiError("UNAUTHORIZED", "invalid upload token")
    now = utcnow()
    if submitting and row.token_used_at is not None:
        raise ApiError(
            "UNAUTHORIZED",
            "this upload token was already used; an upload token submits one capture",
        )
    deadline = row.expires_at if submitting else row.expires_at + TOKEN_READ_GRACE
    if deadline <= now:
        raise ApiError("UNAUTHORIZED", f"this upload token expired at {deadline.isoformat()}")
    return UploadGrant(row.id, row.api_key_id, row.nonce, row.token_job_id)


def spend_upload_token(session: Session, grant: UploadGrant, job_id: str, now: datetime) -> None:
    """Mark the token used by ``job_id`` (in the job's transaction); 401 if a concurrent
    request spent it first or the capture session expired meanwhile."""
    spent = session.execute(
        update(CaptureSession)
        .where(
            CaptureSession.id == grant.session_id,
            CaptureSession.token_used_at.is_(None),
            CaptureSession.expires_at > now,
        )
        .values(token_used_at=now, token_job_id=job_id)
    )
    if rowcount(spent) != 1:
        raise ApiError(
            "UNAUTHORIZED",
            "this upload token was already used; an upload token submits one capture",
        )
