"""Malformed input never gives a traceback (issue 12): the table in tests/cli/fuzz_cases.py.

Each case runs the real CLI in-process (no subprocess: the whole table takes seconds) and must
end with exit code 2, exactly one `error:` line on stderr, no traceback, and no file written:
the case's directory holds exactly the files it started with.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from fuzz_cases import CASES  # tests/ is on sys.path (rootdir conftest)

from scaling.cli import main


def run_case(argv: list[str], files: dict, d: Path, timeout_s: int = 30) -> tuple[int, str, str]:
    """Write the case's files into `d`, run the CLI; (exit code, stdout+stderr, problem)."""
    import contextlib
    import io

    for name, content in files.items():
        p = d / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = sorted(p.relative_to(d) for p in d.rglob("*"))
    out, err = io.StringIO(), io.StringIO()

    def hung(signum, frame):
        raise TimeoutError(f"no answer within {timeout_s} s")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(timeout_s)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([a.replace("{d}", str(d)) for a in argv])
            except SystemExit as e:  # argparse
                code = e.code if isinstance(e.code, int) else 1
            except TimeoutError as e:
                return -1, out.getvalue() + err.getvalue(), f"hung: {e}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    after = sorted(p.relative_to(d) for p in d.rglob("*"))
    text = out.getvalue() + err.getvalue()
    errors = [x for x in err.getvalue().splitlines() if x.startswith("error:")]
    problem = ""
    if code != 2:
        problem = f"exit code {code}, want 2"
    elif "Traceback" in text:
        problem = "traceback printed"
    elif len(errors) != 1:
        problem = f"{len(errors)} error: lines, want 1"
    elif after != before:
        problem = f"files written: {sorted(set(map(str, after)) - set(map(str, before)))}"
    return code, text, problem


def test_the_table_has_at_least_150_cases_across_the_four_kinds():
    kinds = {cid.split("-")[0] for cid, _, _ in CASES}
    assert len(CASES) >= 150 and {"grid", "config", "flag", "table"} <= kinds
    assert len({cid for cid, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("cid,argv,files", CASES, ids=[c[0] for c in CASES])
def test_malformed_input_is_one_clear_line(cid, argv, files, tmp_path):
    code, text, problem = run_case(argv, files, tmp_path)
    assert not problem, f"{cid}: {problem}\n{text[-3000:]}"
