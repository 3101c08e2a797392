"""The README and docs/ as a reader meets them: every relative link and #anchor resolves (as a
code host renders them), every page says first what a reader comes for, the front page stays
short and CI still finds its test command there."""

from __future__ import annotations

import re
import subprocess
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]

_FENCE = re.compile(r"^(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (links in code are not links)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: markup and punctuation out, spaces to hyphens."""
    text = _INLINE_CODE.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text)
    text = text.strip().lower()
    kept = "".join(
        ch
        for ch in text
        if ch in " -_" or unicodedata.category(ch)[0] in "LMN"  # letters, marks, numbers
    )
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor a code host gives ``page``: one per heading, repeats numbered ``-1``, ..."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in _prose_lines(page.read_text(encoding="utf-8")):
        found.update(_HTML_ANCHOR.findall(line))
        match = _HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    """The link targets written in ``page``'s prose (not in code)."""
    targets: list[str] = []
    for line in _prose_lines(page.read_text(encoding="utf-8")):
        line = _INLINE_CODE.sub("", line)
        targets.extend(match.group(1) for match in _LINK.finditer(line))
    return targets


def _broken(page: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto: ...
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not resolved.exists():
            problems.append(f"{target}: no such file {path_part}")
            continue
        if not resolved.is_relative_to(root):
            problems.append(f"{target}: outside the repository")
            continue
        if anchor and resolved.suffix == ".md" and unquote(anchor) not in anchors(resolved):
            problems.append(f"{target}: no heading with the anchor #{anchor}")
    return problems


def test_the_pages_exist() -> None:
    """The front page and the reference pages it sends readers to are there."""
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {
        "README.md",
        "docs/README.md",
        "docs/settings.md",
        "docs/tasks.md",
        "docs/delivery.md",
        "docs/model.md",
        "docs/collector.md",
        "docs/cli.md",
        "docs/performance.md",
        "docs/migrating.md",
        "docs/troubleshooting.md",
        "docs/recipes/notebooks.md",
        "docs/recipes/scripts.md",
    } <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    """A link to a missing file, or to a heading that is not there, is a dead end for a reader."""
    assert _broken(page) == []


def test_the_link_check_finds_dead_links(tmp_path: Path) -> None:
    """The checker itself: a missing file and a missing anchor are reported, good ones not."""
    (tmp_path / "settings.md").write_text("# Settings\n", encoding="utf-8")
    (tmp_path / "cli.md").write_text("# The command line\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## `fit_task`: the 1 MiB limit\n\n## Again\n\n## Again\n\n"
        "[ok](#fit_task-the-1-mib-limit) [ok](#again-1) [ok](settings.md#settings)\n"
        "[bad](#nowhere) [bad](no-such-page.md) [bad](cli.md#no-such-heading)\n"
        "`[not a link](nowhere.md)`\n```\n[not a link](nowhere.md)\n```\n",
        encoding="utf-8",
    )
    broken = _broken(page, root=tmp_path)
    assert [problem.split(":")[0] for problem in broken] == [
        "#nowhere",
        "no-such-page.md",
        "cli.md#no-such-heading",
    ]


def test_headings_get_the_anchors_a_code_host_gives_them() -> None:
    """GitHub's rule: lower case, punctuation and code marks out, spaces to hyphens."""
    assert slug("`task()`: many events, one trace") == "task-many-events-one-trace"
    assert slug("`fit_task`: the 1 MiB body limit") == "fit_task-the-1-mib-body-limit"
    assert (
        slug("1. Standard-library logging: one handler") == "1-standard-library-logging-one-handler"
    )
    assert slug("Migrating from the official client") == "migrating-from-the-official-client"


@pytest.mark.parametrize("page", PAGES[1:], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_page_starts_with_what_a_reader_comes_for(page: Path) -> None:
    """A title, then a paragraph of prose (not a heading, a table or code) before anything else."""
    blocks = [b.strip() for b in page.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    assert blocks[0].startswith("# ") and "\n" not in blocks[0]
    assert not blocks[1].startswith(("#", "|", "```", "-", "*", ">"))


def test_every_docs_page_is_in_the_index() -> None:
    """docs/README.md lists every page, so none is reachable only by chance."""
    index = DOCS / "README.md"
    listed = {(DOCS / t.partition("#")[0]).resolve() for t in links(index) if "://" not in t}
    missing = [p.relative_to(ROOT).as_posix() for p in PAGES[1:] if p != index and p not in listed]
    assert missing == []


def test_the_front_page_fits_its_budget() -> None:
    """At most 300 lines, counted as the size budget counts them (line breaks)."""
    assert (ROOT / "README.md").read_text(encoding="utf-8").count("\n") <= 300


def test_ci_finds_the_test_command_in_the_readme() -> None:
    """`.ci/run` takes the line after the marker's fence: it must be the documented command."""
    found = subprocess.run(
        ["awk", "/<!-- test-command -->/{getline; getline; print; exit}", "README.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert found == (
        "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' && .venv/bin/python -m pytest"
    )


def test_every_setting_is_on_the_settings_page() -> None:
    """docs/settings.md names each INFINIUM_* variable the library reads, in its table."""
    import dataclasses  # noqa: PLC0415 - only this test reads the fields

    from infinium_logging import Settings  # noqa: PLC0415

    table = (DOCS / "settings.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `(INFINIUM_[A-Z_]+)` \|", table, re.M))
    wanted = {f"INFINIUM_{field.name.upper()}" for field in dataclasses.fields(Settings)}
    assert wanted <= rows
