"""coredis plumbing shared by the publisher, the consumer and the hub (imported lazily).

Everything that touches coredis goes through here: opening a client (single node or cluster),
the Lua scripts, and the one classification of Redis failures (:func:`is_redis_failure`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from trioalpaca._errors import TrioAlpacaError, UsageError

__all__ = [
    "FencedError",
    "RedisUnavailableError",
    "is_redis_failure",
    "open_redis_client",
]


class RedisUnavailableError(TrioAlpacaError):
    """Redis could not be reached (or kept failing) for longer than allowed.

    Publishers and consumers retry on their own with backoff; this error only ends a block when a
    caller-set limit (``max_redis_outage``) is exceeded.
    """

    retryable = True
    fatal = False


class FencedError(TrioAlpacaError):
    """A publisher's epoch is no longer the current one: another publisher took over.

    Its writes are refused by Redis (the write script checks the epoch), so a deposed leader
    writes nothing. The hub treats this as "back to standby"; a plain publisher ends with it.

    Attributes:
        epoch: the publisher's own epoch.
        current: the epoch found in Redis (``None`` when the key is missing).
    """

    retryable = False
    fatal = True

    def __init__(self, epoch: int, current: int | None) -> None:
        super().__init__(
            f"publisher epoch {epoch} was fenced off: the current epoch is {current}"
            " (another publisher took over)"
        )
        self.epoch = epoch
        self.current = current


def is_redis_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a Redis/transport failure worth a reconnect (not a programming error)."""
    import anyio
    import coredis.exceptions as cx

    if isinstance(
        exc,
        (
            cx.ConnectionError,
            OSError,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            anyio.EndOfStream,
        ),
    ):
        return True
    if isinstance(exc, cx.ClusterCrossSlotError):
        return False
    if isinstance(exc, cx.ResponseError):
        text = str(exc)
        return text.startswith(
            ("LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY")
        )
    return isinstance(exc, cx.RedisClusterError)


@asynccontextmanager
async def open_redis_client(url: str, *, cluster: bool = False) -> AsyncIterator[Any]:
    """``async with`` a coredis client for ``url`` (``redis://host:port[/db]``).

    With ``cluster=True`` a :class:`coredis.RedisCluster` is opened (the URL names any one node).
    Connections are made lazily: an unreachable server fails the first command, not the ``with``.
    """
    try:
        import coredis
    except ImportError as exc:  # pragma: no cover - the redis extra is installed in CI
        raise UsageError(
            "the Redis fan-out needs coredis: pip install 'trioalpaca[redis]'"
        ) from exc
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise UsageError(f"not a Redis URL: {url!r} (expected redis://host:port)")
    from coredis.retry import NoRetryPolicy

    kwargs: dict[str, Any] = {"retry_policy": NoRetryPolicy()}
    try:
        if cluster:
            # (RedisCluster.from_url passes its node as a dict, which coredis 6.9 deprecates)
            from urllib.parse import urlsplit

            parts = urlsplit(url)
            if parts.scheme not in ("redis", "rediss") or not parts.hostname:
                raise UsageError(f"a cluster URL is redis://host:port, not {url!r}")
            client: Any = coredis.RedisCluster(
                host=parts.hostname,
                port=parts.port or 6379,
                username=parts.username,
                password=parts.password,
                ssl=parts.scheme == "rediss",
                **kwargs,
            )
        else:
            client = coredis.Redis.from_url(url, **kwargs)
    except ValueError as exc:
        raise UsageError(f"bad Redis URL {url!r}: {exc}") from None
    async with client:
        yield client


# KEYS[1] = epoch key, KEYS[2] = registry set of stream keys, KEYS[3] = hash of per-stream entry
# numbers, KEYS[4..] = stream keys.
# ARGV[1] = epoch, ARGV[2] = trim mode ("", "MAXLEN", "MINID"), ARGV[3] = MAXLEN count or MINID
# window in ms, ARGV[4] = msgpack array of entries, each [key index (into KEYS), kind, data,
# rx ns as text (Lua numbers are doubles), sequence]: one argument, far cheaper to send than
# five per entry.
# Fencing: the highest epoch wins. A writer whose epoch is below the stored one writes nothing
# and gets {0, current}; a missing or lower stored epoch (Redis lost its data) is raised to the
# writer's. Otherwise every entry is XADDed with its per-stream number n (HINCRBY) and {1, n}
# comes back.
WRITE_SCRIPT = """
local epoch = ARGV[1]
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local mine = tonumber(epoch)
if cur > mine then return {0, redis.call('GET', KEYS[1])} end
if cur < mine then redis.call('SET', KEYS[1], epoch) end
for i = 4, #KEYS do redis.call('SADD', KEYS[2], KEYS[i]) end
local mode = ARGV[2]
local thr = ARGV[3]
if mode == 'MINID' then
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[3])
  if ms < 0 then ms = 0 end
  thr = string.format('%.0f', ms)
end
local entries = cmsgpack.unpack(ARGV[4])
local n = 0
for _, e in ipairs(entries) do
  local key = KEYS[e[1]]
  local num = redis.call('HINCRBY', KEYS[3], key, 1)
  if mode == '' then
    redis.call('XADD', key, '*', 'k', e[2], 'd', e[3], 'rx', e[4], 'e', epoch, 's', e[5], 'n', num)
  else
    redis.call('XADD', key, mode, '~', thr, '*', 'k', e[2], 'd', e[3], 'rx', e[4], 'e', epoch,
               's', e[5], 'n', num)
  end
  n = n + 1
end
return {1, n}
"""

# KEYS[1] = registry set, KEYS[2] = hash of per-stream entry numbers, KEYS[3] = the status stream.
# ARGV[1] = epoch, ARGV[2] = d, ARGV[3] = rx ns as text, ARGV[4] = sequence.
# A publisher's last word (``stopped`` after a crash or a fencing): one status entry, written
# whatever the stored epoch (a fenced publisher's writes are refused by WRITE_SCRIPT; this entry
# only ever goes into the status stream, where consumers past the newer epoch skip it as stale).
STATUS_SCRIPT = """
redis.call('SADD', KEYS[1], KEYS[3])
local num = redis.call('HINCRBY', KEYS[2], KEYS[3], 1)
return redis.call('XADD', KEYS[3], '*', 'k', 'status', 'd', ARGV[2], 'rx', ARGV[3], 'e', ARGV[1],
                  's', ARGV[4], 'n', num)
"""

# KEYS[1] = epoch key. A new epoch: above the stored one and at least Redis' clock in ms, so
# epochs keep growing even when Redis lost its data. Returns it as text.
EPOCH_SCRIPT = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local e = cur + 1
if ms > e then e = ms end
local text = string.format('%.0f', e)
redis.call('SET', KEYS[1], text)
return text
"""

# KEYS[1] = lease key, KEYS[2] = epoch key; ARGV[1] = token, ARGV[2] = ttl ms.
# Takes the lease if free and then makes a new epoch (as EPOCH_SCRIPT); returns it, or false.
ACQUIRE_SCRIPT = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local e = cur + 1
if ms > e then e = ms end
local text = string.format('%.0f', e)
redis.call('SET', KEYS[2], text)
return text
"""

# KEYS[1] = a stream key. Returns {exists, last-generated-id, max-deleted-entry-id,
# first entry id} ("" where unknown), read from XINFO STREAM (coredis' own parser mangles
# max-deleted-entry-id in 6.9).
PROBE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, '', '', ''} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, deleted, first = '', '', ''
for i = 1, #info, 2 do
  local k = info[i]
  if k == 'last-generated-id' then last = info[i+1]
  elseif k == 'max-deleted-entry-id' then deleted = info[i+1]
  elseif k == 'first-entry' then
    local e = info[i+1]
    if type(e) == 'table' and e[1] then first = e[1] end
  end
end
return {1, last, deleted, first}
"""

# KEYS[1] = lease key, ARGV[1] = token, ARGV[2] = ttl ms. Extends the lease if still ours.
EXTEND_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS[1] = lease key, ARGV[1] = token. Releases the lease if still ours.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def parse_id(value: Any) -> tuple[int, int]:
    """A stream ID (``b"1700000000000-3"``) as a comparable ``(ms, seq)`` pair."""
    text = value.decode() if isinstance(value, bytes) else str(value)
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)
