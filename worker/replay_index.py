"""The replay history in the database: a banded-hash index over every stored capture.

Each capture's frame hashes are split into four 16-bit bands; ``replay_bands`` holds one row per
distinct (capture, band number, band value). A lookup asks, for each band of each frame hash
(and of its mirror), for the newest ``PER_BAND`` captures holding that exact band, through the
index on (band, created_at) -- or (api_key_id, band, created_at) for ``ANTIHACK_REPLAY_SCOPE=key``
-- keeps the ``MAX_CANDIDATES`` captures named most often, and reads their fingerprints
(``replay_captures``) for ``replay.compare`` to decide. The work per job is bounded by
PER_BAND x bands, whatever the history's size; it never scans history.

Why exact bands find transformed replays: two hashes within 3 bits share a band (pigeonhole),
and a replay needs only ONE of its frames to share one band with the original for the original
to become a candidate; the comparison then uses all frames.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from antihack.shared.infra.db import Base, transaction
from antihack.shared.infra.tables import ReplayBand, ReplayCapture, utcnow
from antihack.worker.pipeline.replay import (
    FramePrint,
    StoredCapture,
    band_keys,
    pack_prints,
    unpack_prints,
)

# Newest rows read per band value, and captures compared per job.
PER_BAND = 200
MAX_CANDIDATES = 20


def query_bands(prints: Sequence[FramePrint]) -> list[int]:
    """The band keys a lookup asks for: every band of every frame hash and of its mirror."""
    return sorted({k for p in prints for h in (p.hash, p.mirror) for k in band_keys(h)})


# One statement for all bands on PostgreSQL: each band reads its newest rows through the
# (band, created_at) or (api_key_id, band, created_at) index.
_PG_LOOKUP = """
SELECT hit.job_id FROM unnest(CAST(:bands AS integer[])) AS q(band)
CROSS JOIN LATERAL (
    SELECT b.job_id FROM replay_bands b
    WHERE b.band = q.band {key}
    ORDER BY b.created_at DESC LIMIT :per_band
) AS hit
"""
# SQLite has no LATERAL; it runs in-process, so one short query per band costs microseconds.
_ONE_BAND = """
SELECT job_id FROM replay_bands WHERE band = :band {key} ORDER BY created_at DESC LIMIT :per_band
"""
_KEY = "AND api_key_id = :key_id"


def candidate_jobs(
    session: Session,
    bands: Sequence[int],
    key_id: str | None,
    exclude: str | None = None,
    per_band: int = PER_BAND,
    limit: int = MAX_CANDIDATES,
) -> list[str]:
    """Job ids of the earlier captures sharing the most bands with ``bands``."""
    if not bands:
        return []
    key = _KEY.replace("api_key_id", "b.api_key_id") if key_id is not None else ""
    params: dict[str, object] = {"per_band": per_band, "key_id": key_id}
    hits: Counter[str] = Counter()
    if session.get_bind().dialect.name == "postgresql":
        query = text(_PG_LOOKUP.format(key=key))
        hits.update(session.scalars(query, {**params, "bands": list(bands)}))
    else:
        query = text(_ONE_BAND.format(key=_KEY if key_id is not None else ""))
        for band in bands:
            hits.update(session.scalars(query, {**params, "band": band}))
    if exclude is not None:
        hits.pop(exclude, None)
    return [job for job, _ in hits.most_common(limit)]


def load_captures(session: Session, job_ids: Sequence[str]) -> list[StoredCapture]:
    """The stored fingerprints of these jobs."""
    if not job_ids:
        return []
    rows = session.execute(
        select(ReplayCapture.job_id, ReplayCapture.api_key_id, ReplayCapture.prints).where(
            ReplayCapture.job_id.in_(job_ids)
        )
    )
    return [StoredCapture(job, key, unpack_prints(data)) for job, key, data in rows]


def replay_rows(
    job_id: str, key_id: str, prints: Sequence[FramePrint], now: datetime | None = None
) -> list[Base]:
    """The rows that remember a capture: its fingerprints and its distinct bands."""
    if not prints:
        return []
    created = now or utcnow()
    bands = sorted({k for p in prints for k in band_keys(p.hash)})
    rows: list[Base] = [
        ReplayCapture(
            job_id=job_id, api_key_id=key_id, prints=pack_prints(prints), created_at=created
        )
    ]
    rows += [
        ReplayBand(job_id=job_id, band=b, api_key_id=key_id, created_at=created) for b in bands
    ]
    return rows


class DbHistory:
    """``replay.ReplayHistory`` over the database: the captures of the deployment
    (``key_id=None``) or of one key, except the job being judged."""

    def __init__(
        self, sessions: sessionmaker[Session], key_id: str | None, exclude: str | None
    ) -> None:
        self.sessions, self.key_id, self.exclude = sessions, key_id, exclude

    def lookup(self, prints: Sequence[FramePrint]) -> list[StoredCapture]:
        with transaction(self.sessions) as session:
            jobs = candidate_jobs(session, query_bands(prints), self.key_id, self.exclude)
            return load_captures(session, jobs)
