"""The trace server of the delivery figures: nginx when installed, else the local collector.

nginx is started by the benchmark itself, on 127.0.0.1 and a free port, with
its own configuration in a temporary directory: every request gets a fixed
``200 {"success":true,"traceId":"..."}``.  ``return`` answers through
``ngx_http_send_response``, which reads and discards the request body first,
so kept-alive connections stay in step.  Without nginx, the project's local
collector runs in a child process (never in the benchmark's own process,
whose GIL it would compete for).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

__all__ = ["TRACE_ID", "Server", "find_nginx", "local_server"]

#: The trace id every answer of the nginx server carries.
TRACE_ID = "0b6c6f5e-3d2a-4c1b-9e8f-7a6b5c4d3e2f"

_CONFIG = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    # Bodies stay in memory (never a temp file); traces are at most 1 MiB.
    client_max_body_size 2m;
    client_body_buffer_size 2m;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 200 '{{"success":true,"traceId":"{trace_id}","message":"Trace received"}}';
        }}
    }}
}}
"""


@dataclass(frozen=True)
class Server:
    """A running trace server: where it is, what it is, and how to tell whether it died."""

    base_url: str
    kind: str  # "nginx" or "local collector"
    process: subprocess.Popen[bytes]
    log: str

    def problem(self) -> str | None:
        """None while the server runs; else how it ended and the end of its log."""
        code = self.process.poll()
        if code is None:
            return None
        try:
            with open(self.log, encoding="utf-8", errors="replace") as file:
                tail = file.read()[-1500:]
        except OSError:
            tail = ""
        return f"the {self.kind} exited with status {code}; its log ends with:\n{tail}"


def find_nginx() -> str | None:
    """The nginx executable, if installed."""
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@contextmanager
def _nginx(executable: str) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="infinium-bench-nginx-") as directory:
        for _ in range(5):  # a free port can be taken between the probe and nginx's bind
            port = _free_port()
            config = os.path.join(directory, "nginx.conf")
            with open(config, "w", encoding="utf-8") as file:
                file.write(_CONFIG.format(dir=directory, port=port, trace_id=TRACE_ID))
            process = subprocess.Popen(
                [executable, "-p", directory, "-c", config, "-e", f"{directory}/error.log"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if _wait_listening(port, process, timeout=5.0):
                break
            _stop(process)
        else:
            raise RuntimeError(f"nginx did not start; see {directory}/error.log")
        try:
            yield Server(
                f"http://127.0.0.1:{port}/api/v1", "nginx", process, f"{directory}/error.log"
            )
        finally:
            _stop(process)


@contextmanager
def _collector() -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="infinium-bench-collector-") as directory:
        log = os.path.join(directory, "collector.log")
        with open(log, "wb") as stderr:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "infinium_logging",
                    "serve",
                    "--port",
                    "0",
                    "--db",
                    ":memory:",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        with _running(process, log) as server:
            yield server


@contextmanager
def _running(process: subprocess.Popen[bytes], log: str) -> Iterator[Server]:
    try:
        assert process.stdout is not None
        base_url = None
        for raw in process.stdout:
            match = re.search(r"listening on (\S+)", raw.decode("utf-8", "replace"))
            if match:
                base_url = match.group(1)
                break
        if base_url is None:
            raise RuntimeError("the local collector did not start")
        # The pipe stays open (the rest of the banner fits in its buffer): closing it
        # now could break the collector's next write to stdout.
        yield Server(base_url, "local collector", process, log)
    finally:
        _stop(process)
        if process.stdout is not None:
            process.stdout.close()


@contextmanager
def local_server(prefer_nginx: bool = True) -> Iterator[Server]:
    """Start the fastest available trace server on 127.0.0.1; stop it on exit.

    nginx when installed (and ``prefer_nginx``); the local collector when it is
    not, or when it fails to start (the reason is printed).
    """
    executable = find_nginx() if prefer_nginx else None
    with ExitStack() as stack:
        server: Server | None = None
        if executable is not None:
            try:
                server = stack.enter_context(_nginx(executable))
            except RuntimeError as exc:
                print(f"{exc}: using the local collector instead", file=sys.stderr)
        if server is None:
            server = stack.enter_context(_collector())
        yield server
