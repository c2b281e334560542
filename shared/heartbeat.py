"""Worker heartbeats in Redis: each worker refreshes its entry; /readyz counts fresh ones.

One sorted set, member = ``<celery hostname>:<pid>``, score = the Redis server's clock in ms
(never the hosts' clocks, which may disagree), so a probe is one O(log n) command instead of a
broadcast ping that waits for replies.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import redis

log = logging.getLogger(__name__)

HEARTBEAT_KEY = "antihack:workers"
# Members of workers that died without saying goodbye are dropped after this long.
FORGET_AFTER_S = 3600

_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]) * 1000)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return now
"""

_FRESH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = redis.call('ZCOUNT', KEYS[1], now - tonumber(ARGV[1]), '+inf')
local last = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local age = -1
if last[2] then age = now - tonumber(last[2]) end
return {n, age}
"""


def beat(client: redis.Redis, member: str) -> None:
    """Record that ``member`` is alive now."""
    client.eval(_BEAT, 1, HEARTBEAT_KEY, member, FORGET_AFTER_S)


def forget(client: redis.Redis, member: str) -> None:
    client.zrem(HEARTBEAT_KEY, member)


def fresh_workers(client: redis.Redis, max_age_s: float) -> tuple[int, float | None]:
    """How many workers beat within ``max_age_s``, and the age in seconds of the latest beat
    (None when no worker ever beat)."""
    n, age_ms = client.eval(_FRESH, 1, HEARTBEAT_KEY, int(max_age_s * 1000))
    return int(n), (None if int(age_ms) < 0 else int(age_ms) / 1000)


class Heartbeat:
    """A daemon thread in the worker's main process that beats every ``interval_s``."""

    def __init__(self, redis_url: str, member: str, interval_s: float) -> None:
        self.client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.member = member
        self.interval_s = max(interval_s, 0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="antihack-heartbeat", daemon=True)

    def start(self) -> None:
        self._beat()  # ready at once, not one interval later
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(redis.RedisError):
            forget(self.client, self.member)  # readiness drops as soon as the worker stops

    def _beat(self) -> None:
        try:
            beat(self.client, self.member)
        except redis.RedisError as exc:
            log.warning("worker heartbeat failed: %s", type(exc).__name__)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._beat()
