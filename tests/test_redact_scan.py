"""The one-pass scan (Hyperscan, the fast extra) and re's pass per pattern give the same answers."""

from __future__ import annotations

import threading

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_redact import IN_CONTEXT, ORDINARY, PII, SEEDED

from infinium_logging import _redact_scan
from infinium_logging.redact import Redactor

MODES = ("off", "secrets", "pii", "secrets,pii")
#: An agent secret: always found, whatever the mode, byte for byte (never case-blind).
SECRET = "Zq7.x!k9-(agent)+secret\u00e9"

#: Every word a hint is made of, and the text around them where the hints look at it.
WORDS = [
    "sk-",
    "cookie",
    "token",
    "tokens",
    "token_count",
    "api_key",
    "api-key",
    "apikey",
    "access.key",
    "private key",
    "sk_live_",
    "rk_test_",
    "AIza",
    "authoriz",
    "xox",
    "eyJ",
    "secret",
    "credential",
    "passw",
    "session",
    "passphrase",
    "pwd",
    "aws_key",
    "AWS.sk.key",
    "draws a key",
    "bearer",
    "auth",
    "Auth",
    "basicAuth",
    "Author",
    "author",
    "xauth",
    "x_auth",
    "https://",
    "user@",
    "ghp_",
    "github_pat_",
    "-----BEGIN",
    "AKIA",
    "asia",
    "ASIA",
    "ACCA",
    "@",
    "555 867 5309",
    "de89",
    "12",
]
PIECES = st.sampled_from([*WORDS, SECRET, SECRET[3:]]) | st.text(
    alphabet=st.sampled_from(list("aeiksxtz_-.:/@ \n\"'=0123456789AKIS")), max_size=6
)


def cased(text: str, pattern: list[bool]) -> str:
    """``text`` with the letters at the places ``pattern`` marks in upper case."""
    return "".join(
        char.upper() if pattern[i % len(pattern)] else char.lower() for i, char in enumerate(text)
    )


def both(mode: str, data: bytes) -> tuple[bool, bool]:
    """``clean(data)`` by the one-pass scan and by re's passes."""
    fast = Redactor(mode, secrets=(SECRET,))
    fast.prepare()
    slow = Redactor(mode, secrets=(SECRET,), one_pass=False)
    slow.prepare()
    assert fast._scanner is not None and slow._scanner is None
    return fast.clean(data), slow.clean(data)


def encodings(text: str) -> list[bytes]:
    """``text`` as a JSON body and a MessagePack record carry it, as a value and as a key."""
    value = {"step": {"description": text, text: 115}}
    return [msgspec.json.encode(value), msgspec.msgpack.encode(value), text.encode()]


def test_the_fast_extra_is_what_dev_installs() -> None:
    """The suite measures and tests the one-pass scan: dev installs Hyperscan."""
    assert _redact_scan.available() is not None
    redactor = Redactor("secrets")
    assert redactor._scanner is None  # until a sender prepares it
    redactor.prepare()
    assert redactor._scanner is _redact_scan.ready((True, False, ()))
    another = Redactor("secrets")  # made after: takes up the compiled scanner on first use
    assert another.clean(b"plain") and another._scanner is redactor._scanner


CORPUS = [
    *(value for value, _ in SEEDED.values()),
    *(text for text, _, _ in IN_CONTEXT),
    *(text for text, _, _ in PII),
    *ORDINARY,
    *WORDS,
    SECRET,
    f"prefix {SECRET} suffix",
    SECRET[:-1],
    SECRET.upper(),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("text", CORPUS)
def test_every_example_gets_the_same_answer_from_both(mode: str, text: str) -> None:
    """Secrets, PII, ordinary prose and every hint word, in every encoding and in lower,
    upper and mixed case: the two scans agree."""
    for pattern in ([False], [True], [True, False], [False, False, True]):
        for data in encodings(cased(text, pattern) if text not in WORDS else text):
            fast, slow = both(mode, data)
            assert fast == slow, (mode, data)


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(PIECES, min_size=1, max_size=8),
    pattern=st.lists(st.booleans(), min_size=1, max_size=5),
    mode=st.sampled_from(MODES),
)
def test_any_text_of_hint_pieces_gets_the_same_answer_from_both(
    pieces: list[str], pattern: list[bool], mode: str
) -> None:
    """Text made of the hints' words and the characters around them, in any case: the
    one-pass scan finds a hint exactly where re's passes do."""
    text = cased("".join(pieces), pattern)
    for data in encodings(text):
        fast, slow = both(mode, data)
        assert fast == slow, (mode, data)


def test_threads_each_scan_with_their_own_scratch() -> None:
    """Hyperscan's scratch space serves one scan at a time: threads scanning together all
    get right answers."""
    _redact_scan.prepare((True, True, ()))
    scanner = _redact_scan.ready((True, True, ()))
    assert scanner is not None
    results: list[bool] = []
    lock = threading.Lock()

    def scan() -> None:
        for index in range(300):
            data = b"x" * 500 + (b"Bearer abc" if index % 2 else b"plain words")
            hit = scanner.hit(data)
            with lock:
                results.append(hit == bool(index % 2))

    threads = [threading.Thread(target=scan) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 1200 and all(results)
