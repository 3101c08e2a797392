"""A plain WSGI application for the gunicorn recipe (Flask or Django would be the same).

    gunicorn -c gunicorn_conf.py wsgi_app:app

Each request for ``/orders/<n>`` logs one tagged event: one trace.  See
docs/recipes/gunicorn.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("shop")

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Answer ``/health`` and ``/orders/<n>``; the latter is traced."""
    path = str(environ.get("PATH_INFO", ""))
    if path.startswith("/orders/"):
        number = path.rpartition("/")[2]
        log.info(
            "order %s looked up",
            number,
            extra={"infinium": {"name": f"order {number}", "output_summary": "found"}},
        )
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]
