"""Conformance: the official JS SDK (``@alpacahq/alpaca-trade-api`` 3.x) unmodified vs the emulator.

``nox -s conformance_js`` runs this module. It needs node (>= 18) and npm: the first test installs
the SDK with ``npm ci`` into ``conformance/js/node_modules`` from the committed package-lock.json
(skipped when an installed copy already matches the lock). Without node the whole module is
skipped with a line saying so; nothing else skips.

``conformance/js/run.js`` drives one SDK stream against the emulator and prints a JSON report:
the messages per channel as the SDK handed them to its ``on*`` callbacks, and every problem the
SDK reported (its ``client_error`` events, console.warn/console.error, node process warnings,
uncaught exceptions). Each test requires a message on every channel, each of them shaped by the
SDK's own entity mapping (``Price``, ``Timestamp`` as a ``Date``, ...), no problem and nothing on
stderr.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from _support import running_emulator

NODE = shutil.which("node")
if NODE is None:
    pytest.skip(
        "node is not installed: the JS SDK conformance tests need node >= 18 and npm",
        allow_module_level=True,
    )

pytestmark = pytest.mark.timeout(180)

JS_DIR = Path(__file__).parent / "js"
SDK = "@alpacahq/alpaca-trade-api"
RUN_SECONDS = 30


def locked_sdk_version() -> str:
    lock = json.loads((JS_DIR / "package-lock.json").read_text())
    return str(lock["packages"][f"node_modules/{SDK}"]["version"])


@pytest.fixture(scope="session")
def js_sdk() -> str:
    """Install the locked SDK into conformance/js/node_modules (once); return its version."""
    version = locked_sdk_version()
    installed = JS_DIR / "node_modules" / SDK / "package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != version:
        npm = shutil.which("npm")
        assert npm is not None, "node is installed but npm is not: cannot install the JS SDK"
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, f"npm ci failed:\n{proc.stdout}\n{proc.stderr}"
    assert json.loads(installed.read_text())["version"] == version
    return version


@pytest.fixture(scope="module")
def plain_url() -> Iterator[str]:
    """A plain ``ws://`` emulator (the SDK keeps ``ws://`` for crypto and trading only)."""
    with running_emulator() as url:
        yield url


def js_report(stream: str, url: str, key: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``run.js`` for one stream and return its report (node must exit 0, stderr empty)."""
    proc = subprocess.run(
        [str(NODE), "run.js", stream, url, key, str(RUN_SECONDS)],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS + 30,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, f"run.js exited {proc.returncode}:\n{proc.stderr}"
    assert proc.stderr == "", proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


@pytest.fixture(scope="module")
def tls_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A ``wss://`` emulator with a trustme certificate for 127.0.0.1; yields its URL and the
    environment that makes node trust the test CA (``NODE_EXTRA_CA_CERTS``)."""
    tmp = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(tmp / "ca.pem")
    server.private_key_pem.write_to_path(tmp / "key.pem")
    for i, pem in enumerate(server.cert_chain_pems):
        pem.write_to_path(tmp / "cert.pem", append=i > 0)
    extra = ["--certfile", str(tmp / "cert.pem"), "--keyfile", str(tmp / "key.pem")]
    with running_emulator(extra) as url:
        assert url.startswith("wss://127.0.0.1:"), url
        yield url, {"NODE_EXTRA_CA_CERTS": str(tmp / "ca.pem")}


def run_js(stream: str, url: str, key: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """:func:`js_report`, requiring no problem and a message on every channel."""
    report = js_report(stream, url, key, env)
    assert report["problems"] == [], report["problems"]
    assert report["missing"] == [], f"no message on {report['missing']} within {RUN_SECONDS}s"
    assert report["complete"]
    states = [line for line in report["logs"] if line.startswith("state: ")]
    assert states.count("state: connecting") == 1, f"the SDK reconnected: {states}"
    return report


def samples(report: dict[str, Any], channel: str) -> list[dict[str, Any]]:
    got = report["channels"][channel]
    assert got["count"] >= 1 and got["samples"], channel
    return list(got["samples"])


def assert_mapped(
    report: dict[str, Any],
    channel: str,
    keys: set[str],
    type_code: str,
    kept: frozenset[str] = frozenset({"T", "S"}),
) -> None:
    """Every sample carries the SDK's renamed ``keys``, otherwise only the wire keys the SDK
    passes through unmapped (``kept``), a ``Date`` timestamp, and the wire type code ``T``."""
    for msg in samples(report, channel):
        assert msg["T"] == type_code, (channel, msg)
        assert keys <= msg.keys(), (channel, sorted(keys - msg.keys()), msg)
        assert set(msg) - keys - kept == set(), (channel, msg)
        assert set(msg["Timestamp"]) == {"$date"}, (channel, msg)


CRYPTO_KEYS = {
    "trades": ({"Symbol", "Price", "Size", "Timestamp", "ID", "TakerSide"}, "t"),
    "quotes": ({"BidPrice", "BidSize", "AskPrice", "AskSize", "Timestamp"}, "q"),
    "bars": ({"Open", "High", "Low", "Close", "Volume", "Timestamp", "TradeCount", "VWAP"}, "b"),
    "orderbooks": ({"Timestamp", "Bids", "Asks"}, "o"),
}
CRYPTO_KEYS["updated_bars"] = (CRYPTO_KEYS["bars"][0], "u")
CRYPTO_KEYS["daily_bars"] = (CRYPTO_KEYS["bars"][0], "d")
PAIRS = {"BTC/USD", "ETH/USD", "SOL/USD"}


def check_crypto(report: dict[str, Any]) -> None:
    for channel, (keys, code) in CRYPTO_KEYS.items():
        # Order books keep the reset flag "r" under its wire name.
        kept = frozenset({"T", "S", "r"} if channel == "orderbooks" else {"T", "S"})
        assert_mapped(report, channel, keys, code, kept)
    # The SDK's crypto mapping renames S only for trades; quotes, bars and books keep "S".
    assert {t["Symbol"] for t in samples(report, "trades")} <= PAIRS
    for channel in ("quotes", "bars", "orderbooks"):
        assert {m["S"] for m in samples(report, channel)} <= PAIRS
    for q in samples(report, "quotes"):
        assert q["BidPrice"] < q["AskPrice"]
    for b in samples(report, "bars"):
        assert b["Low"] <= min(b["Open"], b["Close"]) <= max(b["Open"], b["Close"]) <= b["High"]
    first = samples(report, "orderbooks")[0]
    assert first["r"] is True, "the first order book message must be the snapshot"
    assert first["Bids"] and first["Asks"]
    assert max(lv["Price"] for lv in first["Bids"]) < min(lv["Price"] for lv in first["Asks"])
    assert all(set(lv) == {"Price", "Size"} for lv in first["Bids"] + first["Asks"])


def check_trading(report: dict[str, Any]) -> None:
    # The SDK has no entity for trade updates: it hands out the server's "data" object.
    for event in ("new", "fill"):
        for update in samples(report, event):
            assert update["event"] == event and update["order"]["id"]
    for fill in samples(report, "fill"):
        assert fill["order"]["status"] == "filled"
        assert float(fill["qty"]) > 0 and float(fill["price"]) > 0


def test_sdk_installs_from_the_lock(js_sdk: str) -> None:
    assert js_sdk.startswith("3.")


def test_crypto_over_plain_ws(js_sdk: str, plain_url: str) -> None:
    report = run_js("crypto", plain_url, "key-js-crypto")
    assert report["urls"] == [plain_url + "/v1beta3/crypto/us"]
    check_crypto(report)


def test_trading_over_plain_ws(js_sdk: str, plain_url: str) -> None:
    report = run_js("trading", plain_url, "key-js-trading")
    assert report["urls"] == [plain_url + "/stream"]
    check_trading(report)


STOCK_KEYS = {
    "trades": (
        {"Symbol", "ID", "Exchange", "Price", "Size", "Timestamp", "Conditions", "Tape"},
        "t",
    ),
    "quotes": (
        {"Symbol", "BidExchange", "BidPrice", "BidSize", "AskExchange", "AskPrice", "AskSize"}
        | {"Timestamp", "Conditions", "Tape"},
        "q",
    ),
    "bars": (
        {"Symbol", "OpenPrice", "HighPrice", "LowPrice", "ClosePrice", "Volume", "Timestamp"}
        | {"TradeCount", "VWAP"},
        "b",
    ),
    "statuses": (
        {"Symbol", "StatusCode", "StatusMessage", "ReasonCode", "ReasonMessage", "Timestamp"}
        | {"Tape"},
        "s",
    ),
    "lulds": (
        {"Symbol", "LimitUpPrice", "LimitDownPrice", "Indicator", "Timestamp", "Tape"},
        "l",
    ),
    "corrections": (
        {"Symbol", "Exchange", "OriginalID", "OriginalPrice", "OriginalSize"}
        | {"OriginalConditions", "CorrectedID", "CorrectedPrice", "CorrectedSize"}
        | {"CorrectedConditions", "Tape", "Timestamp"},
        "c",
    ),
    "cancel_errors": (
        {"Symbol", "ID", "Exchange", "Price", "Size", "CancelErrorAction", "Tape", "Timestamp"},
        "x",
    ),
}
STOCK_KEYS["updated_bars"] = (STOCK_KEYS["bars"][0], "u")
STOCK_KEYS["daily_bars"] = (STOCK_KEYS["bars"][0], "d")
STOCKS = {"AAPL", "MSFT", "TSLA", "NVDA", "AMZN", "SPY"}
CONTRACTS = {"AAPL250117C00150000", "AAPL250117P00150000", "SPY250321C00500000"}


def test_stocks_over_tls_all_nine_channels(
    js_sdk: str, tls_emulator: tuple[str, dict[str, str]]
) -> None:
    url, env = tls_emulator
    report = run_js("stocks", url, "key-js-stocks", env)
    assert report["urls"] == [url + "/v2/iex"]
    assert set(report["channels"]) == set(STOCK_KEYS)
    for channel, (keys, code) in STOCK_KEYS.items():
        assert_mapped(report, channel, keys, code, frozenset({"T"}))
        assert {m["Symbol"] for m in samples(report, channel)} <= STOCKS, channel
    for q in samples(report, "quotes"):
        assert q["BidPrice"] < q["AskPrice"]
    for channel in ("bars", "updated_bars", "daily_bars"):
        for b in samples(report, channel):
            assert b["LowPrice"] <= b["OpenPrice"] <= b["HighPrice"], b
            assert b["LowPrice"] <= b["ClosePrice"] <= b["HighPrice"], b
    for x in samples(report, "lulds"):
        assert x["LimitDownPrice"] < x["LimitUpPrice"]
    for c in samples(report, "corrections"):
        assert c["OriginalID"] != c["CorrectedID"]
    assert all(x["CancelErrorAction"] in ("C", "E") for x in samples(report, "cancel_errors"))


def test_crypto_over_tls(js_sdk: str, tls_emulator: tuple[str, dict[str, str]]) -> None:
    url, env = tls_emulator
    report = run_js("crypto", url, "key-js-crypto", env)
    assert report["urls"] == [url + "/v1beta3/crypto/us"]
    check_crypto(report)


def test_news_over_tls(js_sdk: str, tls_emulator: tuple[str, dict[str, str]]) -> None:
    url, env = tls_emulator
    report = run_js("news", url, "key-js-news", env)
    assert report["urls"] == [url + "/v1beta1/news"]
    keys = {"ID", "Headline", "Summary", "Author", "CreatedAt", "UpdatedAt", "Content", "URL"}
    keys |= {"Symbols", "Source"}
    for n in samples(report, "news"):
        assert n["T"] == "n" and keys <= n.keys(), n
        # "images" (mapped to "Images") is not part of the stream messages the emulator sends.
        assert set(n) - keys == {"T"}, n
        assert set(n["CreatedAt"]) == {"$date"} and isinstance(n["Symbols"], list)
        assert n["Headline"]


def test_options_over_tls(js_sdk: str, tls_emulator: tuple[str, dict[str, str]]) -> None:
    url, env = tls_emulator
    report = run_js("options", url, "key-js-options", env)
    assert report["urls"] == [url + "/v1beta1/opra"]
    trade_keys = {"Symbol", "Exchange", "Price", "Size", "Timestamp", "Condition"}
    quote_keys = {"Symbol", "BidExchange", "BidPrice", "BidSize", "AskExchange", "AskPrice"}
    quote_keys |= {"AskSize", "Timestamp", "Conditions"}
    assert_mapped(report, "trades", trade_keys, "t", frozenset({"T"}))
    assert_mapped(report, "quotes", quote_keys, "q", frozenset({"T"}))
    for channel in ("trades", "quotes"):
        assert {m["Symbol"] for m in samples(report, channel)} <= CONTRACTS


def test_trading_over_tls(js_sdk: str, tls_emulator: tuple[str, dict[str, str]]) -> None:
    url, env = tls_emulator
    report = run_js("trading", url, "key-js-trading", env)
    assert report["urls"] == [url + "/stream"]
    check_trading(report)


def test_without_the_test_ca_the_sdk_reports_the_certificate_error(
    js_sdk: str, tls_emulator: tuple[str, dict[str, str]]
) -> None:
    """NODE_EXTRA_CA_CERTS is what makes the TLS tests pass: without it node refuses the
    certificate and the SDK reports it as a client error."""
    url, _env = tls_emulator
    env = {k: v for k, v in os.environ.items() if k != "NODE_EXTRA_CA_CERTS"}
    report = js_report("stocks", url, "key-js-noca", {**env, "NODE_EXTRA_CA_CERTS": ""})
    assert report["channels"]["trades"]["count"] == 0 and not report["complete"]
    assert report["problems"][0] == "client_error: unable to verify the first certificate"
