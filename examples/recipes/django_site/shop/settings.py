"""Django settings of the recipe site: what matters for Infinium is ``LOGGING``.

The handler reads ``INFINIUM_*`` from the environment.  On a machine without
them (a laptop, CI) it switches itself off with one warning instead of failing
every ``manage.py`` command; set ``INFINIUM_REQUIRED=true`` in production to
make missing credentials an error at start-up.
"""

from __future__ import annotations

from typing import Any

SECRET_KEY = "recipe-only-not-a-secret"  # an example site's placeholder
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "shop.urls"
DATABASES: dict[str, Any] = {}
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "console": {"class": "logging.StreamHandler"},
        "infinium": {"class": "infinium_logging.InfiniumHandler", "level": "INFO"},
    },
    "loggers": {
        # Named loggers only, as Django projects do: the library still says what goes wrong
        # (on stderr, once) when no handler would show its own warnings.
        "shop": {"handlers": ["console", "infinium"], "level": "INFO", "propagate": False},
    },
}
