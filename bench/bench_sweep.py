"""Messages in the analyze queue after N sweep passes over a backlog of QUEUED jobs, no worker.

The sweeper asks the broker which job ids it still holds and republishes only the others, so a
backlog stays one message per job however many passes run; after the queue is lost (a Redis
restart without persistence) the next pass puts every job back. ``--old`` never reads the
broker (the behaviour before issue #16): one more message per job on each pass.
Embedded Redis + SQLite in a temporary folder; the real sweep task runs in-process.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import redis

import antihack.worker.tasks as tasks
from antihack.shared.domain.jobs import Submission, create_job
from antihack.shared.domain.keys import KeyOptions, create_key
from antihack.shared.infra.db import make_engine, make_sessionmaker, transaction
from antihack.shared.infra.embedded import start_redis
from antihack.shared.infra.migrate import upgrade
from antihack.shared.infra.queues import ANALYZE_QUEUE, SWEEP_TASK
from antihack.shared.infra.settings import Settings
from antihack.worker.celery_app import make_celery


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_sweep", description=__doc__)
    parser.add_argument("--jobs", type=int, default=88)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--old", action="store_true", help="never read the broker")
    args = parser.parse_args(argv if argv is not None else [])
    settings = Settings(data_dir=Path(tempfile.mkdtemp()), secret_key="bench", queued_stale_s=0)
    proc = start_redis(settings)
    try:
        upgrade(settings.effective_database_url)
        sessions = make_sessionmaker(make_engine(settings.effective_database_url))
        with transaction(sessions) as db:
            key, _ = create_key(db, "bench", KeyOptions(name="bench"))
            for i in range(args.jobs):
                create_job(db, key, Submission(payload=b"x%d" % i, source="file"))
        broker = redis.Redis.from_url(settings.redis_client_url)
        sweep = make_celery(settings).tasks[SWEEP_TASK]
        if args.old:
            tasks.held_job_ids = lambda *a: None  # type: ignore[attr-defined, assignment]
        for n in range(1, args.passes + 1):
            sweep.apply().get()
            print(f"pass {n}: {broker.llen(ANALYZE_QUEUE)} messages for {args.jobs} jobs")
        broker.delete(ANALYZE_QUEUE)
        sweep.apply().get()
        print(f"after the queue was lost: {broker.llen(ANALYZE_QUEUE)} messages")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
