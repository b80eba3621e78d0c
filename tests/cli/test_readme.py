"""The README's commands run as written.

Every `scaling ...` command in a fenced code block must parse with the real CLI parser (so flags
and subcommands in the docs exist), and the cheap ones (planning, fitting published tables,
help) are executed for real. Training commands are exercised by their own tests.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from scaling.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
CHEAP = ("scaling sweep plan", "scaling analyze --csv", "scaling emergence --csv")


def readme_commands() -> list[str]:
    """`scaling`/`make` command lines from fenced blocks, joined across backslash continuations."""
    blocks, current, lang = [], None, ""
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("```"):
            if current is None:
                current, lang = [], line[3:].strip()
            else:
                if lang in ("", "bash", "sh"):
                    blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    commands = []
    for block in blocks:
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.strip()
            if line.startswith(("scaling ", "make ")):
                commands.append(line)
    return commands


def test_readme_has_the_two_commands():
    cmds = readme_commands()
    assert "make demo" in " ".join(cmds) and "make test" in " ".join(cmds)
    assert sum(c.startswith("scaling ") for c in cmds) >= 10


def test_readme_make_targets_exist():
    """Every `make TARGET` the README names (in code blocks or inline) is a Makefile target."""
    readme = (ROOT / "README.md").read_text()
    inline = re.findall(r"`make ([a-z][a-z0-9-]*)", readme)
    blocks = [c.split()[1] for c in readme_commands() if c.startswith("make ")]
    named = set(inline + blocks)
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", (ROOT / "Makefile").read_text(), re.M))
    assert named and named <= targets, f"README names targets the Makefile lacks: {named - targets}"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_readme_section_links_resolve():
    """Every `](#anchor)` link points at a heading that exists."""
    readme = (ROOT / "README.md").read_text()
    in_code, anchors = False, set()
    for line in readme.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            anchors.add(_anchor(line.lstrip("#")))
    links = set(re.findall(r"\]\(#([^)]+)\)", readme))
    assert links and links <= anchors, f"README links to missing sections: {links - anchors}"


@pytest.mark.parametrize("cmd", [c for c in readme_commands() if c.startswith("scaling ")])
def test_readme_command_parses(cmd):
    argv = shlex.split(cmd, comments=True)[1:]
    build_parser().parse_args(argv)  # SystemExit on an unknown flag or subcommand


# `scaling analyze --csv` on Epoch's Chinchilla table spends ~45 s in the fits, bootstraps,
# back-test and figures, so it runs with -m slow only. Its flags are checked here by
# test_readme_command_parses; the same table, map and --drop-highest go through the same loading
# and fitting in test_analysis_cli::test_csv_published_table_end_to_end, and `analyze --csv` end
# to end (report, fits.json, figures) on a published table in
# test_analysis_design::test_analyze_olmo_ladder_csv_end_to_end.
SLOW = ("scaling analyze --csv",)


CHEAP_CMDS = [
    pytest.param(c, id=f"cmd{i}", marks=[pytest.mark.slow] if c.startswith(SLOW) else [])
    for i, c in enumerate(c for c in readme_commands() if c.startswith(CHEAP))
]


@pytest.mark.parametrize("cmd", CHEAP_CMDS)
def test_cheap_readme_command_runs(cmd, tmp_path, shared_data):
    argv = shlex.split(cmd.replace("../shared/data", str(shared_data)), comments=True)
    proc = subprocess.run(
        [sys.executable, "-m", "scaling.cli", *argv[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip()
