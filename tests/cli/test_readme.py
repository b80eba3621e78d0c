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
