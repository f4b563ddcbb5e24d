"""Fan-out across machines on Redis Streams (coredis): a publisher, a consumer and a hub.

* :func:`open_redis_publisher` writes a stream (a client, a pooled connection, or every
  upstream of a :class:`~trioalpaca.relay.Relay`) into Redis Streams, one entry per received
  batch and channel, with retention, markers, status entries and fencing.
* :func:`open_redis_stream` reads them back with the same iteration surface as
  :func:`~trioalpaca.client.open_stream` (broadcast ``XREAD`` or consumer groups, which take
  over a dead member's entries with ``XAUTOCLAIM``).
* :func:`~trioalpaca.fanout.serve_hub` runs one Alpaca connection per feed with hot standby
  (``trioalpaca hub``).

The stream layout is described in :mod:`trioalpaca.fanout._layout` and the docs' layout page.
Needs the ``redis`` extra (coredis).
"""

from __future__ import annotations

from trioalpaca.fanout._layout import StreamLayout
from trioalpaca.fanout._redis import FencedError, RedisUnavailableError
from trioalpaca.fanout.consumer import (
    MalformedEntry,
    PublisherStatus,
    RedisStream,
    open_redis_stream,
)
from trioalpaca.fanout.hub import Hub, LeaseLostError, serve_hub
from trioalpaca.fanout.publisher import RedisPublisher, RelayPublisher, open_redis_publisher

__all__ = [
    "FencedError",
    "Hub",
    "LeaseLostError",
    "MalformedEntry",
    "PublisherStatus",
    "RedisPublisher",
    "RedisStream",
    "RedisUnavailableError",
    "RelayPublisher",
    "StreamLayout",
    "open_redis_publisher",
    "open_redis_stream",
    "serve_hub",
]
