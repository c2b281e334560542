"""What the Celery broker (Redis, kombu's layout) holds for a queue: its length, and the job ids
of its messages, waiting or delivered to a worker and not yet acknowledged.

kombu keeps a queue as one list per priority step (``analyze``, ``analyze\\x06\\x163``, …) and a
message a worker took but has not acknowledged (``acks_late``) in the ``unacked`` hash, which it
puts back in the queue once the visibility timeout has passed (so one held by a worker that died
is not lost). Read by the sweeper (republish only what the broker lost) and the readiness probes.
"""

from __future__ import annotations

import redis

# kombu.transport.redis: Channel.sep, PRIORITY_STEPS, Channel.unacked_key.
_SEP = "\x06\x16"
_PRIORITY_STEPS = (0, 3, 6, 9)
UNACKED_KEY = "unacked"
# A job id as it appears in a message (the ``argsrepr`` header of analyze(job_id)).
_JOB_ID_PATTERN = "TID" + "%x" * 32

# Job ids in the queue's lists and in the unacked messages routed to it, found by the Redis
# server (only the ids cross the network, not the messages). A message of another queue in the
# unacked hash ends with its routing key: ``[message, exchange, "<queue>"]``.
_HELD_IDS = """
local ids = {}
local pattern = ARGV[1]
for i = 1, #KEYS - 1 do
  for _, m in ipairs(redis.call('LRANGE', KEYS[i], 0, -1)) do
    local id = string.match(m, pattern)
    if id then ids[#ids + 1] = id end
  end
end
local suffix = ARGV[2]
for _, m in ipairs(redis.call('HVALS', KEYS[#KEYS])) do
  if string.sub(m, -#suffix) == suffix then
    local id = string.match(m, pattern)
    if id then ids[#ids + 1] = id end
  end
end
return ids
"""


def queue_lists(queue: str) -> list[str]:
    """The Redis lists that hold ``queue``'s waiting messages, one per priority step."""
    return [queue if step == 0 else f"{queue}{_SEP}{step}" for step in _PRIORITY_STEPS]


def queue_length(client: redis.Redis, queue: str) -> int:
    """Messages waiting in ``queue`` (not counting those delivered to a worker)."""
    pipe = client.pipeline(transaction=False)
    for name in queue_lists(queue):
        pipe.llen(name)
    return sum(int(n) for n in pipe.execute())


def held_job_ids(client: redis.Redis, queue: str) -> set[str]:
    """Job ids that ``queue``'s messages carry, waiting or unacknowledged: the broker will
    deliver (or redeliver) each of them without help."""
    keys = [*queue_lists(queue), UNACKED_KEY]
    found = client.eval(_HELD_IDS, len(keys), *keys, _JOB_ID_PATTERN, f'"{queue}"]')
    return {v.decode() if isinstance(v, bytes) else str(v) for v in found}
