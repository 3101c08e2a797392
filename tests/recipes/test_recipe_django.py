"""The Django recipe: the handler in settings.LOGGING never stops a manage.py command, and a
request's trace arrives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from exit_support import RECIPES, child_env, names

from infinium_logging.collector import LocalCollector

SITE = RECIPES / "django_site"


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``manage.py`` of the recipe site."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=SITE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_manage_check_runs_without_credentials(tmp_path: Path) -> None:
    """On a machine without INFINIUM_*, ``manage.py check`` exits 0, with the one warning
    saying what to set; with INFINIUM_REQUIRED=true it fails naming the variable."""
    done = manage("check", env=child_env(None, tmp_path / "cache"))
    assert done.returncode == 0, done.stderr
    assert "System check identified no issues" in done.stdout
    assert done.stderr.count("No Infinium credentials") == 1

    required = manage("check", env=child_env(None, tmp_path / "cache", INFINIUM_REQUIRED="true"))
    assert required.returncode != 0
    assert "INFINIUM_AGENT_ID" in required.stderr


def test_a_request_is_traced(tmp_path: Path, infinium_collector: LocalCollector) -> None:
    """A request through Django's test client logs one tagged event: its trace arrives."""
    request = (
        "from django.test import Client; assert Client().get('/orders/7').json() == {'order': 7}"
    )
    done = manage("shell", "-c", request, env=child_env(infinium_collector, tmp_path / "cache"))
    assert done.returncode == 0, done.stderr
    assert names(infinium_collector) == {"order 7"}
