"""The README and docs/ stay true: every relative link resolves (file and heading anchor), and every
`python -m backend ...` command they show names a real subcommand and only flags it accepts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from backend.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
COMMAND = re.compile(r"-m backend ([a-z][a-z-]*)(.*)")


def _split_fences(text: str) -> tuple[list[str], list[str]]:
    """(prose lines, code lines): fenced code blocks apart from the rest."""
    prose, code, fenced = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        (code if fenced else prose).append(line)
    return prose, code


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    prose, _ = _split_fences(page.read_text(encoding="utf-8"))
    return {_slug(line.lstrip("#")) for line in prose if re.match(r"^#{1,6} ", line)}


def _links(page: Path):
    prose, _ = _split_fences(page.read_text(encoding="utf-8"))
    for line in prose:
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if not re.match(r"^[a-z]+:", target):
                yield target


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in _links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def _shown_commands(page: Path):
    """(subcommand, the text after it) for every `-m backend X ...` in code blocks and code spans.

    In a code block, indented continuation lines (a synopsis of optional flags) belong to the
    command above them; shell comments and a second command after `&&`, `|` or `;` are cut."""
    prose, code = _split_fences(page.read_text(encoding="utf-8"))
    chunks = [span for line in prose for span in re.findall(r"`([^`]*-m backend [^`]*)`", line)]
    current = None
    for line in code:
        line = line.split(" # ")[0]
        if current is not None and line.startswith((" ", "\t")) and "-m backend" not in line:
            current += " " + line.strip().rstrip("\\")
            continue
        if current is not None:
            chunks.append(current)
        current = line.rstrip("\\") if "-m backend" in line else None
    if current is not None:
        chunks.append(current)
    for chunk in chunks:
        for part in re.split(r"&&|\|\||;|(?<![\w\]])\|(?![\w\[])", chunk):
            match = COMMAND.search(part)
            if match:
                yield match.group(1), match.group(2)


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shown_command_exists_with_its_flags(page):
    subparsers = _subparsers()
    problems = []
    for command, rest in _shown_commands(page):
        if command not in subparsers:
            problems.append(f"`python -m backend {command}`: no such command")
            continue
        known = set(subparsers[command]._option_string_actions)
        try:
            words = shlex.split(rest.replace("[", " ").replace("]", " ").replace("|", " "))
        except ValueError:
            words = rest.split()
        for word in words:
            flag = word.split("=")[0]
            if re.match(r"^--?[a-zA-Z]", flag) and flag not in known:
                problems.append(f"`python -m backend {command}`: no option {flag}")
    assert not problems, f"{page.relative_to(ROOT)}: " + "; ".join(problems)


def test_the_pages_show_commands():
    """The command check reads what the guide shows (a parser change that hid them would pass)."""
    shown = {command for page in PAGES for command, _ in _shown_commands(page)}
    assert {"generate", "restyle", "batch", "serve", "download-models", "make-test-models"} <= shown


def test_every_subcommand_has_help(capsys):
    for name, sub in _subparsers().items():
        assert sub.format_help().strip(), name
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 200, f"README.md has {lines} lines: the manual belongs in docs/guide/"
