"""Sphinx configuration for trioalpaca."""

from __future__ import annotations

project = "trioalpaca"
author = "trioalpaca developers"
copyright = "2026, trioalpaca developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
nitpicky = True
# Names that autodoc cannot resolve through intersphinx offline (no network here).
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(trio|trio_websocket|msgpack|attrs|attr|datetime|decimal|enum|collections|typing|types|abc|_abc|builtins|contextlib|hypothesis|ssl|os|prometheus_client)\..*",
    ),
    (
        r"py:.*",
        r"(Any|Self|Callable|Awaitable|Mapping|Sequence|Iterable|Iterator|AsyncIterator|Literal|TypeAlias|Frame|Message|Encoding|T|NoneType|ellipsis|SlowClientPolicy)",
    ),
    (r"py:.*", r"trioalpaca\..*\._.*"),
    (r"py:.*", r"_[A-Z]\w*"),  # private helper classes in signatures (never documented)
    (r"py:.*", r"trioalpaca\._book\.O"),  # the owner type variable of SubscriptionBook
    (r"py:class", r"HandlerTable|_Entry"),  # private constructor arguments of client.Handle
]
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
html_theme = "furo"
exclude_patterns = ["_build"]
