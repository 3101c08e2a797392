"""The ``environment`` the library fills into every trace, and merging it with one given."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from ._version import __version__
from .fields import is_dataclass_object
from .sanitise import _object_fields

__all__ = [
    "environment",
    "merge_environment",
    "structlog_version",
]

_PYTHON_VERSION: Final = platform.python_version()
_RUNTIME: Final = platform.python_implementation()
_EnvKey = tuple[str | None, str | None, tuple[tuple[str, str], ...], str | None]
_env_cache: dict[_EnvKey, dict[str, Any]] = {}
_ENV_CACHE_MAX: Final = 4096


@functools.cache
def structlog_version() -> str | None:
    """structlog's version, for the traces of structlog events (from its metadata: the
    stdlib handler reads bridged events without importing structlog)."""
    try:
        return importlib.metadata.version("structlog")
    except Exception:  # not installed, or an unusual installation: the version is optional
        return None


def environment(
    framework: str | None,
    logger_name: str | None,
    tags: tuple[tuple[str, str], ...],
    framework_version: str | None = None,
) -> dict[str, Any]:
    """The ``environment`` the library fills in, as a dict shared between traces (never mutate it).

    ``custom_tags`` are ``INFINIUM_TAGS`` plus ``logger`` (the logger's name).
    """
    key = (framework, logger_name, tags, framework_version)
    found = _env_cache.get(key)
    if found is not None:
        return found
    custom = dict(tags)
    if logger_name:
        custom.setdefault("logger", logger_name)
    env: dict[str, Any] = {
        "python_version": _PYTHON_VERSION,
        "runtime": _RUNTIME,
        "sdk_version": __version__,
    }
    if framework is not None:
        env["framework"] = framework
    if framework_version is not None:
        env["framework_version"] = framework_version
    if custom:
        env["custom_tags"] = custom
    if len(_env_cache) >= _ENV_CACHE_MAX:
        _env_cache.clear()  # many distinct logger names: rebuild rather than grow
    _env_cache[key] = env
    return env


def _as_dict(value: object) -> dict[str, Any] | None:
    if type(value) is dict:
        return value.copy()
    if isinstance(value, Mapping):
        try:
            return dict(value)
        except Exception:  # a mapping that cannot be read: as if it were not one
            return None
    if isinstance(value, msgspec.Struct):
        return {name: getattr(value, name) for name in value.__struct_fields__}
    if is_dataclass_object(value):  # the official client's EnvironmentContext
        return _object_fields(value)
    return None


def merge_environment(given: object, filled: Mapping[str, Any]) -> Any:
    """``given`` with the library's values added where it has none (``custom_tags`` key by key)."""
    if given is None:
        return filled
    mine = _as_dict(given)
    if mine is None:
        return given  # not readable here: lenient coercion decides
    for key, value in filled.items():
        if key == "custom_tags":
            tags = _as_dict(mine.get("custom_tags"))
            if tags is None:
                mine["custom_tags"] = value
            else:
                for tag, text in value.items():
                    tags.setdefault(tag, text)
                mine["custom_tags"] = tags
        elif mine.get(key) is None:
            mine[key] = value
    return mine
