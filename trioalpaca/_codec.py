"""Wire codec: frames (``bytes`` / ``str``) <-> lists of messages, for msgpack and JSON.

Private module; the client, the sans-IO protocol and the emulator share it so both ends always
agree on the format.

*Canonical wire dict*: the map exactly as on the wire (keys ``T``, ``S``, ``p``, ...) except that
every timestamp is an ``int`` of nanoseconds since the epoch. msgpack timestamps (extension -1, all
three sizes) are decoded by the C unpacker straight into ints (``timestamp=2``) and encoded in the
smallest valid form; JSON timestamps are RFC 3339 text (see :mod:`trioalpaca._time`). The supported
timestamp range is the years 0001-9999 (``MIN_TIMESTAMP_NS`` .. ``MAX_TIMESTAMP_NS``).

Decoding never lets anything but :class:`~trioalpaca._errors.RemoteProtocolError` (a
:class:`~trioalpaca._errors.ProtocolError`) escape for malformed input; encoding something that
cannot be represented raises :class:`~trioalpaca._errors.LocalProtocolError`.

Fast path: each known ``T`` of each stream kind has a constructor function generated once at import
time (plain positional code: dict lookups, exact type checks, slot stores; no per-field loops or
reflection). Anything unusual (a missing optional key, an ``int`` price, a JSON number where a
float is expected) falls back to a slower, generic path that normalises or raises a clear error.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import msgpack

from trioalpaca import models as m
from trioalpaca._errors import (
    LocalProtocolError,
    MalformedMessageError,
    ProtocolError,
    RemoteProtocolError,
)
from trioalpaca._time import (
    MAX_TIMESTAMP_NS,
    MIN_TIMESTAMP_NS,
    datetime_to_ns,
    format_rfc3339_ns,
    parse_rfc3339_ns,
)

if TYPE_CHECKING:
    from typing import TypeAlias

    from trioalpaca.endpoints import StreamKind

__all__ = [
    "Decoder",
    "Encoder",
    "Encoding",
    "Frame",
    "decode_request",
    "decode_trading",
    "encode_request",
    "encode_trading",
]

Encoding: TypeAlias = Literal["msgpack", "json"]
"""Wire encoding of a stream: ``"msgpack"`` (binary frames) or ``"json"`` (text frames)."""

Frame: TypeAlias = bytes | str
"""One WebSocket message: ``bytes`` for binary (msgpack) frames, ``str`` for text (JSON) frames."""

_Ctor = Callable[[Any], Any]

_KINDS = ("stocks", "crypto", "options", "news", "trading")
_ENCODINGS = ("msgpack", "json")

# ------------------------------------------------------------------------------- type tables

_REQUIRED: Any = m._REQUIRED

# Field specs: (attribute, wire key, kind, default), attribute order = the attrs field order; one
# table (in trioalpaca.models) drives both ``from_wire`` and the constructors generated here.
# kinds: str, int, float, strs (list of str), ts (timestamp), bool, levels (order book levels),
# images (news images). A default of None marks an optional key Alpaca sends only sometimes.
_Spec = tuple[tuple[str, str, str, Any], ...]
_SPECS: Mapping[type[Any], _Spec] = m._SPECS

#: Market data classes per stream kind, keyed by ``T``.
_DATA_TYPES: dict[str, dict[str, type[Any]]] = {
    kind: {cls.wire_type: cls for cls in classes} for kind, classes in m.MARKET_DATA_TYPES.items()
}

#: Timestamp keys per class (what becomes msgpack ext -1 / RFC 3339 text on the wire).
_TS_KEYS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(key for _, key, kind, _ in spec if kind == "ts") for cls, spec in _SPECS.items()
}
#: Float keys per class (Go clients want float64 there, never an integer).
_FLOAT_KEYS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(key for _, key, kind, _ in spec if kind == "float") for cls, spec in _SPECS.items()
}
#: Float keys per stream kind and ``T`` (for raw dicts).
_FLOAT_KEYS_BY_T: dict[str, dict[str, tuple[str, ...]]] = {
    kind: {t: _FLOAT_KEYS[cls] for t, cls in types.items()} for kind, types in _DATA_TYPES.items()
}
#: Timestamp keys per stream kind and ``T`` (for raw dicts).
_TS_KEYS_BY_T: dict[str, dict[str, tuple[str, ...]]] = {
    kind: {t: _TS_KEYS[cls] for t, cls in types.items()} for kind, types in _DATA_TYPES.items()
}


# ----------------------------------------------------------------------------- error helpers


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _remote(msg: str, exc: BaseException | None = None) -> RemoteProtocolError:
    err = RemoteProtocolError(msg)
    if exc is not None:
        err.__cause__ = exc
    return err


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _kind_name(kind: Any) -> str:
    value = getattr(kind, "value", kind)
    if value not in _KINDS:
        raise ValueError(f"unknown stream kind {kind!r}; expected one of {', '.join(_KINDS)}")
    return str(value)


def _encoding_name(encoding: Any) -> str:
    if encoding not in _ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; expected 'msgpack' or 'json'")
    return str(encoding)


# ------------------------------------------------------------------------ generic (slow) path


_slow_build = m._build
"""Generic, validating constructor (the fallback when the fast path declines): normalises by
the documented rules or raises :class:`~trioalpaca._errors.MalformedMessageError`."""


# ---------------------------------------------------------------------------- fast path (gen)


def _fast_levels_msgpack(v: Any, level: type[m.OrderbookLevel] = m.OrderbookLevel) -> Any:
    if type(v) is not tuple:
        raise TypeError("levels")
    out = []
    for lv in v:
        p = lv["p"]
        s = lv["s"]
        if type(p) is not float or type(s) is not float:
            raise TypeError("level")
        out.append(level(p, s))
    return tuple(out)


def _fast_levels_json(v: Any, level: type[m.OrderbookLevel] = m.OrderbookLevel) -> Any:
    if type(v) is not list:
        raise TypeError("levels")
    out = []
    for lv in v:
        p = lv["p"]
        s = lv["s"]
        if type(p) is not float or type(s) is not float:
            raise TypeError("level")
        out.append(level(p, s))
    return tuple(out)


def _filler(cls: type[Any]) -> type[Any] | None:
    """A subclass of the frozen model ``cls`` whose instances take plain attribute stores.

    It adds no slot (same memory layout) and restores ``object``'s ``__setattr__`` /
    ``__delattr__``, so the interpreter stores straight into the slots (``STORE_ATTR_SLOT``): a
    generated constructor fills a fresh filler object, then sets its ``__class__`` to ``cls``,
    which is allowed because the layouts are identical. The result is an ordinary ``cls``
    instance (``type(o) is cls``), built about three times faster than with one slot descriptor
    call per field. ``None`` if this interpreter refuses the switch (the caller falls back to
    the descriptor calls).
    """
    ns = {
        "__slots__": (),
        "__setattr__": object.__setattr__,
        "__delattr__": object.__delattr__,
        "__module__": __name__,
        "__qualname__": f"_{cls.__name__}Filler",
    }
    try:
        filler = type(f"_{cls.__name__}Filler", (cls,), ns)
        probe: Any = object.__new__(filler)
        probe.__class__ = cls
    except TypeError:  # pragma: no cover - CPython >= 3.10 accepts it
        return None
    if type(probe) is not cls:  # pragma: no cover
        return None
    return filler


#: model class -> its filler (see :func:`_filler`), built on first use
_FILLERS: dict[type[Any], type[Any] | None] = {}


def _base_env(encoding: str) -> dict[str, Any]:
    return {
        "new": object.__new__,
        "slow": _slow_build,
        "parse_ts": parse_rfc3339_ns,
        "levels": _fast_levels_json if encoding == "json" else _fast_levels_msgpack,
        "tuple": tuple,
        "join": "".join,
        "MIN_TS": MIN_TIMESTAMP_NS,
        "MAX_TS": MAX_TIMESTAMP_NS,
        "type": type,
        "str": str,
        "int": int,
        "float": float,
        "bool": bool,
        "list": list,
    }


def _ctor_source(
    cls: type[Any], encoding: str, tag: str, env: dict[str, Any], fail: str, done: str
) -> list[str]:
    """Source lines (indent 0) building ``cls`` from the map ``d``.

    Names are suffixed with ``tag`` so several bodies can share one namespace. ``fail`` is the
    statement run when the fast path declines (``slow(cls, d)`` is its value), ``done`` the one
    run with the finished object ``o``; both may contain several lines separated by newlines.
    """
    spec = _SPECS[cls]
    attr_names = [a.name for a in cls.__attrs_attrs__]
    if attr_names != [s[0] for s in spec]:  # pragma: no cover - guarded by tests
        raise RuntimeError(f"codec spec for {cls.__name__} does not match its fields")
    env[f"cls{tag}"] = cls
    if cls not in _FILLERS:
        _FILLERS[cls] = _filler(cls)
    filler = _FILLERS[cls]
    env[f"fill{tag}"] = filler
    lines = ["try:"]
    checks = []
    pytypes = {"str": "str", "int": "int", "float": "float", "ts": "int", "bool": "bool"}
    for i, (attr, key, kind, default) in enumerate(spec):
        # the slot's member descriptor stores directly, bypassing the frozen __setattr__
        owner = next(base for base in cls.__mro__ if attr in base.__dict__)
        env[f"set{tag}_{i}"] = owner.__dict__[attr].__set__
        var = f"v{i}"
        if default is None:
            # optional key, usually absent: one dict lookup; anything present but unusual
            # (and every list of news images) goes to the slow path
            lines.append(f"    {var} = d[{key!r}] if {key!r} in d else None")
            if kind == "ts" and encoding == "json":
                lines.append(f"    if {var} is not None:")
                lines.append(f"        {var} = parse_ts({var})")
            elif kind == "ts":
                checks.append(
                    f"({var} is not None and (type({var}) is not int"
                    f" or not MIN_TS <= {var} <= MAX_TS))"
                )
            elif kind in pytypes:
                checks.append(f"({var} is not None and type({var}) is not {pytypes[kind]})")
            else:
                checks.append(f"{var} is not None")
        elif kind == "ts" and encoding == "json":
            lines.append(f"    {var} = parse_ts(d[{key!r}])")
        elif kind == "strs":
            # str.join raises TypeError (-> slow path -> clear error) for non-string elements
            lines.append(f"    {var} = d[{key!r}]")
            lines.append(f"    join({var})")
            checks.append(f"type({var}) is not {'list' if encoding == 'json' else 'tuple'}")
        elif kind == "levels":
            lines.append(f"    {var} = levels(d[{key!r}])")
        else:
            lines.append(f"    {var} = d[{key!r}]")
            checks.append(f"type({var}) is not {pytypes[kind]}")
            if kind == "ts":
                checks.append(f"not MIN_TS <= {var} <= MAX_TS")
    fail_lines = fail.replace("CLS", f"cls{tag}").split("\n")
    lines.append("except Exception:")
    lines.extend("    " + line for line in fail_lines)
    if checks:
        lines.append("if " + " or ".join(checks) + ":")
        lines.extend("    " + line for line in fail_lines)
    for i, (_attr, _key, kind, _default) in enumerate(spec):
        if kind == "strs" and encoding == "json":
            lines.append(f"v{i} = tuple(v{i})")
    if filler is not None:
        # plain slot stores on a filler object, then it becomes a ``cls`` (see _filler)
        lines.append(f"o = new(fill{tag})")
        lines.extend(f"o.{attr} = v{i}" for i, (attr, _k, _t, _d) in enumerate(spec))
        lines.append(f"o.__class__ = cls{tag}")
    else:  # pragma: no cover - interpreters refusing the __class__ switch
        lines.append(f"o = new(cls{tag})")
        lines.extend(f"set{tag}_{i}(o, v{i})" for i in range(len(spec)))
    lines.extend(done.split("\n"))
    return lines


def _compile(source: str, name: str, env: dict[str, Any], func: str) -> Any:
    exec(compile(source, f"<trioalpaca codec: {name}>", "exec"), env)
    return env[func]


def _make_fast(cls: type[Any], encoding: str) -> _Ctor:
    """Generate the positional constructor for ``cls`` (fields read, type-checked, stored)."""
    env = _base_env(encoding)
    body = _ctor_source(cls, encoding, "", env, "return slow(CLS, d)", "return o")
    source = "def ctor(d):\n" + "".join(f"    {line}\n" for line in body)
    ctor: _Ctor = _compile(source, f"{cls.__name__} ({encoding})", env, "ctor")
    return ctor


def _make_frame_decoder(
    types: Mapping[str, type[Any]], table: Mapping[str, _Ctor], encoding: str
) -> Callable[[Sequence[Any]], list[Any]]:
    """Generate one loop decoding a whole frame, every known data type inlined.

    Same code as the per-type constructors, minus a function call per message. Control and
    unknown types go through ``table`` (an unknown ``T`` raises KeyError; the caller then redoes
    the frame element by element).
    """
    env = _base_env(encoding)
    env["table"] = table
    lines = [
        "def decode_items(items):",
        "    out = []",
        "    append = out.append",
        "    for d in items:",
        "        T = d['T']",
    ]
    for n, (t, cls) in enumerate(types.items()):
        body = _ctor_source(
            cls, encoding, str(n), env, "append(slow(CLS, d))\ncontinue", "append(o)\ncontinue"
        )
        lines.append(f"        if T == {t!r}:")
        lines.extend(f"            {line}" for line in body)
    lines.append("        append(table[T](d))")
    lines.append("    return out")
    decode_items: Callable[[Sequence[Any]], list[Any]] = _compile(
        "\n".join(lines) + "\n", f"frame decoder ({encoding})", env, "decode_items"
    )
    return decode_items


# ------------------------------------------------------------------------- control messages


def _thaw(obj: Any) -> Any:
    """Tuples (from ``use_list=False``) back to lists, recursively, for raw dicts."""
    if type(obj) is tuple or type(obj) is list:
        return [_thaw(x) for x in obj]
    if type(obj) is dict:
        return {k: _thaw(v) for k, v in obj.items()}
    return obj


def _unknown(d: Any) -> m.UnknownMessage:
    return m.UnknownMessage(_thaw(d))


def _ctor_success(d: Any) -> Any:
    msg = d.get("msg")
    if msg == "connected":
        return m.Connected()
    if msg == "authenticated":
        return m.Authenticated()
    return _unknown(d)


def _ctor_error(d: Any) -> Any:
    code = d.get("code")
    msg = d.get("msg", "")
    if not isinstance(code, int) or isinstance(code, bool):
        raise _remote(f"'error' message: 'code' must be an integer, got {_short(code)}")
    if not isinstance(msg, str):
        raise _remote(f"'error' message: 'msg' must be a string, got {_short(msg)}")
    return m.ServerError(code, msg)


def _ctor_subscription(d: Any) -> Any:
    subs: dict[str, tuple[str, ...]] = {}
    for key, value in d.items():
        if key == "T" or type(key) is not str:
            continue
        if value is None:
            subs[key] = ()
        elif isinstance(value, (list, tuple)):
            if not all(isinstance(x, str) for x in value):
                raise _remote(f"'subscription' message: {key!r} must be a list of symbols")
            subs[key] = tuple(value)
    return m.SubscriptionChanged(subs)


def _ctor_marker(cls: Any) -> _Ctor:
    def ctor(d: Any) -> Any:
        try:
            return cls.from_wire(d)
        except (KeyError, TypeError, ValueError) as exc:
            raise _remote(f"malformed {cls.wire_type!r} marker: {_short(d)}", exc) from None

    return ctor


_CONTROL: dict[str, _Ctor] = {
    "success": _ctor_success,
    "error": _ctor_error,
    "subscription": _ctor_subscription,
    # in-band gap markers of the trioalpaca relay (sent only to clients that ask for them)
    "reconnected": _ctor_marker(m.Reconnected),
    "dropped": _ctor_marker(m.Dropped),
}

#: (kind, encoding) -> {T: constructor}
_TABLES: dict[tuple[str, str], dict[str, _Ctor]] = {}
#: (kind, encoding) -> whole-frame decoder (a list of maps -> a list of messages)
_FRAME_DECODERS: dict[tuple[str, str], Callable[[Sequence[Any]], list[Any]]] = {}
for _kind, _types in _DATA_TYPES.items():
    for _enc in _ENCODINGS:
        _table = {t: _make_fast(cls, _enc) for t, cls in _types.items()}
        _table.update(_CONTROL)
        _TABLES[(_kind, _enc)] = _table
        _FRAME_DECODERS[(_kind, _enc)] = _make_frame_decoder(_types, _table, _enc)


# ---------------------------------------------------------------------------- frame parsing

_unpackb = msgpack.unpackb


def _load_msgpack(frame: Any, use_list: bool) -> Any:
    try:
        return _unpackb(frame, timestamp=2, use_list=use_list)
    except Exception as exc:
        raise _remote(f"malformed msgpack frame ({_describe(exc)})", exc) from None


def _load_json(frame: Any) -> Any:
    try:
        return json.loads(frame)
    except RecursionError as exc:
        raise _remote("malformed JSON frame: nested too deeply", exc) from None
    except Exception as exc:
        raise _remote(f"malformed JSON frame ({_describe(exc)})", exc) from None


def _load(frame: Any, encoding: str, use_list: bool) -> Any:
    tp = type(frame)
    if tp is bytes:
        if encoding == "msgpack":
            return _load_msgpack(frame, use_list)
        return _load_json(frame)
    if tp is str:
        return _load_json(frame)
    if isinstance(frame, (bytearray, memoryview)):
        return _load(bytes(frame), encoding, use_list)
    raise _remote(f"a frame must be bytes or str, got {type(frame).__name__}")


def _malformed_error(msg: str) -> MalformedMessageError:
    return MalformedMessageError(msg)


def _check_element(d: Any, index: int) -> str:
    if not isinstance(d, dict):
        raise _malformed_error(f"frame element {index} is not a map: {_short(d)}")
    t = d.get("T", _REQUIRED)
    if t is _REQUIRED:
        raise _malformed_error(f"frame element {index} has no 'T' (type) key: {_short(d)}")
    if not isinstance(t, str):
        raise _malformed_error(f"frame element {index} has a non-string 'T': {_short(t)}")
    return t


def _raw_timestamps(d: dict[str, Any], t: str, keys: tuple[str, ...]) -> None:
    """Make the timestamps of a raw dict canonical in place (RFC 3339 text -> int ns)."""
    for key in keys:
        v = d.get(key)
        if v is None or type(v) is int:
            continue
        if type(v) is not str:
            raise _malformed_error(f"{t!r} message: {key!r} must be a timestamp, got {_short(v)}")
        try:
            d[key] = parse_rfc3339_ns(v)
        except ValueError as exc:
            raise _malformed_error(
                f"{t!r} message: {key!r} is not a valid timestamp: {exc}"
            ) from None


def _load_speedups() -> Any:
    """The optional C module ``trioalpaca._speedups`` (``None``: not built, or turned off by a
    non-empty ``TRIOALPACA_NO_SPEEDUPS`` other than ``0``)."""
    if os.environ.get("TRIOALPACA_NO_SPEEDUPS", "") not in ("", "0"):
        return None
    try:
        from trioalpaca import _speedups
    except ImportError:
        return None
    return _speedups


_speedups = _load_speedups()
#: Whether the C accelerator is in use (built, and not turned off by ``TRIOALPACA_NO_SPEEDUPS``).
SPEEDUPS = _speedups is not None


def _make_raw_check(kind: str, accelerated: bool = True) -> Callable[[list[Any]], bool]:
    """The raw (msgpack) fast check: every element a map with a string ``T`` and an ``int``
    (or nothing) at every timestamp key this stream kind uses; anything else (or an exception)
    sends the frame to the careful path.

    The C accelerator's ``raw_check`` when it is available and ``accelerated``, else a
    generated Python loop; both give the same answer for every list (tested)."""
    per_type = [set(_TS_KEYS[cls]) for cls in _DATA_TYPES[kind].values()]
    everywhere = set.intersection(*per_type) if per_type else set()
    sometimes = set().union(*per_type) - everywhere
    if accelerated and _speedups is not None:
        keys = [tuple(sorted(group)) for group in (everywhere, sometimes)]
        accel: Callable[[list[Any]], bool] = functools.partial(_speedups.raw_check, *keys)
        return accel
    # keys every data message has are read directly (a control message without them raises
    # KeyError and takes the careful path); the others only when present
    cond = " or ".join(
        [
            "type(d['T']) is not str",
            *(f"type(d[{k!r}]) is not int" for k in sorted(everywhere)),
            *(f"({k!r} in d and type(d[{k!r}]) is not int)" for k in sorted(sometimes)),
        ]
    )
    source = (
        "def raw_check(items):\n"
        "    for d in items:\n"
        f"        if {cond}:\n"
        "            return False\n"
        "    return True\n"
    )
    check: Callable[[list[Any]], bool] = _compile(
        source, f"raw check ({kind})", {"type": type, "str": str, "int": int}, "raw_check"
    )
    return check


_RAW_CHECKS: dict[str, Callable[[list[Any]], bool]] = {
    kind: _make_raw_check(kind) for kind in _DATA_TYPES
}


class Decoder:
    """Decode frames of one stream kind and encoding into messages.

    One bad element costs neither its neighbours nor the frame: an element that cannot be decoded
    or normalised becomes a :class:`~trioalpaca.models.MalformedMessage` in its place (in raw
    mode, that event's :meth:`~trioalpaca.models.MalformedMessage.to_wire` dict) and the rest of
    the frame is decoded as usual. Only a frame that does not decode at all (bad msgpack or JSON,
    not an array) raises :class:`~trioalpaca._errors.RemoteProtocolError`.

    Args:
        kind: the stream kind (a :class:`~trioalpaca.endpoints.StreamKind` or its string value:
            ``"stocks"``, ``"crypto"``, ``"options"``, ``"news"``, ``"trading"``). It decides
            which class a ``T`` code maps to (``"t"`` is a stock, crypto or option trade).
        encoding: ``"msgpack"`` or ``"json"``. Text (``str``) frames are always parsed as JSON;
            binary frames by ``encoding``.
        on_malformed: called (synchronously) with every
            :class:`~trioalpaca.models.MalformedMessage` the decoder produces, e.g. to count and
            log them. Never called on the fast path.
    """

    __slots__ = (
        "_decode_items",
        "_encoding",
        "_kind",
        "_on_malformed",
        "_raw_check",
        "_table",
        "_ts_keys",
    )

    def __init__(
        self,
        kind: StreamKind | str,
        encoding: Encoding,
        on_malformed: Callable[[m.MalformedMessage], object] | None = None,
    ) -> None:
        self._kind = _kind_name(kind)
        self._encoding = _encoding_name(encoding)
        self._table = _TABLES[(self._kind, self._encoding)]
        self._decode_items = _FRAME_DECODERS[(self._kind, self._encoding)]
        self._ts_keys = _TS_KEYS_BY_T[self._kind]
        self._raw_check = _RAW_CHECKS[self._kind]
        self._on_malformed = on_malformed

    @property
    def kind(self) -> str:
        """The stream kind, as a string."""
        return self._kind

    @property
    def encoding(self) -> Encoding:
        """The encoding for binary frames."""
        return "json" if self._encoding == "json" else "msgpack"

    def decode(self, frame: Frame) -> list[m.Message]:
        """Decode one frame into typed messages.

        Unknown ``T`` codes become :class:`~trioalpaca.models.UnknownMessage`; control messages
        become :class:`~trioalpaca.models.Connected`, :class:`~trioalpaca.models.Authenticated`,
        :class:`~trioalpaca.models.ServerError` or
        :class:`~trioalpaca.models.SubscriptionChanged`; an element that cannot be decoded or
        normalised becomes a :class:`~trioalpaca.models.MalformedMessage` in its place. On the
        trading stream the frame is one object and the result has one element.

        Raises:
            RemoteProtocolError: the frame as a whole is malformed (never any other exception).
        """
        if self._kind == "trading":
            return [self._decode_trading(frame)]
        if type(frame) is bytes and self._encoding == "msgpack":
            try:
                items = _unpackb(frame, timestamp=2, use_list=False)
            except Exception as exc:
                raise _remote(f"malformed msgpack frame ({_describe(exc)})", exc) from None
            if type(items) is not tuple:
                raise _remote(f"expected an array of messages, got {_short(items)}")
        else:
            items = _load(frame, self._encoding, False)
            if type(items) is not list and type(items) is not tuple:
                raise _remote(f"expected an array of messages, got {_short(items)}")
        try:
            return self._decode_items(items)
        except Exception:  # something unusual: redo it element by element
            return self._decode_careful(items)

    def _malformed(self, d: Any, exc: BaseException, index: int, t: Any) -> m.MalformedMessage:
        if isinstance(exc, ProtocolError):
            error = str(exc)
        else:  # pragma: no cover - the constructors only raise protocol errors
            error = f"frame element {index} ({t!r}) is malformed: {_describe(exc)}"
        msg = m.MalformedMessage(_thaw(d), error)
        if self._on_malformed is not None:
            self._on_malformed(msg)
        return msg

    def _decode_careful(self, items: Sequence[Any]) -> list[m.Message]:
        table = self._table
        out: list[m.Message] = []
        for index, d in enumerate(items):
            t = None
            try:
                t = _check_element(d, index)
                ctor = table.get(t)
                out.append(_unknown(d) if ctor is None else ctor(d))
            except Exception as exc:
                out.append(self._malformed(d, exc, index, t))
        return out

    def decode_raw(self, frame: Frame) -> list[dict[str, Any]]:
        """Decode one frame into canonical wire dicts (timestamps as int nanoseconds).

        Only the shape is validated (each element a map with a string ``T``) and timestamps are
        made canonical: every timestamp key of a known ``T`` holds an ``int`` of nanoseconds (RFC
        3339 text, in JSON or msgpack frames, is converted). Other field values are passed on
        as received. An element that fails these checks becomes the dict of a
        :class:`~trioalpaca.models.MalformedMessage` (``{"T": "malformed", ...}``) in its place.
        On the trading stream the result is the one object of the frame.

        Raises:
            RemoteProtocolError: the frame as a whole is malformed.
        """
        if self._kind == "trading":
            return [decode_trading(frame, self.encoding)]
        if type(frame) is bytes and self._encoding == "msgpack":
            try:
                items = _unpackb(frame, timestamp=2)
            except Exception as exc:
                raise _remote(f"malformed msgpack frame ({_describe(exc)})", exc) from None
            if type(items) is not list:
                raise _remote(f"expected an array of messages, got {_short(items)}")
            try:
                if self._raw_check(items):
                    return items
            except Exception:
                pass
            return self._raw_careful(items)
        items = _load(frame, self._encoding, True)
        if type(items) is not list:
            raise _remote(f"expected an array of messages, got {_short(items)}")
        return self._raw_careful(items)

    def _raw_careful(self, items: list[Any]) -> list[dict[str, Any]]:
        ts_keys = self._ts_keys
        out: list[dict[str, Any]] = []
        for index, d in enumerate(items):
            t = None
            try:
                t = _check_element(d, index)
                keys = ts_keys.get(t)
                if keys:
                    _raw_timestamps(d, t, keys)
                out.append(d)
            except Exception as exc:
                out.append(self._malformed(d, exc, index, t).to_wire())
        return out

    def _decode_trading(self, frame: Frame) -> m.Message:
        obj = decode_trading(frame, self.encoding)
        stream = obj.get("stream")
        data = obj.get("data")
        if stream == "trade_updates":
            if not isinstance(data, Mapping):
                raise _remote(f"'trade_updates' message without a data object: {_short(obj)}")
            return _trade_update(data)
        if stream == "listening":
            if not isinstance(data, Mapping):
                raise _remote(f"'listening' message without a data object: {_short(obj)}")
            streams = data.get("streams")
            if streams is not None and not (
                isinstance(streams, list) and all(isinstance(s, str) for s in streams)
            ):
                raise _remote(f"'listening' message: bad streams list {_short(streams)}")
            return m.Listening(tuple(streams or ()))
        if stream == "authorization" and isinstance(data, Mapping):
            status = data.get("status")
            if status == "authorized":
                return m.Authenticated()
            if status == "unauthorized":
                if data.get("action") == "listen":
                    return m.ServerError(401, "not authenticated (listen before auth)")
                return m.ServerError(402, "unauthorized")
        return m.UnknownMessage(obj)


def _trade_update(data: Mapping[str, Any]) -> m.TradeUpdate:
    event = data.get("event")
    if not isinstance(event, str):
        raise _remote(f"trade update without a string 'event': {_short(event)}")
    if not isinstance(data.get("order"), Mapping):
        raise _remote(f"trade update {event!r} without an 'order' object")
    if "timestamp" not in data:
        raise _remote(f"trade update {event!r} without a 'timestamp'")
    for key in ("execution_id", "event_id"):
        value = data.get(key)
        if value is not None and not isinstance(value, (str, int)):
            raise _remote(f"trade update {event!r}: {key!r} must be a string")
    try:
        return m.TradeUpdate.from_wire(data)
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise _remote(f"malformed trade update {event!r}: {exc}", exc) from None


# ------------------------------------------------------------------------------------ encoding

_Timestamp = msgpack.Timestamp
_new_timestamp = object.__new__
_set_seconds = _Timestamp.seconds.__set__
_set_nanoseconds = _Timestamp.nanoseconds.__set__
_packb = msgpack.packb


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, datetime):
        return format_rfc3339_ns(datetime_to_ns(obj))
    if isinstance(obj, (tuple, frozenset, set)):
        return list(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def _msgpack_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, (frozenset, set)):
        return list(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} as msgpack")


def _dump_msgpack(obj: Any) -> bytes:
    try:
        data: bytes = _packb(obj, default=_msgpack_default, datetime=True)
    except Exception as exc:
        raise LocalProtocolError(f"cannot encode as msgpack: {exc}") from exc
    return data


def _dump_json(obj: Any) -> str:
    try:
        return json.dumps(
            obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default
        )
    except Exception as exc:
        raise LocalProtocolError(f"cannot encode as JSON: {exc}") from exc


def _to_float(v: Any, key: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        try:
            return float(v)
        except OverflowError:
            pass
    raise LocalProtocolError(f"{key!r} must be a number, got {_short(v)}")


def _ts_to_msgpack(ns: Any) -> Any:
    if type(ns) is int:
        if not MIN_TIMESTAMP_NS <= ns <= MAX_TIMESTAMP_NS:
            raise LocalProtocolError(f"timestamp {ns} ns is outside the years 0001-9999")
        # Timestamp(secs, nanos) without its __init__ checks (the values are known good);
        # the packer then writes the smallest form (32, 64 or 96 bit).
        secs, nanos = divmod(ns, 1_000_000_000)
        stamp = _new_timestamp(_Timestamp)
        _set_seconds(stamp, secs)
        _set_nanoseconds(stamp, nanos)
        return stamp
    return ns


def _ts_to_json(ns: Any) -> Any:
    if type(ns) is int:
        try:
            return format_rfc3339_ns(ns)
        except ValueError as exc:
            raise LocalProtocolError(str(exc)) from None
    return ns


def _with_t_first(d: Mapping[str, Any]) -> dict[str, Any]:
    if "T" not in d:
        raise LocalProtocolError(f"a message map needs a 'T' key: {_short(d)}")
    if next(iter(d)) == "T" and type(d) is dict:
        return d
    out: dict[str, Any] = {"T": d["T"]}
    out.update(d)
    return out


class Encoder:
    """Encode messages (or canonical wire dicts) of one stream kind into frames.

    msgpack frames are ``bytes`` (send as binary), JSON frames ``str`` (send as text). ``T`` is
    written first in every map; timestamps become msgpack ext -1 (smallest form) or RFC 3339
    text.

    Args:
        kind: the stream kind (a :class:`~trioalpaca.endpoints.StreamKind` or its string value).
        encoding: ``"msgpack"`` or ``"json"``.
    """

    __slots__ = ("_conv", "_encoding", "_float_keys", "_kind", "_ts_keys")

    def __init__(self, kind: StreamKind | str, encoding: Encoding) -> None:
        self._kind = _kind_name(kind)
        self._encoding = _encoding_name(encoding)
        self._ts_keys = _TS_KEYS_BY_T[self._kind]
        self._float_keys = _FLOAT_KEYS_BY_T[self._kind]
        self._conv = _ts_to_json if self._encoding == "json" else _ts_to_msgpack

    @property
    def kind(self) -> str:
        """The stream kind, as a string."""
        return self._kind

    @property
    def encoding(self) -> Encoding:
        """The encoding frames are produced in."""
        return "json" if self._encoding == "json" else "msgpack"

    def encode(self, messages: Sequence[m.Message]) -> Frame:
        """Encode messages into one frame (an array of maps).

        On the trading stream exactly one message (:class:`~trioalpaca.models.TradeUpdate`,
        :class:`~trioalpaca.models.Listening` or :class:`~trioalpaca.models.Authenticated`) makes
        one frame.

        Raises:
            LocalProtocolError: a message cannot be represented.
        """
        if self._kind == "trading":
            if len(messages) != 1:
                raise LocalProtocolError("a trading stream frame carries exactly one message")
            return encode_trading(_trading_object(messages[0]), self.encoding)
        conv = self._conv
        out = []
        for msg in messages:
            try:
                d = msg.to_wire()
            except Exception as exc:
                raise LocalProtocolError(f"cannot encode {msg!r:.80}: {exc}") from exc
            keys = _TS_KEYS.get(type(msg))
            if keys is None and "T" not in d:
                raise LocalProtocolError(f"{type(msg).__name__} cannot be sent on a data stream")
            if keys:
                for key in keys:
                    if key in d:  # optional timestamps (``r``) are only written when set
                        d[key] = conv(d[key])
                for key in _FLOAT_KEYS[type(msg)]:
                    v = d[key]
                    if type(v) is not float:
                        d[key] = _to_float(v, key)
            out.append(d)
        return _dump_json(out) if self._encoding == "json" else _dump_msgpack(out)

    def encode_raw(self, dicts: Sequence[Mapping[str, Any]]) -> Frame:
        """Encode canonical wire dicts into one frame (the dicts are not modified).

        For known ``T`` codes, integer timestamps at the timestamp keys are converted and
        integer prices (float fields) are written as floats, as Go clients require; everything
        else is written as given, with ``T`` moved first.

        Raises:
            LocalProtocolError: a dict has no string ``T`` or cannot be represented.
        """
        if self._kind == "trading":
            if len(dicts) != 1:
                raise LocalProtocolError("a trading stream frame carries exactly one object")
            return encode_trading(dicts[0], self.encoding)
        conv = self._conv
        ts_keys = self._ts_keys
        float_keys = self._float_keys
        out = []
        for d in dicts:
            if not isinstance(d, Mapping):
                raise LocalProtocolError(f"expected a map, got {_short(d)}")
            t = d.get("T")
            if type(t) is not str:
                raise LocalProtocolError(f"a message map needs a string 'T': {_short(d)}")
            keys = ts_keys.get(t)
            if keys is None:
                out.append(_with_t_first(d))
                continue
            new: dict[str, Any] | None = None
            for key in keys:
                v = d.get(key)
                if type(v) is int:
                    if new is None:
                        new = {"T": t, **d}
                    new[key] = conv(v)
            for key in float_keys[t]:
                v = d.get(key, 0.0)
                if type(v) is not float:
                    if new is None:
                        new = {"T": t, **d}
                    new[key] = _to_float(v, key)
            out.append(_with_t_first(d) if new is None else new)
        return _dump_json(out) if self._encoding == "json" else _dump_msgpack(out)


def _trading_object(msg: m.Message) -> dict[str, Any]:
    if isinstance(msg, m.TradeUpdate):
        return {"stream": "trade_updates", "data": msg.to_wire()}
    if isinstance(msg, m.Listening):
        return {"stream": "listening", "data": msg.to_wire()}
    if isinstance(msg, m.Authenticated):
        data = {"status": "authorized", "action": "authenticate"}
        return {"stream": "authorization", "data": data}
    if isinstance(msg, m.UnknownMessage):
        return dict(msg.raw)
    raise LocalProtocolError(f"{type(msg).__name__} has no trading stream form")


# ------------------------------------------------------------------------ requests / trading


def encode_request(req: Mapping[str, Any], encoding: Encoding) -> Frame:
    """Encode a client request (``{"action": "auth", ...}``; no ``T``) as one frame.

    msgpack gives ``bytes`` (binary frame), JSON ``str`` (text frame).

    Raises:
        LocalProtocolError: the request cannot be represented.
    """
    enc = _encoding_name(encoding)
    obj = dict(req)
    return _dump_json(obj) if enc == "json" else _dump_msgpack(obj)


def _looks_like_json(frame: bytes) -> bool:
    stripped = frame.lstrip(b" \t\r\n")
    return stripped[:1] in (b"{", b"[")


def decode_request(frame: Frame) -> dict[str, Any]:
    """Decode a client request on the server side.

    Accepts JSON text, binary frames holding JSON (starting with ``{`` or ``[``) and msgpack.

    Raises:
        RemoteProtocolError: not a well-formed map.
    """
    raw: Any = frame
    if isinstance(raw, (bytearray, memoryview)):
        raw = bytes(raw)
    if type(raw) is bytes and not _looks_like_json(raw):
        obj = _load_msgpack(raw, True)
    else:
        obj = _load(raw, "json", True)
    if type(obj) is not dict:
        raise _remote(f"a request must be a map, got {_short(obj)}")
    return obj


def decode_trading(frame: Frame, encoding: Encoding) -> dict[str, Any]:
    """Decode one trading stream frame (``{"stream": ..., "data": ...}``) into a dict.

    JSON may arrive in binary frames (Alpaca's paper endpoint does that); a binary frame that
    starts with ``{`` is parsed as JSON even when ``encoding`` is ``"msgpack"``. Values are
    returned as sent (timestamps stay RFC 3339 text).

    Raises:
        RemoteProtocolError: not a well-formed map.
    """
    enc = _encoding_name(encoding)
    raw: Any = frame
    if isinstance(raw, (bytearray, memoryview)):
        raw = bytes(raw)
    if type(raw) is bytes and enc == "msgpack" and not _looks_like_json(raw):
        obj = _load_msgpack(raw, True)
    else:
        obj = _load(raw, "json", True)
    if type(obj) is not dict:
        raise _remote(f"a trading stream message must be a map, got {_short(obj)}")
    return obj


def encode_trading(obj: Mapping[str, Any], encoding: Encoding) -> Frame:
    """Encode one trading stream object (``{"stream": ..., "data": ...}``) as a frame.

    JSON gives ``str``; msgpack ``bytes``. Decimals are written as strings and datetimes as
    RFC 3339 text.

    Raises:
        LocalProtocolError: the object cannot be represented.
    """
    enc = _encoding_name(encoding)
    if not isinstance(obj, Mapping):
        raise LocalProtocolError(f"a trading stream message must be a map, got {_short(obj)}")
    return _dump_json(dict(obj)) if enc == "json" else _dump_msgpack(dict(obj))
