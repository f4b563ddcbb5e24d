"""Compare two ``bench/run.py --json`` result files (for example, two commits).

    python bench/compare.py OLD.json NEW.json

Prints, for every throughput case both files have, the two rates and NEW/OLD; and for every paced
latency case, the two p99 figures and NEW/OLD; and, when both files have the ``allocs`` section
(``bench/allocs.py``), allocator calls and instructions per message and NEW/OLD (those counts do
not depend on machine load). Absolute figures from two runs are only as
comparable as the machine was quiet; ratios *within* one run (``run.py``'s own table) are the
figures to quote.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any


def _load(path: str) -> dict[str, Any]:
    with open(path) as f:
        doc: dict[str, Any] = json.load(f)
    return doc


def _ratio(new: float, old: float) -> str:
    if not old or old != old or new != new:
        return "n/a"
    return f"{new / old:.2f}x"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    old, new = (_load(p) for p in argv)
    print(f"old: {old.get('commit', '?')[:10]} {old.get('when', '')}")
    print(f"new: {new.get('commit', '?')[:10]} {new.get('when', '')}")
    labels = {**old.get("labels", {}), **new.get("labels", {})}
    print("\n== throughput (msgs/s) ==")
    o_rates, n_rates = old.get("throughput_msgs_per_s", {}), new.get("throughput_msgs_per_s", {})
    for name in sorted(set(o_rates) & set(n_rates)):
        o, n = float(o_rates[name]), float(n_rates[name])
        print(f"  {name:<11} {labels.get(name, ''):<44} {o:>12,.0f} {n:>12,.0f} {_ratio(n, o):>7}")
    for rate in sorted(set(old.get("paced", {})) & set(new.get("paced", {})), key=float):
        print(f"\n== paced {float(rate):,.0f} msgs/s: p99 (ms) ==")
        o_cases, n_cases = old["paced"][rate], new["paced"][rate]
        for name in sorted(set(o_cases) & set(n_cases)):
            o = float(o_cases[name].get("p99_ms", math.nan))
            n = float(n_cases[name].get("p99_ms", math.nan))
            print(f"  {name:<11} {labels.get(name, ''):<44} {o:>9.3f} {n:>9.3f} {_ratio(n, o):>7}")
    o_allocs = old.get("allocs", {}).get("clients", {})
    n_allocs = new.get("allocs", {}).get("clients", {})
    common = [n for n in n_allocs if n in o_allocs and "error" not in o_allocs[n]]
    common = [n for n in common if "error" not in n_allocs[n]]
    if common:
        print("\n== per message under callgrind (allocator calls, instructions) ==")
        for name in common:
            o, n = o_allocs[name], n_allocs[name]
            oa, na = float(o["allocs_per_msg"]), float(n["allocs_per_msg"])
            oi, ni = float(o["instructions_per_msg"]), float(n["instructions_per_msg"])
            print(
                f"  {name:<11} {labels.get(name, ''):<44} allocs {oa:>7.2f} {na:>7.2f} "
                f"{_ratio(na, oa):>7}  instr {oi:>8,.0f} {ni:>8,.0f} {_ratio(ni, oi):>7}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
