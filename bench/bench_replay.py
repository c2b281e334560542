"""Replay lookup cost as the history grows: it must stay flat (issue 13).

    python -m bench bench_replay                      # up to 200k stored frame fingerprints
    python -m bench.bench_replay --size 1000000       # up to 1M (about 2-4 min on 2 cores)
    BENCH_REPLAY_SIZE=1000000 python -m bench bench_replay

Needs PostgreSQL: ANTIHACK_DATABASE_URL or ANTIHACK_TEST_DATABASE_URL names the server; a
database of its own is created and dropped. Without one it runs on a SQLite file.

History: synthetic captures of 16 frames whose 64-bit hashes are near each other (a few bits
apart, as one capture's frames are), bulk-loaded with COPY into replay_captures/replay_bands
(foreign keys off for the load: no job rows are needed to measure the index). At each size
(10k, 100k, ... frames) it times ``antihack.worker.replay_index.DbHistory.lookup`` -- the banded
query and the load of the candidates' fingerprints -- for captures that replay a stored one
(its hashes with 0-6 bits flipped per frame) and for new faces, prints the medians, the rows
the query read and whether the replayed capture was found, and EXPLAINs one band's query.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from antihack.shared.infra.db import make_engine, make_sessionmaker, transaction
from antihack.shared.infra.migrate import upgrade
from antihack.shared.infra.tables import ApiKey
from antihack.worker.pipeline.replay import DESCRIPTOR, FramePrint, band_keys, pack_prints
from antihack.worker.replay_index import DbHistory, query_bands
from bench.stack import fresh_database

FRAMES = 16
KEYS = 20
LOOKUPS = 40
DEFAULT_SIZE = 200_000


@contextmanager
def _database() -> Iterator[str]:
    """A fresh PostgreSQL database (dropped afterwards), or SQLite in a temporary folder."""
    server = os.environ.get("ANTIHACK_DATABASE_URL") or os.environ.get(
        "ANTIHACK_TEST_DATABASE_URL", ""
    )
    if server.startswith("postgresql"):
        with fresh_database(server) as url:
            yield url
        return
    with tempfile.TemporaryDirectory(prefix="antihack-bench-replay-") as tmp:
        yield f"sqlite:///{tmp}/replay.db"


def _flip(value: int, bits: int, rng: random.Random) -> int:
    for b in rng.sample(range(64), bits):
        value ^= 1 << b
    return value


def _capture(rng: random.Random) -> list[int]:
    base = rng.getrandbits(64)
    return [_flip(base, rng.randint(0, 4), rng) for _ in range(FRAMES)]


def _prints(hashes: list[int], rng: random.Random) -> list[FramePrint]:
    body = bytes(DESCRIPTOR * DESCRIPTOR)
    return [
        FramePrint(i, h, rng.getrandbits(64), body, 100.0 + i, 100.0, 60.0, registered=True)
        for i, h in enumerate(hashes)
    ]


def _load(engine: sa.Engine, keys: list[str], start: int, count: int, rng: random.Random) -> None:
    """Append ``count`` captures (ids start..start+count) with COPY, or executemany on SQLite."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    captures, bands = [], []
    for n in range(start, start + count):
        job, key = f"TID{n:032x}", keys[n % len(keys)]
        created = (t0 + timedelta(seconds=n)).replace(tzinfo=None)
        hashes = _capture(random.Random(n))
        captures.append((job, key, pack_prints(_prints(hashes, rng)), created))
        for band in sorted({k for h in hashes for k in band_keys(h)}):
            bands.append((job, band, key, created))
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        if engine.dialect.name == "postgresql":
            cur.execute("SET session_replication_role = replica")  # no job rows: FKs off
            with cur.copy(
                "COPY replay_captures (job_id, api_key_id, prints, created_at) FROM STDIN"
            ) as copy:
                for row in captures:
                    copy.write_row(row)
            buf = io.StringIO()
            for job, band, key, created in bands:
                buf.write(f"{job}\t{band}\t{key}\t{created.isoformat()}\n")
            with cur.copy(
                "COPY replay_bands (job_id, band, api_key_id, created_at) FROM STDIN"
            ) as copy:
                copy.write(buf.getvalue())
        else:
            cur.execute("PRAGMA foreign_keys = OFF")
            cur.executemany("INSERT INTO replay_captures VALUES (?, ?, ?, ?)", captures)
            cur.executemany(
                "INSERT INTO replay_bands (job_id, band, api_key_id, created_at) "
                "VALUES (?, ?, ?, ?)",
                bands,
            )
        raw.commit()
    finally:
        raw.close()
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(sa.text("ANALYZE replay_bands"))
            conn.execute(sa.text("ANALYZE replay_captures"))


def _measure(sessions: object, stored: int, rng: random.Random) -> dict[str, float]:
    replay_ms, new_ms, found = [], [], 0
    for _ in range(LOOKUPS):
        n = rng.randrange(stored)
        original = _capture(random.Random(n))
        replayed = _prints([_flip(h, rng.randint(0, 6), rng) for h in original], rng)
        history = DbHistory(sessions, None, None)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        got = history.lookup(replayed)
        replay_ms.append((time.perf_counter() - t0) * 1000)
        found += any(c.capture_id == f"TID{n:032x}" for c in got)
        fresh = _prints(_capture(random.Random(10**9 + rng.randrange(10**9))), rng)
        t0 = time.perf_counter()
        history.lookup(fresh)
        new_ms.append((time.perf_counter() - t0) * 1000)
    return {
        "replay_ms": statistics.median(replay_ms),
        "new_ms": statistics.median(new_ms),
        "found": found / LOOKUPS,
    }


def _explain(engine: sa.Engine, band: int) -> str:
    query = "SELECT job_id FROM replay_bands WHERE band = :b ORDER BY created_at DESC LIMIT 200"
    prefix = (
        "EXPLAIN (ANALYZE, BUFFERS) "
        if engine.dialect.name == "postgresql"
        else ("EXPLAIN QUERY PLAN ")
    )
    with engine.connect() as conn:
        rows = conn.execute(sa.text(prefix + query), {"b": band}).all()
    return "\n".join("    " + " | ".join(str(c) for c in row) for row in rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_replay")
    parser.add_argument(
        "--size",
        type=int,
        default=int(os.environ.get("BENCH_REPLAY_SIZE", DEFAULT_SIZE)),
        help="stored frame fingerprints at the last step (default 200000)",
    )
    args = parser.parse_args(argv if argv is not None else [])
    sizes = [s for s in (10_000, 100_000, 1_000_000, 10_000_000) if s < args.size] + [args.size]
    rng = random.Random(13)
    with _database() as url:
        upgrade(url)
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        keys = [f"key{i:02d}" for i in range(KEYS)]
        with transaction(sessions) as s:
            for k in keys:
                s.add(
                    ApiKey(
                        id=k, name=k, secret_hash="0" * 64, webhook_secret_enc="", sdk_secret_enc=""
                    )
                )
        print(
            f"{engine.dialect.name}; {FRAMES} frames per capture, {KEYS} keys, "
            f"{LOOKUPS} lookups per size (each a replay of a stored capture, and a new face)"
        )
        print(
            f"{'frames stored':>14} {'captures':>9} {'load s':>7} {'replay ms':>10} "
            f"{'new face ms':>12} {'found':>6}"
        )
        loaded = 0
        for size in sizes:
            target = size // FRAMES
            t0 = time.perf_counter()
            while loaded < target:
                step = min(20_000, target - loaded)
                _load(engine, keys, loaded, step, rng)
                loaded += step
            load_s = time.perf_counter() - t0
            m = _measure(sessions, loaded, rng)
            print(
                f"{size:>14,} {loaded:>9,} {load_s:>7.1f} {m['replay_ms']:>10.2f} "
                f"{m['new_ms']:>12.2f} {m['found']:>6.0%}",
                flush=True,
            )
        probe = _prints(_capture(random.Random(0)), rng)
        print(f"bands asked per lookup: {len(query_bands(probe))}; plan of one band's query:")
        print(_explain(engine, query_bands(probe)[0]))
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT count(*) FROM replay_bands")).scalar_one()
        print(f"replay_bands rows: {rows:,}")
        engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1:])
