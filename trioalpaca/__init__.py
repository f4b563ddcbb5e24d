"""trioalpaca: a trio client, connection pool and emulator for Alpaca's real-time streams."""

from __future__ import annotations

__version__ = "0.1.0"

# Each layer adds its public names in its own block below (keep blocks separate to avoid clashes).

# --- models ---
from trioalpaca.models import LULD as LULD
from trioalpaca.models import Authenticated as Authenticated
from trioalpaca.models import Bar as Bar
from trioalpaca.models import Connected as Connected
from trioalpaca.models import CryptoBar as CryptoBar
from trioalpaca.models import CryptoDailyBar as CryptoDailyBar
from trioalpaca.models import CryptoPricing as CryptoPricing
from trioalpaca.models import CryptoQuote as CryptoQuote
from trioalpaca.models import CryptoTrade as CryptoTrade
from trioalpaca.models import CryptoUpdatedBar as CryptoUpdatedBar
from trioalpaca.models import DailyBar as DailyBar
from trioalpaca.models import Dropped as Dropped
from trioalpaca.models import Imbalance as Imbalance
from trioalpaca.models import Listening as Listening
from trioalpaca.models import MalformedMessage as MalformedMessage
from trioalpaca.models import Message as Message
from trioalpaca.models import News as News
from trioalpaca.models import NewsImage as NewsImage
from trioalpaca.models import OptionQuote as OptionQuote
from trioalpaca.models import OptionTrade as OptionTrade
from trioalpaca.models import Orderbook as Orderbook
from trioalpaca.models import OrderbookLevel as OrderbookLevel
from trioalpaca.models import Quote as Quote
from trioalpaca.models import Reconnected as Reconnected
from trioalpaca.models import ServerError as ServerError
from trioalpaca.models import SubscriptionChanged as SubscriptionChanged
from trioalpaca.models import Trade as Trade
from trioalpaca.models import TradeCancel as TradeCancel
from trioalpaca.models import TradeCorrection as TradeCorrection
from trioalpaca.models import TradeUpdate as TradeUpdate
from trioalpaca.models import TradingStatus as TradingStatus
from trioalpaca.models import UnknownMessage as UnknownMessage
from trioalpaca.models import UpdatedBar as UpdatedBar

# --- end models ---

# --- errors ---
# isort: split
from trioalpaca._errors import AlpacaServerError as AlpacaServerError
from trioalpaca._errors import AlreadyAuthenticatedError as AlreadyAuthenticatedError
from trioalpaca._errors import AuthFailedError as AuthFailedError
from trioalpaca._errors import AuthTimeoutError as AuthTimeoutError
from trioalpaca._errors import BindError as BindError
from trioalpaca._errors import ConnectionClosedError as ConnectionClosedError
from trioalpaca._errors import ConnectionLimitError as ConnectionLimitError
from trioalpaca._errors import CredentialsError as CredentialsError
from trioalpaca._errors import HandshakeRejectedError as HandshakeRejectedError
from trioalpaca._errors import HeartbeatTimeoutError as HeartbeatTimeoutError
from trioalpaca._errors import HostNotFoundError as HostNotFoundError
from trioalpaca._errors import InsufficientScopeError as InsufficientScopeError
from trioalpaca._errors import InsufficientSubscriptionError as InsufficientSubscriptionError
from trioalpaca._errors import InternalServerError as InternalServerError
from trioalpaca._errors import InvalidSubscribeActionError as InvalidSubscribeActionError
from trioalpaca._errors import InvalidSyntaxError as InvalidSyntaxError
from trioalpaca._errors import LocalProtocolError as LocalProtocolError
from trioalpaca._errors import MalformedMessageError as MalformedMessageError
from trioalpaca._errors import MalformedStreamError as MalformedStreamError
from trioalpaca._errors import MsgpackRequiredError as MsgpackRequiredError
from trioalpaca._errors import NotAuthenticatedError as NotAuthenticatedError
from trioalpaca._errors import ProtocolError as ProtocolError
from trioalpaca._errors import ReconnectLimitError as ReconnectLimitError
from trioalpaca._errors import RemoteProtocolError as RemoteProtocolError
from trioalpaca._errors import SlowClientError as SlowClientError
from trioalpaca._errors import StaleStreamError as StaleStreamError
from trioalpaca._errors import StarSubscriptionNotAllowedError as StarSubscriptionNotAllowedError
from trioalpaca._errors import SubscriptionTimeoutError as SubscriptionTimeoutError
from trioalpaca._errors import SymbolLimitError as SymbolLimitError
from trioalpaca._errors import TLSError as TLSError
from trioalpaca._errors import TransportError as TransportError
from trioalpaca._errors import TrioAlpacaError as TrioAlpacaError
from trioalpaca._errors import UsageError as UsageError
from trioalpaca._errors import V2NotEnabledError as V2NotEnabledError

# --- end errors ---

# --- backoff / endpoints ---
# isort: split
from trioalpaca.backoff import Backoff as Backoff
from trioalpaca.backoff import BackoffSchedule as BackoffSchedule
from trioalpaca.endpoints import FEEDS as FEEDS
from trioalpaca.endpoints import Endpoint as Endpoint
from trioalpaca.endpoints import StreamKind as StreamKind
from trioalpaca.endpoints import channel_to_python as channel_to_python
from trioalpaca.endpoints import channel_to_wire as channel_to_wire
from trioalpaca.endpoints import resolve_feed as resolve_feed
from trioalpaca.endpoints import stream_url as stream_url

# --- end backoff / endpoints ---

# --- client ---
# isort: split
from trioalpaca.client import AlpacaWebSocketClient as AlpacaWebSocketClient
from trioalpaca.client import ClientStatistics as ClientStatistics
from trioalpaca.client import Handle as Handle
from trioalpaca.client import open_stream as open_stream

# --- end client ---

# --- metrics ---
# isort: split
from trioalpaca.metrics import LatencyHistogram as LatencyHistogram
from trioalpaca.metrics import LatencySnapshot as LatencySnapshot
from trioalpaca.metrics import RateMeter as RateMeter
from trioalpaca.metrics import RateSnapshot as RateSnapshot

# --- end metrics ---

# --- pipeline / manager ---
# isort: split
from trioalpaca.manager import HandlerFailure as HandlerFailure
from trioalpaca.manager import StreamManager as StreamManager
from trioalpaca.manager import Subscription as Subscription
from trioalpaca.manager import SubscriptionHandler as SubscriptionHandler
from trioalpaca.manager import TokenBucket as TokenBucket
from trioalpaca.manager import open_stream_manager as open_stream_manager
from trioalpaca.pipeline import ErrorPolicy as ErrorPolicy
from trioalpaca.pipeline import MessageHandler as MessageHandler
from trioalpaca.pipeline import ProcessingFailure as ProcessingFailure
from trioalpaca.pipeline import Processor as Processor
from trioalpaca.pipeline import ProcessorError as ProcessorError
from trioalpaca.pipeline import open_message_handler as open_message_handler

# --- end pipeline / manager ---

# --- arch: shared primitives ---
# isort: split
from trioalpaca._book import BookDelta as BookDelta
from trioalpaca._book import Pair as Pair
from trioalpaca._book import SubscriptionBook as SubscriptionBook
from trioalpaca._buffer import OverflowPolicy as OverflowPolicy
from trioalpaca._connection import StreamFactory as StreamFactory
from trioalpaca._handlers import Component as Component
from trioalpaca._handlers import ErrorAction as ErrorAction
from trioalpaca._handlers import ErrorHandler as ErrorHandler
from trioalpaca._handlers import ErrorReport as ErrorReport
from trioalpaca._options import StreamOptions as StreamOptions

# --- end arch: shared primitives ---

# --- pool ---
# isort: split
from trioalpaca.pool import ConnectionPool as ConnectionPool
from trioalpaca.pool import Credentials as Credentials
from trioalpaca.pool import HealthThresholds as HealthThresholds
from trioalpaca.pool import PoolCapacityError as PoolCapacityError
from trioalpaca.pool import PoolConfigError as PoolConfigError
from trioalpaca.pool import PooledConnection as PooledConnection
from trioalpaca.pool import RotationMode as RotationMode
from trioalpaca.pool import open_pool as open_pool

# --- end pool ---

# --- record ---
# isort: split
from trioalpaca.record import RecordingError as RecordingError
from trioalpaca.record import RecordingFormatError as RecordingFormatError
from trioalpaca.record import open_recorder as open_recorder
from trioalpaca.record import open_replay as open_replay
from trioalpaca.record import serve_replay as serve_replay

# --- end record ---

# --- relay ---
# isort: split
from trioalpaca.relay import Relay as Relay
from trioalpaca.relay import serve_relay as serve_relay

# --- end relay ---

# --- fanout ---
# isort: split
from trioalpaca.fanout import open_redis_publisher as open_redis_publisher
from trioalpaca.fanout import open_redis_stream as open_redis_stream

# --- end fanout ---

# --- __module__ fix-up (as trio does): public names defined in private modules (_errors, _book,
# _handlers, _options, record._format, ...) report the nearest public package, so reprs, pickles,
# tracebacks and the docs use ``trioalpaca.Name``. tests/test_exports.py checks it.
# isort: split


def _fixup_module_metadata() -> None:
    for name, obj in globals().items():
        if name.startswith("_") or not (isinstance(obj, type) or callable(obj)):
            continue
        module = getattr(obj, "__module__", "")
        if not isinstance(module, str) or not module.startswith("trioalpaca."):
            continue
        parts = module.split(".")
        private = [i for i, part in enumerate(parts) if part.startswith("_")]
        if private:  # the nearest public package: trioalpaca._errors -> trioalpaca
            obj.__module__ = ".".join(parts[: private[0]])


_fixup_module_metadata()
del _fixup_module_metadata
