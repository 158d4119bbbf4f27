"""The README and docs/ stay short, correct and linked: line budget, the two commands, links, module names.

Reads the markdown files only (no command is run), so it takes milliseconds.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from paths import REPO_ROOT

REPO = REPO_ROOT
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS]
README_MAX_LINES = 300
TWO_COMMANDS = ['pip install -e ".[dev]" && python -m demt_exp', "python -m pytest -q"]

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
MODULE = re.compile(r"(?<![\w.])-m[ \t]+(demt_exp(?:\.[A-Za-z_]\w*)*)")


def code_blocks(text: str) -> list[str]:
    """The bodies of the fenced code blocks, in order."""
    return [block.split("\n", 1)[1].rsplit("\n", 1)[0] for block in (m.group(0) for m in FENCE.finditer(text))]


def prose(text: str) -> str:
    """The text without fenced blocks and inline code, where a `[a](b)` is not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file (a repeated heading gets -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    targets = LINK.findall(prose(path.read_text(encoding="utf-8")))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]


def test_docs_pages_exist() -> None:
    assert DOCS, "docs/ holds no markdown page"


def test_readme_fits_its_line_budget() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; at most {README_MAX_LINES}"


def test_readme_opens_with_exactly_the_two_commands() -> None:
    first = code_blocks(README.read_text(encoding="utf-8"))[0]
    commands = [line.split("#", 1)[0].strip() for line in first.splitlines()]
    assert [c for c in commands if c] == TWO_COMMANDS


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_points_to_an_existing_file_and_heading(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        destination = (page.parent / file_part).resolve() if file_part else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with that anchor in {destination.name}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_readme_links_every_docs_page() -> None:
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in relative_links(README)}
    missing = [p.name for p in DOCS if p.resolve() not in linked]
    assert not missing, f"README.md does not link {missing}"


def runnable(module: str) -> bool:
    """`python -m module` works: the module exists, and a package has a __main__."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        return False
    return spec.submodule_search_locations is None or importlib.util.find_spec(f"{module}.__main__") is not None


def test_the_commands_of_the_first_code_block_exist() -> None:
    first = code_blocks(README.read_text(encoding="utf-8"))[0]
    modules = MODULE.findall(first)
    assert "demt_exp" in modules
    assert all(runnable(m) for m in modules), [m for m in modules if not runnable(m)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_named_command_exists(page: Path) -> None:
    modules = sorted(set(MODULE.findall(page.read_text(encoding="utf-8"))))
    missing = [m for m in modules if not runnable(m)]
    assert not missing, f"{page.relative_to(REPO)} names commands that do not exist: {missing}"


def test_slug_follows_github() -> None:
    assert slug("Ctrl-C, reruns and disk use (tested)") == "ctrl-c-reruns-and-disk-use-tested"
    assert slug("Comparing runs: `python -m demt_exp.compare`") == "comparing-runs-python--m-demt_expcompare"
    assert slug("Loss weighting (`weighting=`)") == "loss-weighting-weighting"
