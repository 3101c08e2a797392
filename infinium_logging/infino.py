"""The Infino sink: an Exporter whose destinations are Infino datasets, and its counts."""

from __future__ import annotations

import dataclasses
from typing import Any, Final

import msgspec

from . import failures
from .destination import Destination
from .exporter import Exporter
from .infino_client import InfinoClient
from .infino_destination import InfinoDestination
from .infino_settings import InfinoSettings, core_settings
from .model import TaskData
from .queued import PendingTrace
from .redact import default_redactor

__all__ = ["InfinoSink", "InfinoStats", "infino_destinations"]

#: Reasons a trace is lost for, as counted in ``InfinoStats.dropped`` (the exporter's own).
DROP_REASONS: Final = (
    "queue_full",  # the buffer held max_queue_size traces (or its bytes)
    "closed",  # submitted after shutdown() started
    "invalid",  # could not be read as a trace, or encoded
    "rejected",  # Infino refused its trace row for good (see rows_rejected for why)
    "auth",  # Infino refused the keys (401/403)
    "retries_exhausted",  # still failing after max_retries retries
    "max_elapsed",  # still failing when the batch's max_elapsed ran out
    "shutdown",  # still waiting when the shutdown deadline came
    "spool_full",  # evicted from the spool past its size bound before it could be delivered
)


class InfinoStats(msgspec.Struct, frozen=True, kw_only=True):
    """What the Infino sink did, read at one instant.

    ``submitted + adopted == sent + dropped_total + queued + in_flight + spooled``.
    """

    destination: str = "infino"
    submitted: int
    #: Traces whose trace row Infino stored.
    sent: int
    #: Records (trace and step rows) Infino stored, and the bulk requests that carried them.
    rows_sent: int
    requests: int
    #: Retries of a request or of records a 200 answer refused for now.
    retries: int
    #: Traces lost, by reason (every reason of ``DROP_REASONS`` is present).
    dropped: dict[str, int]
    #: Rows refused for good inside a 200 answer, by the error type Infino gave.
    rows_rejected: dict[str, int]
    queued: int
    in_flight: int
    #: Traces held only in the spool, waiting for a later attempt.
    spooled: int
    #: Traces taken over from the spool of an earlier process.
    adopted: int
    last_error: str | None
    #: Values redacted from traces, by kind (see ``INFINIUM_REDACT``).
    redacted: dict[str, int] = msgspec.field(default_factory=dict)

    @property
    def dropped_total(self) -> int:
        """All traces lost, whatever the reason."""
        return sum(self.dropped.values())


class InfinoSink:
    """Sends every trace to an Infino dataset as one flat row (and one row per step with
    ``steps_dataset``), in signed bulk requests; usable wherever ``exporter=`` is taken.

    It is an :class:`~infinium_logging.exporter.Exporter` whose destinations are
    :class:`~infinium_logging.infino_destination.InfinoDestination` s: the same
    admission, batching workers (``max_batch_records``, ``max_batch_bytes``, at most
    ``linger`` seconds of waiting), delivery (token bucket, retries, the 429 rule),
    spool and shutdown deadline.  Rows a 200 answer refuses for now are sent again,
    rows refused for good counted by reason.  Row ids derive from the trace: a retry or
    replay overwrites.  ``settings=None`` reads ``INFINIUM_INFINO_*`` (keyword arguments
    win); with ``spool_dir``, traces survive a crash or restart.
    """

    def __init__(self, settings: InfinoSettings | None = None, **overrides: Any) -> None:
        if settings is None:
            settings = InfinoSettings.from_env(**overrides)
        elif overrides:
            settings = dataclasses.replace(settings, **overrides)
        self._settings = settings
        self._destinations = infino_destinations(settings)
        destinations: list[Destination] = list(self._destinations)
        #: Every trace is redacted (``INFINIUM_REDACT``, the secret key included) before it
        #: is spooled or sent.
        redactor = default_redactor().with_secrets(settings.secret_key)
        self.exporter = Exporter(
            core_settings(settings), destinations=destinations, redactor=redactor
        )
        # Its failures are counted and kept in last_error (see stats()), not explained in
        # the Infinium exporter's words.
        failures.hush(self.exporter)

    def __repr__(self) -> str:
        return (
            f"InfinoSink(endpoint={self._settings.endpoint!r}, dataset={self._settings.dataset!r})"
        )

    @property
    def settings(self) -> InfinoSettings:
        """The settings of this destination (the secret key masked in their repr)."""
        return self._settings

    @property
    def closed(self) -> bool:
        """True once :meth:`shutdown` has begun (as :attr:`Exporter.closed`)."""
        return self.exporter.closed

    def submit(self, task: TaskData | dict[str, Any] | PendingTrace | object) -> bool:
        """Take one finished trace; False when it was not taken (full, closed: counted)."""
        return self.exporter.submit(task)  # type: ignore[arg-type]

    def flush(self, timeout: float | None = None) -> bool:
        """Send what is queued now, without waiting for batches to fill; True when every
        trace submitted before is settled within ``timeout`` seconds."""
        return self.exporter.flush(timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Deliver what is held within ``timeout`` seconds (default ``shutdown_timeout``), then
        stop; what is left is counted as ``shutdown`` (or stays in the spool)."""
        return self.exporter.shutdown(timeout)

    close = shutdown

    def stats(self) -> InfinoStats:
        """Counts so far: the exporter's, with the requests and rows of its datasets."""
        stats = self.exporter.stats()
        requests = rows = 0
        rejected: dict[str, int] = {}
        for destination in self._destinations:
            made, stored, refused = destination.counts()
            requests += made
            rows += stored
            for reason, count in refused.items():
                rejected[reason] = rejected.get(reason, 0) + count
        return InfinoStats(
            submitted=stats.submitted,
            sent=stats.sent,
            rows_sent=rows,
            requests=requests,
            retries=stats.retries,
            dropped={reason: stats.dropped[reason] for reason in DROP_REASONS},
            rows_rejected=rejected,
            queued=stats.queued,
            in_flight=stats.in_flight,
            spooled=stats.spooled,
            adopted=stats.adopted,
            last_error=stats.last_error,
            redacted=stats.redacted,
        )


def infino_destinations(settings: InfinoSettings) -> list[InfinoDestination]:
    """The destinations of ``settings``: its trace dataset, and its steps dataset if any (one
    client, so one connection pool, for both)."""
    client = InfinoClient(settings)
    destinations = [InfinoDestination(settings, client=client)]
    if settings.steps_dataset:
        destinations.append(InfinoDestination(settings, steps=True, client=client))
    return destinations
