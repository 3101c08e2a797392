"""Redaction: every string of a trace scrubbed of secrets (and, on request, PII) before it leaves.

A :class:`Redactor` walks a built trace (a :class:`~infinium_logging.model.TaskData`,
or the dicts and lists a spool record holds) and replaces what it finds with a
marker that says what was removed and nothing of it: ``[REDACTED:api_key]``.
Secrets are found by the shape of well-known credentials (provider key prefixes,
JWTs, private key blocks, passwords in URLs) and by the name of the key that holds
a value (``password``, ``api_key``, ``authorization``...), so that ordinary text,
code, UUIDs, hashes and base64 blobs pass untouched.  PII (e-mail addresses,
phone numbers, Luhn-checked card numbers, IBANs) is opt-in.
"""

from __future__ import annotations

import os
import re
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import msgspec

from . import _redact_scan
from ._redact_patterns import (
    KEPT_PREFIX,
    PATTERNS,
    PII,
    PII_CHECKS,
    PII_CHECKS_BYTES,
    RAW_CHECKS,
    RAW_CHECKS_BYTES,
    SECRET_CHECKS,
    SECRET_CHECKS_BYTES,
    combined,
    hinted,
    pii_ok,
    renumbered,
    secret_name,
)
from .errors import ConfigurationError, ValidationError

__all__ = [
    "PII_KINDS",
    "SECRET_KINDS",
    "Redactor",
    "default_redactor",
    "marker",
    "parse_redact",
    "set_redaction_hook",
    "sink_redactor",
]

#: What the secret patterns find, as named in markers and ``ExporterStats.redacted``.
SECRET_KINDS: Final = (
    "api_key",  # OpenAI, Anthropic, Google, GitHub, Slack, Stripe keys
    "aws_access_key_id",
    "aws_secret_key",
    "bearer_token",
    "jwt",
    "private_key",
    "password",  # the password of a URL's user:password@
    "secret",  # the value of a key named like password/secret/token/api_key/authorization
)
#: What the PII patterns find (``INFINIUM_REDACT=secrets,pii``).
PII_KINDS: Final = ("email", "phone", "card", "iban")
#: A string the redaction hook failed on is replaced whole by this kind's marker.
HOOK_ERROR: Final = "hook_error"

#: The hook: ``hook(text, where) -> replacement``; ``where`` names the string's place in the
#: trace (``"steps[2].llm_call.model"``, ``"steps[0].metadata.user"``, a key as ``"...{key}"``).
Hook = Callable[[str, str], str]


def marker(kind: str) -> str:
    """What replaces a value found to be of ``kind``."""
    return f"[REDACTED:{kind}]"


# --- parsing the setting --------------------------------------------------------------------------

_MODES: Final = ("secrets", "pii", "off")


def parse_redact(text: str) -> str:
    """``INFINIUM_REDACT`` read into its normal form: ``"secrets"``, ``"secrets,pii"``, ``"pii"``
    or ``"off"``; anything else is a ``ValueError`` saying what is accepted."""
    words = [word.strip().lower() for word in text.split(",") if word.strip()]
    unknown = [word for word in words if word not in (*_MODES, "all", "none", "default")]
    if unknown or not words:
        raise ValueError("expected a comma-separated list of secrets, pii (or all), or off")
    chosen = set(words)
    if chosen & {"off", "none"}:
        if len(chosen) > 1:
            raise ValueError("off cannot be combined with other values")
        return "off"
    if "all" in chosen:
        chosen |= {"secrets", "pii"}
    if "default" in chosen:
        chosen.add("secrets")
    return ",".join(mode for mode in _MODES if mode in chosen)


# --- the hook -------------------------------------------------------------------------------------

_hook: Hook | None = None


def set_redaction_hook(hook: Hook | None) -> Hook | None:
    """Install ``hook(text, where) -> replacement`` for every trace of the process (every
    exporter, custom sink and ``capture_tasks``); ``None`` removes it.  Returns the one it
    replaced.  It is called on sender threads with each string left after redaction,
    its keys included; what it raises is counted and the string replaced whole."""
    global _hook
    if hook is not None and not callable(hook):
        raise TypeError(f"the redaction hook must be callable, not {type(hook).__name__}")
    previous, _hook = _hook, hook
    return previous


# --- the redactor ---------------------------------------------------------------------------------


class Redactor:
    """Scrubs traces: ``redactor.task(trace)`` returns the trace with every string redacted
    (the same object when nothing was found: the caller's objects are never changed)."""

    def __init__(
        self,
        mode: str = "secrets",
        *,
        secrets: Iterable[str] = (),
        hook: bool = True,
        one_pass: bool = True,
    ) -> None:
        self.mode = parse_redact(mode)
        self._secrets_on = "secrets" in self.mode
        self._pii_on = "pii" in self.mode
        self._use_hook = hook
        # Literal values always removed (the exporter's own agent secret); short ones are
        # left out: they would hit ordinary words.
        self._literals = tuple(s for s in secrets if isinstance(s, str) and len(s) >= 6)
        self._literal_bytes = tuple(s.encode("utf-8", "surrogatepass") for s in self._literals)
        patterns: list[tuple[str, str]] = []
        if self._secrets_on:
            patterns.extend(PATTERNS)
            patterns.extend(
                (kind, renumbered(pattern, index))
                for index, (kind, pattern) in enumerate(KEPT_PREFIX, len(PATTERNS))
            )
        first_pii = len(patterns)
        if self._pii_on:
            patterns.extend(PII)
        self._pattern: re.Pattern[str] | None = None
        self._kinds: list[str] = []
        if patterns:
            self._pattern, self._kinds = combined(patterns, 0)
        self._first_pii = first_pii
        #: The one-pass scan (the fast extra), once a sender compiled it: see prepare().
        self._scan_key: _redact_scan.Key | None = (
            (self._secrets_on, self._pii_on, self._literal_bytes) if one_pass else None
        )
        self._scanner: _redact_scan.Scanner | None = None
        if self._scan_key is not None and (self._secrets_on or self._pii_on or self._literals):
            # Imported here, where the redactor is made (with its exporter, by application
            # code), not on a sender's first trace: an import (any exec of source) on another
            # thread after a KeyboardInterrupt ended the main script makes CPython exit with
            # status 1 instead of by SIGINT.  Compiling stays on a sender (see prepare()).
            _redact_scan.available()
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        _LIVE.add(self)

    @classmethod
    def from_settings(cls, settings: Any) -> Redactor:
        """The redactor of an exporter's settings (its agent secret always included)."""
        return cls(settings.redact, secrets=(settings.agent_secret,))

    def with_secrets(self, *secrets: str) -> Redactor:
        """A new redactor of the same mode that also removes ``secrets`` (a destination's own
        key), with counts of its own."""
        return Redactor(
            self.mode,
            secrets=(*self._literals, *secrets),
            hook=self._use_hook,
            one_pass=self._scan_key is not None,
        )

    def __repr__(self) -> str:
        return f"Redactor(mode={self.mode!r})"

    @property
    def active(self) -> bool:
        """Whether anything can be redacted (``off`` with no agent secret and no hook is not)."""
        return self._pattern is not None or bool(self._literals) or _hook is not None

    def counts(self) -> dict[str, int]:
        """Values redacted so far, by kind (``hook``, ``hook_error`` for the hook's work)."""
        with self._lock:
            return dict(self._counts)

    def _count(self, found: Counter[str]) -> None:
        with self._lock:
            self._counts.update(found)

    # --- strings --------------------------------------------------------------------------

    def text(self, text: str, where: str = "", found: Counter[str] | None = None) -> str:
        """``text`` with what it holds of secrets (and PII) replaced by markers."""
        local = Counter[str]() if found is None else found
        out = self._scrub(text, local)
        hook = _hook if self._use_hook else None
        if hook is not None:
            out = self._hooked(hook, out, where, local)
        if found is None and local:
            self._count(local)
        return out

    def _scrub(self, text: str, found: Counter[str]) -> str:
        for literal in self._literals:
            if literal in text:
                found["secret"] += text.count(literal)
                text = text.replace(literal, marker("secret"))
        pattern = self._pattern
        if pattern is None or len(text) < 6:
            return text
        lowered = text.lower()
        if not (
            (self._secrets_on and (hinted(lowered, SECRET_CHECKS) or hinted(text, RAW_CHECKS)))
            or (self._pii_on and hinted(lowered, PII_CHECKS))
        ):
            return text
        kinds = self._kinds
        first_pii = self._first_pii

        def replace(match: re.Match[str]) -> str:
            name = match.lastgroup
            assert name is not None
            index = int(name[1:])
            kind = kinds[index]
            whole = match.group(0)
            if index >= first_pii and not pii_ok(kind, whole):
                return whole
            groups = match.groupdict()
            value_key = next(
                (key for key in (f"v{index}", f"w{index}") if groups.get(key) is not None), None
            )
            found[kind] += 1
            if value_key is None:
                return marker(kind)
            start, end = match.span(value_key)
            offset = match.start()
            return whole[: start - offset] + marker(kind) + whole[end - offset :]

        out = pattern.sub(replace, text)
        return text if out == text else out

    def _hooked(self, hook: Hook, text: str, where: str, found: Counter[str]) -> str:
        try:
            result = hook(text, where)
        except Exception:
            found[HOOK_ERROR] += 1
            return marker(HOOK_ERROR)
        if type(result) is not str:
            found[HOOK_ERROR] += 1
            return marker(HOOK_ERROR)
        if result != text:
            found["hook"] += 1
        return result

    # --- traces ---------------------------------------------------------------------------

    def clean(self, data: bytes) -> bool:
        """Whether ``data`` (a trace encoded as JSON or MessagePack: strings as UTF-8) surely
        holds nothing to redact, so that the trace it encodes can go as it is.  One scan."""
        if _hook is not None and self._use_hook:
            return False
        scanner = self._scanner
        if scanner is None and self._scan_key is not None:
            scanner = self._scanner = _redact_scan.ready(self._scan_key)
        if scanner is not None:
            return not scanner.hit(data)
        for literal in self._literal_bytes:
            if literal in data:
                return False
        if self._pattern is None:
            return True
        lowered = data.lower()
        if self._secrets_on and (
            hinted(data, RAW_CHECKS_BYTES) or hinted(lowered, SECRET_CHECKS_BYTES)
        ):
            return False
        return not (self._pii_on and hinted(lowered, PII_CHECKS_BYTES))

    def prepare(self) -> None:
        """Make :meth:`clean` one pass when the fast extra is installed (Hyperscan): compiles
        its scanner, once per process, some 10-40 ms.  Sender threads call it; a thread that
        logs never does, and scans with re until a sender has."""
        if self._scan_key is not None:
            _redact_scan.prepare(self._scan_key)
            self._scanner = _redact_scan.ready(self._scan_key)

    def task(self, task: Any) -> Any:
        """``task`` (a TaskData, or what a spool record holds: dicts, lists, strings) with every
        string redacted; the same object when nothing changed."""
        if not self.active:
            return task
        try:
            data = _pack(task)
        except Exception:  # what MessagePack cannot hold is walked
            data = None
        if data is not None and self.clean(data):
            return task
        return self.walk(task)

    def encoded(self, task: Any, body: bytes) -> Any:
        """``task`` redacted, knowing ``body`` encodes it: the same object (and ``body`` still
        right) when the body shows nothing to redact, as is nearly always the case."""
        if not self.active or self.clean(body):
            return task
        return self.walk(task)

    def walk(self, task: Any) -> Any:
        """``task`` with every string redacted, visited one by one (see :meth:`task`)."""
        found: Counter[str] = Counter()
        walker = _Walk(self, found, _hook if self._use_hook else None)
        try:
            result = walker.value(task, "")
        except RecursionError:
            # Nothing this deep can be encoded either: refused, never sent unredacted.
            raise ValidationError("the trace is nested too deeply to be redacted") from None
        if found:
            self._count(found)
        return result


_pack: Final = msgspec.msgpack.Encoder().encode

#: Every redactor, for a fresh lock in a forked child (a sender may hold one at the fork).
_LIVE: weakref.WeakSet[Redactor] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for redactor in list(_LIVE):
        redactor._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


_FIELDS_OF: dict[type, tuple[str, ...]] = {}


class _Walk:
    """One walk over one trace: copies what holds a change, leaves the rest shared."""

    __slots__ = ("found", "hook", "redactor", "scrub")

    def __init__(self, redactor: Redactor, found: Counter[str], hook: Hook | None) -> None:
        self.redactor = redactor
        self.found = found
        self.hook = hook
        self.scrub = redactor._scrub

    def string(self, text: str, where: str) -> str:
        out = self.scrub(text, self.found)
        if self.hook is not None:
            out = self.redactor._hooked(self.hook, out, where, self.found)
        return out

    def value(self, value: Any, where: str) -> Any:
        kind = type(value)
        if kind is str:
            return self.string(value, where)
        if kind is dict:
            return self.mapping(value, where)
        if kind is list or kind is tuple:
            return self.sequence(value, where)
        if isinstance(value, msgspec.Struct):
            return self.struct(value, where)
        if isinstance(value, str):
            return self.string(str(value), where)
        return value

    def sequence(self, items: list[Any] | tuple[Any, ...], where: str) -> Any:
        changed: list[Any] | None = None
        for index, item in enumerate(items):
            new = self.value(item, f"{where}[{index}]")
            if new is not item and changed is None:
                changed = list(items[:index])
            if changed is not None:
                changed.append(new)
        if changed is None:
            return items
        return tuple(changed) if type(items) is tuple else changed

    def mapping(self, items: Mapping[Any, Any], where: str) -> Any:
        changed: dict[Any, Any] | None = None
        prefix = f"{where}." if where else ""
        for position, (key, item) in enumerate(items.items()):
            new_key = key
            if type(key) is str:
                here = prefix + key
                new_key = self.string(key, here + "{key}")
                if type(item) in (str, int, float, bytes) and item != "" and secret_name(key):
                    new: Any = marker("secret")
                    if item != new:
                        self.found["secret"] += 1
                else:
                    new = self.value(item, here)
            else:
                new = self.value(item, f"{prefix}{key!r}")
            if (new is not item or new_key is not key) and changed is None:
                changed = dict(list(items.items())[:position])
            if changed is not None:
                changed[new_key] = new
        return items if changed is None else changed

    def struct(self, value: msgspec.Struct, where: str) -> Any:
        kind = type(value)
        names = _FIELDS_OF.get(kind)
        if names is None:
            names = _FIELDS_OF[kind] = tuple(kind.__struct_fields__)
        changes: dict[str, Any] | None = None
        prefix = f"{where}." if where else ""
        for name in names:
            item = getattr(value, name)
            if item is None or type(item) in (int, float, bool):
                continue
            new = self.value(item, prefix + name)
            if new is not item:
                if changes is None:
                    changes = {}
                changes[name] = new
        if changes is None:
            return value
        return msgspec.structs.replace(value, **changes)


_default: Redactor | None = None
_default_lock = threading.Lock()


def default_redactor() -> Redactor:
    """The redactor of traces that go to ``capture_tasks`` or a sink of one's own, read from
    ``INFINIUM_REDACT`` (and ``INFINIUM_AGENT_SECRET``) once."""
    global _default
    redactor = _default
    if redactor is not None:
        return redactor
    with _default_lock:
        if _default is None:
            text = os.environ.get("INFINIUM_REDACT", "").strip() or "secrets"
            try:
                mode = parse_redact(text)
            except ValueError as exc:
                raise ConfigurationError(
                    f"Invalid INFINIUM_REDACT={text!r}: {exc}", variable="INFINIUM_REDACT"
                ) from None
            secret = os.environ.get("INFINIUM_AGENT_SECRET", "").strip()
            _default = Redactor(mode, secrets=(secret,))
        return _default


def sink_redactor() -> Redactor:
    """:func:`default_redactor`, or when ``INFINIUM_REDACT`` is invalid (said where it is read
    for an exporter or ``capture_tasks``), the strictest one: a trace is never let through
    unredacted for a typo."""
    try:
        return default_redactor()
    except Exception:
        global _default
        with _default_lock:
            if _default is None:
                _default = Redactor("secrets,pii")
            return _default


def _reset_default() -> None:
    """Forget the default redactor (tests that change the environment)."""
    global _default
    with _default_lock:
        _default = None


def redacted_record(
    redactor: Redactor,
    payload: bytes,
    decode: Callable[[bytes], Any],
    encode: Callable[[Any], bytes],
) -> bytes:
    """A spool record's ``payload`` (a trace in the making, encoded) with its strings redacted:
    the same bytes when a scan finds nothing, else decoded, redacted and encoded again."""
    if not redactor.active or redactor.clean(payload):
        return payload
    return encode(redactor.walk(decode(payload)))
