"""Logging for ``antihack api|worker|beat``: one JSON object per line (or text on a terminal),
with the request id bound and secrets masked."""

from __future__ import annotations

import contextvars
import json
import logging
import logging.config
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from antihack.shared.choices import LOG_FORMATS as FORMATS
from antihack.shared.infra.queues import SWEEP_TASK, WEBHOOK_DISPATCH_TASK
from antihack.shared.infra.settings import Settings, SettingsError

# The job/request being handled in this thread or task; the API reads flask.g instead.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "antihack_request_id", default=None
)

# Attributes every LogRecord has; anything else on a record came from ``extra={...}``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

# Credentials that may appear in a message written by some library: header values of the
# seed's secret header, bearer tokens, passwords in URLs.
_PATTERNS = (
    re.compile(r"(?i)(x-df-api-secret['\"]?\s*[:=,]\s*['\"]?)[^'\"\s,}]+"),
    re.compile(r"(?i)(authorization['\"]?\s*[:=,]\s*['\"]?bearer\s+)[^'\"\s,}]+"),
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(://[^:/@\s]*:)[^@/\s]+(@)"),
)
MASK = "***"


def resolve_format(value: str, stream: TextIO | None = None) -> str:
    """``json`` or ``text`` for a setting of auto|json|text."""
    value = value.strip().lower() or "auto"
    if value not in FORMATS:
        raise SettingsError(f"ANTIHACK_LOG_FORMAT={value!r}: use one of {', '.join(FORMATS)}")
    if value != "auto":
        return value
    stream = stream or sys.stderr
    return "text" if stream.isatty() else "json"


class Redactor:
    """Masks known secrets (the admin token, the server key) and credential-looking patterns."""

    def __init__(self, secrets: list[str]) -> None:
        # Short values would mask ordinary words; the generated ones are 43 characters.
        self.secrets = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern in _PATTERNS:
            text = pattern.sub(
                lambda m: m.group(1) + MASK + (m.group(2) if m.lastindex == 2 else ""), text
            )
        return text


def _request_id() -> str | None:
    rid = request_id_var.get()
    if rid:
        return rid
    try:
        from flask import g, has_request_context
    except ImportError:  # pragma: no cover - flask is a dependency
        return None
    if has_request_context():
        value = g.get("request_id")
        return str(value) if value else None
    return None


class RequestIdFilter(logging.Filter):
    """Binds the current request id to every record that does not carry one already."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = _request_id()
        return True


# Scheduled every few seconds and nearly always idle: their "sending due task", "received" and
# "succeeded" lines would bury everything else at INFO. Shown at DEBUG; failures always.
QUIET_TASKS = (WEBHOOK_DISPATCH_TASK, SWEEP_TASK)
_QUIET_LOGGERS = ("celery.beat", "celery.worker.strategy", "celery.app.trace")


class QuietPeriodicFilter(logging.Filter):
    """Drops the INFO bookkeeping lines of the frequent scheduled tasks."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not record.name.startswith(_QUIET_LOGGERS):
            return True
        message = record.getMessage()
        return not any(task in message for task in QUIET_TASKS)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id and any extras."""

    def __init__(self, role: str = "", redact: Redactor | None = None) -> None:
        super().__init__()
        self.role = role
        self.redact = redact or Redactor([])

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        if self.role:
            out["role"] = self.role
        out["pid"] = record.process
        rid = getattr(record, "request_id", None)
        if rid:
            out["request_id"] = rid
        for name, value in vars(record).items():
            if name in _STANDARD or name in out or name in ("request_id", "rid"):
                continue
            if name.startswith("_"):
                continue
            out[name] = value if isinstance(value, int | float | bool | type(None)) else str(value)
        if record.exc_info:
            out["exc"] = self.redact(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exc"] = self.redact(record.exc_text)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The human format, with ``[request_id]`` when one is bound; secrets masked too."""

    def __init__(self, role: str = "", redact: Redactor | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(rid)s: %(message)s")
        self.role = role
        self.redact = redact or Redactor([])

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        record.rid = f" [{rid}]" if rid else ""
        return self.redact(super().format(record))


def formatter(settings: Settings, role: str, stream: TextIO | None = None) -> logging.Formatter:
    redact = Redactor(
        [
            settings.admin_token,
            settings.secret_key,
            settings.metrics_token,
            settings.database_password,
        ]
    )
    if resolve_format(settings.log_format, stream) == "json":
        return JsonFormatter(role, redact)
    return TextFormatter(role, redact)


def configure_logging(settings: Settings, role: str) -> None:
    """Route every logger (the root, Celery's, gunicorn's) to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(settings, role, sys.stderr))
    handler.addFilter(RequestIdFilter())
    if settings.log_level.upper() != "DEBUG":
        handler.addFilter(QuietPeriodicFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    logging.captureWarnings(True)  # e.g. Celery's warning about root: a JSON line, not raw text
    for name in ("gunicorn.error", "gunicorn.access", "celery", "celery.task", "celery.worker"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True


def gunicorn_logconfig(settings: Settings) -> dict[str, Any]:
    """gunicorn's ``logconfig_dict``: its loggers propagate to our root handler."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": settings.log_level.upper(), "handlers": ["antihack"]},
        "loggers": {
            "gunicorn.error": {"level": settings.log_level.upper(), "propagate": True},
            # Off, as before (no per-request line); "INFO" turns gunicorn's access log on.
            "gunicorn.access": {"level": "WARNING", "propagate": True},
        },
        "handlers": {
            "antihack": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "antihack",
                "filters": ["request_id"],
            }
        },
        "formatters": {"antihack": {"()": lambda: formatter(settings, "api", sys.stderr)}},
        "filters": {"request_id": {"()": RequestIdFilter}},
    }
