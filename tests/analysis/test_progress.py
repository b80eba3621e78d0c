"""The analysis status line: drawn and erased on a terminal, silent anywhere else."""

import io
import re
import time

from analysis.progress import stage, status


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_stages_are_drawn_then_erased_on_a_terminal():
    out = Terminal()
    with status("scaling analyze", stream=out, every=0.05):
        stage("joint law")
        time.sleep(0.2)  # the ticker redraws the stage with its seconds
        stage("figures")
    frames = out.getvalue().split("\r")
    drawn = [f.rstrip() for f in frames if f.strip()]
    assert all(re.fullmatch(r"scaling analyze: [a-z ]+ \(\d+ s\)", f) for f in drawn), drawn
    stages = [re.sub(r" \(\d+ s\)$", "", f) for f in drawn]  # the seconds depend on the load
    assert stages[0] == "scaling analyze: starting"
    assert stages.count("scaling analyze: joint law") >= 2
    assert stages[-1] == "scaling analyze: figures"
    # the last frame is blanked and the cursor is back at column 0 for the results
    assert frames[-2] == " " * len(drawn[-1]) and frames[-1] == ""
    n = len(out.getvalue())
    stage("after the block")  # no line open: nothing is written
    assert len(out.getvalue()) == n


def test_nothing_is_written_off_a_terminal_and_nested_blocks_keep_one_line():
    pipe = io.StringIO()  # not a terminal: logs, pipes and pytest's capture
    with status("scaling analyze", stream=pipe):
        stage("joint law")
    assert pipe.getvalue() == ""
    out = Terminal()
    with status("outer", stream=out, every=60):
        with status("inner", stream=out, every=60):
            stage("fits")
    assert "inner" not in out.getvalue() and "outer: fits (" in out.getvalue()


def test_a_narrow_terminal_cuts_the_stage_name_not_the_seconds(monkeypatch):
    import analysis.progress as progress

    monkeypatch.setattr(progress, "_columns", lambda stream: 30)
    out = Terminal()
    with status("scaling analyze (120 runs)", stream=out, every=60):
        stage("back-test without the held-out runs (largest)")
    drawn = [f.rstrip() for f in out.getvalue().split("\r") if f.strip()]
    assert all(len(f) <= 29 and re.search(r" \(\d+ s\)$", f) for f in drawn), drawn
