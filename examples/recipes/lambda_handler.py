"""An AWS Lambda-style handler: flush before returning, the process is frozen after.

Deploy ``lambda_handler.handler``.  Run locally, ``python lambda_handler.py`` calls it
twice as the platform would and then ends with ``os._exit`` (as a frozen or recycled
sandbox does: no exit hook runs), so what arrives is only what the decorator delivered.
See docs/recipes/lambda.md.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from infinium_logging import InfiniumHandler, flush_after, task

# Set up once per container, at import (the "init" phase), not per invocation.
log = logging.getLogger("orders")
log.setLevel(logging.INFO)
log.addHandler(InfiniumHandler())


@flush_after(timeout=2.0)  # at most 2 s of the invocation's time; within the function timeout
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """One invocation: one trace, delivered before the platform freezes the process."""
    with task("price order", input_summary=f"order {event['order']}"):
        log.info("priced order %s", event["order"])
    return {"statusCode": 200, "order": event["order"]}


if __name__ == "__main__":
    for order in (1, 2):
        print(handler({"order": order}, None), flush=True)
    os._exit(0)
