"""Worker heartbeats and progress in Redis: /readyz and the worker health check read them.

Heartbeats: one sorted set, member = ``<celery hostname>:<pid>``, score = the Redis server's
clock in ms (never the hosts' clocks, which may disagree), so a probe is one O(log n) command
instead of a broadcast ping that waits for replies. A heartbeat only proves the process lives.

Progress proves consumption: one sorted set per queue, member = the Celery node name
(``celery@host``), score = when the node last started or finished a task of that queue, or saw
the queue empty (nothing to consume is not a stall). A node whose queue holds messages while its
progress is older than ANTIHACK_WORKER_STALL_S is stalled, as a consumer that never resumed
after a Redis reconnection is (known kombu/Celery failures), though its heartbeat thread beats.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from antihack.shared.infra.broker import queue_length, queue_lists

log = logging.getLogger(__name__)

HEARTBEAT_KEY = "antihack:workers"
PROGRESS_KEY = "antihack:progress:"  # + queue name
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


# The age in ms of the latest beat of a member starting with ARGV[1]: {found, age}.
_AGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local best = -1
local beats = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #beats, 2 do
  if string.sub(beats[i], 1, #ARGV[1]) == ARGV[1] and tonumber(beats[i + 1]) > best then
    best = tonumber(beats[i + 1])
  end
end
if best < 0 then return {0, -1} end
return {1, now - best}
"""

# Mark ``ARGV[1]`` as progressing now in every sorted set of KEYS.
_MARK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now, ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - tonumber(ARGV[2]) * 1000)
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[2]))
end
return now
"""

# KEYS[1]: a queue's progress set, then its lists. ARGV[1]: a node, or "" for the latest of all.
# Returns {messages waiting, age in ms of the progress (-1: none recorded)}.
_STALL = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local waiting = 0
for i = 2, #KEYS do waiting = waiting + redis.call('LLEN', KEYS[i]) end
local at
if ARGV[1] == '' then
  local last = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  at = last[2]
else
  at = redis.call('ZSCORE', KEYS[1], ARGV[1])
end
local age = -1
if at then age = now - tonumber(at) end
return {waiting, age}
"""


@dataclass(frozen=True)
class Stall:
    """A queue with messages waiting and no progress from its consumer(s) for ``idle_s``."""

    queue: str
    waiting: int
    idle_s: float
    node: str = ""

    def reason(self) -> str:
        who = f"worker {self.node}" if self.node else "no worker"
        return (
            f"stalled: {self.waiting} messages wait in {self.queue!r} and {who} started or "
            f"finished a task of it for {self.idle_s:.0f} s"
        )


def progressed(client: redis.Redis, node: str, queues: Sequence[str]) -> None:
    """Record that ``node`` consumed from (or found empty) each of ``queues`` now."""
    if queues:
        keys = [PROGRESS_KEY + q for q in queues]
        client.eval(_MARK, len(keys), *keys, node, FORGET_AFTER_S)


def stalled(client: redis.Redis, queue: str, stall_s: float, node: str = "") -> Stall | None:
    """The stall of ``node`` on ``queue`` (or of every consumer of it, when ``node`` is ""),
    or None: the queue is empty, progress is recent, or no consumer of it ever recorded any
    (a worker from before progress was recorded is not judged)."""
    keys = [PROGRESS_KEY + queue, *queue_lists(queue)]
    waiting, age_ms = client.eval(_STALL, len(keys), *keys, node)
    if int(waiting) == 0 or int(age_ms) < 0 or int(age_ms) < stall_s * 1000:
        return None
    return Stall(queue, int(waiting), int(age_ms) / 1000, node)


def beat(client: redis.Redis, member: str) -> None:
    """Record that ``member`` is alive now."""
    client.eval(_BEAT, 1, HEARTBEAT_KEY, member, FORGET_AFTER_S)


def forget(client: redis.Redis, member: str, node: str = "", queues: Sequence[str] = ()) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.zrem(HEARTBEAT_KEY, member)
    for q in queues:
        pipe.zrem(PROGRESS_KEY + q, node)
    pipe.execute()


def fresh_workers(client: redis.Redis, max_age_s: float) -> tuple[int, float | None]:
    """How many workers beat within ``max_age_s``, and the age in seconds of the latest beat
    (None when no worker ever beat)."""
    n, age_ms = client.eval(_FRESH, 1, HEARTBEAT_KEY, int(max_age_s * 1000))
    return int(n), (None if int(age_ms) < 0 else int(age_ms) / 1000)


class Heartbeat:
    """A daemon thread in the worker's main process that beats every ``interval_s``, and
    records progress for those of the node's ``queues`` it finds empty (tasks record the rest,
    :func:`task_progress`)."""

    def __init__(
        self,
        redis_url: str,
        member: str,
        interval_s: float,
        node: str = "",
        queues: Sequence[str] = (),
    ) -> None:
        self.client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.member = member
        self.node = node
        self.queues = tuple(queues)
        self.interval_s = max(interval_s, 0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="antihack-heartbeat", daemon=True)

    def start(self) -> None:
        with contextlib.suppress(redis.RedisError):
            # Starting counts as progress: a node is judged from its start, not from never.
            progressed(self.client, self.node, self.queues)
        self._beat()  # ready at once, not one interval later
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(redis.RedisError):
            # Readiness drops as soon as the worker stops; its queues are not its to consume.
            forget(self.client, self.member, self.node, self.queues)

    def _beat(self) -> None:
        try:
            beat(self.client, self.member)
            # An empty queue is not a stall: this thread says so; only tasks say more.
            idle = [q for q in self.queues if queue_length(self.client, q) == 0]
            progressed(self.client, self.node, idle)
        except redis.RedisError as exc:
            log.warning("worker heartbeat failed: %s", type(exc).__name__)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._beat()


_task_client: tuple[int, redis.Redis] | None = None


def task_progress(redis_url: str, node: str, queue: str) -> None:
    """Record, from the process running a task, that ``node`` consumed from ``queue``; never
    fails the task."""
    global _task_client
    try:
        if _task_client is None or _task_client[0] != os.getpid():  # one client per process
            client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
            _task_client = (os.getpid(), client)
        progressed(_task_client[1], node, [queue])
    except redis.RedisError as exc:
        log.warning("worker progress not recorded: %s", type(exc).__name__)


def container_health(redis_url: str, stall_s: float, max_age_s: float) -> str | None:
    """The worker health check of a container: why its worker is unhealthy (no fresh heartbeat,
    or stalled on a queue it consumes), or None. The node is ``celery@<hostname>``."""
    client = redis.Redis.from_url(redis_url, socket_timeout=3, socket_connect_timeout=3)
    node = "celery@" + socket.gethostname()
    n, age_ms = client.eval(_AGE, 1, HEARTBEAT_KEY, node + ":")
    if int(n) == 0 or int(age_ms) >= max_age_s * 1000:
        return f"no fresh heartbeat from {node}:"
    for key in client.scan_iter(match=PROGRESS_KEY + "*", count=100):
        queue = key.decode()[len(PROGRESS_KEY) :]
        stall = stalled(client, queue, stall_s, node)
        if stall is not None:
            return stall.reason()
    return None
