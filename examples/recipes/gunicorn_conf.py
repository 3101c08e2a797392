"""gunicorn settings of the recipe: ``gunicorn -c gunicorn_conf.py wsgi_app:app``.

``logconfig_dict`` is applied by gunicorn with ``dictConfig`` on top of its own
defaults; it needs a ``root`` entry of its own (gunicorn's defaults define one
that would otherwise take the root logger).  With ``preload_app`` the
application is imported once in the master, before the workers are forked:
each worker gets an exporter of its own on its first trace, and at its exit
(SIGTERM to the master stops every worker gracefully) delivers what it holds
within ``INFINIUM_SHUTDOWN_TIMEOUT``, keeping the rest on disk for the next start.
"""

from __future__ import annotations

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = 2
preload_app = True
# Long enough for the exporter's own deadline (INFINIUM_SHUTDOWN_TIMEOUT, 5 s by default).
graceful_timeout = 30

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["console"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["console"], "propagate": False},
        "shop": {"level": "INFO", "handlers": ["infinium"], "propagate": False},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "infinium": {"class": "infinium_logging.InfiniumHandler", "level": "INFO"},
    },
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
}
