"""``antihack serve``: API, worker and beat (and the embedded Redis) as one supervised tree."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click

from antihack.shared.domain.keys import KeyOptions, create_key
from antihack.shared.infra.db import make_engine, make_sessionmaker, transaction
from antihack.shared.infra.embedded import redis_command, wait_for_redis
from antihack.shared.infra.migrate import upgrade
from antihack.shared.infra.settings import Settings
from antihack.shared.infra.tables import ApiKey

DEMO_KEY_FILE = "demo_key.json"
# The demo key also backs the public /demo page, where anyone can start captures with it.
DEMO_KEY_OPTIONS = KeyOptions(name="demo", quota=1000, quota_period="day", rate=1.0, burst=5)


def antihack_command(*args: str) -> list[str]:
    """Children run as ``antihack <role>`` so that ``ps`` shows what each one is."""
    script = Path(sys.executable).with_name("antihack")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "antihack.shared.cli", *args]


def ensure_demo_key(settings: Settings) -> dict[str, str]:
    """Create the demo key once and keep its secret in the data dir (mode 0600) to print it."""
    path = settings.data_path / DEMO_KEY_FILE
    engine = make_engine(settings.effective_database_url)
    sessions = make_sessionmaker(engine)
    try:
        if path.exists():
            saved: dict[str, str] = json.loads(path.read_text())
            with transaction(sessions) as session:
                if session.get(ApiKey, saved["api_id"]) is not None:
                    return saved
        with transaction(sessions) as session:
            key, new = create_key(session, settings.secret_key, DEMO_KEY_OPTIONS)
            saved = {"api_id": key.id, "api_secret": new.api_secret}
    finally:
        engine.dispose()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(saved, fh)
    return saved


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(self.argv, env=env)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    """Start children, restart one that dies (with a back-off), stop all on a signal."""

    def __init__(self, children: list[Child], env: dict[str, str]) -> None:
        self.children = children
        self.env = env
        self.stopping = False

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def run(self, on_started: object = None) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        for child in self.children:
            # One started before the supervisor (the embedded Redis, which the migrations
            # need) is not started twice: a second redis-server would outlive ``serve``.
            if not child.alive():
                child.start(self.env)
        if callable(on_started):
            on_started()
        while not self.stopping:
            for child in self.children:
                if self.stopping or child.alive():
                    continue
                code = child.proc.returncode if child.proc else None
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < 60] + [now]
                delay = min(2 ** (len(child.restarts) - 1), 30) if len(child.restarts) > 1 else 0
                click.echo(f"serve: {child.name} exited ({code}); restarting in {delay}s", err=True)
                time.sleep(delay)
                if not self.stopping:
                    child.start(self.env)
            time.sleep(0.2)
        self.stop()
        return 0

    def stop(self) -> None:
        # Stop in reverse order: the API and beat first, then workers, Redis last.
        for child in reversed(self.children):
            if child.alive() and child.proc is not None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for child in reversed(self.children):
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()


def wait_healthy(
    url: str, timeout: float = 60, stopping: Callable[[], bool] = lambda: False
) -> bool:
    """Whether the API at ``url`` answers /healthz within ``timeout``; False at once when
    ``stopping`` (Ctrl-C while it starts: the API is stopping too, and would never answer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopping():
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def serve(
    settings: Settings, host: str, port: int, workers: int | None, demo_page: bool = True
) -> int:
    env = dict(os.environ)
    env.update(
        ANTIHACK_DATA_DIR=str(settings.data_path),
        ANTIHACK_SECRET_KEY=settings.secret_key,
        ANTIHACK_ADMIN_TOKEN=settings.admin_token,
    )
    children: list[Child] = []
    if settings.embedded_redis:
        settings.redis_socket.unlink(missing_ok=True)
        redis_child = Child("redis", redis_command(settings))
        redis_child.start(env)
        assert redis_child.proc is not None
        children.append(redis_child)
    try:
        if children:
            assert children[0].proc is not None
            wait_for_redis(settings, children[0].proc)
        upgrade(settings.effective_database_url)
        demo = ensure_demo_key(settings)
    except BaseException:
        # Ctrl-C or a failure before the supervisor runs: stop the Redis started above.
        Supervisor(children, env).stop()
        raise
    # The API serves /demo for the demo key; an empty id turns the page off.
    env["ANTIHACK_DEMO_API_ID"] = demo["api_id"] if demo_page else ""
    worker_args = ["worker"] + (["--concurrency", str(workers)] if workers else [])
    children += [
        Child("api", antihack_command("api", "--host", host, "--port", str(port))),
        Child("worker", antihack_command(*worker_args)),
        Child("beat", antihack_command("beat")),
    ]
    base = f"http://{host}:{port}"

    def started() -> None:
        if wait_healthy(base, stopping=lambda: supervisor.stopping):
            # Issue #19: a fresh sample each start (samples/astronaut.pb is old, sent = replay).
            from antihack.shared.cli.quickstart import quickstart_text, write_fresh_sample

            sample = write_fresh_sample(settings.data_path)
            click.echo(
                f"\nantihack is ready on {base}\n"
                f"  admin token : {settings.admin_token}\n"
                f"  demo API id : {demo['api_id']}\n"
                f"  demo secret : {demo['api_secret']}\n"
                + quickstart_text(base, demo["api_id"], demo["api_secret"], sample)
                + (
                    f"  demo page   : {base}/demo (allow the camera; --no-demo turns it off)\n"
                    if demo_page
                    else ""
                )
                + "Ctrl-C stops everything.\n",
                err=True,
            )
        elif not supervisor.stopping:
            click.echo("serve: the API did not answer /healthz within 60 s", err=True)

    supervisor = Supervisor(children, env)
    return supervisor.run(on_started=started)
