"""The ``infino-query`` and ``infino-datasets`` commands against the local Infino endpoint."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from infino_server import ACCESS_KEY, SECRET_KEY, InfinoServer, running

from infinium_logging.cli import main
from infinium_logging.infino_cli import format_table, table_of
from infinium_logging.infino_client import InfinoClient
from infinium_logging.infino_rows import bulk_entry
from infinium_logging.infino_settings import InfinoSettings


@pytest.fixture
def infino(monkeypatch: pytest.MonkeyPatch) -> Iterator[InfinoServer]:
    """A local Infino endpoint, and INFINIUM_INFINO_* pointing at it (nothing else set)."""
    for name in list(os.environ):
        if name.startswith("INFINIUM_"):
            monkeypatch.delenv(name)
    for server in running():
        monkeypatch.setenv("INFINIUM_INFINO_ENDPOINT", server.url)
        monkeypatch.setenv("INFINIUM_INFINO_ACCESS_KEY", ACCESS_KEY)
        monkeypatch.setenv("INFINIUM_INFINO_SECRET_KEY", SECRET_KEY)
        yield server


def test_query_prints_a_table(infino: InfinoServer, capsys: pytest.CaptureFixture[str]) -> None:
    """The rows come back as an aligned table with a row count."""
    client = InfinoClient(InfinoSettings.from_env())
    client.bulk(
        "infinium-traces",
        bulk_entry("a", {"model": "gpt-4o", "prompt_tokens": 1200})
        + bulk_entry("b", {"model": "claude-x", "prompt_tokens": 7}),
    )
    assert main(["infino-query", 'SELECT * FROM "infinium-traces"']) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["model", "|", "prompt_tokens"]
    assert out[2] == "gpt-4o   |          1200"
    assert out[3] == "claude-x |             7"
    assert out[-1] == "(2 rows)"
    assert infino.sql_queries == ['SELECT * FROM "infinium-traces"']


def test_query_as_json(infino: InfinoServer, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints Infino's answer as it is."""
    assert main(["infino-query", "--json", 'SELECT * FROM "nothing"']) == 0
    assert '"rows": []' in capsys.readouterr().out


def test_datasets_are_created_once(
    infino: InfinoServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both datasets are created; a second run says they exist."""
    monkeypatch.setenv("INFINIUM_INFINO_STEPS_DATASET", "infinium-steps")
    assert main(["infino-datasets"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "infinium-traces: created",
        "infinium-steps: created",
    ]
    assert main(["infino-datasets"]) == 0
    assert "infinium-traces: already exists" in capsys.readouterr().out


def test_missing_configuration_names_the_variable(
    infino: InfinoServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without an endpoint the command says which variable to set, and exits 2."""
    monkeypatch.delenv("INFINIUM_INFINO_ENDPOINT")
    assert main(["infino-query", "SELECT 1"]) == 2
    assert "INFINIUM_INFINO_ENDPOINT" in capsys.readouterr().err


def test_refused_keys_exit_1_without_the_secret(
    infino: InfinoServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong secret is exit 1 and a message naming the variables, never the secret."""
    monkeypatch.setenv("INFINIUM_INFINO_SECRET_KEY", "not-the-right-secret")
    assert main(["infino-datasets"]) == 1
    err = capsys.readouterr().err
    assert "INFINIUM_INFINO_SECRET_KEY" in err and "not-the-right-secret" not in err


def test_table_of_rows_as_objects() -> None:
    """Rows given as objects keyed by column become table rows too."""
    columns, rows = table_of({"rows": [{"a": 1, "b": None}, {"a": 2, "c": "x"}]})
    assert columns == ["a", "b", "c"]
    assert rows == [[1, None], [2, None, "x"]]
    assert format_table(columns, rows).splitlines()[-1] == "2 |   | x"
