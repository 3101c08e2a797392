"""The trace viewer's HTTP side: its page and read-only JSON, apart from the client's API."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
import urllib3
from viewer_support import (
    AGENT_ID,
    AGENT_SECRET,
    OTHER_AGENT_ID,
    browser_paths,
    post_trace,
    rich_trace,
    simple_trace,
    start_browser,
)

from infinium_logging._collector_store import StoredRow, TraceStore, summarize
from infinium_logging._viewer import CONTENT_SECURITY_POLICY, is_loopback
from infinium_logging.collector import LocalCollector
from infinium_logging.convert import to_task
from infinium_logging.model import encode_task

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def collector() -> Iterator[LocalCollector]:
    """A collector that accepts only the test agent's secret."""
    with LocalCollector(agent_secret=AGENT_SECRET) as running:
        yield running


def get_json(pool: urllib3.PoolManager, url: str) -> dict[str, object]:
    """GET a viewer endpoint that must answer 200 with a JSON object."""
    response = pool.request("GET", url)
    assert response.status == 200, response.data
    assert response.headers["Content-Type"] == "application/json"
    found = response.json()
    assert isinstance(found, dict)
    return found


def test_the_page_and_its_assets_are_served_with_a_strict_policy(
    collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """The root URL is the viewer's page; it and its script and style come from the package,
    each with a Content-Security-Policy that allows nothing inline and nothing from elsewhere."""
    assets = resources.files("infinium_logging").joinpath("_viewer_assets")
    for path, name, kind in (
        ("/", "index.html", "text/html"),
        ("/viewer/viewer.js", "viewer.js", "text/javascript"),
        ("/viewer/viewer.css", "viewer.css", "text/css"),
        ("/viewer/favicon.svg", "favicon.svg", "image/svg+xml"),
    ):
        response = pool.request("GET", collector.url + path)
        assert response.status == 200
        assert response.headers["Content-Type"].startswith(kind)
        assert response.data == assets.joinpath(name).read_bytes()
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
    policy = dict(part.strip().split(" ", 1) for part in CONTENT_SECURITY_POLICY.split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == policy["style-src"] == "'self'"
    assert policy["require-trusted-types-for"] == "'script'"
    page = pool.request("GET", collector.url + "/").data.decode()
    # No CDN, no inline script or style: everything the page loads is one of the files above.
    assert "http" not in page.replace('http-equiv="', "")
    assert "<script>" not in page
    assert " style=" not in page
    assert collector.viewer_url == collector.url + "/"


def test_list_is_newest_first_with_the_summary_columns(
    collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """The list endpoint gives name, agent, time, duration, steps, tokens and an error count,
    newest first, with the total and the agents seen."""
    first = post_trace(collector, pool, simple_trace("first", duration=2.5))
    second = post_trace(collector, pool, simple_trace("second", error=True), OTHER_AGENT_ID)
    page = get_json(pool, collector.url + "/viewer/api/traces")
    traces = page["traces"]
    assert isinstance(traces, list)
    assert [t["trace_id"] for t in traces] == [second, first]
    newest, oldest = traces
    assert newest["name"] == "second"
    assert newest["agent_id"] == OTHER_AGENT_ID
    assert newest["errors"] == 1
    assert oldest["errors"] == 0
    assert oldest["duration"] == 2.5
    assert oldest["steps"] == 2
    assert oldest["tokens"] == 405
    assert oldest["received_at"].endswith("Z")
    assert page["total"] == 2
    assert page["agents"] == sorted([AGENT_ID, OTHER_AGENT_ID])
    newest_seq = get_json(pool, collector.url + "/viewer/api/newest")["newest"]
    assert newest_seq == newest["seq"]


def test_detail_gives_the_body_as_received_and_never_the_secret(
    collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """One trace's endpoint carries its body byte for byte; no viewer answer holds the agent
    secret, which only ever travels in the API's request headers."""
    trace_id = post_trace(collector, pool, rich_trace())
    found = get_json(pool, f"{collector.url}/viewer/api/traces/{trace_id}")
    body = encode_task(to_task(rich_trace()))
    assert found["raw"] == body.decode()
    assert found["trace"] == json.loads(body)
    assert found["errors"] == 2
    assert found["tokens"] == 4898
    for path in ("/", "/viewer/viewer.js", "/viewer/api/traces", "/viewer/api/newest"):
        answer = pool.request("GET", collector.url + path)
        assert AGENT_SECRET.encode() not in answer.data
        assert AGENT_SECRET not in str(answer.headers)
    detail = pool.request("GET", f"{collector.url}/viewer/api/traces/{trace_id}")
    assert AGENT_SECRET.encode() not in detail.data


@pytest.mark.parametrize(
    "path",
    [f"/viewer/api/traces/{uuid.uuid4()}", "/viewer/api/traces/..%2F..%2Fetc", "/viewer/nope"],
)
def test_unknown_viewer_paths_are_404(
    collector: LocalCollector, pool: urllib3.PoolManager, path: str
) -> None:
    """An unknown trace, a trace id that is not a UUID and an unknown asset are 404s."""
    assert pool.request("GET", collector.url + path).status == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_the_viewer_is_read_only(
    collector: LocalCollector, pool: urllib3.PoolManager, method: str
) -> None:
    """Nothing but GET and HEAD reaches the viewer, and nothing it answers stores a trace."""
    body = encode_task(to_task(simple_trace("sneaked in")))
    for path in ("/", "/viewer/api/traces"):
        response = pool.request(method, collector.url + path, body=body)
        assert response.status == 405
    assert collector.traces() == []


def test_a_loopback_viewer_answers_only_to_loopback_names(
    collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """A page elsewhere that points its own name at 127.0.0.1 (DNS rebinding) gets a 403, so it
    cannot read the traces; the loopback names work."""
    post_trace(collector, pool, simple_trace("private"))
    url = collector.url + "/viewer/api/traces"
    evil = pool.request("GET", url, headers={"Host": f"attacker.example:{collector.port}"})
    assert evil.status == 403
    assert b"private" not in evil.data
    for host in (f"localhost:{collector.port}", f"127.0.0.1:{collector.port}", "localhost"):
        assert pool.request("GET", url, headers={"Host": host}).status == 200


def test_a_viewer_bound_elsewhere_answers_any_name(pool: urllib3.PoolManager) -> None:
    """Bound to all addresses on purpose, the viewer answers whatever name reached it."""
    with LocalCollector(host="0.0.0.0") as collector:
        url = f"http://127.0.0.1:{collector.port}/viewer/api/newest"
        response = pool.request("GET", url, headers={"Host": f"box.lan:{collector.port}"})
        assert response.status == 200


def test_loopback_addresses() -> None:
    """What counts as this machine only."""
    assert is_loopback("127.0.0.1")
    assert is_loopback("127.1.2.3")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("::")
    assert not is_loopback("192.168.1.10")
    assert not is_loopback("box.lan")


def test_the_clients_api_is_unchanged_beside_the_viewer(
    collector: LocalCollector, pool: urllib3.PoolManager
) -> None:
    """The API still answers under /api/v1 only, with its own credentials."""
    assert pool.request("GET", collector.url + "/healthz").status == 200
    assert pool.request("GET", collector.url + "/api/v1").status == 404
    body = encode_task(to_task(simple_trace("no key")))
    response = pool.request(
        "POST",
        f"{collector.base_url}/agents/{AGENT_ID}/trace",
        body=body,
        headers={"x-agent-id": AGENT_ID, "x-agent-key": "wrong-secret-here"},
    )
    assert response.status == 401


def _many(count: int) -> list[StoredRow]:
    rows = []
    for n in range(count):
        trace = simple_trace(f"run {n:05d}", duration=n / 100, error=n % 10 == 0)
        agent = AGENT_ID if n % 2 else OTHER_AGENT_ID
        stamp = f"2026-12-07T10:{n // 600 % 60:02d}:{n // 10 % 60:02d}.000000Z"
        rows.append(StoredRow(str(uuid.uuid4()), agent, stamp, trace["name"], _body(trace)))
    return rows


def _body(trace: dict[str, object]) -> bytes:
    return encode_task(to_task(trace))


@pytest.fixture(scope="module")
def big_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database of 10,000 traces, one in ten with an error, two agents."""
    path = tmp_path_factory.mktemp("viewer") / "big.sqlite3"
    store = TraceStore(path)
    try:
        store.add_many(_many(10_000))
    finally:
        store.close()
    return path


def test_ten_thousand_traces_are_paged_and_filtered_by_the_server(
    big_db: Path, pool: urllib3.PoolManager
) -> None:
    """Pages of 50 walk the 10,000 traces both ways; filters count and page on the server."""
    with LocalCollector(db=big_db) as collector:
        api = collector.url + "/viewer/api/traces"
        first = get_json(pool, api)
        rows = first["traces"]
        assert isinstance(rows, list)
        assert first["total"] == 10_000
        assert len(rows) == 50
        assert rows[0]["name"] == "run 09999"
        second = get_json(pool, f"{api}?before={rows[-1]['seq']}")["traces"]
        assert isinstance(second, list)
        assert second[0]["name"] == "run 09949"
        back = get_json(pool, f"{api}?after={second[0]['seq']}")["traces"]
        assert back == rows
        errors = get_json(pool, f"{api}?errors=1&limit=5")
        assert errors["total"] == 1_000
        assert [t["name"] for t in errors["traces"]] == [  # type: ignore[attr-defined]
            "run 09990",
            "run 09980",
            "run 09970",
            "run 09960",
            "run 09950",
        ]
        by_agent = get_json(pool, f"{api}?agent={AGENT_ID}&errors=1")
        assert by_agent["total"] == 0  # the errors fall on even numbers, the other agent's
        text = get_json(pool, f"{api}?q=run%200012")
        assert text["total"] == 10
        assert get_json(pool, f"{api}?q=%25")["total"] == 0  # a literal %, not a wildcard
        capped = get_json(pool, f"{api}?limit=100000")["traces"]
        assert isinstance(capped, list)
        assert len(capped) == 200


def test_a_file_from_an_earlier_version_is_listed_with_its_figures(
    tmp_path: Path, pool: urllib3.PoolManager
) -> None:
    """A database written before the list's columns existed gets them, filled from the bodies."""
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE traces (seq INTEGER PRIMARY KEY AUTOINCREMENT, trace_id TEXT NOT NULL"
            " UNIQUE, agent_id TEXT NOT NULL, received_at TEXT NOT NULL, name TEXT NOT NULL,"
            " body TEXT NOT NULL)"
        )
        old.execute(
            "INSERT INTO traces (trace_id, agent_id, received_at, name, body) VALUES (?,?,?,?,?)",
            (
                str(uuid.uuid4()),
                AGENT_ID,
                "2026-01-01T00:00:00.000000Z",
                "old",
                _body(rich_trace()).decode(),
            ),
        )
    old.close()
    with LocalCollector(db=path) as collector:
        listed = get_json(pool, collector.url + "/viewer/api/traces?errors=1")["traces"]
    assert isinstance(listed, list)
    assert [(t["name"], t["steps"], t["tokens"], t["errors"]) for t in listed] == [
        ("old", 6, 4898, 2)
    ]


def test_a_step_logged_at_error_counts_once_as_an_error() -> None:
    """An event logged at ERROR without an exception (action ``error``) is a failed step, as the
    viewer marks it; a step whose tool call failed too still counts once."""
    trace = simple_trace("logged error")
    trace["steps"] = [
        {"step_number": 1, "action": "log", "description": "fine"},
        {"step_number": 2, "action": "error", "description": "Payment declined"},
        {
            "step_number": 3,
            "action": "tool_use",
            "description": "lookup",
            "error": {"error_type": "E", "message": "m"},
            "tool_call": {"tool_name": "t", "error": {"error_type": "E", "message": "down"}},
        },
    ]
    assert summarize(_body(trace))[3] == 2


@pytest.mark.slow
def test_the_viewer_files_ship_in_the_wheel(tmp_path: Path) -> None:
    """The page works offline from an installed wheel: its files are package data."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("index.html", "viewer.js", "viewer.css", "favicon.svg"):
        assert f"infinium_logging/_viewer_assets/{name}" in names


def test_without_a_browser_the_browser_tests_say_how_to_install_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No Chromium installed: the message names the packages and the command, rather than
    failing somewhere inside selenium."""
    monkeypatch.setenv("CHROMIUM", str(tmp_path / "no-chromium"))
    assert browser_paths() is None
    with pytest.raises(RuntimeError, match=r"apt-get install -y chromium chromium-driver"):
        start_browser(str(tmp_path))
