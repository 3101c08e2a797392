"""The SigV4 signer against requests captured from the official infino-sdk 0.7.0, and botocore."""

from __future__ import annotations

import datetime
import pathlib
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from infino_server import ACCESS_KEY, SECRET_KEY, botocore_signature

from infinium_logging.sigv4 import amz_date, sign

CAPTURES = sorted((pathlib.Path(__file__).parent / "data" / "infino-captures").glob("*.http"))


def _read_capture(path: pathlib.Path) -> tuple[str, str, dict[str, str], bytes]:
    raw = path.read_bytes()
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("utf-8").split("\r\n")
    method, target, _ = lines[0].split(" ")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        headers[name.lower()] = value
    body = rest[: int(headers.get("content-length", "0"))]
    return method, target, headers, body


def _moment(stamp: str) -> datetime.datetime:
    return datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)


def test_there_are_captures() -> None:
    """The four captured requests are in the test data."""
    assert len(CAPTURES) == 4


@pytest.mark.parametrize("path", CAPTURES, ids=[path.stem for path in CAPTURES])
def test_signature_matches_capture_byte_for_byte(path: pathlib.Path) -> None:
    """Given a capture's date, key and body, the signer reproduces its Authorization header
    (and so its Signature) and its content hash exactly."""
    method, target, headers, body = _read_capture(path)
    signed = sign(
        method,
        headers["host"],
        target,
        body,
        content_type=headers["content-type"],
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        when=_moment(headers["x-amz-date"]),
    )
    assert signed["X-Amz-Content-Sha256"] == headers["x-amz-content-sha256"]
    assert signed["X-Amz-Date"] == headers["x-amz-date"]
    assert signed["Authorization"] == headers["authorization"]


def test_a_different_body_gets_a_different_signature() -> None:
    """The signature covers the body: one changed byte changes it."""
    _, target, headers, body = _read_capture(CAPTURES[1])
    kwargs = {
        "content_type": headers["content-type"],
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "when": _moment(headers["x-amz-date"]),
    }
    first = sign("POST", headers["host"], target, body, **kwargs)  # type: ignore[arg-type]
    second = sign("POST", headers["host"], target, body + b" ", **kwargs)  # type: ignore[arg-type]
    assert first["Authorization"] != second["Authorization"]


def test_amz_date_converts_to_utc() -> None:
    """A time in another zone is written as UTC."""
    zone = datetime.timezone(datetime.timedelta(hours=2))
    assert amz_date(datetime.datetime(2026, 12, 7, 15, 0, 1, tzinfo=zone)) == "20261207T130001Z"


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(max_size=300),
    path=st.from_regex(r"/[a-z0-9][a-z0-9\-.]{0,20}(/json)?", fullmatch=True),
    method=st.sampled_from(["GET", "POST", "PUT"]),
    seconds=st.integers(min_value=0, max_value=2_000_000_000),
    query=st.dictionaries(
        st.text("abcdefgh_-", min_size=1, max_size=5), st.text(max_size=8), max_size=3
    ),
)
def test_agrees_with_botocore(
    body: bytes, path: str, method: str, seconds: int, query: dict[str, str]
) -> None:
    """For any body, path, method, date and query, botocore's SigV4Auth computes the same
    signature."""
    when = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    host = "127.0.0.1:9200"
    signed = sign(
        method,
        host,
        path,
        body,
        content_type="application/json",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        when=when,
        query=query,
    )
    headers = {
        "content-type": "application/json",
        "host": host,
        "x-amz-content-sha256": signed["X-Amz-Content-Sha256"],
        "x-amz-date": signed["X-Amz-Date"],
    }
    suffix = f"?{urlencode(query, quote_via=quote, safe='-_.~')}" if query else ""
    expected = botocore_signature(
        method, f"http://{host}{path}{suffix}", headers, body, SECRET_KEY, ACCESS_KEY
    )
    assert signed["Authorization"].endswith(f"Signature={expected}")
