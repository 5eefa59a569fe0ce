"""The README stays a five-minute read, and every page it and the commands point to exists."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from helpers import RUN_COMMAND, TEST_COMMAND

from smallbig.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_the_readme_is_short_and_opens_with_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    blocks = re.findall(r"```bash\n(.+?)\n```", text, re.S)
    assert blocks[:2] == [RUN_COMMAND, TEST_COMMAND]


def _anchor(heading: str) -> str:
    # GitHub's: lower case, punctuation dropped, spaces to hyphens.
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_of_the_readme_and_the_docs_reaches_a_page_and_heading():
    pages = [README, *sorted((ROOT / "docs").glob("*.md"))]
    checked = 0
    for page in pages:
        for target in re.findall(r"\]\(([^)]+)\)", page.read_text()):
            if target.startswith(("http://", "https://")) or target.endswith(".png"):
                continue
            path, _, anchor = target.partition("#")
            where = (page.parent / path).resolve() if path else page
            assert where.exists(), f"{page.name}: {target}"
            if anchor:
                headings = re.findall(r"^#+ (.+)$", where.read_text(), re.M)
                assert anchor in {_anchor(h) for h in headings}, f"{page.name}: {target}"
            checked += 1
    assert checked >= 8


def _parsers(parser: argparse.ArgumentParser, path: str = "smallbig"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_commands_help_says_what_it_answers_and_which_page_explains_it():
    seen = 0
    for path, parser in _parsers(build_parser()):
        if path == "smallbig serve-api":
            continue  # its options are the weather server's own (add_help=False)
        found = re.search(r"Explained in docs/(\S+\.md)", parser.description or "")
        assert found, f"{path}: {parser.description!r}"
        assert (ROOT / "docs" / found.group(1)).exists(), path
        seen += 1
    assert seen >= 15


def test_the_committed_results_are_described_with_their_command():
    results = ROOT / "docs" / "results"
    index = (results / "README.md").read_text()
    files = sorted(p.name for p in results.glob("*.json"))
    assert files, "no benchmark results committed"
    for name in files:
        assert name in index, name
