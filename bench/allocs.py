"""Allocator calls and instructions per message, counted by callgrind (independent of machine load).

    python bench/allocs.py                  # all clients, prints a table
    python bench/allocs.py --cases a,e      # some of them
    python bench/allocs.py --cases b_batch,fan_pub   # the fan-out publisher (OPTIONAL)
    python bench/allocs.py --json out.json

Each client (the throughput cases ``a``, ``b``, ``a_batch``, ``e`` and ``c`` of
``bench/cases_client.py``) runs in its own process under ``valgrind --tool=callgrind``, twice:
once for a small and once for a large number of burst frames (100 messages each) from one
emulator. The per-message figure is the **marginal** one,
``(count(large) - count(small)) / (extra messages)``, so interpreter start-up, imports and the
connection handshake cancel out.

To keep the section short, the child starts with instrumentation off (``--instr-atstart=no``,
valgrind's core alone, a few times slower than native instead of fifty) and switches it on with
``callgrind_control -i on`` just before it connects; both runs of a client switch at the same
point, so what is counted is the same apart from the extra messages.

What is counted, from the callgrind output file: every call *into* the allocator family
(:data:`ALLOCATORS`: CPython's ``PyObject_*``/``PyMem_*`` allocation functions and libc's
``malloc``/``calloc``/``realloc``) made by a function outside that family, so a
``PyObject_Malloc`` that falls through to ``malloc`` counts once; frees are not counted.
Freelists (floats, tuples, frames, ...) hand out objects without calling the allocator, so this
is what escapes the freelists, not the number of objects created. Instructions are callgrind's
``Ir`` total (``summary:``/``totals:``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent

#: The allocator family: a call from outside it into any of these is one allocation.
ALLOCATORS = frozenset(
    {
        # CPython object allocator (pymalloc) and its public entry points
        "PyObject_Malloc",
        "PyObject_Calloc",
        "PyObject_Realloc",
        "_PyObject_Malloc",
        "_PyObject_Calloc",
        "_PyObject_Realloc",
        "pymalloc_alloc",
        "pymalloc_realloc",
        "allocate_from_new_pool",
        "new_arena",
        "_PyObject_ArenaMmap",
        # CPython memory domain and raw domain
        "PyMem_Malloc",
        "PyMem_Calloc",
        "PyMem_Realloc",
        "PyMem_RawMalloc",
        "PyMem_RawCalloc",
        "PyMem_RawRealloc",
        "_PyMem_RawMalloc",
        "_PyMem_RawCalloc",
        "_PyMem_RawRealloc",
        # debug hooks (PYTHONMALLOC=debug or a debug build)
        "_PyMem_DebugMalloc",
        "_PyMem_DebugCalloc",
        "_PyMem_DebugRealloc",
        "_PyMem_DebugRawMalloc",
        "_PyMem_DebugRawCalloc",
        "_PyMem_DebugRawRealloc",
        # libc
        "malloc",
        "calloc",
        "realloc",
        "reallocarray",
        "__libc_malloc",
        "__libc_calloc",
        "__libc_realloc",
        "posix_memalign",
        "aligned_alloc",
        "memalign",
    }
)

#: The clients measured, in table order: (case name, frames small, frames large).
#: alpaca-py costs several times more per message, so it runs fewer frames.
CLIENTS: list[tuple[str, int, int]] = [
    ("e", 100, 250),
    ("a", 100, 250),
    ("b", 100, 250),
    ("a_batch", 100, 250),
    ("c", 30, 80),
]
FLOOR = "e"
#: More cases, measured only when ``--cases`` names them (not in run.py's allocs section):
#: the raw batch client and the fan-out publisher on top of it (``fan_pub / b_batch``). Each of
#: their runs gets its own emulator sending exactly its frames (a publisher's client reads
#: ahead of what is published, so a shared emulator's extra frames would be counted), and
#: the per-message figure divides by every message sent.
OPTIONAL: list[tuple[str, int, int]] = [
    ("b_batch", 100, 250),
    ("fan_pub", 100, 250),
]
#: How many allocating functions :func:`marginal` lists (``top_callers_per_msg``).
TOP_CALLERS = 12

_NAMED = re.compile(r"\((\d+)\)(?: (.*))?$")
_RECURSION = re.compile(r"'\d+$")


@dataclass(frozen=True)
class CallgrindCounts:
    """What :func:`parse_callgrind` reads from one callgrind output file."""

    #: calls into :data:`ALLOCATORS` from functions outside it
    allocs: int
    #: total instructions (the ``Ir`` event of ``summary:``, or of ``totals:``)
    instructions: int
    #: ``allocs`` split by allocator called (``{"_PyObject_Malloc": n, ...}``)
    by_allocator: dict[str, int]
    #: ``allocs`` split by the function that called the allocator
    by_caller: dict[str, int]


def _name(value: str, names: dict[str, str]) -> str:
    """Resolve a (possibly compressed) ``fn=``/``cfn=`` value to a name without recursion mark."""
    m = _NAMED.match(value)
    if m is None:
        name = value
    else:
        ident, text = m.group(1), m.group(2)
        if text is not None:
            names[ident] = text
            name = text
        else:
            name = names.get(ident, f"({ident})")
    return _RECURSION.sub("", name)


def parse_callgrind(
    lines: Iterable[str], allocators: frozenset[str] = ALLOCATORS
) -> CallgrindCounts:
    """Count allocator calls and instructions in callgrind output (``callgrind.out.PID`` lines).

    Function names are compressed (``fn=(12) name`` on first use, ``fn=(12)`` after; ``fn`` and
    ``cfn`` share one table per file) and may carry a recursion mark (``name'2``), which is
    dropped. A ``calls=N ...`` line after ``cfn=callee`` inside ``fn=caller`` adds N when the
    callee is an allocator and the caller is not.
    """
    names: dict[str, str] = {}
    events: list[str] = ["Ir"]
    caller = ""
    callee = ""
    allocs = 0
    by: dict[str, int] = {}
    callers: dict[str, int] = {}
    summary: int | None = None
    totals: int | None = None
    for raw in lines:
        line = raw.rstrip("\n")
        if line.startswith("fn="):
            caller = _name(line[3:], names)
        elif line.startswith("cfn="):
            callee = _name(line[4:], names)
        elif line.startswith("calls="):
            if callee in allocators and caller not in allocators:
                n = int(line[6:].split()[0])
                allocs += n
                by[callee] = by.get(callee, 0) + n
                callers[caller] = callers.get(caller, 0) + n
        elif line.startswith("events:"):
            events = line[7:].split()
        elif line.startswith(("summary:", "totals:")):
            key, _, rest = line.partition(":")
            values = rest.split()
            index = events.index("Ir") if "Ir" in events else 0
            value = int(values[index]) if index < len(values) else 0
            if key == "summary":
                summary = value
            else:
                totals = value
    instructions = summary if summary is not None else (totals or 0)
    return CallgrindCounts(allocs, instructions, by, callers)


def parse_callgrind_file(path: str | os.PathLike[str]) -> CallgrindCounts:
    """:func:`parse_callgrind` on a file (callgrind writes one per process)."""
    with open(path, errors="replace") as f:
        return parse_callgrind(f)


# ---------------------------------------------------------------- the child (runs under valgrind)

#: Modules a child imports before instrumentation is switched on (start-up at valgrind's
#: core speed); whatever the case imports later is counted, and cancels out in the marginal.
PRELOAD: dict[str, list[str]] = {
    "c": ["asyncio", "alpaca.data.live", "alpaca.data.enums"],
}
_DEFAULT_PRELOAD = ["trioalpaca", "trioalpaca.client", "trio_websocket", "msgpack"]


def _child(name: str, params_json: str) -> int:
    import importlib

    sys.path.insert(0, str(HERE))
    import cases_client  # noqa: F401  (registers the client cases)
    import cases_fanout  # noqa: F401  (and the fan-out ones)
    from registry import CASES, Params

    for module in PRELOAD.get(name, _DEFAULT_PRELOAD):
        importlib.import_module(module)
    params = Params(**json.loads(params_json))
    print(json.dumps({"ready": os.getpid()}), flush=True)
    sys.stdin.readline()  # the driver switches instrumentation on, then says go
    result = CASES[name].run(params)
    print(json.dumps(result), flush=True)
    return 0


# ---------------------------------------------------------------- the driver


def valgrind_available() -> bool:
    """Whether ``valgrind`` and ``callgrind_control`` are on ``PATH``."""
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


def _log(text: str) -> None:
    print(f"  [allocs] {text}", file=sys.stderr, flush=True)


def _run_one(
    name: str, frames: int, url: str, symbols: list[str], workdir: str, timeout: float
) -> dict[str, Any]:
    """One client under callgrind for ``frames`` burst frames; its counts and its result."""
    out_file = os.path.join(workdir, f"callgrind.{name}.{frames}")
    params = {"url": url, "symbols": symbols, "total": frames * 100, "seconds": 0.0, "rate": 0.0}
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "-q",
        "--instr-atstart=no",
        f"--callgrind-out-file={out_file}",
        sys.executable,
        str(HERE / "allocs.py"),
        "--child",
        name,
        "--params",
        json.dumps(params),
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        first = proc.stdout.readline()
        if not first.startswith("{"):
            proc.kill()
            _, err = proc.communicate()
            tail = " | ".join(err.strip().splitlines()[-3:])
            why = f"{first.strip()} {tail}".strip() or f"exit code {proc.returncode}"
            return {"error": f"child did not start: {why}"}
        pid = json.loads(first)["ready"]
        on = subprocess.run(
            ["callgrind_control", "-i", "on", str(pid)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if on.returncode != 0 or "OK" not in on.stdout:
            proc.kill()
            proc.communicate()
            return {"error": f"callgrind_control failed: {(on.stdout + on.stderr).strip()}"}
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"error": f"timed out after {timeout:g} s"}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines or not os.path.exists(out_file):
        tail = " | ".join(err.strip().splitlines()[-3:])
        return {"error": tail or f"exit code {proc.returncode}"}
    result: dict[str, Any] = json.loads(lines[-1])
    if "error" in result:
        return result
    counts = parse_callgrind_file(out_file)
    if not os.environ.get("TRIOALPACA_ALLOCS_KEEP"):
        os.unlink(out_file)
    return {
        "msgs": int(result["msgs"]),
        "allocs": counts.allocs,
        "instructions": counts.instructions,
        "by_allocator": counts.by_allocator,
        "by_caller": counts.by_caller,
        "wall_s": time.perf_counter() - started,
    }


def marginal(small: dict[str, Any], large: dict[str, Any]) -> dict[str, Any]:
    """Per-message figures from a small and a large run of one client (see the module doc)."""
    extra = large["msgs"] - small["msgs"]
    if extra <= 0:
        return {"error": f"no extra messages ({small['msgs']} -> {large['msgs']})"}
    names = set(small["by_allocator"]) | set(large["by_allocator"])
    by = {
        n: (large["by_allocator"].get(n, 0) - small["by_allocator"].get(n, 0)) / extra
        for n in sorted(names)
    }
    callers = set(small["by_caller"]) | set(large["by_caller"])
    per_caller = {
        n: (large["by_caller"].get(n, 0) - small["by_caller"].get(n, 0)) / extra for n in callers
    }
    top = sorted(per_caller.items(), key=lambda kv: -kv[1])[:TOP_CALLERS]
    return {
        "allocs_per_msg": (large["allocs"] - small["allocs"]) / extra,
        "top_callers_per_msg": {n: round(v, 3) for n, v in top},
        "instructions_per_msg": (large["instructions"] - small["instructions"]) / extra,
        "by_allocator_per_msg": {n: v for n, v in by.items() if abs(v) >= 0.005},
        "msgs": [small["msgs"], large["msgs"]],
        "allocs": [small["allocs"], large["allocs"]],
        "instructions": [small["instructions"], large["instructions"]],
    }


def measure(
    url: str,
    symbols: list[str],
    clients: list[tuple[str, int, int]] | None = None,
    jobs: int = 2,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Run every client twice under callgrind against the burst emulator at ``url``.

    The emulator must send at least the largest frame count per connection. Returns
    ``{"clients": {name: figures}, "floor": "e", "seconds": s}``; each client's figures are those
    of :func:`marginal` plus ``allocs_ratio_to_floor`` and ``instructions_ratio_to_floor``, or
    ``{"error": ...}``.
    """
    clients = CLIENTS if clients is None else clients
    started = time.perf_counter()
    if not valgrind_available():
        missing = {"error": "valgrind or callgrind_control is not on PATH"}
        return {"clients": {c[0]: dict(missing) for c in clients}, "floor": FLOOR, "seconds": 0.0}
    runs: list[tuple[str, int]] = []
    for name, small, large in clients:
        runs += [(name, small), (name, large)]
    # the longest runs first, so the two lanes finish together
    order = sorted(runs, key=lambda r: -r[1] * (4 if r[0] == "c" else 1))
    done: dict[tuple[str, int], dict[str, Any]] = {}
    _log(f"{len(runs)} callgrind runs, {jobs} at a time")
    with tempfile.TemporaryDirectory(prefix="trioalpaca-allocs-") as workdir:

        def job(run: tuple[str, int]) -> None:
            r = _run_one(run[0], run[1], url, symbols, workdir, timeout)
            if "error" in r:  # once more: a shared machine may kill or starve one run
                _log(f"{run[0]:<8} {run[1]:>4} frames: {r['error']}; again")
                r = _run_one(run[0], run[1], url, symbols, workdir, timeout)
            done[run] = r
            what = r.get("error") or f"{r['msgs']:,} msgs, {r['allocs']:,} allocs"
            _log(f"{run[0]:<8} {run[1]:>4} frames: {what} ({time.perf_counter() - started:.0f} s)")

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(job, order))
    figures: dict[str, dict[str, Any]] = {}
    for name, small, large in clients:
        a, b = done[(name, small)], done[(name, large)]
        if "error" in a or "error" in b:
            figures[name] = {"error": a.get("error") or b.get("error")}
        else:
            figures[name] = marginal(a, b)
    floor = figures.get(FLOOR, {})
    for fig in figures.values():
        if "error" in fig:
            continue
        for key in ("allocs", "instructions"):
            base = floor.get(f"{key}_per_msg", math.nan)
            fig[f"{key}_ratio_to_floor"] = fig[f"{key}_per_msg"] / base if base else math.nan
    return {
        "clients": figures,
        "floor": FLOOR,
        "frames": {name: [small, large] for name, small, large in clients},
        "seconds": time.perf_counter() - started,
    }


def format_table(allocs: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """The report's lines for a :func:`measure` result."""
    out = ["== allocations and instructions per message (callgrind, marginal) =="]
    out.append(
        f"  {'case':<8} {'client':<44} {'allocs/msg':>10} {'x floor':>8} "
        f"{'instr/msg':>10} {'x floor':>8}"
    )
    for name, fig in allocs["clients"].items():
        label = labels.get(name, "")
        if "error" in fig:
            out.append(f"  {name:<8} {label:<44} ERROR {fig['error']}")
            continue
        out.append(
            f"  {name:<8} {label:<44} {fig['allocs_per_msg']:>10.2f} "
            f"{_ratio(fig.get('allocs_ratio_to_floor', math.nan)):>8} "
            f"{fig['instructions_per_msg']:>10,.0f} "
            f"{_ratio(fig.get('instructions_ratio_to_floor', math.nan)):>8}"
        )
    out.append(
        f"  (floor: {allocs['floor']}; calls into the allocators per message, what escapes "
        f"the freelists; {allocs['seconds']:.0f} s)"
    )
    return out


def _ratio(x: float) -> str:
    return "n/a" if x != x else f"{x:.2f}x"


@contextlib.contextmanager
def _emulator(frames: int, symbols: int) -> Iterator[tuple[str, list[str]]]:
    sys.path.insert(0, str(HERE))
    from run import emulator

    with emulator("--burst", "100", "--frames", str(frames), "--symbols", str(symbols)) as info:
        yield info


def _measure_exact(name: str, small: int, large: int, symbols: int) -> dict[str, Any]:
    """:func:`marginal` of ``name`` with one emulator per run sending exactly its frames."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="trioalpaca-allocs-") as workdir:
        for frames in (small, large):
            with _emulator(frames, symbols) as (url, syms):
                r = _run_one(name, frames, url, syms, workdir, 900.0)
            if "error" in r:
                return r
            r["msgs"] = frames * 100  # everything sent was taken (the case waits for it)
            _log(f"{name:<8} {frames:>4} frames: {r['instructions']:,} instructions")
            runs.append(r)
    return marginal(runs[0], runs[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--cases", default="", help="comma-separated client cases (default all)")
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2, help="valgrind processes at a time")
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child, args.params)
    if not valgrind_available():
        print("valgrind (with callgrind_control) is not on PATH", file=sys.stderr)
        return 2
    wanted = {c for c in args.cases.split(",") if c}
    clients = [c for c in CLIENTS if not wanted or c[0] in wanted]
    result: dict[str, Any] = {"clients": {}, "floor": FLOOR, "frames": {}, "seconds": 0.0}
    if clients:
        with _emulator(max(c[2] for c in clients) + 10, args.symbols) as (url, symbols):
            result = measure(url, symbols, clients, jobs=args.jobs)
    for name, small, large in (c for c in OPTIONAL if c[0] in wanted):
        result["clients"][name] = _measure_exact(name, small, large, args.symbols)
        result["frames"][name] = [small, large]
    sys.path.insert(0, str(HERE))
    import cases_client  # noqa: F401
    import cases_fanout  # noqa: F401
    from registry import CASES

    print("\n".join(format_table(result, {n: c.label for n, c in CASES.items()})))
    if args.json:  # the layout of run.py's file, so bench/compare.py reads either
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False, cwd=HERE
        ).stdout.strip()
        doc = {
            "commit": commit,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "labels": {n: CASES[n].label for n in result["clients"]},
            "allocs": result,
        }
        pathlib.Path(args.json).write_text(json.dumps(doc, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
