"""The destination seam: what one endpoint needs (framing, signing, sending, reading answers).

The delivery core (admission, ledger, workers, :mod:`~infinium_logging.delivery`,
durability) knows nothing of any endpoint.  Everything specific to one lives in
one object that satisfies :class:`Destination`: how a built trace becomes a
record (:meth:`~Destination.record`), how records become one request body
(:meth:`~Destination.frame`), one attempt at sending it
(:meth:`~Destination.post`: path, headers and, where the endpoint wants it, a
signature made afresh on every call, over the exact body and a new timestamp),
and how the answer is read, record by record (:meth:`~Destination.results`).

:class:`~infinium_logging.destination_infinium.InfiniumDestination` is the
Infinium trace endpoint: one trace per request, the official client's wire
bytes, an answer that names the stored trace.
:class:`~infinium_logging.infino_destination.InfinoDestination` is a bulk
endpoint (an Infino dataset's NDJSON ``_bulk``): another Destination, not
another exporter (:class:`~infinium_logging.infino.InfinoSink` is an Exporter
with one per dataset).  It takes many records per request
(:attr:`~Destination.limits`: count, bytes and how long a batch may wait to
fill), signs each attempt, and reads a 200 that carries one result per record,
some to be retried (``"retry"``), some refused for good (``"reject"`` with the
reason they are counted under).

How the core uses one (``Exporter(settings, destinations=[...])``; the default is the
Infinium destination of ``settings``):

1. A sender takes the oldest queued trace (:meth:`Dispatch.take
   <infinium_logging.dispatch.Dispatch.take>`) when the exporter has one
   destination taking one record per request.  Otherwise it takes a batch
   (:meth:`~infinium_logging.dispatch.Dispatch.take_batch`): up to the first
   destination's ``limits.max_records`` traces, once that many wait, or
   ``limits.max_bytes`` of them as counted while queued, or ``limits.max_delay``
   after the first was seen; a flush or shutdown takes what waits at once.
2. Each trace is built, redacted and encoded once (its wire body); each
   destination makes its record of it (:meth:`~Destination.record`), and its
   records go in requests of at most ``max_records`` records and ``max_bytes``
   of their bytes (:meth:`~Destination.frame`).
3. :meth:`Delivery.deliver <infinium_logging.delivery.Delivery.deliver>`
   makes the attempts: the token bucket, the request timeout under the
   shutdown deadline, the retry policy and the 429 rule are the core's;
   each attempt calls :meth:`~Destination.post` again (a fresh signature).
   An error raised by ``post`` (typed, from :mod:`~infinium_logging.errors`)
   concerns the whole request and is classified by
   :func:`~infinium_logging.retry.classify`: the request's traces end as a
   trace delivered alone would (kept in the spool for the same reasons), but a
   request refused for good (a 400, say) refuses only these records.
4. On an answer, :meth:`~Destination.results` says what became of each
   record: ``sent`` ones are stored, ``reject`` ones are counted under their
   reason, ``retry`` ones are sent again by the same sender after the retry
   policy's backoff, each trace counting its own retries (when they run out,
   the trace is settled as ``retries_exhausted``).

A trace is settled once (``on_result`` told, its spool record acked) when every
destination stored or refused its record: sent, or dropped as ``rejected``
when the first destination refused it.  Each destination keeps its own
:class:`DestinationStats` (``stats().destinations``, by :attr:`~Destination.name`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import msgspec

from .model import ApiResponse, TaskData

__all__ = ["BatchLimits", "Destination", "DestinationStats", "RecordResult"]


class BatchLimits(msgspec.Struct, frozen=True, kw_only=True):
    """How many records one request of a destination may carry."""

    #: Most records per request (1: one trace per request, as the Infinium endpoint takes).
    max_records: int = 1
    #: Most body bytes per request.
    max_bytes: int = 1 << 20
    #: Longest a record waits for others to fill its batch (seconds; 0: never waits).
    max_delay: float = 0.0


class RecordResult(msgspec.Struct, frozen=True):
    """What an answer said of one record of a request."""

    #: ``"sent"``: accepted; ``"retry"``: refused for now (try it again later);
    #: ``"reject"``: refused for good (not retried).
    verdict: Literal["sent", "retry", "reject"]
    #: For ``"reject"``, the reason it is counted under (a drop reason, or the destination's
    #: own, e.g. ``"mapper_parsing_exception"``); for the others, empty.
    reason: str = ""
    #: The server's word on it (never containing a secret), for logs and ``last_error``.
    detail: str = ""
    #: What ``on_result`` is given for it when it is sent.
    response: ApiResponse | None = None


class DestinationStats(msgspec.Struct, frozen=True, kw_only=True):
    """What one destination did, read at one instant (the exporter's ``stats()`` carries
    the first destination's figures at its top level)."""

    name: str
    sent: int = 0
    retries: int = 0
    bytes_sent: int = 0
    #: Records refused for good, by reason.
    rejected: dict[str, int] = msgspec.field(default_factory=dict)
    last_error: str | None = None
    #: Traces of its lane (the destinations of its endpoint) waiting, being sent, kept in
    #: the spool for a later attempt, and lost by reason (reasons with a count only).
    queued: int = 0
    in_flight: int = 0
    spooled: int = 0
    dropped: dict[str, int] = msgspec.field(default_factory=dict)


class Destination(Protocol):
    """One endpoint traces are delivered to; thread-safe (every worker calls it)."""

    @property
    def name(self) -> str:
        """Short, stable, lower case: keys its stats and its log lines (``"infinium"``)."""
        ...

    @property
    def limits(self) -> BatchLimits:
        """How many records one request may carry."""
        ...

    def record(self, body: bytes, trace: TaskData | None = None) -> bytes:
        """The record of one built trace, given its wire body (the model's encoding, redacted,
        which the core always has) and the trace itself when the core holds it (a destination
        that needs it decodes ``body`` otherwise).  Raises ``ValidationError`` when the trace
        has no record here (it is then not sent to this destination)."""
        ...

    def frame(self, records: Sequence[bytes]) -> bytes:
        """The request body that carries ``records`` (in order)."""
        ...

    def post(self, body: bytes, timeout: float | None) -> ApiResponse:
        """Make one attempt at sending ``body``: build the request afresh (headers, and a
        signature over ``body`` with a new timestamp where the endpoint wants one), send
        it within ``timeout`` seconds (None: the destination's own), and return the 2xx
        answer.  Raises the typed errors of :mod:`infinium_logging.errors` otherwise
        (their text never containing a secret); never retries by itself."""
        ...

    def results(self, response: ApiResponse, count: int) -> Sequence[RecordResult]:
        """What the answer to a request of ``count`` records says of each, in order."""
        ...

    def close(self) -> None:
        """Drop pooled connections (at shutdown and in a forked child); stays usable."""
        ...
