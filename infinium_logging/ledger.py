"""The ledger: what became of every trace (stats, drop reasons, drop warnings)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Final

import msgspec

__all__ = [
    "DROP_REASONS",
    "FAILURE_REASONS",
    "DropWarner",
    "ExporterStats",
    "describe_counts",
    "warn_dropped",
]

_log = logging.getLogger("infinium_logging.exporter")

#: How often, at most, drops are warned about.
_WARN_INTERVAL: Final = 60.0

#: Every reason a submitted trace can be lost for, as counted in :attr:`ExporterStats.dropped`.
DROP_REASONS: Final = (
    "queue_full",  # the buffer was full (by count or by bytes) when it was submitted
    "closed",  # submitted after shutdown() started
    "shutdown",  # still queued or in flight when the shutdown deadline came
    "rejected",  # the platform refused it for good (400, 404, 413, 422, ...): not retried
    "auth",  # the platform refused the credentials (401/403)
    "retries_exhausted",  # still failing after max_retries retries
    "max_elapsed",  # still failing when its max_elapsed budget ran out
    "invalid",  # could not be read as a trace, or encoded
    "disabled",  # submitted while INFINIUM_DISABLED is on
    "spool_full",  # evicted from the spool past spool_max_bytes before it could be delivered
)
#: Reasons counted in ``ExporterStats.failed``: lost for good other than by the buffer or shutdown.
FAILURE_REASONS: Final = ("rejected", "auth", "retries_exhausted", "max_elapsed", "invalid")


class ExporterStats(msgspec.Struct, frozen=True, kw_only=True):
    """What an exporter did, read at one instant (under one lock).

    Every submitted trace is exactly one of: sent, dropped (counted by reason
    in ``dropped``), queued, in flight, or (with a spool) spooled; traces
    adopted from the spool of an earlier process join them, so at every reading
    ``submitted + adopted == sent + dropped_total + queued + in_flight + spooled +
    sampled_out``.
    Traces sent with :meth:`Exporter.send` / :meth:`Exporter.send_batch` are not
    counted here: their caller gets the outcome directly.
    """

    #: Calls of ``submit`` (accepted or not).
    submitted: int
    #: Traces the platform accepted.
    sent: int
    #: Retries made (not counting the immediate repeat on a closed pooled connection).
    retries: int
    #: Traces lost, by reason (every reason of :data:`DROP_REASONS` is present).
    dropped: dict[str, int]
    #: Traces waiting in the buffer.
    queued: int
    #: Traces a sender thread is working on (encoding, sending, or waiting to retry).
    in_flight: int
    #: Bytes held: the memory queued traces are estimated to hold, the encoded body's size
    #: once a sender has it (see ``max_queue_bytes``).
    buffered_bytes: int
    #: Body bytes of the traces the platform accepted.
    bytes_sent: int
    #: Fixes made while reading submitted dicts, by kind (``dropped``, ``truncated``, ...).
    coerced: dict[str, int]
    #: The last failure, as text (never containing the secret).
    last_error: str | None
    #: When the platform last accepted a trace (POSIX time), if it ever did.
    last_success_time: float | None
    #: Traces held only in the spool: waiting for another attempt (queue full, retries
    #: exhausted, credentials refused), or left there at shutdown for the next start.
    spooled: int = 0
    #: Traces taken over from the spool of an earlier or dead process, to be delivered here.
    adopted: int = 0
    #: Records in the spool not yet settled (queued, in flight and spooled ones), and their bytes.
    spool_pending_records: int = 0
    spool_pending_bytes: int = 0
    #: Damaged spool records skipped (a torn record after a crash, a bad checksum).
    spool_corrupt: int = 0
    #: Traces kept in memory only because the spool could not be written (disk full, permissions).
    spool_write_errors: int = 0
    #: Traces left out by ``sample_rate`` (settled, not lost: not counted in ``dropped``).
    sampled_out: int = 0
    #: Values redacted from traces, by kind (``api_key``, ``secret``, ``email``, ``hook``...).
    redacted: dict[str, int] = msgspec.field(default_factory=dict)

    @property
    def dropped_total(self) -> int:
        """All traces lost, whatever the reason."""
        return sum(self.dropped.values())

    @property
    def failed(self) -> int:
        """Traces lost for good other than by the buffer or shutdown: refused by the platform
        (``rejected``, ``auth``), out of retries (``retries_exhausted``, ``max_elapsed``), or
        unreadable (``invalid``, which also counts what ``submit`` refused as no trace)."""
        return sum(self.dropped[reason] for reason in FAILURE_REASONS)


class DropWarner:
    """Decides when to warn about drops: at most once per ``interval``, with the new counts."""

    def __init__(
        self, interval: float = _WARN_INTERVAL, clock: Callable[[], float] = time.monotonic
    ):
        self._interval = interval
        self._clock = clock
        self._last = -math.inf
        self._reported: dict[str, int] = {}

    def due(self) -> bool:
        """Whether a warning may be given now (cheap, without the counts)."""
        return self._clock() - self._last >= self._interval

    def news(self, dropped: Mapping[str, int], *, force: bool = False) -> dict[str, int] | None:
        """The drops since the last warning if one is due now (or ``force``), else None."""
        now = self._clock()
        if not force and now - self._last < self._interval:
            return None
        new = {
            reason: count - self._reported.get(reason, 0)
            for reason, count in dropped.items()
            if count > self._reported.get(reason, 0)
        }
        if not new:
            return None
        self._last = now
        self._reported = dict(dropped)
        return new


def describe_counts(counts: Mapping[str, int]) -> str:
    """``reason=count, ...``."""
    return ", ".join(f"{reason}={count}" for reason, count in counts.items())


def warn_dropped(news: Mapping[str, int], last_error: str | None = None) -> None:
    """The one warning about drops: how many since the last one, by reason, and the last
    error, if any."""
    _log.warning(
        "infinium_logging dropped %d trace(s) since the last report: %s%s",
        sum(news.values()),
        describe_counts(news),
        f" (last error: {last_error})" if last_error else "",
    )
