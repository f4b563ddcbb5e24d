"""Shared pytest configuration: the ``--integration`` switch for tests against the real service."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# Hypothesis' per-example deadline (200 ms) measures wall time: on a shared, loaded 2-core machine
# a slow example fails a correct property. Examples are bounded by max_examples and pytest-timeout.
settings.register_profile("trioalpaca", deadline=None)
settings.load_profile("trioalpaca")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--integration",
        action="store_true",
        default=False,
        help="run tests against the real Alpaca service "
        "(needs APCA_API_KEY_ID / APCA_API_SECRET_KEY)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    have_creds = bool(os.environ.get("APCA_API_KEY_ID") and os.environ.get("APCA_API_SECRET_KEY"))
    if config.getoption("--integration") and have_creds:
        return
    reason = (
        "integration tests need --integration"
        if not config.getoption("--integration")
        else "integration tests need APCA_API_KEY_ID and APCA_API_SECRET_KEY in the environment"
    )
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


# Real redis-server fixtures for the fan-out tests (skip locally without redis-server; fail on CI).
from tests.redis_fixtures import redis_cluster, redis_server  # noqa: E402, F401
