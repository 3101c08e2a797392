"""What a sender thread does with one trace: build it, encode it, deliver it, settle it once."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from . import failures, spill
from .convert import Problem, lenient_task
from .delivery import Delivery, Outcome
from .destination_infinium import encode_trace
from .dispatch import Dispatch
from .durability import KEEP_REASONS
from .errors import InfiniumError, NetworkError
from .ledger import DropWarner, Ledger, warn_dropped
from .model import MAX_BODY_BYTES, ApiResponse, TaskData
from .queued import Item, PendingTrace
from .redact import Redactor
from .results import Reporter, failure_response
from .sampling import sampled_in
from .settings import Settings
from .transport import redacted

__all__ = ["Sender"]

_log = logging.getLogger("infinium_logging.exporter")

#: Distinct rejection messages remembered (each is logged once); a bound against odd servers.
_MAX_REMEMBERED: Final = 256

#: What a sender hands each built trace to when the exporter has lanes (see :mod:`.lanes`;
#: it then delivers nothing itself): the queued trace, the trace itself when at hand, and its
#: redacted wire body.
HandOff = Callable[[Item, "TaskData | None", bytes], None]


class SpoolPart(Protocol):
    """What settles a trace's spool record for a sender (a
    :class:`~infinium_logging.writeahead.WriteAhead`, or a lane's share of one)."""

    @property
    def spool(self) -> Any:
        """The spool, or None while there is none."""
        ...

    def ack(self, item: Item) -> None:
        """``item``'s record is settled here: it is not to be sent here again."""
        ...

    def keep(self, item: Item, ref: Any, reason: str, error: str | None) -> bool:
        """Leave ``item``'s record for a later attempt; False if it was settled already."""
        ...

    def recovered_locked(self) -> None:
        """The endpoint answers again (lock held)."""
        ...


class Sender:
    """Processes one queued trace on a sender thread: builds a captured one, reads a dict
    leniently (counting the fixes), encodes it, delivers it through ``delivery``, and
    settles it exactly once in the ledger (with a spool, keeping it there when it failed
    for a reason worth a later attempt); tells ``on_result`` through the reporter, and
    says once why credentials or traces are refused.
    """

    def __init__(  # noqa: PLR0917 - made in one place, by the exporter it belongs to
        self,
        settings: Settings,
        dispatch: Dispatch,
        delivery: Delivery,
        reporter: Reporter,
        redactor: Redactor,
        owner: object,
        *,
        durable: SpoolPart | None = None,
        hand_off: HandOff | None = None,
        tag: int = 0,
        lane: str = "",
    ) -> None:
        self._redactor = redactor
        self._sample_rate = settings.sample_rate
        self.settings = settings
        self._admission = dispatch.admission
        self._ledger: Ledger = dispatch.ledger
        self._lock: threading.RLock = self._ledger.lock
        self.delivery = delivery
        self._pacing = dispatch.pacing
        self.reporter = reporter
        self._durable: SpoolPart | None = durable if durable is not None else dispatch.durable
        #: The exporter's lanes, handed each trace once it is built (None: it has none).
        self.hand_off = hand_off
        #: This lane's tag in spool records (see Item.done), and its name in warnings when it
        #: is not the exporter's first.
        self.tag = tag
        self.lane = lane
        self._closed = dispatch.closed
        #: Any text the sender logs passes here: the secret never appears in it.
        self._clean = functools.partial(redacted, secrets=(settings.agent_secret,))
        #: Whose failures are explained once (see failures.tell): the exporter's.
        self.owner = owner
        destination = delivery.destination
        self._record = destination.record
        self._frame = destination.frame
        self.warner = DropWarner()
        self._auth_until = 0.0
        self._auth_failing = False
        self._rejections_logged: set[str] = set()
        self._prepared = False

    def process(self, item: Item) -> None:
        """Process one trace; a bug costs that trace (counted invalid), not the sender."""
        try:
            self._process(item)
        except Exception as exc:
            if self.settle(item, "invalid", f"internal error: {exc!r}"):
                self.log_internal_error()
        self.warn_drops()

    @staticmethod
    def log_internal_error() -> None:
        """Say (with the traceback being handled) that a bug cost traces."""
        _log.exception("infinium_logging could not process a trace")

    def sampled(self, body: bytes) -> bool:
        """Whether the trace of wire body ``body`` is kept by ``sample_rate``."""
        return self._sample_rate >= 1.0 or sampled_in(body, self._sample_rate)

    def _process(self, item: Item) -> None:
        prepared = self.prepare(item)
        if prepared is None:
            return
        trace, body = prepared
        if self._sample_rate < 1.0 and not sampled_in(body, self._sample_rate):
            self.sampled_away(item)
            return
        if self.hand_off is not None:
            self._pass_on(item, trace, body)
            return
        request = self._frame((self._record(body, trace),))

        def given_up() -> bool:
            return item.settled

        def on_retry(error: InfiniumError) -> bool:
            if isinstance(error, NetworkError):
                self.explain("network", error)
            with self._lock:
                # Waiting to retry: let another sender start a trace meanwhile.
                self._pacing.through(item, waking=True)
                return self._ledger.retried(item, self.describe(error))

        outcome = self.delivery.deliver(
            request, given_up=given_up, on_retry=on_retry, not_before=self.credentials_at
        )
        self.finish(item, outcome, len(request))

    def prepare(self, item: Item) -> tuple[TaskData | None, bytes] | None:
        """The trace of ``item`` built, read, redacted and encoded: ``(the trace, when it is
        at hand, its wire body)``; None when it could not be (settled as ``invalid``)."""
        if not self._prepared:
            # Here, on a sender, not where traces are logged: the one-pass scan takes a while
            # to make (a thread that logs scans with re until it is ready).
            self._prepared = True
            self._redactor.prepare()
        if item.body is not None:  # encoded on the caller's thread, or a spooled wire body
            task = item.task
            return (task if type(task) is TaskData else None), item.body
        task = item.task
        if isinstance(task, PendingTrace):  # captured by a handler or processor: build it now
            try:
                task = task.materialize()
            except Exception as exc:
                self.settle(item, "invalid", f"could not be built: {exc!r}")
                return None
            item.task = task
        body: bytes | None = None
        if not isinstance(task, TaskData):
            problems: list[Problem] = []
            # A dict that needs no fixing comes back with its body: no second encoding.
            task, body = lenient_task(task, problems)
            if problems:
                with self._lock:
                    for problem in problems:
                        self._ledger.coerced[problem.action] += 1
                if any(p.path == "" and p.action == "replaced" for p in problems):
                    self.settle(item, "invalid", "could not be read as a trace")
                    return None
            item.task = task
        try:
            if body is None or len(body) > MAX_BODY_BYTES:
                body = encode_trace(task)
            redacted_task = self._redactor.encoded(task, body)
            if redacted_task is not task:
                item.task = task = redacted_task
                body = encode_trace(task)
        except Exception as exc:
            self.settle(item, "invalid", f"could not be encoded: {exc}")
            return None
        self._admission.learn(task, len(body))
        with self._lock:
            if item.settled:
                return None
            self._ledger.held_bytes += len(body) - item.size
            item.size = len(body)
        if item.loose:
            item.body = body  # for _keep, should the trace stay in the spool
        return task, body

    def _pass_on(self, item: Item, trace: TaskData | None, body: bytes) -> None:
        """Hand a built trace to the exporter's lanes (see :mod:`.lanes`): settled when the
        first lane settles its record, or now, as sent, when that lane had stored it before
        (a spool record read back)."""
        assert self.hand_off is not None
        # Handed: its record is settled lane by lane from now on (the first lane may settle
        # it before this call returns).  Its memory is the lanes' to bound from now on: an
        # endpoint that is down must not fill the buffer every trace waits in first.
        item.handed = True
        with self._lock:
            self._ledger.held_bytes -= item.size
            item.size = 0
        self.hand_off(item, trace, body)
        with self._lock:
            # Through only now: a shutdown waits for the traces being handed (see closing.py).
            self._pacing.through(item, waking=False)
        if self.tag in item.done:
            self._ack(item)
            self._ledger.sent_one(item, 0)

    def refuse(self, item: Item, reason: str) -> None:
        """A lane had no room for ``item``: keep it in the spool for later when it has a
        record there, else count it lost for ``reason``."""
        durable = self._durable
        if item.ref is not None and durable is not None and durable.spool is not None:
            durable.keep(item, item.ref, reason, None)
        else:
            self.settle(item, reason)

    def finish(self, item: Item, outcome: Outcome, size: int) -> None:
        """Settle ``item`` as ``outcome`` of its request (``size`` body bytes) says."""
        reason, error = outcome.reason, outcome.error
        if reason == "sent":
            assert outcome.response is not None
            self.delivered(item, outcome.response, size)
        elif reason == "abandoned":
            return  # given up at the shutdown deadline while this was under way
        elif error is None or reason == "shutdown":
            self.settle(item, reason)
        elif reason == "auth":
            self._auth_failed(item, error)
        elif reason == "rejected":
            self._rejected(item, error)
        else:
            self.settle(item, reason, self.describe(error))
            self.explain(reason, error)

    def credentials_at(self) -> float:
        """When sending may resume after refused credentials (0.0: now)."""
        return self._auth_until

    def _auth_failed(self, item: Item, error: InfiniumError) -> None:
        with self._lock:
            first = not self._auth_failing
            self._auth_failing = True
            self._auth_until = time.monotonic() + self.settings.auth_backoff
        self.settle(item, "auth", self.describe(error))
        if first:
            fate = (
                "kept in the spool for later" if self._spooling() else "dropped (counted as 'auth')"
            )
            fate += f"; sending pauses for {self.settings.auth_backoff:g} s before each new try"
            failures.tell(self.owner, "auth", error, self.settings, fate, self._clean)

    def _rejected(self, item: Item, error: InfiniumError) -> None:
        said = str(error.details.get("server_message") or error.message)
        self.settle(item, "rejected", self.describe(error))
        key = f"{error.status_code}:{said}"
        with self._lock:
            new = key not in self._rejections_logged
            if new and len(self._rejections_logged) < _MAX_REMEMBERED:
                self._rejections_logged.add(key)
        if new:
            explained = failures.explain("rejected", error, self.settings, "")
            failures.say(_log, logging.WARNING, self._clean(explained))

    def delivered(self, item: Item, response: ApiResponse, size: int) -> bool:
        """Count ``item`` as sent (``size`` body bytes) and tell on_result; False when it was
        settled already."""
        self._ack(item)
        ledger = self._ledger
        with self._lock:
            self._pacing.through(item, waking=False)
            if not ledger.sent_one(item, size):
                return False
            recovered = self._auth_failing
            self._auth_failing = False
            if self._durable is not None:
                self._durable.recovered_locked()
        if recovered and not self._closed():
            # Named by the endpoint: an exporter of another destination (Infino) says so too.
            endpoint = self.delivery.destination.name.split("-")[0].capitalize()
            _log.info("%s accepted the credentials again; sending resumed", endpoint)
        self.reporter.report(item, response)
        return True

    def sampled_away(self, item: Item) -> None:
        """Settle a trace ``sample_rate`` leaves out: counted apart from the losses."""
        self._ack(item)
        with self._lock:
            self._pacing.through(item, waking=False)
        if self._ledger.sampled(item):
            self.reporter.report(item, failure_response("sampled_out", None))

    def spill_record(self, item: Item) -> tuple[int, bytes] | None:
        """The exit spill's record of ``item``, redacted (see :mod:`.spill`)."""
        return spill.record_of(item, self._redactor)

    def settle(self, item: Item, reason: str, error: str | None = None) -> bool:
        """Count a trace as lost for ``reason`` unless it is settled already; tell on_result.

        A trace with a spool record is kept there instead when ``reason`` is
        retryable later (:data:`KEEP_REASONS`); one dropped for good is
        settled in the spool too.
        """
        ref = item.ref
        durable = self._durable
        with self._lock:
            self._pacing.through(item, waking=False)
        keep = reason in KEEP_REASONS and ref is not None
        if keep and durable is not None and durable.spool is not None:
            return durable.keep(item, ref, reason, error)
        if reason == "shutdown" and ref is None and spill.active(self.settings):
            return self._spill(item)
        self._ack(item)
        if not self._ledger.lost(item, reason, error):
            return False
        self.reporter.report(item, failure_response(reason, error))
        return True

    def _ack(self, item: Item) -> None:
        if self._durable is not None:
            self._durable.ack(item)

    def warn_drops(self) -> None:
        if self._closed() or not self.warner.due():
            # When closed, shutdown reports what is left: logging now could meet logging.shutdown().
            return
        with self._lock:
            news = self.warner.news(self._ledger.dropped)
        if news:
            warn_dropped(news, self._ledger.last_error, self.lane)

    def _spooling(self) -> bool:
        return self._durable is not None and self._durable.spool is not None

    def explain(self, kind: str, error: InfiniumError) -> None:
        fate = "kept in the spool for later" if self._spooling() else "dropped"
        failures.tell(self.owner, kind, error, self.settings, fate, self._clean)

    def _spill(self, item: Item) -> bool:
        """At exit, keep a trace the deadline caught on disk (see :mod:`.spill`)."""
        # Written before it is counted as kept: until then it is in flight, so the deadline's
        # tally, running meanwhile, keeps it too (at least once) and the process never ends
        # with it counted as kept but on no disk (this thread is a daemon: exit may stop it).
        written = not spill.keep(self.settings, [item], self.spill_record)
        if not self._ledger.kept(item, None):
            return False  # settled by the tally meanwhile, which kept it as well
        if not written:
            self._ledger.spool_lost(1, "shutdown")
            self.reporter.report(item, failure_response("shutdown", None))
        return True

    def describe(self, error: InfiniumError) -> str:
        return self._clean(f"{type(error).__name__}: {error.message}")
