"""Conformance suite configuration: alpaca-py imports the deprecated ``websockets.legacy`` API."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning")
