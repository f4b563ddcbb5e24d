// Drives one stream of the official JS SDK (@alpacahq/alpaca-trade-api 3.x, unmodified) against a
// server and prints one JSON report on stdout. conformance/test_js_sdk.py runs it and checks the
// report; it makes no judgement itself.
//
//   node run.js STREAM BASE_URL KEY [SECONDS]
//
// STREAM is stocks, crypto, news, options or trading. BASE_URL is given to the SDK as both
// dataStreamUrl and baseUrl; the SDK appends its own paths (and turns the scheme into wss:// for
// stocks, news and options). For a test CA, set NODE_EXTRA_CA_CERTS=ca.pem.
//
// The report: {"stream", "channels": {name: {"count", "samples": [first 3 messages]}}, "missing",
// "problems", "logs", "urls", "complete"}. "problems" collects everything the SDK reports as an
// error or warning: its client_error events, console.warn / console.error output, process warnings
// (deprecations) and uncaught exceptions. The run ends once every channel delivered ("complete"),
// half a second after the first problem, or after SECONDS. Dates are serialised as
// {"$date": ISO string}.

"use strict";

const util = require("util");

const [stream, baseUrl, key, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg || "30");
const logs = [];
// A problem ends the run half a second later (time to collect what comes with it).
const problems = [];
const push = problems.push.bind(problems);
problems.push = (...items) => {
  setTimeout(() => finish(1), 500);
  return push(...items);
};

console.log = console.info = console.debug = (...args) => logs.push(util.format(...args));
console.warn = (...args) => problems.push(`console.warn: ${util.format(...args)}`);
console.error = (...args) => problems.push(`console.error: ${util.format(...args)}`);
process.on("warning", (w) => problems.push(`process warning: ${w.name}: ${w.message}`));

const Alpaca = require("@alpacahq/alpaca-trade-api");

const STOCKS = ["AAPL", "MSFT", "TSLA", "NVDA", "AMZN", "SPY"];
const PAIRS = ["BTC/USD", "ETH/USD", "SOL/USD"];
const CONTRACTS = ["AAPL250117C00150000", "AAPL250117P00150000", "SPY250321C00500000"];

const channels = {};
let finish = null;

function want(names) {
  for (const name of names) channels[name] = { count: 0, samples: [] };
}

function record(name, msg) {
  const ch = channels[name];
  if (ch === undefined) {
    problems.push(`message on unexpected channel ${name}`);
    return;
  }
  ch.count += 1;
  if (ch.samples.length < 3) ch.samples.push(msg);
  if (Object.values(channels).every((c) => c.count > 0)) finish(0);
}

function serialise(report) {
  return JSON.stringify(report, function replacer(k, value) {
    const original = this[k];
    if (original instanceof Date) return { $date: original.toISOString() };
    if (typeof original === "bigint") return { $bigint: original.toString() };
    return value;
  });
}

const alpaca = new Alpaca({
  keyId: key,
  secretKey: "secret",
  baseUrl,
  dataStreamUrl: baseUrl,
  feed: "iex",
  optionFeed: "opra",
});

function dataSocket(socket, subscribe, handlers) {
  socket.onError((err) => problems.push(`client_error: ${err}`));
  socket.onStateChange((state) => logs.push(`state: ${state}`));
  socket.onConnect(subscribe);
  for (const [name, on] of Object.entries(handlers)) {
    socket[on]((msg) => record(name, msg));
  }
  socket.connect();
  return socket;
}

let socket;
if (stream === "stocks") {
  const s = alpaca.data_stream_v2;
  want(["trades", "quotes", "bars", "updated_bars", "daily_bars", "statuses", "lulds"]);
  want(["corrections", "cancel_errors"]);
  socket = dataSocket(
    s,
    () => {
      s.subscribeForTrades(STOCKS);
      s.subscribeForQuotes(STOCKS);
      s.subscribeForBars(["*"]);
      s.subscribeForUpdatedBars(["*"]);
      s.subscribeForDailyBars(STOCKS);
      s.subscribeForStatuses(["*"]);
      s.subscribeForLulds(STOCKS);
    },
    {
      trades: "onStockTrade",
      quotes: "onStockQuote",
      bars: "onStockBar",
      updated_bars: "onStockUpdatedBar",
      daily_bars: "onStockDailyBar",
      statuses: "onStatuses",
      lulds: "onLulds",
      corrections: "onCorrections",
      cancel_errors: "onCancelErrors",
    },
  );
} else if (stream === "crypto") {
  const s = alpaca.crypto_stream_v1beta3;
  want(["trades", "quotes", "bars", "updated_bars", "daily_bars", "orderbooks"]);
  socket = dataSocket(
    s,
    () => {
      s.subscribeForTrades(PAIRS);
      s.subscribeForQuotes(PAIRS);
      s.subscribeForBars(PAIRS);
      s.subscribeForUpdatedBars(PAIRS);
      s.subscribeForDailyBars(PAIRS);
      s.subscribeForOrderbooks(PAIRS);
    },
    {
      trades: "onCryptoTrade",
      quotes: "onCryptoQuote",
      bars: "onCryptoBar",
      updated_bars: "onCryptoUpdatedBar",
      daily_bars: "onCryptoDailyBar",
      orderbooks: "onCryptoOrderbook",
    },
  );
} else if (stream === "news") {
  const s = alpaca.news_stream;
  want(["news"]);
  socket = dataSocket(s, () => s.subscribeForNews(["*"]), { news: "onNews" });
} else if (stream === "options") {
  const s = alpaca.option_stream;
  want(["trades", "quotes"]);
  socket = dataSocket(
    s,
    () => {
      s.subscribeForTrades(CONTRACTS);
      s.subscribeForQuotes(CONTRACTS);
    },
    { trades: "onOptionTrade", quotes: "onOptionQuote" },
  );
} else if (stream === "trading") {
  const s = alpaca.trade_ws;
  // The SDK hands out trade updates as the server's `data` objects; wait for a new and a fill.
  want(["new", "fill"]);
  s.onError((err) => problems.push(`client_error: ${err}`));
  s.onStateChange((state) => logs.push(`state: ${state}`));
  s.onConnect(() => s.subscribe(["trade_updates"]));
  s.onOrderUpdate((update) => {
    if (update.event in channels) record(update.event, update);
  });
  s.connect();
  socket = s;
} else {
  process.stderr.write(`unknown stream ${stream}; use stocks, crypto, news, options or trading\n`);
  process.exit(2);
}

const urls = [socket.session.url];
const timer = setTimeout(() => finish(1), seconds * 1000);

finish = (code) => {
  finish = () => {};
  clearTimeout(timer);
  const missing = Object.keys(channels).filter((name) => channels[name].count === 0);
  const report = { stream, channels, missing, problems, logs, urls, complete: code === 0 };
  socket.disconnect();
  // Give the close handshake a moment, then leave whatever timers the SDK still holds.
  setTimeout(() => process.stdout.write(serialise(report) + "\n", () => process.exit(0)), 200);
};

process.on("uncaughtException", (err) => {
  problems.push(`uncaught exception: ${err && err.stack ? err.stack : err}`);
  finish(1);
});
