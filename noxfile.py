"""Nox sessions: tests, lint, typing, docs, conformance, conformance_legacy, conformance_js, bench.

Every session installs what it needs into its own virtualenv, so ``nox -s <name>`` works on a fresh
machine with only Python and pip.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typing", "docs"]
nox.options.reuse_existing_virtualenvs = True

LINT_PATHS = [
    "trioalpaca",
    "tests",
    "bench",
    "conformance",
    "noxfile.py",
    "setup.py",
    "docs/conf.py",
    "docs/examples",
]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the unit and emulator test suite (pytest-trio, hypothesis), on one pytest-xdist
    worker per CPU (at most four; ``nox -s tests -- -n 0`` runs it in one process)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-n", "auto", "--maxprocesses", "4", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", *LINT_PATHS)
    session.run("ruff", "format", "--check", *LINT_PATHS)


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[test]", "mypy")
    session.run("mypy", "--strict", "trioalpaca")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the sphinx docs with warnings as errors (-W -n)."""
    session.install("-e", ".[test]", "sphinx", "furo")
    session.run(
        "sphinx-build", "-W", "-n", "--keep-going", "-b", "html", "docs", "docs/_build/html"
    )


@nox.session
def conformance(session: nox.Session) -> None:
    """Run the official, unmodified alpaca-py stream clients against the emulator."""
    session.install("-e", ".[test]", "alpaca-py==0.44.0")
    session.run(
        "pytest",
        "conformance/test_alpaca_py.py",
        "conformance/test_record_alpaca_py.py",
        "-p",
        "no:cacheprovider",
        *session.posargs,
    )


@nox.session
def conformance_legacy(session: nox.Session) -> None:
    """Run the legacy Python SDK (alpaca-trade-api 3.2.0, unmodified) against the emulator.

    Its own environment: the SDK pins old websockets, msgpack and urllib3 releases that conflict
    with alpaca-py.
    """
    session.install("-e", ".[test]", "alpaca-trade-api==3.2.0")
    session.run(
        "pytest", "conformance/test_alpaca_trade_api.py", "-p", "no:cacheprovider", *session.posargs
    )


@nox.session
def conformance_js(session: nox.Session) -> None:
    """Run the official JS SDK (@alpacahq/alpaca-trade-api 3.x, unmodified) against the emulator.

    Needs node >= 18 and npm on the PATH: the tests install the SDK from
    ``conformance/js/package-lock.json`` with ``npm ci`` into ``conformance/js/node_modules``.
    Without node the tests are skipped with a line saying so.
    """
    session.install("-e", ".[test]")
    session.run("pytest", "conformance/test_js_sdk.py", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Side-by-side throughput/latency/memory benchmark: trioalpaca vs alpaca-py vs bare loop.

    Extra arguments go to ``bench/run.py`` (e.g. ``nox -s bench -- --frames 4000 --repeat 3``).
    """
    # the redis extra for the fan-out cases (they start their own redis-server when it is on PATH)
    session.install("-e", ".[redis]", "alpaca-py==0.44.0")
    session.run("python", "bench/run.py", *session.posargs)
