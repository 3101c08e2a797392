"""One pass over an encoded trace for every redaction hint at once, when Hyperscan is installed.

Nearly every trace holds nothing to redact, and finding that out is all redaction
costs it: a search for the hints of :mod:`~infinium_logging._redact_patterns` over
the encoded trace.  Python's ``re`` has no multi-pattern search, so without help
that is one pass per hint (some fourteen passes, about 130% of building and
encoding the trace again).  Hyperscan (the ``fast`` extra:
``pip install 'infinium-logging[fast]'``) searches for all of them, case-blind, in
one pass at several bytes per cycle: about a tenth of it (benchmark figure 13).

The hints are spelt here a second time, for Hyperscan (which has no look-behind);
``tests/test_redact_scan.py`` holds the two spellings to the same answers.
"""

from __future__ import annotations

import threading
from typing import Any, Final

__all__ = ["Key", "Scanner", "available", "prepare", "ready"]

_hs: Any = None
_looked = False


def _hyperscan() -> Any:
    """The hyperscan module, imported on first need (when a redactor is made, not at the
    package's import: it takes a few ms), or None when the extra is not installed."""
    global _hs, _looked
    if not _looked:
        try:
            import hyperscan  # noqa: PLC0415 - see above

            _hs = hyperscan
        except Exception:  # not installed (re searches instead), or unloadable here
            _hs = None
        _looked = True
    return _hs


# The words of _redact_patterns._HINT_PATTERNS, matched case-blind on the text as it is
# (there they are looked for in the lower-cased text, each from its rarest letter); spelt as
# literals where they can be: a database of literals compiles in a fraction of the time.
_SECRET_WORDS: Final = (
    "sk-",
    "cookie",
    "api_key",
    "api-key",
    "apikey",
    "access_key",
    "access-key",
    "accesskey",
    "private_key",
    "private-key",
    "privatekey",
    "k_live_",
    "k_test_",
    "aiza",
    "authoriz",
    "xox",
    "eyj",
    "secret",
    "credential",
    "passw",
    "session",
    "passphrase",
    "pwd",
    "bearer",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "-----begin",
)
_SECRET_HINTS: Final = (
    r"token(?:$|[^s])",
    r"(?:^|[^a-z0-9])auth(?:$|[^a-z]|[a-z](?:$|[^a-z]))",
    r"://[^\s/@\"']{0,256}@",
    r"aws[\w.\-]{0,20}key",
)
# _redact_patterns._RAW_PATTERNS: upper case only.
_RAW_HINTS: Final = (r"A(?:KIA|SIA|BIA|CCA)", r"Auth(?:$|[^a-z]|[a-z](?:$|[^a-z]))")
# _redact_patterns._PII_HINTS and _PII_HINT_PATTERNS.
_PII_HINTS: Final = (r"@", r"[0-9][0-9 ().-]{5,}[0-9]", r"[a-z]{2}[0-9]{2}")

#: What a scanner looks for: (secrets, pii, literal values to find as they are).
Key = tuple[bool, bool, tuple[bytes, ...]]


def _escaped(word: str) -> str:
    return "".join(char if char.isalnum() else "\\" + char for char in word)


def _literal(value: bytes) -> str:
    """``value`` as a Hyperscan expression that matches exactly it, byte for byte."""
    return "".join(
        chr(byte) if chr(byte).isalnum() and byte < 128 else f"\\x{byte:02x}" for byte in value
    )


class Scanner:
    """Whether an encoded trace holds any hint: ``scanner.hit(data)``; thread-safe."""

    def __init__(self, key: Key) -> None:
        hs = _hyperscan()
        assert hs is not None
        secrets, pii, literals = key
        caseless = hs.HS_FLAG_CASELESS | hs.HS_FLAG_SINGLEMATCH
        exact = hs.HS_FLAG_SINGLEMATCH
        expressions: list[tuple[str, int]] = [(_literal(value), exact) for value in literals]
        if secrets:
            expressions += [(_escaped(word), caseless) for word in _SECRET_WORDS]
            expressions += [(hint, caseless) for hint in _SECRET_HINTS]
            expressions += [(hint, exact) for hint in _RAW_HINTS]
        if pii:
            expressions += [(hint, caseless) for hint in _PII_HINTS]
        database = hs.Database(mode=hs.HS_MODE_BLOCK)
        database.compile(
            expressions=[hint.encode() for hint, _ in expressions],
            ids=list(range(len(expressions))),
            elements=len(expressions),
            flags=[flags for _, flags in expressions],
        )
        self._scan = database.scan
        self._first = hs.Scratch(database)
        # Hyperscan's scratch space serves one scan at a time: each thread clones its own.
        self._local = threading.local()

    def hit(self, data: bytes) -> bool:
        """Whether ``data`` holds a hint (then the trace is walked string by string)."""
        local = self._local
        scratch = getattr(local, "scratch", None)
        if scratch is None:
            scratch = local.scratch = self._first.clone()
        found: list[int] = []
        # The handler goes on to the end (returning True would raise ScanTerminated); with
        # one report per hint at most, a hit costs a few calls at worst.
        self._scan(data, match_event_handler=lambda *_: found.append(1), scratch=scratch)
        return bool(found)


#: Compiled scanners by key; None where there is nothing to find or Hyperscan cannot run.
_compiled: dict[Key, Scanner | None] = {}
_lock = threading.Lock()


def ready(key: Key) -> Scanner | None:
    """The scanner for ``key`` once :func:`prepare` compiled it, else None (re searches)."""
    return _compiled.get(key)


def prepare(key: Key) -> None:
    """Compile the scanner for ``key`` (some 10-40 ms, once per process and key): called on
    a sender thread, never on a thread that logs, which searches with re until it is ready."""
    if key in _compiled or _hyperscan() is None:
        return
    with _lock:
        if key in _compiled:
            return
        scanner: Scanner | None = None
        if key[0] or key[1] or key[2]:
            try:
                scanner = Scanner(key)
            except Exception:  # a CPU Hyperscan does not run on: re searches instead
                scanner = None
        _compiled[key] = scanner


def available() -> Any:
    """Hyperscan's version when it is installed, else None."""
    module = _hyperscan()
    return None if module is None else getattr(module, "__version__", "installed")
