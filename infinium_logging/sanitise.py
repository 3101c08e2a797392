"""Sanitising: JSON-safe copies of anything, truncation, and text for objects that resist it."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import enum
import math
import uuid
from collections.abc import Mapping
from typing import Any, Final

import msgspec

__all__ = ["MAX_FREEFORM_STRING", "TRUNCATION_MARK", "json_safe", "truncate"]

#: Appended to every string the library shortens, so a reader can see it was cut.
TRUNCATION_MARK: Final = "…[truncated]"
#: Longest string kept inside free-form values (metadata) built from log events.
MAX_FREEFORM_STRING: Final = 8_192
#: Deepest nesting a copy keeps.
MAX_DEPTH: Final = 16


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters, visibly marked."""
    if len(text) <= limit:
        return text
    if limit <= len(TRUNCATION_MARK):
        return text[:limit]
    return text[: limit - len(TRUNCATION_MARK)] + TRUNCATION_MARK


def _clean_str(text: str, limit: int | None) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates cannot be encoded as UTF-8: pair what pairs, replace the rest.
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if limit is not None and len(text) > limit:
        text = truncate(text, limit)
    return text


def _safe_repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not break logging
        return f"<unrepresentable {type(value).__name__}>"
    return text if type(text) is str else str.__str__(text)


class _Unreadable(str):
    """The text (a repr) standing for a value that raised while it was read.

    It stays this type inside the copies made for traces, so that lenient
    reading can report each one, with its path, as a value it replaced; the
    copies :func:`json_safe` returns hold plain ``str`` instead.
    """

    reason: str


#: Put in the set of containers being copied (the ``seen`` of _json_safe) once an unreadable
#: value was met: never the id() of an object, which is an address.  A plain set with a flag
#: in it, rather than a subclass with an attribute, keeps its methods as fast as a set's.
_UNREADABLE: Final = -1


def _unreadable(value: object, error: Exception, limit: int | None, seen: set[int]) -> _Unreadable:
    seen.add(_UNREADABLE)
    marker = _Unreadable(_clean_str(_safe_repr(value), limit))
    # Only type names: the exception's own text could raise again.
    marker.reason = (
        f"could not be read ({type(error).__name__} from {type(value).__name__}), sent as its repr"
    )
    return marker


def json_safe(value: Any, *, max_string: int | None = MAX_FREEFORM_STRING) -> Any:
    """Return a copy of ``value`` made only of JSON types, never raising.

    Dicts get string keys; tuples and sets become lists; Structs and
    dataclasses become dicts; NaN and infinities become ``None``, ``None``
    values are dropped from dicts and lists (the wire carries no nulls), and a
    dict or list left empty by dropping them is dropped too (``None`` when it
    is ``value`` itself; one given empty stays); strings are cleaned of lone
    surrogates and cut to ``max_string``; anything else becomes its ``repr``,
    and so does a value that raises while it is read (``items()``,
    ``__iter__``, ``__float__``...): a failing ``repr`` gives
    ``<unrepresentable TYPE>``.  Cycles and very deep nesting are cut with a
    marker.
    """
    seen: set[int] = set()
    copy = _json_safe(value, max_string, 0, seen)
    return _plain_text(copy) if _UNREADABLE in seen else copy


def _marked_copy(value: Any, max_string: int | None = MAX_FREEFORM_STRING) -> Any:
    """:func:`json_safe`, but unreadable values stay marked, for lenient reading to report."""
    return _json_safe(value, max_string, 0, set())


def _plain_text(copy: Any) -> Any:
    """``copy`` (made by _json_safe) with its unreadable values as plain ``str``."""
    if type(copy) is _Unreadable:
        return str.__str__(copy)
    if type(copy) is dict:
        for key, item in copy.items():
            if type(item) is _Unreadable or type(item) is dict or type(item) is list:
                copy[key] = _plain_text(item)
    elif type(copy) is list:
        for index, item in enumerate(copy):
            if type(item) is _Unreadable or type(item) is dict or type(item) is list:
                copy[index] = _plain_text(item)
    return copy


#: Every int below this in magnitude can be written as JSON: Python refuses to turn an int
#: of more than ``sys.get_int_max_str_digits()`` digits into text (4,300 by default, 640 at
#: the least), and one such int anywhere would make the whole trace impossible to encode.
_SURE_INT: Final = 10**600


def _int_text_fits(value: int) -> bool:
    """Whether ``value`` (an int) can be written as decimal text under the interpreter's limit."""
    if -_SURE_INT < value < _SURE_INT:
        return True
    try:
        int.__repr__(value)
    except ValueError:
        return False
    return True


def _huge_int(value: int) -> str:
    """What stands for an int too long to be written as text."""
    digits = int(value.bit_length() * math.log10(2)) + 1
    return f"<int of about {digits} digits>"


def _json_safe(value: Any, limit: int | None, depth: int, seen: set[int]) -> Any:
    kind = type(value)
    if value is None or kind is bool:
        return value
    if kind is int:
        return (
            value if -_SURE_INT < value < _SURE_INT or _int_text_fits(value) else _huge_int(value)
        )
    if kind is str:
        return _clean_str(value, limit)
    if kind is float:
        return value if math.isfinite(value) else None
    # From here on the value's own methods run (__index__, __float__, items, __iter__,
    # __lt__, isoformat...), and any of them may raise: that costs this value alone.
    try:
        if isinstance(value, (bool, int)) and not isinstance(value, enum.Enum):
            number = int(value)
            return number if type(value) is bool or _int_text_fits(number) else _huge_int(number)
        if isinstance(value, float):
            real = float(value)
            return real if math.isfinite(real) else None
        if isinstance(value, str) and not isinstance(value, enum.Enum):
            if kind is _Unreadable:  # made by an earlier copy: keep it marked
                seen.add(_UNREADABLE)
                return value
            return _clean_str(str.__str__(value), limit)
        if depth >= MAX_DEPTH:
            return "<too deep>"
        if isinstance(value, (dict, list, tuple, set, frozenset, Mapping)):
            marker = id(value)
            if marker in seen:
                return "<recursive>"
            seen.add(marker)
            try:
                if isinstance(value, Mapping):
                    pairs = list(value.items())
                    out: dict[str, Any] = {}
                    for key, item in pairs:
                        safe = _json_safe(item, limit, depth + 1, seen)
                        if safe is not None:
                            name = key if type(key) is str else _key_text(key)
                            out[_clean_str(name, 256)] = safe
                    # Emptied by dropping nulls: left out as a whole, as a null would be.
                    return out if out or not pairs else None
                items = list(value)
                if isinstance(value, (set, frozenset)):
                    # Unorderable members (or a __lt__ that raises) keep their iteration order.
                    with contextlib.suppress(Exception):
                        items.sort()
                converted = (_json_safe(item, limit, depth + 1, seen) for item in items)
                kept = [item for item in converted if item is not None]
                return kept if kept or not items else None
            finally:
                seen.discard(marker)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return _clean_str(bytes(value).decode("utf-8", "replace"), limit)
        if isinstance(value, msgspec.Struct) or (
            dataclasses.is_dataclass(value) and not isinstance(value, type)
        ):
            return _json_safe(_object_fields(value), limit, depth, seen)
        if isinstance(value, enum.Enum):
            return _json_safe(value.value, limit, depth + 1, seen)
        if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
            return _clean_str(value.isoformat(), limit)
        if isinstance(value, uuid.UUID):
            return str(value)
        if isinstance(value, BaseException):
            return _clean_str(f"{type(value).__name__}: {_safe_str(value)}", limit)
    except Exception as error:
        return _unreadable(value, error, limit, seen)
    return _clean_str(_safe_repr(value), limit)


def _safe_str(value: object) -> str:
    try:
        text = str(value)
    except Exception:
        return _safe_repr(value)
    return text if type(text) is str else str.__str__(text)


def _key_text(key: object) -> str:
    if isinstance(key, enum.Enum):
        key = key.value
    if type(key) is str:
        return key
    return str.__str__(key) if isinstance(key, str) else _safe_str(key)


def _object_fields(value: Any) -> dict[str, Any]:
    if isinstance(value, msgspec.Struct):
        return {name: getattr(value, name) for name in value.__struct_fields__}
    fields = {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    # The official client's TraceBuilder links Prompt Studio prompts through an attribute
    # that is no dataclass field; its body carries it as ``prompt_studio``.
    linked = getattr(value, "_prompt_studio", None)
    if linked is not None and "prompt_studio" not in fields:
        fields["prompt_studio"] = linked
    return fields
