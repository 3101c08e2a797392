"""The benchmark entry point: every figure in one run, one table, and the same table as JSON.

    python benchmarks/run.py [--quick] [--rounds N] [--json PATH] [--compare PATH]
                             [--server auto|nginx|collector] [--only 1,5,7]

Ratios are measured within each round, the two sides interleaved, because the
machine may be shared and absolute times drift; the table gives each figure's
median over the rounds with its spread (min-max), the target and PASS/MISS.
``--quick`` runs the same code paths with few iterations (CI runs it so that
the benchmarks never rot; its numbers mean little).  The table is written to
``benchmarks/results/latest.json`` (``latest-quick.json`` in quick mode, so that a
quick run never replaces the last full one) and, with ``--json``, to PATH as well;
``--compare`` an earlier JSON shows each figure then and now (e.g. between versions).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    # Run as a script: import the helpers as the ``benchmarks`` package, from the repository
    # root, and drop the script's own directory from the path so that none of their names
    # can shadow a module of the standard library.
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path[0] = str(_ROOT)
    else:
        sys.path.insert(0, str(_ROOT))

from benchmarks import caller, codec, delivery, infino, memory, otel, redaction  # noqa: E402
from benchmarks.common import Plan  # noqa: E402
from benchmarks.nginx import find_nginx, local_server  # noqa: E402
from benchmarks.timing import Pair, Row, Summary  # noqa: E402

RESULTS = _ROOT / "benchmarks" / "results"
FIGURES = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13")


# --- the machine ----------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _nginx_version() -> str | None:
    executable = find_nginx()
    if executable is None:
        return None
    completed = subprocess.run([executable, "-v"], capture_output=True, text=True, check=False)
    return (completed.stderr or completed.stdout).strip().replace("nginx version: ", "") or None


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": {
            name: _version(name)
            for name in ("infinium-logging", "infinium-o2", "msgspec", "structlog", "urllib3")
        },
        "nginx": _nginx_version(),
    }


# --- the table ------------------------------------------------------------------------------


def _number(value: float) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio(value: float) -> str:
    # Ratios near a target such as 1.05x need the third decimal to show which side they are on.
    return f"{value:.3f}" if abs(value) < 10 else _number(value)


def _cell(summary: Summary | None, unit: str, number: Callable[[float], str] = _number) -> str:
    if summary is None:
        return "—"
    text = f"{number(summary.median)} {unit}".strip()
    if len(summary.samples) > 1 and summary.max != summary.min:
        text += f" ({number(summary.min)}\N{EN DASH}{number(summary.max)})"
    return text


def _result(row: Row) -> str:
    if row.passed is None:
        return "info" if row.target == "—" else "n/a"
    return "PASS" if row.passed else "**MISS**"


def table(rows: Sequence[Row]) -> str:
    """The results as a Markdown table (readable in a terminal, ready for the README)."""
    header = ("#", "figure", "ours", "compared with", "baseline", "ratio", "target", "result")
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for row in rows:
        unit = row.unit
        value_unit = row.value_unit
        cells = (
            row.id,
            row.figure,
            _cell(row.ours, unit),
            row.baseline_label,
            _cell(row.baseline, unit),
            _cell(row.value, value_unit, _ratio if value_unit.startswith("x") else _number),
            row.target,
            _result(row),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _notes(rows: Sequence[Row]) -> str:
    return "\n".join(f"- {row.id}: {row.note}" for row in rows if row.note)


def comparison(rows: Sequence[Row], previous: dict[str, Any]) -> str:
    """Each row's compared value next to the same row of an earlier run's JSON."""
    before = {row["id"]: row for row in previous.get("rows", [])}
    version = previous.get("machine", {}).get("versions", {}).get("infinium-logging")
    lines = [
        f"Compared with {previous.get('generated', '?')} ({previous.get('mode', '?')} run, "
        f"infinium-logging {version}):",
        "",
        "| # | then | now | result then | result now |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        old = before.get(row.id)
        then = "—"
        verdict = "—"
        if old is not None and old.get("value") is not None:
            then = f"{_number(old['value']['median'])} {old.get('value_unit', '')}".strip()
            passed = old.get("passed")
            verdict = "info" if passed is None else ("PASS" if passed else "MISS")
        now = _cell(row.value, row.value_unit).split(" (")[0]
        lines.append(f"| {row.id} | {then} | {now} | {verdict} | {_result(row).strip('*')} |")
    return "\n".join(lines)


# --- running --------------------------------------------------------------------------------


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Run every benchmark figure and print one table (also written as JSON).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a few seconds: same code, few iterations"
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds per figure")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write the JSON here (it always goes to benchmarks/results/latest.json)",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        default=None,
        metavar="PATH",
        help="an earlier run's JSON: print each figure's value then and now",
    )
    parser.add_argument(
        "--server",
        choices=("auto", "nginx", "collector"),
        default="auto",
        help="trace server of figures 6-8: nginx when installed (auto), or the local collector",
    )
    parser.add_argument(
        "--only", default=None, metavar="LIST", help="comma-separated figures to run, e.g. 1,5,7"
    )
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.compare is not None and not args.compare.is_file():
        parser.error(f"--compare: no such file: {args.compare}")
    if args.server == "nginx" and find_nginx() is None:
        parser.error("--server nginx: nginx is not installed")
    if args.only is not None:
        chosen = [part.strip() for part in args.only.split(",") if part.strip()]
        unknown = [part for part in chosen if part not in FIGURES]
        if unknown:
            parser.error(f"unknown figure(s): {', '.join(unknown)}")
        args.only = set(chosen)
    return args


def run(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks; 0 when every figure could be measured (targets met or not)."""
    args = _parse(argv)
    plan = Plan.quick_run(args.rounds) if args.quick else Plan.full(args.rounds)
    wanted = set(FIGURES) if args.only is None else args.only
    started = time.monotonic()
    info = machine()
    rows: list[Row] = []
    errors: dict[str, str] = {}
    figure_2_pair: list[Pair] = []

    with local_server(prefer_nginx=args.server != "collector") as server:
        mode = "quick" if plan.quick else "full"
        print(
            f"infinium-logging benchmarks ({mode}, {plan.rounds} rounds) on "
            f"{info['cpus']} x {info['cpu_model']}, Python {info['python']}; "
            f"trace server: {server.kind} on 127.0.0.1",
            flush=True,
        )

        def figure_2() -> list[Row]:
            result, pair = caller.figure_2(plan, server.base_url)
            figure_2_pair.append(pair)
            return result

        steps: list[tuple[str, Callable[[], list[Row]]]] = [
            ("5", lambda: codec.figure_5(plan)),
            ("1", lambda: caller.figure_1(plan, server.base_url)),
            ("2", figure_2),
            ("3", lambda: caller.figure_3(plan, server.base_url)),
            ("4", lambda: caller.figure_4(plan, server.base_url)),
            (
                "10",
                lambda: caller.figure_10(
                    plan, server.base_url, figure_2_pair[0] if figure_2_pair else None
                ),
            ),
            ("12", lambda: otel.figure_12(plan, server.base_url)),
            ("6", lambda: delivery.figure_6(plan, server.base_url)),
            ("7", lambda: delivery.figure_7(plan, server.base_url, server.kind)),
            ("8", lambda: delivery.figure_8(plan, server.base_url)),
            ("9", lambda: memory.figure_9(plan)),
            ("11", lambda: infino.figure_11(plan)),
            ("13", lambda: redaction.figure_13(plan)),
        ]
        for name, step in steps:
            if name not in wanted:
                continue
            begun = time.monotonic()
            try:
                produced = step()
            except Exception:
                errors[name] = traceback.format_exc()
                problem = server.problem()
                if problem is not None:
                    errors[name] += f"\n{problem}"
                print(f"figure {name} FAILED:\n{errors[name]}", file=sys.stderr, flush=True)
                continue
            rows.extend(produced)
            print(f"  figure {name}: {time.monotonic() - begun:.1f} s", flush=True)
        server_kind = server.kind

    rows.sort(key=lambda row: (int(row.id.split()[0].rstrip("abc")), row.id))
    print()
    print(table(rows))
    notes = _notes(rows)
    if notes:
        print()
        print(notes)
    if args.compare is not None:
        print()
        print(comparison(rows, json.loads(args.compare.read_text(encoding="utf-8"))))
    missed = [row.id for row in rows if row.passed is False]
    elapsed = time.monotonic() - started
    print()
    which = f": {', '.join(missed)}" if missed else ""
    print(
        f"{len(rows)} rows, {len(missed)} missed target(s){which}; "
        f"{len(errors)} figure(s) failed; {elapsed:.0f} s"
    )

    document = {
        "schema": 1,
        "generated": _dt.datetime.now(tz=_dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if plan.quick else "full",
        "rounds": plan.rounds,
        "plan": dataclasses.asdict(plan),
        "server": server_kind,
        "machine": info,
        "command": "python benchmarks/run.py" + (" --quick" if plan.quick else ""),
        "elapsed_seconds": round(elapsed, 1),
        "rows": [row.as_json() for row in rows],
        "errors": errors,
    }
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    default = RESULTS / ("latest-quick.json" if plan.quick else "latest.json")
    targets = [default] + ([args.json] if args.json is not None else [])
    for path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    print(f"JSON written to {', '.join(str(p) for p in targets)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(run())
