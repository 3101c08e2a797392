"""The Infinium trace endpoint as a Destination: one trace per POST, the official client's bytes."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Final

from .destination import BatchLimits, RecordResult
from .errors import ValidationError
from .fitting import fit_task
from .guard import EXPORTING
from .model import MAX_BODY_BYTES, ApiResponse, TaskData, encode_task
from .settings import Settings
from .transport import Transport

__all__ = ["InfiniumDestination", "encode_trace"]

_ONE: Final = BatchLimits(max_records=1, max_bytes=MAX_BODY_BYTES, max_delay=0.0)


def encode_trace(task: TaskData) -> bytes:
    """The wire body of a trace, shrunk to the platform's limit when needed."""
    try:
        body = encode_task(task)
        if len(body) > MAX_BODY_BYTES:
            body = encode_task(fit_task(task))
    except ValueError as exc:  # nested too deeply, an int too long for text
        raise ValidationError(str(exc)) from None
    if len(body) > MAX_BODY_BYTES:
        raise ValidationError(f"the trace is {len(body)} bytes even after shrinking")
    return body


class InfiniumDestination:
    """``POST {base_url}/agents/{agent_id}/trace``, one trace per request, over a pooled
    :class:`~infinium_logging.transport.Transport` made on first use (urllib3 logs while it
    builds its pool, so that is done as the exporter's own work)."""

    name: Final = "infinium"
    limits: Final = _ONE

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._transport: Transport | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"InfiniumDestination(base_url={self._settings.base_url!r})"

    @property
    def transport(self) -> Transport:
        """The pooled client (also used by the synchronous API calls)."""
        transport = self._transport
        if transport is None:
            token = EXPORTING.set(True)
            try:
                with self._lock:
                    if self._transport is None:
                        self._transport = Transport(self._settings)
                    transport = self._transport
            finally:
                EXPORTING.reset(token)
        return transport

    def encode(self, trace: TaskData) -> bytes:
        """The trace's wire body (see :func:`encode_trace`)."""
        return encode_trace(trace)

    def record(self, body: bytes, trace: TaskData | None = None) -> bytes:
        """The record is the trace's wire body itself."""
        return body

    def frame(self, records: Sequence[bytes]) -> bytes:
        """The body is the one trace's record as it is."""
        (record,) = records
        return record

    def post(self, body: bytes, timeout: float | None) -> ApiResponse:
        """One POST of one trace; the answer's ``data["traceId"]`` names the stored trace."""
        return self.transport.post_trace(body, timeout=timeout)

    def results(self, response: ApiResponse, count: int) -> Sequence[RecordResult]:
        """A 2xx answer accepted the one trace."""
        return [RecordResult("sent", response=response)]

    def close(self) -> None:
        """Drop pooled connections, if a pool was made."""
        transport = self._transport
        if transport is not None:
            transport.clear()
