"""The analysis status line: drawn and erased on a terminal, silent anywhere else."""

import io
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
    assert drawn[0] == "scaling analyze: starting (0 s)"
    assert drawn.count("scaling analyze: joint law (0 s)") >= 2
    assert drawn[-1] == "scaling analyze: figures (0 s)"
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
    assert "inner" not in out.getvalue() and "outer: fits (0 s)" in out.getvalue()
