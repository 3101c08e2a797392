"""No credentials anywhere: export off with one warning, unless they are required."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any, Final

from .errors import ConfigurationError, ConfigurationWarning
from .settings import ENV_PREFIX, Settings

__all__ = ["CREDENTIAL_VARIABLES", "settings_or_off"]


#: The variables without which nothing can be sent.
CREDENTIAL_VARIABLES: Final = (f"{ENV_PREFIX}AGENT_ID", f"{ENV_PREFIX}AGENT_SECRET")
_warned_no_credentials: list[bool] = []


def settings_or_off(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """:meth:`Settings.from_env`, except that no credentials at all switch export off.

    A developer's machine or a CI job without ``INFINIUM_*`` variables must be
    able to run the application (a logging handler in Django's settings runs at
    every ``manage.py`` command): with neither an agent id nor a secret given
    anywhere, the settings come back ``disabled`` with one
    :class:`~infinium_logging.errors.ConfigurationWarning` per process.
    ``INFINIUM_REQUIRED=true`` (or ``required=True``) makes it the error it is
    otherwise; one credential without the other, or any wrong value, always is.
    """
    env = os.environ if environ is None else environ
    try:
        return Settings.from_env(env, **overrides)
    except ConfigurationError as exc:
        if exc.variable not in CREDENTIAL_VARIABLES or any(
            overrides.get(name) or env.get(f"{ENV_PREFIX}{name.upper()}", "").strip()
            for name in ("agent_id", "agent_secret")
        ):
            raise
        off = Settings.from_env(env, **{**overrides, "disabled": True})
        if off.required:
            raise
    if not _warned_no_credentials:
        _warned_no_credentials.append(True)
        warnings.warn(
            f"No Infinium credentials: export is off and traces are counted as 'disabled'. "
            f"Set {CREDENTIAL_VARIABLES[0]} and {CREDENTIAL_VARIABLES[1]} to send them, "
            f"{ENV_PREFIX}DISABLED=true to say off on purpose (and silence this), or "
            f"{ENV_PREFIX}REQUIRED=true to make missing credentials an error.",
            ConfigurationWarning,
            stacklevel=3,
        )
    return off
