"""Side-by-side benchmark driver (``nox -s bench`` or ``python bench/run.py``).

1. Starts the emulator in its own process, in burst mode (frames of 100 messages, half trades
   and half quotes) and measures messages/second for every ``throughput`` case, each client in its
   own subprocess, one after the other (best of ``--repeat`` runs).
2. Starts ``bench/paced_server.py`` once per rate in ``--paced-rates`` (default 20k and 100k
   msgs/s): it sends each frame the moment it is due, stamped with its send time, and every
   ``paced`` case reports the client-added latency (p50/p99/p99.9/max), CPU seconds per million
   messages and GC pauses. (The old ``latency`` kind measured against the emulator's *market*
   timestamps, which include deliberate late prints up to a minute old: that, not the clients,
   was the source of the 1-1.5 s p99 outliers. See docs/performance.rst.)
3. Restarts the emulator paced at ``--rate`` messages/second and runs the ``latency`` cases other
   modules register, and the ``memory`` cases (RSS under a slow consumer, RSS per million
   buffered messages).
4. With ``--allocs`` (the default when ``valgrind`` is on PATH; ``--no-allocs`` skips it), runs
   ``bench/allocs.py``: allocator calls and instructions per message of the client cases under
   callgrind, marginal between a small and a large run, so independent of machine load.
5. Writes every figure to ``--json`` (default ``bench-results.json``) with the commit it ran on,
   so two commits can be compared with ``python bench/compare.py OLD.json NEW.json``.

Cases live in ``bench/cases_*.py`` (see ``bench/registry.py``); the table prints absolute figures
and the ratios the project targets.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import pathlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from registry import CASES, RATIOS, Params  # noqa: E402


def _load_cases() -> None:
    for path in sorted(HERE.glob("cases_*.py")):
        importlib.import_module(path.stem)


@contextlib.contextmanager
def _server_process(script: str, *args: str) -> Iterator[dict[str, Any]]:
    """Run ``bench/<script>``; yield the JSON line it prints once listening; stop it after."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info: dict[str, Any] = json.loads(proc.stdout.readline())
        yield info
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # both servers exit when stdin closes
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def emulator(*args: str) -> Iterator[tuple[str, list[str]]]:
    with _server_process("emulator_proc.py", *args) as info:
        yield f"ws://127.0.0.1:{info['port']}/v2/iex", info["symbols"]


def run_case(name: str, params: Params, timeout: float) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(HERE / "run.py"),
        "--run-case",
        name,
        "--params",
        json.dumps(params.__dict__),
    ]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail) or f"exit code {out.returncode}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


@contextlib.contextmanager
def paced_server(rate: float, seconds: float) -> Iterator[str]:
    """Run ``bench/paced_server.py`` for one connection's worth of paced, send-stamped frames."""
    with _server_process("paced_server.py", "--rate", str(rate), "--seconds", str(seconds)) as info:
        yield f"ws://127.0.0.1:{info['port']}/v2/iex"


def _brief(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"ERROR {r['error']}"
    keys = ("p50_ms", "p99_ms", "p999_ms", "max_ms", "cpu_s_per_M", "gc_max_ms")
    return "  ".join(f"{k} {_fmt(float(r.get(k, math.nan)), '.3f')}" for k in keys)


def _print_paced(paced: dict[float, dict[str, dict[str, Any]]]) -> None:
    for rate, by_case in paced.items():
        print()
        print(f"== client-added latency at {rate:,.0f} msgs/s (send-stamped feed; ms) ==")
        floor = by_case.get("pl_e", {})
        floor_p99 = float(floor.get("p99_ms", math.nan))
        print(
            f"  {'case':<11} {'client':<44} {'p50':>7} {'p99':>7} {'p99.9':>7} {'max':>8} "
            f"{'>10ms':>6} {'p99/floor':>9} {'cpu s/M':>8} {'gc max':>7}"
        )
        for name, r in by_case.items():
            if "error" in r:
                print(f"  {name:<11} {CASES[name].label:<44} ERROR {r['error']}")
                continue
            ratio = float(r["p99_ms"]) / floor_p99 if floor_p99 == floor_p99 else math.nan
            print(
                f"  {name:<11} {CASES[name].label:<44} {_fmt(r['p50_ms'], '.3f'):>7} "
                f"{_fmt(r['p99_ms'], '.3f'):>7} {_fmt(r['p999_ms'], '.3f'):>7} "
                f"{_fmt(r['max_ms'], '.2f'):>8} {r['over_10ms']:>6} {_fmt(ratio, '.2f'):>8}x "
                f"{_fmt(r['cpu_s_per_M'], '.2f'):>8} {_fmt(r['gc_max_ms'], '.2f'):>7}"
            )
            if r.get("server_late_frames"):
                print(
                    f"  {'':<11} (server sent {r['server_late_frames']} frames > 1 ms late; "
                    f"achieved {_fmt(float(r.get('server_rate') or math.nan))} msgs/s)"
                )


def _write_json(
    args: argparse.Namespace,
    rates: dict[str, float],
    results: dict[str, dict[str, Any]],
    paced: dict[float, dict[str, dict[str, Any]]],
    elapsed: float,
    allocs: dict[str, Any] | None = None,
) -> None:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False, cwd=HERE
        ).stdout.strip()
    except OSError:  # pragma: no cover - git missing
        commit = ""
    doc = {
        "commit": commit,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "argv": sys.argv[1:],
        "seconds": elapsed,
        "labels": {name: c.label for name, c in CASES.items()},
        "throughput_msgs_per_s": rates,
        "results": results,
        "paced": {f"{rate:g}": by_case for rate, by_case in paced.items()},
    }
    if allocs is not None:
        doc["allocs"] = allocs
    pathlib.Path(args.json).write_text(json.dumps(doc, indent=2, sort_keys=True))
    print(f"results written to {args.json}")


def _rate(r: dict[str, Any]) -> float:
    if "error" in r or not r.get("seconds"):
        return math.nan
    return float(r["msgs"]) / float(r["seconds"])


def _paired(num: list[float], den: list[float]) -> tuple[float, float, float, int] | None:
    """Median, min and max of ``num[i] / den[i]`` over the rounds both ran in (``None`` with
    fewer than three): each round runs every case once, a few seconds apart, so a round's own
    ratio is less exposed to a shared machine's drift than the ratio of two bests."""
    import statistics

    ratios = [
        x / y
        for x, y in zip(num, den, strict=False)
        if not (math.isnan(x) or math.isnan(y)) and y > 0
    ]
    if len(ratios) < 3:
        return None
    return statistics.median(ratios), min(ratios), max(ratios), len(ratios)


def _cpu_us(r: dict[str, Any]) -> float:
    """CPU microseconds per message of a throughput case (steadier than wall time on a shared
    machine: the process's own CPU, not the time it waited for a core)."""
    if "error" in r or not r.get("cpu_s") or not r.get("msgs"):
        return math.nan
    return float(r["cpu_s"]) / float(r["msgs"]) * 1e6


def _allocs_section(args: argparse.Namespace, wanted: set[str]) -> dict[str, Any] | None:
    """Allocator calls and instructions per message under callgrind (``bench/allocs.py``): the
    client cases of ``allocs.CLIENTS`` that ``--cases`` selects, against their own burst emulator;
    ``None`` when none is selected."""
    import allocs

    clients = [c for c in allocs.CLIENTS if c[0] in wanted]
    if not clients:
        return None
    frames = max(c[2] for c in clients) + 10
    print(f"allocs: callgrind, {len(clients)} clients x 2 runs, {args.allocs_jobs} at a time")
    with emulator("--burst", "100", "--frames", str(frames), "--symbols", str(args.symbols)) as (
        url,
        symbols,
    ):
        return allocs.measure(url, symbols, clients, jobs=args.allocs_jobs)


def _print_allocs(result: dict[str, Any] | None) -> None:
    if result is not None:
        import allocs

        print()
        print("\n".join(allocs.format_table(result, {n: c.label for n, c in CASES.items()})))


def _fmt(x: float, spec: str = ",.0f") -> str:
    return "n/a" if x != x else format(x, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-case", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, default=2000, help="burst frames per client")
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2, help="best of N throughput runs")
    parser.add_argument("--rate", type=float, default=20_000.0, help="paced msgs/s (total)")
    parser.add_argument("--seconds", type=float, default=6.0, help="latency window")
    parser.add_argument("--memory-seconds", type=float, default=20.0)
    parser.add_argument("--cases", default="", help="comma-separated case names (default all)")
    parser.add_argument(
        "--paced-rates", default="20000,100000", help="msgs/s for the paced latency cases"
    )
    parser.add_argument("--paced-seconds", type=float, default=5.0, help="paced window per case")
    parser.add_argument(
        "--buffered", type=int, default=1_000_000, help="messages held for the RSS cases"
    )
    parser.add_argument("--json", default="bench-results.json", help="where to write results")
    parser.add_argument(
        "--allocs",
        action=argparse.BooleanOptionalAction,
        default=shutil.which("valgrind") is not None,
        help="allocations and instructions per message under callgrind (default: on when "
        "valgrind is on PATH; --no-allocs skips)",
    )
    parser.add_argument("--allocs-jobs", type=int, default=2, help="callgrind runs at a time")
    args = parser.parse_args()
    _load_cases()

    if args.run_case:
        params = Params(**json.loads(args.params))
        result = CASES[args.run_case].run(params)
        print(json.dumps(result), flush=True)
        return 0

    wanted = {c for c in args.cases.split(",") if c} or set(CASES)
    started = time.perf_counter()
    total = args.frames * 100
    rates: dict[str, float] = {}
    results: dict[str, dict[str, Any]] = {}

    print(f"burst: {args.frames} frames x 100 msgs per client, {args.symbols} symbols", flush=True)
    with emulator(
        "--burst", "100", "--frames", str(args.frames), "--symbols", str(args.symbols)
    ) as (
        url,
        symbols,
    ):
        chosen = [c for c in CASES.values() if c.kind == "throughput" and c.name in wanted]
        # Round-robin over the cases so load changes on a shared machine hit them all alike.
        round_rates: dict[str, list[float]] = {c.name: [] for c in chosen}
        for round_no in range(args.repeat):
            for c in chosen:
                r = run_case(c.name, Params(url, symbols, total, 0.0, 0.0), timeout=300)
                round_rates[c.name].append(_rate(r))
                best = results.get(c.name)
                if best is None or "error" in best or _rate(r) > _rate(best):
                    results[c.name] = r
                    rates[c.name] = _rate(r)
                print(
                    f"  round {round_no + 1}: {c.name:<8} {c.label:<44} {_fmt(_rate(r)):>12} msg/s",
                    flush=True,
                )

    for name, per_round in round_rates.items():  # every round's rate, in the JSON too
        results[name]["round_rates"] = per_round

    buffered_cases = [c for c in CASES.values() if c.kind == "buffered" and c.name in wanted]
    if buffered_cases:
        frames = args.buffered // 100
        print(f"buffered: {frames * 100:,} messages held unread in the client's buffer", flush=True)
        with emulator(
            "--burst", "100", "--frames", str(frames), "--symbols", str(args.symbols)
        ) as (url, symbols):
            for c in buffered_cases:
                r = run_case(c.name, Params(url, symbols, frames * 100, 0.0, 0.0), timeout=300)
                results[c.name] = r
                print(f"  {c.name:<11} {c.label:<44} {json.dumps(r)}", flush=True)

    paced: dict[float, dict[str, dict[str, Any]]] = {}
    paced_cases = [c for c in CASES.values() if c.kind == "paced" and c.name in wanted]
    for rate in [float(r) for r in args.paced_rates.split(",") if r] if paced_cases else []:
        print(f"paced (send-stamped): {rate:,.0f} msgs/s, frames of 10", flush=True)
        paced[rate] = {}
        for c in paced_cases:
            with paced_server(rate, args.paced_seconds + 1.0) as url:
                params = Params(url, ["AAPL", "MSFT"], 0, args.paced_seconds + 1.0, rate)
                r = run_case(c.name, params, timeout=args.paced_seconds + 60)
            paced[rate][c.name] = r
            print(f"  {c.name:<11} {c.label:<44} {_brief(r)}", flush=True)

    per_symbol = args.rate / args.symbols
    print(f"paced: {args.rate:,.0f} msgs/s ({args.symbols} symbols)", flush=True)
    with emulator("--rate", str(per_symbol), "--symbols", str(args.symbols)) as (url, symbols):
        for c in CASES.values():
            if c.kind not in ("latency", "memory") or c.name not in wanted:
                continue
            secs = args.seconds if c.kind == "latency" else args.memory_seconds
            r = run_case(c.name, Params(url, symbols, 0, secs, args.rate), timeout=secs + 120)
            results[c.name] = r
            print(f"  {c.name:<8} {c.label:<44} {json.dumps(r)}", flush=True)

    allocs = _allocs_section(args, wanted) if args.allocs else None

    print()
    print(f"== throughput (burst, msgs/s; best of {args.repeat}) ==")
    for name, rate in rates.items():
        extra = f"  ERROR {results[name]['error']}" if "error" in results[name] else ""
        cpu = _cpu_us(results[name])
        cpu_text = f"  {_fmt(cpu, '.2f')} CPU us/msg" if cpu == cpu else ""
        print(f"  ({name}) {CASES[name].label:<44} {_fmt(rate):>12}{cpu_text}{extra}")
    print()
    print("== ratios ==")
    checks = [
        ("a / c  typed vs alpaca-py typed", "a", "c", 4.0),
        ("b / d  raw vs alpaca-py raw", "b", "d", 1.5),
        ("b / e  raw vs bare trio-websocket loop", "b", "e", 0.95),
        ("a_batch / c  typed batches vs alpaca-py typed", "a_batch", "c", 3.0),
        ("a_batch / a  typed batches vs typed async for", "a_batch", "a", 1.0),
        ("b_batch / e  raw batches vs bare loop", "b_batch", "e", 0.95),
        ("p1 / a_batch  MessageHandler 1 worker vs bare client", "p1", "a_batch", 0.70),
        ("p4 / a_batch  MessageHandler 4 workers vs bare client", "p4", "a_batch", 0.70),
    ]
    checks += [c for c in RATIOS if c not in checks]
    print(
        "  (best of each case's rounds; with 3 or more rounds also the median of the rounds'"
        " own ratios, which the verdict then uses)"
    )
    for label, num, den, target in checks:
        if num in rates and den in rates:
            ratio = rates[num] / rates[den]
            paired = _paired(round_rates.get(num, []), round_rates.get(den, []))
            judged = ratio if paired is None else paired[0]
            if target is None:
                verdict = "(reported)"
            else:
                verdict = f"(target >= {target:g}x) " + (
                    "ok" if judged >= target else "BELOW TARGET"
                )
            cpu_ratio = _cpu_us(results[den]) / _cpu_us(results[num])
            rounds = (
                ""
                if paired is None
                else f"  median {paired[0]:.2f}x of {paired[3]} rounds ({paired[1]:.2f}-"
                f"{paired[2]:.2f})"
            )
            print(
                f"  {label:<48} {_fmt(ratio, '.2f'):>7}x{rounds}  {verdict}  "
                f"[by CPU per message: {_fmt(cpu_ratio, '.2f')}x]"
            )
    lat = {n: r for n, r in results.items() if CASES[n].kind == "latency"}
    if lat:
        print()
        print(f"== latency at {args.rate:,.0f} msgs/s (ms) ==")
        for name, r in lat.items():
            if "error" in r:
                print(f"  ({name}) {CASES[name].label:<30} ERROR {r['error']}")
                continue
            print(
                f"  ({name}) {CASES[name].label:<30} p50 {_fmt(r['p50_ms'], '.3f'):>8}  "
                f"p99 {_fmt(r['p99_ms'], '.3f'):>8}  ({r['msgs']:,} msgs)"
            )
    _print_paced(paced)
    rec = {
        n: r for n, r in results.items() if n.startswith(("rec_", "replay_")) and "error" not in r
    }
    if rec:  # recording cases (bench/cases_record.py): in-process ratios and the file size
        print()
        print("== recording and replay ==")
        for name, r in rec.items():
            if "same_process_ratio" in r:
                target = r.get("target_ratio")
                verdict = (
                    ""
                    if target is None
                    else (
                        f"(target >= {target:g}x) "
                        + ("ok" if r["same_process_ratio"] >= target else "BELOW TARGET")
                    )
                )
                spread = (  # replay_*: the median of paired rounds, with its quartiles
                    f" (median of {r['rounds']} paired rounds; quartiles "
                    f"{r['ratio_quartiles'][0]:.2f}-{r['ratio_quartiles'][1]:.2f})"
                    if "ratio_quartiles" in r
                    else ""
                )
                print(
                    f"  {name:<16} vs {r['baseline']} in the same process: "
                    f"{r['same_process_ratio']:.2f}x{spread} {verdict}"
                )
                if "cpu_ratio" in r:  # CPU time per message (all threads), same comparison
                    strict = (  # replay_raw*: the stricter floor too
                        f"; vs unpackb + len() only: {r['strict_ratio']:.2f}x wall, "
                        f"{r['strict_cpu_ratio']:.2f}x CPU"
                        if "strict_ratio" in r
                        else ""
                    )
                    print(f"  {'':<16} CPU time: {r['cpu_ratio']:.2f}x{strict}")
            if "file_mb_per_M" in r:
                print(
                    f"  {name:<16} {r['file_mb_per_M']} MB per million messages on disk vs "
                    f"{r['raw_frames_mb_per_M']} MB of raw frames ({r['compression']}x smaller)"
                )
    for name, r in results.items():
        if CASES[name].kind != "buffered":
            continue
        print()
        print(f"== memory: {CASES[name].label} ==")
        if "error" in r:
            print(f"  ERROR {r['error']}")
            continue
        print(
            f"  {r['buffered']:,} messages held: RSS +{r['rss_mb']:.0f} MB "
            f"({r['rss_mb_per_M']:.0f} MB per million), {r['blocks_per_msg']:.1f} heap blocks "
            f"per message; while filling: {r['gc_count']} GC runs, longest "
            f"{r['gc_max_ms']:.1f} ms, total {r['gc_total_ms']:.0f} ms"
        )
    mem = {n: r for n, r in results.items() if CASES[n].kind == "memory"}
    for name, r in mem.items():
        print()
        print(f"== memory: {CASES[name].label} ==")
        if "error" in r:
            print(f"  ERROR {r['error']}")
            continue
        flat = "flat" if abs(r["rss_growth_mb"]) < 5.0 else "GROWING"
        print(
            f"  RSS after warm-up {r['rss_start_mb']:.1f} MB, peak {r['rss_peak_mb']:.1f} MB, "
            f"end {r['rss_end_mb']:.1f} MB, growth {r['rss_growth_mb']:+.1f} MB ({flat}); "
            f"received {r['received']:,}, consumed {r['consumed']:,}, dropped {r['dropped']:,}"
        )
    _print_allocs(allocs)
    elapsed = time.perf_counter() - started
    print(f"\nbench finished in {elapsed:.0f} s")
    _write_json(args, rates, results, paced, elapsed, allocs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
