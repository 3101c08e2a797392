"""Celery worker and beat, with logging configured by Celery's ``setup_logging`` signal.

    celery -A celery_app worker --loglevel INFO     # and: celery -A celery_app beat

The broker here is kombu's ``filesystem://`` transport (a folder; no server) so that
the recipe runs anywhere; use your Redis or RabbitMQ URL in ``CELERY_BROKER_URL``.
Each task's run is one trace (``task()``).  Prefork children each get an exporter of
their own; at a warm shutdown (SIGTERM) every process delivers what it holds within
``INFINIUM_SHUTDOWN_TIMEOUT`` and keeps the rest on disk for the next start.  See
docs/recipes/celery.md.
"""

from __future__ import annotations

import logging
import logging.config
import os
import tempfile
from typing import Any

from celery import Celery
from celery.signals import setup_logging

from infinium_logging import task

BROKER_DIR = os.environ.get("CELERY_BROKER_DIR") or os.path.join(
    tempfile.gettempdir(), "infinium-celery-recipe"
)
os.makedirs(BROKER_DIR, exist_ok=True)

app = Celery("celery_app", broker=os.environ.get("CELERY_BROKER_URL", "filesystem://"))
app.conf.update(
    broker_transport_options={
        "data_folder_in": BROKER_DIR,
        "data_folder_out": BROKER_DIR,
        "control_folder": os.path.join(BROKER_DIR, "control"),
    },
    beat_schedule={"heartbeat": {"task": "celery_app.heartbeat", "schedule": 0.5}},
    broker_connection_retry_on_startup=True,
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "infinium": {"class": "infinium_logging.InfiniumHandler", "level": "INFO"},
    },
    "root": {"level": "INFO", "handlers": ["console"]},
    "loggers": {"reports": {"level": "INFO", "handlers": ["infinium"], "propagate": False}},
}

log = logging.getLogger("reports")


@setup_logging.connect  # type: ignore[untyped-decorator]
def configure_logging(**kwargs: Any) -> None:
    """Connected, this replaces Celery's own logging set-up (in the worker and in beat)."""
    logging.config.dictConfig(LOGGING)


@app.task  # type: ignore[untyped-decorator]  # Celery ships no type information
def summarise(number: int) -> int:
    """One report summarised: one trace, its log lines the steps."""
    with task(f"summarise {number}", input_summary=f"report {number}"):
        log.info("read report %d", number)
        log.info("wrote summary of report %d", number)
    return number


@app.task  # type: ignore[untyped-decorator]  # Celery ships no type information
def heartbeat() -> None:
    """Sent by beat on a schedule: a tagged event, one trace each."""
    log.info("still alive", extra={"infinium": {"name": "heartbeat"}})
