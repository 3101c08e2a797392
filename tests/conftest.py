"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import urllib3

# The infinium_collector fixture, exactly as users enable it.
pytest_plugins = ["infinium_logging.testing"]


@pytest.fixture
def pool() -> Iterator[urllib3.PoolManager]:
    """A urllib3 pool with no retries and short timeouts, closed after the test."""
    manager = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2.0, read=10.0))
    yield manager
    manager.clear()
