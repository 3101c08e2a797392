"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from collections.abc import Iterator

import pytest
import urllib3

from infinium_logging import _default

# The infinium_collector fixture, exactly as users enable it.
pytest_plugins = ["infinium_logging.testing"]

# What exits leave undelivered goes to the user's cache directory (the exit spill): the suite's
# children, and any exporter the suite makes, use one of their own instead.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="infinium-tests-cache-")


@pytest.fixture
def pool() -> Iterator[urllib3.PoolManager]:
    """A urllib3 pool with no retries and short timeouts, closed after the test."""
    manager = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2.0, read=10.0))
    yield manager
    manager.clear()


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No INFINIUM_* variables from outside, and no default exporter left behind (modules that
    build on the default exporter use it for every test)."""
    for name in list(os.environ):
        if name.startswith("INFINIUM_"):
            monkeypatch.delenv(name)
    _default._reset_default()
    yield
    _default._reset_default()


@pytest.fixture
def stdlib_logger() -> Iterator[logging.Logger]:
    """A fresh stdlib logger that does not propagate; its handlers are closed afterwards."""
    log = logging.getLogger(f"tests.{uuid.uuid4().hex}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
