"""Closed vocabularies of the API and its settings, each written once as a ``Literal`` with its
values as a tuple, and the few limits the settings check too. Every layer names them (domain,
infra, the CLI), so they sit beside those packages, not in one of them.

Only ``typing`` is imported here, so that the CLI can build its ``click.Choice`` options from
these at import time (``tests/test_cli_imports.py``); the pydantic models in
``shared/domain/schemas.py`` name the same types, and the OpenAPI document is generated from those.
"""

from __future__ import annotations

from typing import Literal, get_args

# Every step a capture can be asked to show (proto/liveness.proto's ``Challenge`` enum without
# CHALLENGE_UNSPECIFIED; a test checks the two agree). The pipeline can observe each
# (worker/pipeline/challenges.py); capture sessions draw theirs from ANTIHACK_SESSION_CHALLENGES.
Challenge = Literal[
    "TURN_LEFT", "TURN_RIGHT", "LOOK_UP", "LOOK_DOWN", "BLINK", "OPEN_MOUTH", "SMILE",
    "MOVE_CLOSER", "MOUTH", "NOD", "YAW", "LIGHT",
]  # fmt: skip
CHALLENGES: tuple[Challenge, ...] = get_args(Challenge)
# LIGHT needs the capture session's colours on a screen: a capture built from files cannot show it.
FILE_CHALLENGES: tuple[Challenge, ...] = tuple(c for c in CHALLENGES if c != "LIGHT")

QuotaPeriod = Literal["day", "month", "total"]
QUOTA_PERIODS: tuple[QuotaPeriod, ...] = get_args(QuotaPeriod)

# The endpoints a key's ``permissions`` can name (empty: every one).
Permission = Literal["liveness_anti_hack", "jobs", "liveness_image", "sessions"]
ENDPOINTS: tuple[Permission, ...] = get_args(Permission)

JobState = Literal["QUEUED", "RUNNING", "SUCCEEDED", "FAILED"]
CaptureSessionState = Literal["PENDING", "USED", "EXPIRED"]

# Settings (shared/infra/settings.py): Celery pools `antihack worker` runs with, and log formats.
WorkerPool = Literal["prefork", "threads", "solo"]
WORKER_POOLS: tuple[WorkerPool, ...] = get_args(WorkerPool)
LogFormat = Literal["auto", "json", "text"]
LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)

# How many colours a LIGHT step shows (shared/domain/light.py; ANTIHACK_LIGHT_COLORS is checked
# against the same bounds).
MIN_COLORS, MAX_COLORS = 6, 12
