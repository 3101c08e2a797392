"""Test support: a pytest fixture that runs a local collector for one test.

Enable it in a ``conftest.py`` with::

    pytest_plugins = ["infinium_logging.testing"]

then ask for ``infinium_collector`` in a test. pytest is only needed for the
fixture: the rest of this module imports without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from ._capture import CapturingSink, capture_tasks
from .collector import LocalCollector

__all__ = [
    "TEST_AGENT_ID",
    "TEST_AGENT_SECRET",
    "CapturingSink",
    "capture_tasks",
    "infinium_collector",
]

#: The agent id the ``infinium_collector`` fixture accepts.
TEST_AGENT_ID: Final = "5f3c6a2e-8d1b-4c7a-9e2f-1a2b3c4d5e6f"
#: The agent secret the ``infinium_collector`` fixture accepts (a test value, not a real secret).
TEST_AGENT_SECRET: Final = "test-agent-secret"  # noqa: S105 - a fixed test value


try:
    import pytest
except ModuleNotFoundError:  # pragma: no cover - the fixture needs pytest, the rest does not
    pass
else:

    @pytest.fixture
    def infinium_collector() -> Iterator[LocalCollector]:
        """A started :class:`~infinium_logging.collector.LocalCollector` on a free port,
        stopped after the test. It accepts only :data:`TEST_AGENT_ID` with
        :data:`TEST_AGENT_SECRET`; point a client at ``infinium_collector.base_url``.
        """
        with LocalCollector(agent_id=TEST_AGENT_ID, agent_secret=TEST_AGENT_SECRET) as collector:
            yield collector
