"""The recipe site's one view: each order looked up is one trace."""

from __future__ import annotations

import logging

from django.http import HttpRequest, JsonResponse

log = logging.getLogger("shop")


def order(request: HttpRequest, number: int) -> JsonResponse:
    """Log the lookup as a tagged event (one trace) and answer."""
    log.info(
        "order %d looked up",
        number,
        extra={"infinium": {"name": f"order {number}", "output_summary": "found"}},
    )
    return JsonResponse({"order": number})
