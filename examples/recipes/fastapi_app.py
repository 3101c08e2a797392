"""FastAPI (or any ASGI app) under uvicorn, with logging configured by ``--log-config``.

    uvicorn fastapi_app:app --log-config uvicorn_logging.json

Each request handled logs one tagged event: one trace.  SIGTERM (what Docker and
Kubernetes send) and Ctrl+C end uvicorn gracefully; then the exporter delivers what it
still holds within ``INFINIUM_SHUTDOWN_TIMEOUT`` and keeps the rest on disk for the next
start.  See docs/recipes/fastapi-uvicorn.md.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

log = logging.getLogger("shop")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Nothing to set up for the library: ``--log-config`` did it before the app loaded."""
    log.info("shop starting")
    yield
    log.info("shop stopping")


app = FastAPI(lifespan=lifespan)


@app.get("/health")
async def health() -> dict[str, str]:
    """For a load balancer (and for knowing when the server is up)."""
    return {"status": "ok"}


@app.get("/orders/{number}")
async def order(number: int) -> dict[str, int]:
    """One order looked up: one trace, named after it."""
    log.info(
        "order %d looked up",
        number,
        extra={"infinium": {"name": f"order {number}", "output_summary": "found"}},
    )
    return {"order": number}
