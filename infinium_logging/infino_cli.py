"""The ``infino-query`` and ``infino-datasets`` commands: SQL over traces, and their datasets."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, Final, TypeAlias

import msgspec

from .errors import ConfigurationError, InfiniumError
from .infino_client import InfinoClient
from .infino_settings import InfinoSettings

__all__ = ["add_infino_datasets", "add_infino_query", "format_table", "table_of"]

_Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
_PROG: Final = "infinium-logging"
#: Widest a table cell is shown (longer text is cut with an ellipsis).
_MAX_CELL: Final = 60

_QUERY_EXAMPLE: Final = (
    "SELECT DATE_TRUNC('day', \"@timestamp\") AS day, models, SUM(prompt_tokens) AS prompt "
    'FROM "infinium-traces" GROUP BY day, models'
)


def add_infino_query(commands: _Commands) -> None:
    """Register ``infino-query``."""
    parser = commands.add_parser(
        "infino-query",
        help="run an SQL query against the configured Infino and print the rows",
        description=(
            "Run an SQL query against Infino (INFINIUM_INFINO_ENDPOINT, _ACCESS_KEY, "
            f"_SECRET_KEY) and print the rows as a table. Example: {_QUERY_EXAMPLE}"
        ),
    )
    parser.add_argument("sql", help="the query; the traces are in INFINIUM_INFINO_DATASET")
    parser.add_argument("--json", action="store_true", help="print Infino's answer as JSON")
    parser.set_defaults(run=_query)


def add_infino_datasets(commands: _Commands) -> None:
    """Register ``infino-datasets``."""
    parser = commands.add_parser(
        "infino-datasets",
        help="create the Infino dataset(s) traces are written to",
        description=(
            "Create INFINIUM_INFINO_DATASET (default infinium-traces) and, when set, "
            "INFINIUM_INFINO_STEPS_DATASET; a dataset that already exists is left as it is."
        ),
    )
    parser.set_defaults(run=_datasets)


def _client(command: str) -> InfinoClient | int:
    try:
        return InfinoClient(InfinoSettings.from_env())
    except ConfigurationError as exc:
        return _fail(command, str(exc), 2)


def _query(args: argparse.Namespace) -> int:
    client = _client("infino-query")
    if isinstance(client, int):
        return client
    try:
        answer = client.sql(args.sql)
    except InfiniumError as exc:
        return _fail("infino-query", str(exc), 1)
    finally:
        client.close()
    if args.json:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(answer)).decode() + "\n")
        return 0
    columns, rows = table_of(answer)
    sys.stdout.write(format_table(columns, rows))
    total = answer.get("total")
    shown = len(rows)
    suffix = f" of {total}" if isinstance(total, int) and total != shown else ""
    sys.stdout.write(f"({shown}{suffix} row{'s' if shown != 1 else ''})\n")
    return 0


def _datasets(args: argparse.Namespace) -> int:
    client = _client("infino-datasets")
    if isinstance(client, int):
        return client
    try:
        for dataset in client.settings.datasets:
            created = client.create_dataset(dataset)
            print(f"{dataset}: {'created' if created else 'already exists'}")
    except InfiniumError as exc:
        return _fail("infino-datasets", str(exc), 1)
    finally:
        client.close()
    return 0


def table_of(answer: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Column names and rows of an SQL answer: rows as lists (the API's spec) or as objects
    keyed by column."""
    columns = [
        str(column.get("name", "")) if isinstance(column, dict) else str(column)
        for column in _list(answer, "columns")
    ]
    rows: list[list[Any]] = []
    for row in _list(answer, "rows"):
        if isinstance(row, dict):
            columns += [str(key) for key in row if str(key) not in columns]
            rows.append([row.get(name) for name in columns])
        else:
            rows.append(row if isinstance(row, list) else [row])
    return columns, rows


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """``rows`` under ``columns`` as an aligned text table (numbers right-aligned)."""
    cells = [[_cell(value) for value in row] for row in rows]
    width = max([len(columns)] + [len(row) for row in cells])
    names = list(columns) + [""] * (width - len(columns))
    widths = [len(name) for name in names]
    for row in cells:
        for index, text in enumerate(row):
            widths[index] = max(widths[index], len(text))
    numeric = [
        all(isinstance(row[i], (int, float)) for row in rows if i < len(row) and row[i] is not None)
        for i in range(width)
    ]
    lines = [" | ".join(name.ljust(widths[i]) for i, name in enumerate(names)).rstrip()]
    lines.append("-+-".join("-" * w for w in widths))
    for row in cells:
        padded = row + [""] * (width - len(row))
        lines.append(
            " | ".join(
                text.rjust(widths[i]) if numeric[i] else text.ljust(widths[i])
                for i, text in enumerate(padded)
            ).rstrip()
        )
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    text = text.replace("\n", " ")
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 1] + "…"


def _list(answer: dict[str, Any], key: str) -> list[Any]:
    value = answer.get(key)
    return value if isinstance(value, list) else []


def _fail(command: str, message: str, code: int) -> int:
    print(f"{_PROG} {command}: {message}", file=sys.stderr)
    return code
