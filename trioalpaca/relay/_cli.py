"""``trioalpaca relay``: run the relay from the command line.

Upstream credentials come from the environment, never from the command line:
``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY`` (or ``ALPACA_API_KEY`` / ``ALPACA_API_SECRET``) for
the ``default`` account, ``APCA_API_KEY_ID_<NAME>`` / ``APCA_API_SECRET_KEY_<NAME>`` for each
``--account NAME``. Local keys come from ``--keys-file`` (``local-key local-secret [account]``
per line) and/or ``--local-key KEY:SECRET[:ACCOUNT]``.

stdout gets one JSON object per line (``{"event": "listening", ...}``); the periodic status line
and errors go to stderr. Exit codes: 0 after SIGINT/SIGTERM, 2 for usage or credential errors,
1 for runtime errors.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import sys
from typing import Any, TextIO

import trio

from .._cli_common import status_loop, usage_or_runtime_exit
from .._errors import CredentialsError, TrioAlpacaError, UsageError
from ._auth import DEFAULT_ACCOUNT, Account, LocalKey, load_keys_file

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``relay`` options to ``parser``."""
    parser.add_argument(
        "--listen",
        default="127.0.0.1:8765",
        metavar="HOST:PORT",
        help="where to serve (default 127.0.0.1:8765; port 0 picks a free one)",
    )
    parser.add_argument(
        "--keys-file", metavar="PATH", help="local keys: 'local-key local-secret [account]' lines"
    )
    parser.add_argument(
        "--local-key",
        action="append",
        default=[],
        metavar="KEY:SECRET[:ACCOUNT]",
        help="a local key (repeatable; prefer --keys-file: arguments are visible to other users)",
    )
    parser.add_argument(
        "--accept-any-key",
        action="store_true",
        help="accept any key/secret downstream (loopback only, one account)",
    )
    parser.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="NAME",
        help="an extra upstream account read from APCA_API_KEY_ID_NAME / APCA_API_SECRET_KEY_NAME",
    )
    parser.add_argument(
        "--upstream-url",
        metavar="URL",
        help="scheme and host of the upstream (default: Alpaca; e.g. an emulator's ws://host:port)",
    )
    parser.add_argument(
        "--linger",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="keep an upstream connection this long after its last client left (default 5)",
    )
    parser.add_argument(
        "--send-buffer",
        type=int,
        default=4 * 1024 * 1024,
        metavar="BYTES",
        help="bytes queued per client before the slow-client policy (default 4 MiB)",
    )
    parser.add_argument(
        "--slow-client",
        choices=["disconnect", "drop"],
        default="disconnect",
        help="over the limit: 407 and disconnect (default) or drop that client's data",
    )
    parser.add_argument(
        "--socket-send-buffer",
        type=int,
        default=None,
        metavar="BYTES",
        help="SO_SNDBUF of client sockets (default: the OS's); small keeps backlogs visible",
    )
    parser.add_argument("--tls-cert", metavar="PEM", help="serve wss:// with this certificate")
    parser.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    parser.add_argument(
        "--insecure-bind",
        action="store_true",
        help="allow a non-loopback --listen without TLS",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve /metrics (Prometheus) and /healthz on this port (loopback)",
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        default=None,
        help="also publish every upstream into Redis Streams at this redis:// URL (as "
        "trioalpaca.fanout.open_redis_publisher(URL, relay); needs the redis extra)",
    )
    parser.add_argument(
        "--redis-cluster", action="store_true", help="--redis names a Redis Cluster node"
    )
    parser.add_argument(
        "--status-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="print a status line on stderr this often (0: never; default 10)",
    )


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise UsageError(f"--listen expects HOST:PORT, got {value!r}")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise UsageError(f"--listen expects a numeric port, got {port!r}") from None


def _accounts(names: list[str], environ: Any) -> dict[str, Account]:
    from .._credentials import env_credentials

    out: dict[str, Account] = {}
    default = env_credentials(environ)
    if default is not None:
        out[DEFAULT_ACCOUNT] = Account(*default)
    for name in names:
        key = environ.get(f"APCA_API_KEY_ID_{name}")
        secret = environ.get(f"APCA_API_SECRET_KEY_{name}")
        if not key or not secret:
            raise CredentialsError(
                f"account {name!r}: set APCA_API_KEY_ID_{name} and APCA_API_SECRET_KEY_{name}"
            )
        out[name] = Account(key, secret)
    if not out:
        raise CredentialsError(
            "no upstream credentials: set APCA_API_KEY_ID and APCA_API_SECRET_KEY (or "
            "ALPACA_API_KEY and ALPACA_API_SECRET), or name accounts with --account"
        )
    return out


def _local_keys(args: argparse.Namespace) -> dict[str, LocalKey]:
    keys: dict[str, LocalKey] = {}
    if args.keys_file:
        keys.update(load_keys_file(args.keys_file))
    for item in args.local_key:
        parts = item.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise UsageError(f"--local-key expects KEY:SECRET[:ACCOUNT], got {parts[0]!r}:...")
        keys[parts[0]] = LocalKey(parts[1], parts[2] if len(parts) == 3 else DEFAULT_ACCOUNT)
    return keys


def _ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.tls_cert and not args.tls_key:
        return None
    if not (args.tls_cert and args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load the TLS certificate/key: {exc}") from None
    return ctx


def _emit(out: TextIO, obj: dict[str, Any]) -> None:
    print(json.dumps(obj), file=out, flush=True)


async def _main(args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    from ._server import serve_relay

    host, port = _parse_listen(args.listen)
    accounts = _accounts(args.account, os.environ)
    keys = _local_keys(args)
    ctx = _ssl_context(args)
    if args.status_interval < 0:
        raise UsageError("--status-interval must be >= 0")
    redis_url = getattr(args, "redis", None)
    if redis_url is not None and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise UsageError(f"not a Redis URL: {redis_url!r} (expected redis://host:port)")
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            relay = await nursery.start(
                lambda task_status: serve_relay(
                    accounts,
                    local_keys=keys,
                    accept_any_key=args.accept_any_key,
                    host=host,
                    port=port,
                    ssl_context=ctx,
                    allow_insecure_bind=args.insecure_bind,
                    upstream_url=args.upstream_url,
                    linger=args.linger,
                    send_buffer_limit=args.send_buffer,
                    slow_client=args.slow_client,
                    socket_send_buffer=args.socket_send_buffer,
                    task_status=task_status,
                )
            )
            event: dict[str, Any] = {"event": "listening", "url": relay.url}
            if args.metrics_port is not None:
                from .._ops import serve_ops_http
                from ._prom import relay_registry

                ops = await nursery.start(
                    serve_ops_http, args.metrics_port, relay_registry(relay), relay.healthy
                )
                event["metrics_url"] = ops.url + "/metrics"
            event["accounts"] = sorted(accounts)
            stop, published = trio.Event(), trio.Event()
            if redis_url is not None:
                await nursery.start(_publish, redis_url, relay, args.redis_cluster, stop, published)
                event["redis"] = _without_credentials(redis_url)
            _emit(out, event)
            if args.status_interval:
                nursery.start_soon(status_loop, args.status_interval, relay.status_line, err)
            async for signum in signals:
                _emit(out, {"event": "stopping", "signal": signal.Signals(signum).name})
                if redis_url is not None:
                    stop.set()  # the publisher writes its "stopped" status and flushes
                    with trio.move_on_after(6):
                        await published.wait()
                nursery.cancel_scope.cancel()
                break


async def _publish(
    url: str,
    relay: Any,
    cluster: bool,
    stop: trio.Event,
    done: trio.Event,
    task_status: trio.TaskStatus[None],
) -> None:
    from ..fanout import open_redis_publisher

    try:
        async with open_redis_publisher(url, relay, cluster=cluster):
            task_status.started()
            await stop.wait()
    finally:
        done.set()


def _without_credentials(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def run(args: argparse.Namespace) -> int:
    """Run the relay until SIGINT/SIGTERM; returns the exit code."""
    from .._groups import single_error

    try:
        with single_error():
            trio.run(_main, args, sys.stdout, sys.stderr)
    except (TrioAlpacaError, OSError) as exc:
        return usage_or_runtime_exit("relay", exc, sys.stderr)
    return 0
