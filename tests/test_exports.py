"""The public namespace: every exported name is documented and reports a public module."""

from __future__ import annotations

import importlib
import inspect
import pathlib
import pickle
import re

import trioalpaca

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def public_objects() -> dict[str, object]:
    return {
        name: obj
        for name, obj in vars(trioalpaca).items()
        if not name.startswith("_") and not inspect.ismodule(obj) and name != "annotations"
    }


def test_every_public_class_and_function_reports_a_public_module() -> None:
    bad = {
        name: obj.__module__
        for name, obj in public_objects().items()
        if (inspect.isclass(obj) or inspect.isfunction(obj))
        and any(part.startswith("_") for part in obj.__module__.split("."))
    }
    assert not bad, f"__module__ names a private module (fix up in __init__.py): {bad}"


def test_every_public_class_and_function_has_a_docstring() -> None:
    missing = [
        name
        for name, obj in public_objects().items()
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and not inspect.getdoc(obj)
    ]
    assert not missing


def test_every_public_name_has_a_place_in_the_docs() -> None:
    text = "\n".join(p.read_text() for p in DOCS.rglob("*.rst"))
    automodules = set(re.findall(r"^\.\. automodule:: (\S+)", text, flags=re.M))
    undocumented = []
    modules = [importlib.import_module(m) for m in automodules]
    for name, obj in public_objects().items():
        if re.search(rf"\b{re.escape(name)}\b", text):
            continue
        if any(name in getattr(m, "__all__", ()) and getattr(m, name) is obj for m in modules):
            continue  # documented by the automodule of a module that exports it
        undocumented.append(name)
    assert not undocumented, f"public names missing from docs/: {undocumented}"


def test_errors_pickle_under_their_public_name() -> None:
    err = trioalpaca.SymbolLimitError(405, "symbol limit exceeded")
    assert type(err).__module__ == "trioalpaca"
    assert type(pickle.loads(pickle.dumps(err))) is trioalpaca.SymbolLimitError
