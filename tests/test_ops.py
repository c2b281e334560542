"""Operations: /readyz follows the workers' heartbeats; logs are JSON lines with the request id
bound and no secret in them."""

from __future__ import annotations

import io
import json
import logging
import time
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from antihack.shared.infra.heartbeat import HEARTBEAT_KEY, beat
from antihack.shared.infra.logs import (
    JsonFormatter,
    QuietPeriodicFilter,
    Redactor,
    RequestIdFilter,
    TextFormatter,
    formatter,
    resolve_format,
)
from antihack.shared.infra.settings import Settings, SettingsError

# --- /readyz --------------------------------------------------------------------------------


@pytest.fixture
def heartbeats(base_settings: Settings) -> redis.Redis:
    """Redis with no heartbeat in it (a killed worker of an earlier test may have left one)."""
    client = redis.Redis.from_url(base_settings.redis_client_url)
    client.delete(HEARTBEAT_KEY)
    return client


def readyz(client: FlaskClient) -> tuple[int, dict[str, Any]]:
    resp = client.get("/readyz")
    body: dict[str, Any] = resp.get_json()
    return resp.status_code, body


def test_not_ready_without_a_worker(client: FlaskClient, heartbeats: redis.Redis) -> None:
    code, body = readyz(client)
    assert code == 503
    assert body["status"] == "NOT_READY"
    assert body["checks"]["database"] == "ok" and body["checks"]["redis"] == "ok"
    assert body["checks"]["workers"] == "no worker heartbeat"


def test_a_stale_heartbeat_is_not_ready(base_settings: Settings, heartbeats: redis.Redis) -> None:
    from tests.conftest import create_test_app

    settings = base_settings.replace(worker_heartbeat_max_age_s=1.0)
    client = create_test_app(settings).test_client()
    beat(heartbeats, "celery@gone:1")
    assert readyz(client)[0] == 200
    time.sleep(1.5)
    code, body = readyz(client)
    assert code == 503
    assert body["checks"]["workers"].startswith("none: the latest heartbeat is")


def test_ready_while_a_worker_runs_and_not_after_it_stops(
    client: FlaskClient, heartbeats: redis.Redis, start_worker: Any
) -> None:
    assert readyz(client)[0] == 503
    worker = start_worker(concurrency=1)
    code, body = readyz(client)
    assert code == 200, body
    assert body["status"] == "OK"
    assert body["checks"]["workers"].startswith("1 with a heartbeat")
    worker.stop()  # a graceful stop removes its heartbeat at once
    code, body = readyz(client)
    assert code == 503, body


def test_redis_down_is_not_ready(base_settings: Settings) -> None:
    from tests.conftest import create_test_app

    app = create_test_app(base_settings.replace(redis_url="redis://127.0.0.1:1/0"))
    code, body = readyz(app.test_client())
    assert code == 503
    assert body["checks"]["redis"].startswith("error")
    assert body["checks"]["workers"] == "unknown"


# --- logs -----------------------------------------------------------------------------------

ADMIN_TOKEN = "admin-token-0123456789abcdef"
API_SECRET = "s3cr3t-api-secret-value-0123456789"


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger(f"antihack.test.{id(stream)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_with_the_request_id_bound_in_a_request(app: Flask) -> None:
    logger, stream = capture(JsonFormatter("api"))
    logger.info("outside a request")
    with app.test_request_context("/v1/jobs"):
        app.preprocess_request()  # sets g.request_id like a real request
        from flask import g

        logger.warning("publish failed; the sweeper will enqueue it")
        rid = g.request_id
    logger.info("explicit", extra={"request_id": "TIDexplicit", "attempt": 2})
    out = lines(stream)
    assert [o["message"] for o in out][0] == "outside a request"
    assert "request_id" not in out[0]
    assert out[1]["request_id"] == rid and rid.startswith("TID")
    assert out[1]["level"] == "WARNING" and out[1]["role"] == "api"
    assert out[2]["request_id"] == "TIDexplicit" and out[2]["attempt"] == 2


def test_a_task_binds_its_job_id(app: Flask) -> None:
    from antihack.worker.celery_app import AntihackTask  # every task's base class binds it

    logger, stream = capture(JsonFormatter("worker"))
    job_id = "TID" + "a" * 32
    task = AntihackTask()
    task.before_start("x", (job_id,), {})
    logger.info("analyze failed")
    task.after_return("SUCCESS", None, "x", (job_id,), {}, None)
    logger.info("after the task")
    out = lines(stream)
    assert out[0]["request_id"] == job_id
    assert "request_id" not in out[1]


@pytest.mark.parametrize("formatter_class", [JsonFormatter, TextFormatter])
def test_secrets_never_reach_the_log(formatter_class: type[JsonFormatter]) -> None:
    logger, stream = capture(formatter_class("api", Redactor([ADMIN_TOKEN, "short"])))
    logger.info("token %s in a message", ADMIN_TOKEN)
    logger.info("a short word")  # too short to be a generated secret: not masked
    logger.info("headers {'X-DF-API-ID': 'AK1', 'X-DF-API-SECRET': '%s'}", API_SECRET)
    logger.info("X-DF-API-SECRET: %s", API_SECRET)
    logger.info("Authorization: Bearer %s", ADMIN_TOKEN + "x")
    logger.info("postgresql+psycopg://antihack:pa55word@postgres:5432/antihack")
    logger.info("redis://:pa55word@redis:6379/0")
    try:
        raise RuntimeError(f"failed with {ADMIN_TOKEN}")
    except RuntimeError:
        logger.exception("boom")
    text = stream.getvalue()
    assert "a short word" in text
    for secret in (ADMIN_TOKEN, API_SECRET, "pa55word"):
        assert secret not in text
    assert "AK1" in text  # ids stay readable
    assert text.count("***") >= 6


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_every_secret_setting_is_masked(log_format: str) -> None:
    """The processes' formatter masks each secret setting's value, the database password (from
    ANTIHACK_DATABASE_PASSWORD or its _FILE) included, also where it is not inside a URL."""
    password = "db-pa55word/with@odd%chars"
    settings = Settings.from_env(
        {
            "ANTIHACK_DATABASE_URL": "postgresql+psycopg://antihack@postgres:5432/antihack",
            "ANTIHACK_DATABASE_PASSWORD": password,
            "ANTIHACK_ADMIN_TOKEN": ADMIN_TOKEN,
            "ANTIHACK_SECRET_KEY": API_SECRET,
            "ANTIHACK_METRICS_TOKEN": "metrics-token-0123456789",
            "ANTIHACK_LOG_FORMAT": log_format,
        }
    )
    logger, stream = capture(formatter(settings, "api", io.StringIO()))
    logger.info("connecting with password %s", password)
    logger.info("engine %s", settings.effective_database_url)
    logger.info("keys %s %s %s", ADMIN_TOKEN, API_SECRET, settings.metrics_token)
    text = stream.getvalue()
    for secret in (password, ADMIN_TOKEN, API_SECRET, settings.metrics_token, "db-pa55word"):
        assert secret not in text
    assert "postgres:5432/antihack" in text  # the rest of the URL stays readable


def test_log_format_setting() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert resolve_format("auto", Tty()) == "text"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("json", Tty()) == "json"
    assert resolve_format("TEXT", io.StringIO()) == "text"
    with pytest.raises(SettingsError):
        resolve_format("xml")


def test_real_processes_write_json_lines(
    start_api: Any, start_worker: Any, base_settings: Settings, tmp_path: Any
) -> None:
    """Under a non-terminal stderr (as in a container), every line the API and the worker
    write is one JSON object, and neither writes the admin token."""
    import requests

    start_worker(concurrency=1)
    base = start_api()
    requests.get(base + "/admin/keys", headers={"Authorization": "Bearer nope"}, timeout=10)
    requests.get(
        base + "/admin/keys",
        headers={"Authorization": f"Bearer {base_settings.admin_token}"},
        timeout=10,
    )
    logs = {p.name: p.read_text() for p in tmp_path.glob("*.log")}
    assert set(logs) == {"worker0.log", "api0.log"}
    for name, text in logs.items():
        records = []
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pytest.fail(f"{name}: not a JSON line: {line!r}")
        assert records, name
        assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)
        assert base_settings.admin_token not in text
    assert any("ready." in r for r in logs["worker0.log"].splitlines())


def test_idle_scheduled_tasks_do_not_flood_the_log() -> None:
    """The dispatcher runs every 2 s: its routine lines are dropped, anything else is kept."""
    quiet = QuietPeriodicFilter()

    def kept(name: str, level: int, msg: str) -> bool:
        return quiet.filter(logging.LogRecord(name, level, __file__, 1, msg, (), None))

    dispatch = "antihack.webhooks.dispatch[9c0e]"
    assert not kept(
        "celery.beat",
        logging.INFO,
        "Scheduler: Sending due task webhooks (antihack.webhooks.dispatch)",
    )
    assert not kept("celery.worker.strategy", logging.INFO, f"Task {dispatch} received")
    assert not kept("celery.app.trace", logging.INFO, f"Task {dispatch} succeeded in 0.001s: 0")
    assert not kept(
        "celery.app.trace", logging.INFO, "Task antihack.sweep[1] succeeded in 0.01s: 0"
    )
    # Jobs, failures and other loggers stay.
    assert kept("celery.app.trace", logging.INFO, "Task antihack.analyze[77] succeeded in 0.2s")
    assert kept("celery.app.trace", logging.ERROR, f"Task {dispatch} raised: OperationalError")
    assert kept("antihack.worker.tasks", logging.INFO, "antihack.sweep requeued 3 jobs")
