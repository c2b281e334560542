"""Per-key rate limit: GCRA in one Redis Lua script (atomic, no read-modify-write in Python)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import redis

log = logging.getLogger(__name__)

# GCRA (generic cell rate algorithm). State: the key's theoretical arrival time (TAT), in
# microseconds of the Redis server clock, so that every API process shares one clock.
# A request is allowed when the new TAT is at most `burst` emission intervals ahead of now.
GCRA = """
local key = KEYS[1]
local interval = tonumber(ARGV[1])      -- microseconds per request (1 / rate)
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', key) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  return {0, 0, allow_at - now, tat - now}
end
redis.call('SET', key, new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
local remaining = math.floor((now - allow_at) / interval)
return {1, remaining, 0, new_tat - now}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int  # the burst: requests allowed at once
    window_s: int  # seconds in which `limit` requests are allowed from empty
    remaining: int
    retry_after_s: float  # when a refused request may be retried
    reset_s: float  # until the bucket is full again

    def headers(self) -> dict[str, str]:
        """IETF httpapi RateLimit-Policy / RateLimit headers (and Retry-After when refused)."""
        h = {
            "RateLimit-Policy": f'"default";q={self.limit};w={self.window_s}',
            "RateLimit": f'"default";r={self.remaining};t={math.ceil(self.reset_s)}',
        }
        if not self.allowed:
            h["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return h


class RateLimiter:
    def __init__(self, client: redis.Redis, fail_open: bool) -> None:
        self.client = client
        self.fail_open = fail_open
        self._script = client.register_script(GCRA)

    def check(self, api_id: str, rate: float, burst: int | None) -> Decision | None:
        """The decision for one request; None when Redis is unreachable and we fail open."""
        size = max(1, burst or 1)
        interval_us = max(1, round(1_000_000 / rate))
        window = max(1, math.ceil(size / rate))
        try:
            allowed, remaining, retry_us, reset_us = self._script(
                keys=[f"antihack:rl:{api_id}"], args=[interval_us, size]
            )
        except redis.RedisError as exc:
            log.warning("rate limiter unavailable (%s); failing %s",
                        type(exc).__name__, "open" if self.fail_open else "closed")  # fmt: skip
            if self.fail_open:
                return None
            return Decision(False, size, window, 0, 1.0, 1.0)
        return Decision(
            allowed=bool(allowed),
            limit=size,
            window_s=window,
            remaining=int(remaining),
            retry_after_s=int(retry_us) / 1e6,
            reset_s=int(reset_us) / 1e6,
        )
