"""`scaling sweep run` flags that fit only one backend, and a SLURM submission that sbatch
refuses: each exits 2 with one `error:` line naming the flag or sbatch's reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scaling.cli import main

FAKE = "sweeps.fake:fake_train"


def test_max_runs_with_slurm_backend_exits_2_before_any_work(tmp_path: Path, capsys) -> None:
    """--backend slurm submits every unfinished cell: a --max-runs there was silently ignored."""
    root = tmp_path / "sweep"
    argv = ["sweep", "run", "cpu-small", "--out", str(root), "--backend", "slurm"]
    assert main([*argv, "--max-runs", "1", "--train-fn", FAKE]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --max-runs 1 is for --backend local"), err
    assert not root.exists()


def test_sbatch_refusing_the_submission_exits_2_not_a_traceback(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """sbatch exiting non-zero (bad partition, unreachable controller) used to end in
    submitit's FailedJobError traceback with exit 1."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(
        "#!/bin/sh\necho 'sbatch: error: invalid partition specified: nope' >&2\nexit 1\n"
    )
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    root = tmp_path / "sweep"
    argv = ["sweep", "run", "cpu-small", "--out", str(root), "--backend", "slurm"]
    assert main([*argv, "--partition", "nope", "--train-fn", FAKE]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --backend slurm: sbatch refused the submission"), err
    assert "invalid partition specified: nope" in err[-1]
    assert not (root / "slurm").exists()  # the task pickles it wrote are gone with it


def _refusing_sbatch(tmp_path: Path, monkeypatch) -> None:
    """An sbatch on PATH that refuses every submission."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: nope' >&2\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_refused_submission_removes_only_its_own_files(tmp_path: Path, monkeypatch) -> None:
    """A refused submission left one <uuid>.pkl per cell and the sbatch script in DIR/slurm;
    the files of earlier submissions stay."""
    _refusing_sbatch(tmp_path, monkeypatch)
    root = tmp_path / "sweep"
    old = [root / "slurm" / "0123abcd.pkl", root / "slurm" / "17_0" / "17_0_submitted.pkl"]
    for path in old:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"earlier")
    argv = ["sweep", "run", "cpu-small", "--out", str(root), "--backend", "slurm"]
    assert main([*argv, "--train-fn", FAKE]) == 2
    left = sorted(p for p in (root / "slurm").rglob("*") if p.is_file())
    assert left == sorted(old)


@pytest.mark.parametrize(
    "flags",
    [["--partition", "gpu"], ["--gpus-per-node", "8"], ["--wait"], ["--slurm-arg", "account=x"]],
)
def test_slurm_options_without_slurm_backend_exit_2(tmp_path: Path, capsys, flags) -> None:
    """A SLURM option with the default --backend local is a forgotten `--backend slurm`: the
    sweep used to train on this machine, the option silently ignored."""
    root = tmp_path / "sweep"
    argv = ["sweep", "run", "cpu-small", "--out", str(root), "--train-fn", FAKE, *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flags[0]} is an option of --backend slurm"), err
    assert not root.exists()


def test_wait_and_no_wait_together_exit_2(tmp_path: Path, capsys) -> None:
    """--backend slurm --wait --no-wait silently waited."""
    root = tmp_path / "sweep"
    argv = ["sweep", "run", "cpu-small", "--out", str(root), "--backend", "slurm"]
    assert main([*argv, "--wait", "--no-wait", "--train-fn", FAKE]) == 2
    assert capsys.readouterr().err.startswith("error: --wait and --no-wait contradict")
    assert not root.exists()


def test_a_submission_waits_for_one_in_flight_in_the_same_dir(tmp_path: Path, monkeypatch) -> None:
    """Two submissions into one DIR: a refused one removed every temporary file that had
    appeared meanwhile, the other's task pickles too, which that one's sbatch still needed. A
    submission now holds DIR/.submit.lock from before submitit writes until sbatch answers."""
    import threading

    from scaling.fileio import file_lock
    from sweeps.slurm import SUBMIT_LOCK

    _refusing_sbatch(tmp_path, monkeypatch)
    root = tmp_path / "sweep"
    argv = ["sweep", "run", "cpu-small", "--out", str(root), "--backend", "slurm"]
    rc: list[int] = []
    with file_lock(root / SUBMIT_LOCK):  # another submission, waiting on its sbatch
        other = root / "slurm" / "feedface.pkl"
        other.parent.mkdir(parents=True)
        other.write_bytes(b"in flight")
        t = threading.Thread(target=lambda: rc.append(main([*argv, "--train-fn", FAKE])))
        t.start()
        t.join(timeout=3.0)
        assert t.is_alive() and not rc  # blocked on the lock, before writing anything
        assert [p.name for p in (root / "slurm").iterdir()] == ["feedface.pkl"]
        other.unlink()  # that submission was accepted: submitit moved its files away
    t.join(timeout=120)
    assert rc == [2]
    assert not any((root / "slurm").iterdir())  # its own pickles removed, as before


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--timeout-min", "0"], "--timeout-min 0: must be >= 1"),  # SLURM's --time=0: no limit
        (["--nodes", "0"], "--nodes 0: must be >= 1"),
        (["--tasks-per-node", "0"], "--tasks-per-node 0: must be >= 1"),
        (["--cpus-per-task", "0"], "--cpus-per-task 0: must be >= 1"),
        (["--array-parallelism", "0"], "--array-parallelism 0: must be >= 1"),
        (["--gpus-per-node", "-1"], "--gpus-per-node -1: must be >= 0"),
        (["--mem-gb", "-5"], "--mem-gb -5: must be a finite number of GiB > 0"),
        (["--mem-gb", "nan"], "--mem-gb nan: must be a finite number of GiB > 0"),
    ],
)
def test_slurm_resource_out_of_range_exits_2_before_submitting(
    tmp_path: Path, capsys, monkeypatch, flags, named
) -> None:
    """A SLURM resource count that cannot mean anything is named, exit 2, before the plan is
    written or sbatch is called (it reached sbatch, or meant something else there)."""
    _refusing_sbatch(tmp_path, monkeypatch)
    root = tmp_path / "sweep"
    argv = ["sweep", "run", "cpu-small", "--out", str(root), "--backend", "slurm"]
    assert main([*argv, *flags, "--train-fn", FAKE]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {named}"), err
    assert not root.exists()
