"""A local stack of antihack processes for the test suite and the benchmarks."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from antihack.shared.infra.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2
) -> Any:
    """Poll ``predicate`` until it returns something truthy; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class Proc:
    """An ``antihack`` CLI child in its own process group, its output in a log file."""

    def __init__(self, settings: Settings, *args: str, log: Path) -> None:
        env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
        self.log = log
        self._fh = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "antihack.shared.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill9(self) -> None:
        """SIGKILL the whole group: the main process and every pool child, mid-task."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()
            except ProcessLookupError:
                pass
        self._fh.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_worker(settings: Settings, log: Path, concurrency: int = 2) -> Proc:
    """A worker, returned once it consumes (models loaded)."""
    proc = Proc(settings, "worker", "--concurrency", str(concurrency), log=log)
    wait_until(lambda: "ready." in proc.output() or proc.proc.poll() is not None, 120, "worker")
    if proc.proc.poll() is not None:
        raise RuntimeError(f"worker exited:\n{proc.output()[-3000:]}")
    return proc


def start_api(settings: Settings, log: Path, *extra: str) -> tuple[Proc, str]:
    """The API under gunicorn on a free port; returns it with its base URL once healthy."""
    import urllib.request

    port = free_port()
    proc = Proc(settings, "api", "--port", str(port), *extra, log=log)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return proc.proc.poll() is not None

    wait_until(healthy, 60, "api")
    if proc.proc.poll() is not None:
        raise RuntimeError(f"api exited:\n{proc.output()[-3000:]}")
    return proc, base
