"""Durability: spool records of queued traces (write-ahead forms), reading them back, replay."""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

import msgspec

from ._bounded import CAPTURE_BUDGET
from ._logsetup import setup_logging
from .convert import Problem, to_task
from .delivery import Deadline, Delivery
from .destination_infinium import InfiniumDestination, encode_trace
from .errors import ConfigurationError
from .guard import EXPORTING
from .model import MAX_BODY_BYTES
from .queued import Item, PendingTrace, read_captured
from .redact import Redactor
from .retry import RetryPolicy, classify
from .sanitise import json_safe
from .settings import Settings
from .spool import RecordRef, Spool, lane_tag, survey
from .throttle import TokenBucket
from .transport import redacted

__all__ = [
    "ADOPT_INTERVAL",
    "Backlog",
    "INFINIUM_LANE",
    "KEEP_REASONS",
    "KINDS",
    "KIND_BODY",
    "RECORD_CODECS",
    "REFILL_BATCH",
    "SPOOL_RETRY",
    "ReplayReport",
    "backlog_item",
    "captured_record",
    "dict_record",
    "quietly",
    "replay_spool",
]

_log = logging.getLogger("infinium_logging.exporter")

#: Spool record kinds: an encoded wire body, sent as is; a submitted dict, read leniently later,
#: as MessagePack or (when MessagePack cannot hold it as it is) as JSON of its JSON-safe copy.
KIND_BODY: Final = 0
KIND_DICT_JSON: Final = 1
KIND_DICT: Final = 2
#: A tagged event as a handler or processor captured it, as MessagePack (built when read).
KIND_CAPTURED: Final = 3
#: Records that hold what a trace is made of rather than its wire body (see read_record).
LOOSE_KINDS: Final = frozenset({KIND_DICT_JSON, KIND_DICT, KIND_CAPTURED})
#: Every kind this version reads: a segment holding another (a newer format's) is kept in the
#: spool's quarantine, not adopted.
KINDS: Final = frozenset({KIND_BODY, *LOOSE_KINDS})
#: With a spool, a trace that fails for one of these reasons stays in the spool for a later
#: attempt instead of being dropped.
KEEP_REASONS: Final = frozenset({"auth", "retries_exhausted", "max_elapsed", "shutdown"})
#: How often a running exporter looks for segments that dead processes left (seconds).
ADOPT_INTERVAL: Final = 30.0
#: After the spool could not be opened, how long submits go memory-only before trying again.
SPOOL_RETRY: Final = 30.0
#: Most records moved from the spool's backlog into the queue at once.
REFILL_BATCH: Final = 256
#: The Infinium lane's tag in the spool (see :func:`~infinium_logging.spool.lane_tag`).
INFINIUM_LANE: Final = lane_tag(InfiniumDestination.name)


def _json_default(value: Any) -> Any:
    """What a type msgspec cannot encode becomes in a spool record: what json_safe makes of it."""
    return json_safe(value, max_string=MAX_BODY_BYTES)


_pack: Final = msgspec.msgpack.Encoder(enc_hook=_json_default).encode


def dict_record(task: Any) -> tuple[int, bytes]:
    """The spool record of a submitted dict, ``(kind, payload)``: what lenient coercion will
    read in it, read back after a restart.

    msgspec encodes it on the caller's thread at C speed (json_safe's walk would cost several
    times more), as MessagePack: it costs little more than half of JSON here, and bytes, NaN
    and non-string keys come back as they were, so the trace read back is the one memory
    would have sent (a timezone-aware datetime comes back as the same instant in UTC).  What
    MessagePack cannot hold as it is (an int past 64 bits, a lone surrogate, a cycle) is
    written as JSON of its json_safe copy.  A record is rewritten with the exact wire body
    when a sender keeps it for later.
    """
    try:
        payload = _pack(task)
    except Exception:  # not encodable as it is: json_safe copes
        payload = None
    if payload is not None and len(payload) <= MAX_BODY_BYTES:
        return KIND_DICT, payload
    # A string longer than the body limit could never be sent whole: none is kept longer.
    return KIND_DICT_JSON, msgspec.json.encode(json_safe(task, max_string=MAX_BODY_BYTES))


#: How a record of each loose kind is read and written again once redacted.
RECORD_CODECS: Final[dict[int, tuple[Callable[[bytes], Any], Callable[[Any], bytes]]]] = {
    KIND_DICT: (msgspec.msgpack.decode, _pack),
    KIND_CAPTURED: (msgspec.msgpack.decode, _pack),
    KIND_DICT_JSON: (msgspec.json.decode, msgspec.json.encode),
}


def captured_record(task: PendingTrace) -> bytes | None:
    """The spool record of a captured trace, kept as captured (``KIND_CAPTURED``), or None
    when it has no such form or MessagePack cannot hold it: it is then built first.

    Building the trace on the caller's thread only to encode it would cost as much as the
    rest of the write; the sender thread builds it, as it does without a spool.
    """
    try:
        form = task.spool_form()
        if form is None:
            return None
        payload = _pack(form)
        # Encoded first, cut only when it may need it: walking every value to find the long
        # ones costs the caller several times the encoding (benchmark figure 10).
        if len(payload) > CAPTURE_BUDGET:
            payload = _pack(task.spool_form(cut=True))
    except Exception:  # an int past 64 bits, a lone surrogate: the built trace copes
        return None
    return payload if len(payload) <= MAX_BODY_BYTES else None


def read_record(kind: int, payload: bytes) -> Any:
    """What a record of one of the ``LOOSE_KINDS`` holds: a submitted dict, or (for
    ``KIND_CAPTURED``) a PendingTrace to build; ``msgspec.DecodeError`` when it is damaged."""
    if kind == KIND_DICT:
        return msgspec.msgpack.decode(payload)
    if kind == KIND_CAPTURED:
        try:
            return read_captured(msgspec.msgpack.decode(payload))
        except ValueError as exc:
            raise msgspec.DecodeError(str(exc)) from None
    return msgspec.json.decode(payload)


def backlog_item(
    ref: RecordRef, kind: int, payload: bytes, done: frozenset[int] = frozenset()
) -> Item:
    """A trace taken up from the spool (its ``seq`` is set when it is queued); ``done``: the
    lanes already done with its record (:meth:`~infinium_logging.spool.Spool.parts`)."""
    if kind == KIND_BODY:
        return Item(None, 0, len(payload), payload, ref, done=done)
    task: Any = None  # an unknown kind or an undecodable dict: the sender counts it as invalid
    if kind in LOOSE_KINDS:
        try:
            task = read_record(kind, payload)
        except msgspec.DecodeError:
            task = None
    return Item(task, 0, len(payload), None, ref, True, done=done)


_T = TypeVar("_T")


def quietly(function: Callable[..., _T], *args: Any) -> _T | None:
    """Call a spool method where a failure must cost at most durability, never the caller."""
    try:
        return function(*args)
    except Exception:
        _log.debug("spool operation %s failed", getattr(function, "__name__", "?"), exc_info=True)
        return None


# --- replaying a spool now ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ReplayReport:
    """What :func:`replay_spool` did with an agent's pending spool records."""

    #: Records taken over from the spool (no live process held them).
    found: int
    #: Delivered: the platform accepted them (removed from the spool).
    sent: int
    #: Refused for good by the platform, or unreadable (removed from the spool).
    rejected: int
    #: Not delivered now (the endpoint kept failing, or refused the credentials): still in
    #: the spool for a later replay or the agent's next start.
    failed: int
    #: Records that live processes hold: left to them.
    busy: int
    #: The last failure, as text (never containing the secret).
    last_error: str | None = None
    #: Records Infinium stored already, not sent again: left in the spool for the other
    #: destinations that still want them (the agent's next start sends them there).
    left: int = 0


def replay_spool(
    settings: Settings, *, progress: Callable[[int, int], object] | None = None
) -> ReplayReport:
    """Adopt the spool records that no live process holds for ``settings.agent_id`` and send
    them now, ``settings.workers`` at a time, through the throttle and retry policy.

    ``progress(done, total)`` is called after each record.  Delivered and
    rejected records are removed from the spool; one Infinium stored already
    (an exporter that also sends elsewhere marked it so) is not sent again and
    stays for the other destinations (counted as ``left``); at the first record that
    still fails after its retries (an outage, refused credentials) the replay
    stops and leaves the rest where they are.  Raises
    :class:`~infinium_logging.errors.ConfigurationError` without a
    ``spool_dir`` and ``OSError`` when the directory cannot be used.
    """
    if settings.spool_dir is None:
        raise ConfigurationError(
            "no spool directory: set INFINIUM_SPOOL_DIR or pass spool_dir", variable="spool_dir"
        )
    busy = sum(
        found.live_records
        for found in survey(settings.spool_dir)
        if found.agent_id == settings.agent_id
    )
    spool = Spool(
        settings.spool_dir,
        settings.agent_id,
        max_bytes=settings.spool_max_bytes,
        fsync=settings.spool_fsync,
        kinds=KINDS,
    )
    if settings.enable_logging:
        setup_logging(settings.log_level)
    delivery = _replay_delivery(settings)
    redactor = Redactor.from_settings(settings)
    total = spool.backlog_size()
    lock = threading.Lock()
    counts = {"sent": 0, "rejected": 0, "failed": 0, "left": 0}
    errors: list[str] = []
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            taken = spool.take_backlog(1)
            if not taken:
                return
            ref, kind, payload = taken[0]
            record = (kind, payload, spool.parts(ref))
            outcome, error = _replay_one(delivery, redactor, record, settings.agent_secret)
            if outcome == "failed":
                stop.set()  # the record stays in the spool, and so do the ones after it
            elif outcome != "left":  # a left one stays in the spool, not taken up again here
                spool.ack(ref)
            with lock:
                counts[outcome] += 1
                if error is not None:
                    errors.append(error)
                if progress is not None:
                    progress(sum(counts.values()), total)

    try:
        threads = min(settings.workers, total)
        if threads <= 1:
            work()
        else:
            with ThreadPoolExecutor(threads, thread_name_prefix="infinium-replay") as pool:
                for future in [pool.submit(work) for _ in range(threads)]:
                    future.result()
    finally:
        delivery.destination.close()
        spool.close()
    return ReplayReport(
        found=total,
        sent=counts["sent"],
        rejected=counts["rejected"],
        failed=total - counts["sent"] - counts["rejected"] - counts["left"],
        busy=busy,
        last_error=errors[-1] if errors else None,
        left=counts["left"],
    )


def _replay_delivery(settings: Settings) -> Delivery:
    """Delivery to the settings' endpoint, with their throttle and retry policy."""
    bucket = TokenBucket.from_settings(settings)
    return Delivery(
        InfiniumDestination(settings),
        RetryPolicy.from_settings(settings),
        bucket,
        Deadline(),
        settings.timeout,
    )


def record_body(kind: int, payload: bytes, encode: Callable[[Any], bytes]) -> bytes | str:
    """The wire body a spool record stands for, or why it has none (text)."""
    try:
        if kind == KIND_BODY:
            return payload
        if kind not in LOOSE_KINDS:
            return f"a spool record of unknown kind {kind}"
        problems: list[Problem] = []
        fields = read_record(kind, payload)
        if isinstance(fields, PendingTrace):
            fields = fields.materialize()
        task = to_task(fields, strict=False, problems=problems)
        if any(p.path == "" and p.action == "replaced" for p in problems):
            return "a spool record could not be read as a trace"
        return encode(task)
    except Exception as exc:
        return f"a spool record could not be read: {exc}"


def _replay_one(
    delivery: Delivery, redactor: Redactor, record: tuple[int, bytes, frozenset[int]], secret: str
) -> tuple[str, str | None]:
    """Send one spool record, ``(kind, payload, lanes done with it)``, now: ``("sent" |
    "rejected" | "failed" | "left", error text)``; a loose record is redacted once built (a
    wire body was redacted before it was written).  One Infinium stored already is ``"left"``
    to the other destinations that still want it."""
    kind, payload, done = record
    if INFINIUM_LANE in done:
        return "left", None
    destination = delivery.destination

    def encode(task: Any) -> bytes:
        clean = redactor.task(task)
        return destination.frame([destination.record(encode_trace(clean), clean)])

    body = record_body(kind, payload, encode)
    if isinstance(body, str):
        return "rejected", body
    token = EXPORTING.set(True)
    try:
        outcome = delivery.deliver(body)
    finally:
        EXPORTING.reset(token)
    if outcome.reason == "sent":
        return "sent", None
    error = outcome.error
    if error is None:
        return "failed", None
    verdict = "rejected" if classify(error) == "reject" else "failed"
    return verdict, redacted(f"{type(error).__name__}: {error.message}", (secret,))


class Backlog:
    """When a sender does spool work: adopting what dead processes left (every
    :data:`ADOPT_INTERVAL`) and taking up the records waiting in the spool, backing off while
    the endpoint keeps failing.  Called with the exporter's lock held."""

    __slots__ = ("adopting", "at", "failures", "next_adopt", "policy", "refilling")

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        #: A sender is adopting now; when the next adoption is due.
        self.adopting = False
        self.next_adopt = 0.0
        #: A sender is taking records up now; when the backlog may be taken up next.
        self.refilling = False
        self.at = 0.0
        #: Failed deliveries in a row (while > 0, one record probes the endpoint at a time).
        self.failures = 0

    def failed(self) -> None:
        """Back off after a failed delivery."""
        self.failures += 1
        self.at = max(self.at, time.monotonic() + self.delay())

    def recovered(self) -> bool:
        """The endpoint answers again: take the backlog up at once; whether it had failed."""
        if not self.failures:
            return False
        self.failures = 0
        self.at = 0.0
        return True

    def delay(self) -> float:
        """The next wait: half fixed, half jitter, so that processes that failed together do
        not probe together, and the wait still grows."""
        policy = self.policy
        ceiling = min(policy.backoff_max, policy.backoff_base * 2.0 ** min(self.failures, 64))
        return ceiling * (0.5 + 0.5 * random.random())

    def chore(
        self, now: float, *, spooled: int, closed: bool, room: bool, deadline: float | None
    ) -> str:
        """``"adopt"``, ``"refill"`` or ``""``: spool work due now (``room``: the queue is at
        most half full)."""
        if not closed and not self.adopting and now >= self.next_adopt:
            self.adopting = True
            self.next_adopt = now + ADOPT_INTERVAL
            return "adopt"
        if (
            spooled > 0
            and not self.refilling
            and now >= self.at
            and room
            and (deadline is None or now < deadline)
        ):
            self.refilling = True
            return "refill"
        return ""

    def due_by(self, limit: float, spooled: int) -> bool:
        """Whether spooled records may be taken up before ``limit``."""
        return self.refilling or (spooled > 0 and self.at < limit)

    def idle_wait(self, now: float, *, spooled: int, closed: bool) -> float | None:
        """How long an idle sender may sleep before spool work is due."""
        due = []
        if not closed:
            due.append(self.next_adopt)
        if spooled > 0 and not self.refilling:
            due.append(self.at)
        if not due:
            return None
        return max(0.001, min(due) - now)

    def refilled(self, probing: bool, taken: int) -> None:
        """A take-up ended with ``taken`` records (one when ``probing``)."""
        self.refilling = False
        if probing or not taken:
            self.at = time.monotonic() + self.delay()
