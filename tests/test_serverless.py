"""Serverless: a handler wrapped by flush_after / flushing has delivered its traces on return."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from exit_support import RECIPES, child_env, names

from infinium_logging import InfiniumHandler, _default, configure, flush_after, flushing
from infinium_logging.collector import LocalCollector
from infinium_logging.testing import TEST_AGENT_ID, TEST_AGENT_SECRET

pytestmark = pytest.mark.usefixtures("clean_environment")


@pytest.fixture
def collector(infinium_collector: LocalCollector) -> Iterator[LocalCollector]:
    """The default exporter pointed at the collector, without throttle."""
    configure(
        agent_id=TEST_AGENT_ID,
        agent_secret=TEST_AGENT_SECRET,
        base_url=infinium_collector.base_url,
        enable_rate_limiting=False,
    )
    yield infinium_collector
    _default._reset_default()


def test_decorated_handler_has_delivered_on_return(
    collector: LocalCollector, stdlib_logger: logging.Logger
) -> None:
    """What a decorated (Lambda-style) handler logs is at the collector when it returns, and
    its own return value and exceptions pass through."""

    stdlib_logger.addHandler(InfiniumHandler())

    @flush_after(timeout=5.0)
    def handler(event: dict[str, int], context: object) -> int:
        for i in range(event["n"]):
            stdlib_logger.info("done", extra={"infinium": {"name": f"inv {i}"}})
        if event.get("fail"):
            raise ValueError("the handler's own error")
        return event["n"]

    assert handler({"n": 5}, None) == 5
    assert collector.accepted_count == 5  # no waiting: flushed before returning
    with pytest.raises(ValueError, match="own error"):
        handler({"n": 1, "fail": 1}, None)
    assert collector.accepted_count == 6


def test_async_handler_and_block_are_flushed(
    collector: LocalCollector, stdlib_logger: logging.Logger
) -> None:
    """``async def`` handlers and ``async with flushing()`` flush off the event loop."""

    stdlib_logger.addHandler(InfiniumHandler())

    @flush_after
    async def handler() -> str:
        stdlib_logger.info("async", extra={"infinium": {"name": "async inv"}})
        return "ok"

    async def main() -> bool | None:
        assert await handler() == "ok"
        async with flushing(timeout=5.0) as block:
            stdlib_logger.info("block", extra={"infinium": {"name": "async block"}})
        return block.flushed

    assert asyncio.run(main()) is True
    assert collector.accepted_count == 2


def test_flushing_is_bounded(collector: LocalCollector, stdlib_logger: logging.Logger) -> None:
    """A server that does not answer holds the block at most ``timeout`` seconds."""

    stdlib_logger.addHandler(InfiniumHandler())
    collector.hang_next(5)
    started = time.monotonic()
    with flushing(timeout=0.5) as block:
        stdlib_logger.info("stuck", extra={"infinium": True})
    assert block.flushed is False
    assert time.monotonic() - started < 3.0


def test_the_lambda_recipe_delivers_before_the_process_is_frozen(
    tmp_path: Path, infinium_collector: LocalCollector
) -> None:
    """examples/recipes/lambda_handler.py: two invocations, then ``os._exit`` (no exit hook
    runs, as in a frozen sandbox): both traces arrived, delivered by the decorator."""
    done = subprocess.run(
        [sys.executable, str(RECIPES / "lambda_handler.py")],
        env=child_env(infinium_collector, tmp_path / "cache"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert names(infinium_collector) == {"price order"}
    assert infinium_collector.accepted_count == 2
