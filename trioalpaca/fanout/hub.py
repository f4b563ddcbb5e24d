"""The hub: one Alpaca connection published into Redis, with hot standby.

Start it with :func:`~trioalpaca.fanout.serve_hub` (or ``trioalpaca hub``).

Run two or more hubs for the same feed. They compete for a lease in Redis
(``SET ta:{iex}:lease <token> NX PX <ttl>``); the holder is the *leader*: it makes a new epoch,
connects to Alpaca and publishes (:func:`~trioalpaca.fanout.open_redis_publisher`). The others are
*standbys*: they hold no Alpaca connection and try to take the lease every ``ttl / 4`` seconds.

* The leader extends the lease every ``ttl / 3`` seconds. When the lease turns out to be someone
  else's, or Redis has not confirmed it for a whole ``ttl``, the leader closes its Alpaca
  connection and becomes a standby.
* A standby that takes the lease after the leader died (``kill -9``) or lost Redis publishes a gap
  marker from the last entry's receive time to the moment its own connection is subscribed: one
  ``Reconnected`` for consumers. Its first connection honours the 406 reaping floor
  (:class:`~trioalpaca.backoff.Backoff` ``connection_limit_floor``): while Alpaca still counts
  the dead leader's socket, the client waits at least that long between attempts.
* **Fencing by epoch.** Taking the lease makes a new epoch (above the stored one and at least
  Redis' clock in ms, in the same Lua script). Every write is a Lua script that compares the
  writer's epoch with the stored one and writes nothing when a newer one exists, so a deposed
  leader that comes back (a long GC pause, a healed partition) cannot add a single entry; it gets
  :class:`~trioalpaca.fanout.FencedError` and returns to standby. Consumers also skip entries of
  an epoch older than one they have seen.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

import trio

from trioalpaca._errors import TrioAlpacaError, UsageError
from trioalpaca._groups import single_error
from trioalpaca.backoff import Backoff
from trioalpaca.fanout._layout import StreamLayout
from trioalpaca.fanout._redis import (
    ACQUIRE_SCRIPT,
    EXTEND_SCRIPT,
    RELEASE_SCRIPT,
    FencedError,
    is_redis_failure,
    open_redis_client,
)
from trioalpaca.fanout.publisher import RedisPublisher, open_redis_publisher

__all__ = ["Hub", "LeaseLostError", "serve_hub"]

logger = logging.getLogger("trioalpaca.fanout.hub")


class LeaseLostError(TrioAlpacaError):
    """The leader's lease was taken by another hub or could not be confirmed within its TTL."""

    retryable = True
    fatal = False


class Hub:
    """Handle of a running hub (reported by :func:`~trioalpaca.fanout.serve_hub` through
    ``task_status``).

    Attributes:
        layout: the streams it publishes.
        token: this hub's lease token (random).
        role: ``"standby"`` or ``"leader"``.
        epoch: the epoch of the current (or last) leadership, ``None`` before the first.
        takeovers: how many times this hub became leader.
        publisher: the running :class:`~trioalpaca.fanout.RedisPublisher` while leader.
        client: the upstream client while leader.
    """

    def __init__(self, layout: StreamLayout, lease_ttl: float) -> None:
        self.layout = layout
        self.lease_ttl = lease_ttl
        self.token = secrets.token_hex(8)
        self.role = "standby"
        self.epoch: int | None = None
        self.takeovers = 0
        self.publisher: RedisPublisher | None = None
        self.client: Any = None
        self.redis_errors = 0
        self.last_error: str | None = None
        self.lease_confirmed_at: float | None = None
        self._became_leader = trio.Event()

    async def wait_leader(self) -> None:
        """Wait until this hub is (or has been) the leader."""
        await self._became_leader.wait()

    def status(self) -> dict[str, Any]:
        """A snapshot for ``/healthz``: role, epoch, lease age, upstream state, and the
        publisher's queue depth, publish rate, lag and Redis errors (while leader)."""
        pub = self.publisher.statistics() if self.publisher is not None else None
        client = self.client
        upstream = client.get_metrics() if client is not None else None
        lease_age = (
            None
            if self.lease_confirmed_at is None
            else trio.current_time() - self.lease_confirmed_at
        )
        return {
            "role": self.role,
            "token": self.token,
            "epoch": self.epoch,
            "takeovers": self.takeovers,
            "lease_ttl_s": self.lease_ttl,
            "lease_age_s": lease_age,
            "upstream_state": None if upstream is None else upstream["state"],
            "upstream_messages": None if upstream is None else upstream["messages_received"],
            "upstream_errors": None if upstream is None else upstream["errors"],
            "lag_s": None if upstream is None else upstream["last_message_age_s"],
            "queue_depth": None if pub is None else pub["queue_depth"],
            "publish_rate": None if pub is None else pub["messages_per_second"],
            "published_messages": None if pub is None else pub["published_messages"],
            "dropped": None if pub is None else pub["dropped"],
            "publisher_state": None if pub is None else pub["state"],
            "redis_errors": self.redis_errors + (0 if pub is None else pub["redis_errors"]),
            "last_error": self.last_error
            if pub is None or not pub["last_error"]
            else pub["last_error"],
        }

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        """``/healthz``: a standby is healthy when Redis answers; a leader when its upstream is
        connected and its writes go through."""
        status = self.status()
        if self.role == "leader":
            ok = status["upstream_state"] == "connected" and status["publisher_state"] == "running"
        else:
            ok = self.last_error is None  # its last attempt to take the lease reached Redis
        return ok, status


async def _acquire(redis: Any, hub: Hub, ttl_ms: int) -> int | None:
    layout = hub.layout
    result = await redis.eval(
        ACQUIRE_SCRIPT, keys=[layout.lease_key, layout.epoch_key], args=[hub.token, ttl_ms]
    )
    if result is None or result is False:
        return None
    return int(result)


async def _keep_lease(redis: Any, hub: Hub, ttl: float) -> None:
    """Extend the lease until it is lost; then raise :class:`LeaseLostError`."""
    ttl_ms = max(1, round(ttl * 1000))
    confirmed = trio.current_time()
    while True:
        await trio.sleep(ttl / 3)
        try:
            ok = await redis.eval(
                EXTEND_SCRIPT, keys=[hub.layout.lease_key], args=[hub.token, ttl_ms]
            )
        except Exception as exc:
            if not is_redis_failure(exc):
                raise
            hub.redis_errors += 1
            hub.last_error = f"{type(exc).__name__}: {exc}"
            if trio.current_time() - confirmed >= ttl * 0.9:
                raise LeaseLostError(
                    f"could not extend the lease for {ttl:g} s ({hub.last_error})"
                ) from exc
            continue
        if not ok:
            raise LeaseLostError("the lease is held by another hub")
        confirmed = hub.lease_confirmed_at = trio.current_time()


async def serve_hub(
    redis_url: str,
    *,
    feed: str = "iex",
    account: str | None = None,
    channels: Mapping[str, Iterable[str]] | None = None,
    api_key: str | None = None,
    api_secret: str | None = None,
    url: str | None = None,
    lease_ttl: float = 5.0,
    reap_floor: float = 90.0,
    per_symbol: bool = False,
    prefix: str = "ta",
    cluster: bool = False,
    maxlen: int | None = 100_000,
    retention: float | None = None,
    queue_size: int = 100_000,
    client_options: Mapping[str, Any] | None = None,
    task_status: trio.TaskStatus[Hub] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a hub (leader or hot standby) until cancelled; see the module documentation.

    Use with ``hub = await nursery.start(serve_hub, "redis://...", feed="iex", channels=...)``;
    reports the :class:`Hub` handle at once (as a standby).

    Args:
        redis_url: the Redis server (or one node of a cluster with ``cluster=True``).
        feed: market data feed to publish (ignored when ``account`` is given).
        account: publish the trading stream (``trade_updates``) of this API key id instead.
        channels: ``{channel: symbols}`` to subscribe, e.g. ``{"trades": ["*"]}``.
        api_key, api_secret: Alpaca credentials (default: the environment, as for the client).
        url: full websocket URL override of the upstream (e.g. an emulator).
        lease_ttl: lease time to live, seconds; a standby takes over at most this long after the
            leader stopped extending it.
        reap_floor: minimum delay after a 406 (connection limit) on the upstream, seconds.
        per_symbol, prefix, cluster, maxlen, retention, queue_size: as for
            :func:`~trioalpaca.fanout.open_redis_publisher`.
        client_options: more keyword arguments for
            :class:`~trioalpaca.client.AlpacaWebSocketClient`.

    Raises:
        UsageError: bad options.
    """
    from trioalpaca.client import AlpacaWebSocketClient

    if not (lease_ttl > 0 and math.isfinite(lease_ttl)):
        raise UsageError("lease_ttl must be a positive number of seconds")
    if account is not None:
        layout = StreamLayout.for_account(account, prefix=prefix)
    else:
        layout = StreamLayout.for_feed(feed, prefix=prefix, per_symbol=per_symbol)
    kwargs: dict[str, Any] = dict(client_options or {})
    kwargs.setdefault("backoff", Backoff(initial=0.2, cap=10.0, connection_limit_floor=reap_floor))
    if account is not None:
        kwargs["stream_type"] = "trading"
    else:
        kwargs["feed"] = feed
        chans = {k: list(v) for k, v in (channels or {}).items() if v}
        if not chans:
            raise UsageError("give the channels to publish, e.g. channels={'trades': ['*']}")
        kwargs.update(chans)
    kwargs["raw_data"] = True
    if url is not None:
        kwargs["url"] = url
    # validate everything (credentials, feed, channels) before touching Redis
    AlpacaWebSocketClient(api_key, api_secret, auto_connect=False, **kwargs)

    hub = Hub(layout, lease_ttl)
    ttl_ms = max(1, round(lease_ttl * 1000))
    task_status.started(hub)
    with single_error():
        async with open_redis_client(redis_url, cluster=cluster) as redis:
            schedule = Backoff(initial=0.05, cap=lease_ttl / 2).schedule()
            while True:
                hub.role = "standby"
                try:
                    epoch = await _acquire(redis, hub, ttl_ms)
                except Exception as exc:
                    if not is_redis_failure(exc):
                        raise
                    hub.redis_errors += 1
                    hub.last_error = f"{type(exc).__name__}: {exc}"
                    await trio.sleep(schedule.next_delay())
                    continue
                schedule.reset()
                hub.last_error = None
                if epoch is None:
                    hub.lease_confirmed_at = None
                    await trio.sleep(lease_ttl / 4)
                    continue
                hub.role = "leader"
                hub.epoch = epoch
                hub.takeovers += 1
                hub.lease_confirmed_at = trio.current_time()
                hub._became_leader.set()
                logger.info("hub %s leads %s with epoch %d", hub.token, layout.tag, epoch)
                try:
                    await _lead(
                        redis,
                        hub,
                        epoch,
                        api_key,
                        api_secret,
                        kwargs,
                        publisher_kwargs={
                            "per_symbol": per_symbol,
                            "prefix": prefix,
                            "maxlen": maxlen,
                            "retention": retention,
                            "queue_size": queue_size,
                            "account": account,
                            "feed": None if account is not None else feed,
                        },
                    )
                except (LeaseLostError, FencedError) as exc:
                    logger.warning("hub %s steps down: %s", hub.token, exc)
                    hub.last_error = str(exc)
                finally:
                    hub.role = "standby"
                    hub.publisher = None
                    hub.client = None
                with trio.move_on_after(1.0):
                    try:
                        await redis.eval(RELEASE_SCRIPT, keys=[layout.lease_key], args=[hub.token])
                    except Exception as exc:
                        if not is_redis_failure(exc):
                            raise
                await trio.sleep(lease_ttl / 4)


async def _lead(
    redis: Any,
    hub: Hub,
    epoch: int,
    api_key: str | None,
    api_secret: str | None,
    client_kwargs: dict[str, Any],
    publisher_kwargs: dict[str, Any],
) -> None:
    from trioalpaca.client import AlpacaWebSocketClient

    with single_error():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_keep_lease, redis, hub, hub.lease_ttl)
            # The leader keeps trying its upstream (first_connect_timeout is for programs that
            # should give up); permanent causes still fail at once.
            kwargs = {"first_connect_timeout": None, **client_kwargs}
            client = AlpacaWebSocketClient(api_key, api_secret, **kwargs)
            hub.client = client
            started = time.monotonic()
            async with client:
                logger.info(
                    "hub %s: upstream subscribed after %.2f s",
                    hub.token,
                    time.monotonic() - started,
                )
                async with open_redis_publisher(
                    redis=redis,
                    source=client,
                    epoch=epoch,
                    status_fields={"hub": hub.token, "takeover": hub.takeovers},
                    **publisher_kwargs,
                ) as publisher:
                    hub.publisher = publisher
                    await trio.sleep_forever()
