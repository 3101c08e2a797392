"""Reliability 9, a hostile endpoint: huge answers are not read whole, dripped ones time out.

The endpoint is a small real HTTP server on 127.0.0.1 that accepts any request and then
misbehaves in its answer.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from exporters import FAST, trace, wait_until

from infinium_logging import transport as transport_module
from infinium_logging.errors import InfiniumTimeoutError
from infinium_logging.exporter import Exporter
from infinium_logging.settings import Settings
from infinium_logging.transport import Transport

#: What the huge answer claims and offers: far more than any client should read.
HUGE = 64 * 1024 * 1024
#: Bytes of the dripped answer, and the pause between two of them (seconds): 40 s in all.
DRIPPED = 2000
DRIP_PAUSE = 0.02


class HostileEndpoint:
    """Answers every request with ``mode``: ``"huge"`` (200 with a 64 MiB body) or
    ``"drip"`` (200 whose body comes a byte at a time).  Counts the body bytes sent."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sent = 0
        self.requests = 0
        self.stop = threading.Event()
        #: Set when an answer ended: sent whole, or the client hung up.
        self.answered = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._server.getsockname()[1]}/api"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.stop.set()
        # A connection wakes the accept() under way (closing the socket would not).
        with socket.create_connection(self._server.getsockname(), timeout=5):
            pass
        self._thread.join(10)
        self._server.close()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            try:
                self._read_request(connection)
                self.requests += 1
                length = HUGE if self.mode == "huge" else DRIPPED
                connection.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % length
                )
                if self.mode == "huge":
                    chunk = b" " * 65536
                    while self.sent < HUGE and not self.stop.is_set():
                        connection.sendall(chunk)
                        self.sent += len(chunk)
                else:
                    for _ in range(DRIPPED):
                        if self.stop.wait(DRIP_PAUSE):
                            return
                        connection.sendall(b" ")
                        self.sent += 1
            except OSError:
                return  # the client hung up: what it had had enough of
            finally:
                self.answered.set()

    @staticmethod
    def _read_request(connection: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += connection.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            body += connection.recv(65536)


@pytest.fixture
def endpoint(request: pytest.FixtureRequest) -> Iterator[HostileEndpoint]:
    """A hostile endpoint in the mode the test is parametrized with."""
    server = HostileEndpoint(request.param)
    try:
        yield server
    finally:
        server.close()


def hostile_settings(endpoint: HostileEndpoint, **overrides: Any) -> Settings:
    """The suite's fast settings, aimed at ``endpoint``."""
    return Settings(**{**FAST, "base_url": endpoint.base_url, **overrides})


def body() -> bytes:
    """A request body (the endpoint does not read it)."""
    return b'{"name": "t"}'


@pytest.mark.parametrize("endpoint", ["huge"], indirect=True)
def test_a_huge_answer_is_read_up_to_the_cap_only(endpoint: HostileEndpoint) -> None:
    """An answer of 64 MiB is read up to MAX_ANSWER and the connection closed: the server
    gets no further than the cap plus what the kernel buffers hold (the whole body was read,
    at a cost of hundreds of MB for a big enough one)."""
    transport = Transport(hostile_settings(endpoint))
    try:
        answer = transport.post_trace(body())
        assert answer.success
        assert endpoint.answered.wait(30)
        assert endpoint.sent < HUGE // 2
        assert endpoint.sent > transport_module.MAX_ANSWER
    finally:
        transport.close()


@pytest.mark.parametrize("endpoint", ["drip"], indirect=True)
def test_a_dripped_answer_times_out_at_the_attempts_deadline(endpoint: HostileEndpoint) -> None:
    """An answer dripped a byte at a time (each read well within the read timeout) ends at
    the attempt's timeout, as a timeout error, instead of holding the caller for the
    40 s it takes."""
    transport = Transport(hostile_settings(endpoint, timeout=1.0))
    try:
        with pytest.raises(InfiniumTimeoutError, match="timed out after 1 s"):
            transport.post_trace(body())
        assert endpoint.sent < DRIPPED
    finally:
        transport.close()


@pytest.mark.parametrize("endpoint", ["drip"], indirect=True)
def test_a_dripping_endpoint_gives_up_at_max_elapsed_and_counts_it(
    endpoint: HostileEndpoint,
) -> None:
    """Through the exporter: the retries against a dripping endpoint stop at ``max_elapsed``
    (the last attempt too is cut at it), and the trace is counted as dropped for that reason,
    with the timeout as the last error."""
    settings = hostile_settings(endpoint, timeout=0.5, max_elapsed=1.2, max_retries=100)
    exporter = Exporter(settings)
    try:
        assert exporter.submit(trace("dripped"))
        assert wait_until(lambda: exporter.stats().dropped["max_elapsed"] == 1, 30)
        stats = exporter.stats()
        assert (stats.sent, stats.dropped_total, stats.in_flight) == (0, 1, 0)
        assert stats.last_error is not None and "timed out" in stats.last_error
        assert endpoint.requests >= 2
    finally:
        exporter.shutdown(0.1)
