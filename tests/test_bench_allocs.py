"""The callgrind-output parser of ``bench/allocs.py`` on small synthetic callgrind files."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from types import ModuleType

import pytest

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_allocs", BENCH / "allocs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is built
    spec.loader.exec_module(module)
    return module


allocs = _load()

# Names are compressed: "(id) name" the first time, "(id)" after, one table shared by fn and cfn.
SAMPLE = """\
# callgrind format
version: 1
creator: callgrind-3.19.0
positions: line
events: Ir Dr
summary: 123456 999

ob=(1) /usr/lib/libpython3.11.so
fl=(1) Objects/longobject.c
fn=(10) _PyLong_New
0 40
cfi=(2) Objects/obmalloc.c
cfn=(11) PyObject_Malloc
calls=7 704
* 300
cfn=(12) PyMem_Malloc
calls=2 +3
* 50

fl=(2)
fn=(11)
0 20
cfn=(13) _PyObject_Malloc
calls=7 +1
* 200

fn=(13)
0 10
cfn=(14) PyMem_RawMalloc
calls=1 +2
* 30

fn=(14)
cfn=(15) malloc
calls=1 0
* 20

ob=(2) /usr/lib/msgpack/_cmsgpack.so
fl=(3) ???
fn=(16) unpack_callback'2
0 5
cfn=(15)
calls=3 0
* 60
cfn=(10)
calls=4 0
* 100
cfn=(17) free
calls=9 0
* 90

fn=(18) list_resize
cfn=(19) PyMem_Realloc'2
calls=5 0
* 10

fn=(20) _PyObject_Realloc
cfn=(19)
calls=100 0
* 10

totals: 123456 999
"""


def test_counts_calls_into_the_allocators_from_outside_only() -> None:
    counts = allocs.parse_callgrind(SAMPLE.splitlines(keepends=True))
    # _PyLong_New: 7 PyObject_Malloc + 2 PyMem_Malloc; unpack_callback'2: 3 malloc;
    # list_resize: 5 PyMem_Realloc'2. Not counted: PyObject_Malloc -> _PyObject_Malloc ->
    # PyMem_RawMalloc -> malloc (inside the family), _PyObject_Realloc -> PyMem_Realloc (same),
    # unpack_callback -> _PyLong_New (not an allocator), free.
    assert counts.allocs == 7 + 2 + 3 + 5
    assert counts.by_allocator == {
        "PyObject_Malloc": 7,
        "PyMem_Malloc": 2,
        "malloc": 3,
        "PyMem_Realloc": 5,
    }
    assert counts.by_caller == {"_PyLong_New": 9, "unpack_callback": 3, "list_resize": 5}
    assert counts.instructions == 123456


def test_instructions_come_from_the_ir_column_and_totals_when_no_summary() -> None:
    text = SAMPLE.replace("events: Ir Dr", "events: Dr Ir").replace("summary: 123456 999\n", "")
    counts = allocs.parse_callgrind(text.splitlines())
    assert counts.instructions == 999


def test_names_are_per_file(tmp_path: pathlib.Path) -> None:
    # a second file reuses id 11 for another function: the first file's names must not leak
    other = (
        "events: Ir\nfn=(11) main\ncfn=(15) malloc\ncalls=4 0\n* 1\n"
        "fn=(11)\ncfn=(15)\ncalls=1 0\n* 1\nsummary: 10\n"
    )
    first = tmp_path / "callgrind.out.1"
    first.write_text(SAMPLE)
    second = tmp_path / "callgrind.out.2"
    second.write_text(other)
    assert allocs.parse_callgrind_file(first).allocs == 17
    counts = allocs.parse_callgrind_file(second)
    assert counts.allocs == 5
    assert counts.by_caller == {"main": 5}
    assert counts.instructions == 10


def _run(msgs: int, n: int, instr: int) -> dict[str, object]:
    return {
        "msgs": msgs,
        "allocs": n,
        "instructions": instr,
        "by_allocator": {"PyObject_Malloc": n},
        "by_caller": {"f": n - 100, "g": 100},
    }


def test_marginal_cancels_the_fixed_cost() -> None:
    fig = allocs.marginal(
        _run(10_000, 1_000_000 + 150_000, 2_000_000), _run(30_000, 1_000_000 + 450_000, 5_000_000)
    )
    assert fig["allocs_per_msg"] == pytest.approx(15.0)
    assert fig["instructions_per_msg"] == pytest.approx(150.0)
    assert fig["by_allocator_per_msg"] == {"PyObject_Malloc": pytest.approx(15.0)}
    assert fig["top_callers_per_msg"] == {"f": 15.0, "g": 0.0}


def test_marginal_needs_extra_messages() -> None:
    fig = allocs.marginal(_run(100, 10, 10), _run(100, 20, 20))
    assert "error" in fig


def test_table_shows_the_ratio_to_the_floor() -> None:
    result = {
        "clients": {
            "e": {
                "allocs_per_msg": 12.0,
                "instructions_per_msg": 14000.0,
                "allocs_ratio_to_floor": 1.0,
                "instructions_ratio_to_floor": 1.0,
            },
            "a": {
                "allocs_per_msg": 15.0,
                "instructions_per_msg": 21000.0,
                "allocs_ratio_to_floor": 1.25,
                "instructions_ratio_to_floor": 1.5,
            },
            "c": {"error": "timed out after 600 s"},
        },
        "floor": "e",
        "seconds": 90.0,
    }
    lines = allocs.format_table(result, {"a": "typed"})
    assert lines[0] == "== allocations and instructions per message (callgrind, marginal) =="
    row = next(line for line in lines if line.split()[:2] == ["a", "typed"])
    assert "15.00" in row and "1.25x" in row and "21,000" in row and "1.50x" in row
    assert any("ERROR timed out" in line for line in lines)
