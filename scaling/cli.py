"""`scaling ...`: a thin dispatcher. Each command group registers its own subparsers.

Heavy modules (JAX, matplotlib) are imported only inside the handler that needs them, so
`scaling sweep plan` and `scaling analyze` never import JAX. A `UserError` anywhere prints one
line and exits with code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
from typing import NoReturn

from scaling import signals
from scaling.errors import DiskFullError, UserError
from scaling.fileio import is_disk_full


def _register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one model from a TOML config")
    p.add_argument("config", help="TOML path or built-in config name (e.g. tiny)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config field, e.g. --set model.d_model=128 (repeatable)",
    )
    p.add_argument("--out", default=None, help="run directory (default runs/<name>-<hash>)")
    p.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    g = p.add_argument_group(
        "several processes (default: env JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
        "JAX_PROCESS_ID, else a SLURM srun step, else one process)"
    )
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="process 0's address")
    g.add_argument("--num-processes", type=int, default=None, metavar="N")
    g.add_argument("--process-id", type=int, default=None, metavar="I", help="0..N-1")
    g.add_argument(
        "--coordinator-timeout",
        type=float,
        default=None,
        metavar="S",
        help="seconds to wait for the coordinator (default 300)",
    )
    r = p.add_mutually_exclusive_group()
    r.add_argument(
        "--restart",
        action="store_true",
        help="start from step 0 even though checkpoints exist (they are kept as restarted-<step>)",
    )
    r.add_argument(
        "--from-step",
        type=int,
        default=None,
        metavar="N",
        help="resume from checkpoint step N (newer steps are kept as discarded-<step>)",
    )
    p.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from scaling.train_cli import run_train_command  # imports JAX

    return run_train_command(args)


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: expected numbers like 1e-3,3e-3") from e


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: expected integers like 32,64,128") from e


def _register_mup_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mup-check",
        help="muP coordinate check: activation RMS vs width under SP and muP (+ lr transfer)",
    )
    p.add_argument("--widths", type=_ints, default=[32, 64, 128, 256, 512], help="d_model list")
    p.add_argument("--base-width", type=int, default=None, help="muP base width (default: min)")
    p.add_argument("--lr", type=float, default=1e-2, help="peak lr of the coordinate check")
    p.add_argument("--lrs", type=_floats, default=None, help="lr list: also plot loss vs lr")
    p.add_argument("--steps", type=int, default=5, help="Adam updates per probe")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seeds", type=int, default=1, help="seeds averaged per point")
    p.add_argument("--layers", type=int, default=2, help="n_layers of every probe")
    p.add_argument("--dataset", default="python_source")
    p.add_argument("--out", default="runs/mup-check", help="where the JSON and figures go")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_mup_check)


def _mup_check(args: argparse.Namespace) -> int:
    from scaling.coordcheck import run  # imports JAX

    return run(args)


class _Parser(argparse.ArgumentParser):
    """argparse with one `error: ...` line (the usage block is what --help is for)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="scaling",
        description="Scaling-law sweeps: train, sweep, fit, predict, flag emergence.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _register_train(sub)
    _register_mup_check(sub)
    for module in (
        "scaling.launch",
        "sweeps.cli",
        "sweeps.ablate",
        "sweeps.finetune",
        "analysis.cli",
        "analysis.emergence.cli",
        "analysis.compare_cli",
        "scaling.tokenizer_cli",
    ):
        try:
            mod = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as e:  # a command group not built yet
            if e.name != module:
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None, *, restore_signals: bool = True) -> int:
    """Run one command; every expected fault ends in ONE line on stderr and an exit code:
    2 bad input (`UserError`), 1 disk full, 130/143 SIGINT/SIGTERM (`scaling.signals`).
    `restore_signals=False` (the console script) keeps our handlers up to `entry`'s
    `signals.exit_quietly`, so no signal ever reaches Python's default KeyboardInterrupt."""
    previous = signals.install()  # first: a signal while the command groups import is ours too
    hook, threading.excepthook = threading.excepthook, _quiet_disk_full(threading.excepthook)
    for name in ("absl", "asyncio"):  # Orbax's save threads log a full disk here, repeatedly
        logging.getLogger(name).addFilter(_drop_disk_full)
    try:
        args = build_parser().parse_args(argv)
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return code
    except UserError as e:
        return _fail(f"error: {e}", 2)
    except DiskFullError as e:
        return _fail_disk_full(str(e))
    except signals.Interrupted as e:
        where = f"{e.detail}; " if e.detail else ""
        return _fail(
            f"\ninterrupted by {e.signame}: {where}rerun the same command to resume", e.exit_code
        )
    except KeyboardInterrupt:
        return _fail("\ninterrupted: rerun the same command to resume", 130)
    except BrokenPipeError:  # `scaling sweep status DIR | head`: the reader left; not an error
        _silence_stdout()
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by a closed pipe
    except OSError as e:
        if not is_disk_full(e):
            raise
        return _fail_disk_full(str(DiskFullError(e.filename or "an output file")))
    finally:
        if restore_signals:
            signals.restore(previous)
        threading.excepthook = hook


def _quiet_disk_full(default):
    """A background thread (Orbax's async save) that hits a full disk must not print its
    traceback: the main thread reports the same fault as one line."""

    def hook(args: threading.ExceptHookArgs) -> None:
        if not is_disk_full(args.exc_value):
            default(args)

    return hook


def _drop_disk_full(record: logging.LogRecord) -> bool:
    """Logging filter: drop a background thread's report of a full disk (we print one line)."""
    exc = record.exc_info[1] if record.exc_info else None
    return not (is_disk_full(exc) or is_disk_full(Exception(record.getMessage())))


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _fail(line: str, code: int) -> int:
    print(line, file=sys.stderr, flush=True)
    return code


_disk_full = False


def _fail_disk_full(message: str) -> int:
    global _disk_full
    _disk_full = True
    return _fail(f"error: {message}", 1)


def entry() -> None:
    """The `scaling` console script: once the exit code is known, a signal ends the process
    with that code at once (a Ctrl-C during interpreter shutdown must neither print a traceback
    nor wait for threads to be joined). After a full disk
    the process ends without running exit hooks: third-party ones (event-file writers, worker
    pools) would only fail again on the same disk and print their tracebacks after our line;
    everything that matters was written atomically or is resumable."""
    try:
        code = main(restore_signals=False)
    except signals.Interrupted as e:  # a first signal in the instant after main's own handlers
        code = e.exit_code  # (while it prints its last line, or returns): no traceback
    signals.exit_quietly(code)  # main flushed its output already; this flush is a formality
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    if _disk_full:
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
