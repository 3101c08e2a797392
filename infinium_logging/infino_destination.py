"""Infino datasets as Destinations: NDJSON bulk bodies, signed afresh per attempt, read per row."""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence
from typing import Final

import msgspec

from .convert import decode_task
from .destination import BatchLimits, RecordResult
from .errors import ValidationError
from .infino_client import InfinoClient
from .infino_rows import bulk_entry, read_bulk_answer, step_rows, trace_id_of, trace_row
from .infino_settings import InfinoSettings, core_settings
from .model import ApiResponse, TaskData, encode_task

__all__ = ["InfinoDestination", "record_ids"]

_DECODER: Final = msgspec.json.Decoder()


def record_ids(body: bytes) -> list[str]:
    """The ``_id`` of every row of a bulk body, in order (from its action lines)."""
    ids = []
    for line in body.split(b"\n")[::2]:
        if line:
            action = _DECODER.decode(line)
            ids.append(str(next(iter(action.values()))["_id"]))
    return ids


class InfinoDestination:
    """One Infino dataset: ``POST {endpoint}/{dataset}/json`` with many rows per request.

    ``steps=False``: a record is a trace's one row in ``settings.dataset``;
    ``steps=True``: a record is the rows of a trace's steps in
    ``settings.steps_dataset`` (a trace without steps has none: ``encode``
    raises ``ValidationError``, and it is not sent there).  Each row's ``_id``
    comes from the trace's encoded body, so the same trace always gets the same
    ids.  The answer is read row by row (see :meth:`results`).
    """

    def __init__(
        self, settings: InfinoSettings, *, steps: bool = False, client: InfinoClient | None = None
    ) -> None:
        dataset = settings.steps_dataset if steps else settings.dataset
        if dataset is None:
            raise ValueError("steps=True needs settings.steps_dataset")
        self._settings = settings
        self._steps = steps
        self.dataset: Final = dataset
        self.name: Final = "infino-steps" if steps else "infino"
        #: Its endpoint's delivery settings: in an exporter whose first destination is another
        #: endpoint's, Infino's datasets get a lane of their own (see :mod:`.lanes`).
        self.lane_settings: Final = core_settings(settings)
        self.limits: Final = BatchLimits(
            max_records=settings.max_batch_records,
            max_bytes=settings.max_batch_bytes,
            max_delay=settings.linger,
        )
        self._client = client if client is not None else InfinoClient(settings)
        self._lock = threading.Lock()
        #: Requests made, rows stored, rows refused for good by Infino's error type.
        self._counts: collections.Counter[str] = collections.Counter()
        self._rows_rejected: collections.Counter[str] = collections.Counter()

    def __repr__(self) -> str:
        return f"InfinoDestination(endpoint={self._settings.endpoint!r}, dataset={self.dataset!r})"

    def encode(self, trace: TaskData) -> bytes:
        """The trace's row (or its steps' rows) as NDJSON bulk entries."""
        return self.encode_body(trace, encode_task(trace))

    def record(self, body: bytes, trace: TaskData | None = None) -> bytes:
        """The trace's row(s), their ids derived from its wire body ``body``."""
        if trace is None:
            trace = decode_task(body, strict=False)
        return self.encode_body(trace, body)

    def encode_body(self, trace: TaskData, body: bytes) -> bytes:
        """As :meth:`encode`, for a trace whose wire body is known (the ids derive from it)."""
        trace_id = trace_id_of(body)
        if not self._steps:
            return bulk_entry(trace_id, trace_row(trace, trace_id, self._settings.agent))
        rows = step_rows(trace, trace_id)
        if not rows:
            raise ValidationError("the trace has no steps", path="steps")
        return b"".join(bulk_entry(doc_id, row) for doc_id, row in rows)

    def frame(self, records: Sequence[bytes]) -> bytes:
        """Bulk entries simply follow each other."""
        return b"".join(records)

    def post(self, body: bytes, timeout: float | None) -> ApiResponse:
        """One signed bulk request; ``data`` holds the answer and the row ids sent."""
        with self._lock:
            self._counts["requests"] += 1
        raw = self._client.bulk(self.dataset, body, timeout=timeout)
        return ApiResponse(
            success=True,
            status_code=200,
            message="Success",
            data={"answer": raw, "ids": record_ids(body), "body": body},
        )

    def results(self, response: ApiResponse, count: int) -> Sequence[RecordResult]:
        """Per record: sent when all its rows were stored; retry when one was refused for
        now; reject (with Infino's error type) when one was refused for good."""
        data = response.data or {}
        ids: list[str] = data.get("ids", [])
        answer = read_bulk_answer(ids, data.get("answer", b""))
        groups = _records_of(data.get("body", b""), count)
        results = []
        stored = 0
        refused: collections.Counter[str] = collections.Counter()
        for group in groups:
            failed = [answer.failed[i] for i in group if i in answer.failed]
            if failed:
                results.append(RecordResult("reject", reason=failed[0], detail=failed[0]))
                refused.update(failed)
            elif any(i in answer.retry for i in group):
                results.append(RecordResult("retry", detail="Infino refused it for now"))
            else:
                results.append(RecordResult("sent", response=response))
                stored += len(group)
        with self._lock:
            self._counts["rows_sent"] += stored
            self._rows_rejected.update(refused)
        return results

    def counts(self) -> tuple[int, int, dict[str, int]]:
        """``(requests made, rows stored, rows refused for good by Infino's error type)``."""
        with self._lock:
            return self._counts["requests"], self._counts["rows_sent"], dict(self._rows_rejected)

    def close(self) -> None:
        """Drop pooled connections."""
        self._client.close()


def _records_of(body: bytes, count: int) -> list[list[str]]:
    """The row ids of each of ``count`` records of a body: rows of one record share the
    trace's id (a step row's id is ``<trace id>-<n>``)."""
    groups: list[list[str]] = []
    previous = None
    for doc_id in record_ids(body):
        key = doc_id.partition("-")[0]
        if key != previous:
            groups.append([])
            previous = key
        groups[-1].append(doc_id)
    groups += [[] for _ in range(count - len(groups))]
    return groups[:count]
