"""`scaling ...`: the one dispatcher, and the one module above all three packages.

`commands()` says which module owns each subcommand; that module holds the subcommand's parser
(`register(sub)`) and its handler together. Those modules are light at import: JAX and
matplotlib are imported only inside the handler that needs them, so `scaling --help`,
`scaling sweep plan` and `scaling analyze` never import JAX. A `UserError` anywhere prints one
line and exits with code 2. Nothing imports this module but the console script and tests.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import os
import sys
import threading
from types import ModuleType
from typing import NoReturn

from scaling import signals
from scaling.errors import DiskFullError, UserError
from scaling.fileio import is_disk_full, path_problem


def commands() -> dict[str, ModuleType]:
    """The table: subcommand -> the module that owns its parser and handler, in `scaling --help`
    order. Its modules are imported here, when `main` builds the parser, so that a Ctrl-C while
    they load already meets `main`'s signal handlers."""
    from analysis import cli as analysis_cli
    from analysis import compare_cli
    from analysis.emergence import cli as emergence_cli
    from scaling import coordcheck_cli, launch, tokenizer_cli, train_cli
    from sweeps import ablate, finetune
    from sweeps import cli as sweeps_cli

    return {
        "train": train_cli,
        "mup-check": coordcheck_cli,
        "launch": launch,
        "sweep": sweeps_cli,
        "ablate": ablate,
        "finetune": finetune,
        "predict": analysis_cli,
        "plot": analysis_cli,
        "analyze": analysis_cli,
        "emergence": emergence_cli,
        "compare": compare_cli,
        "tokenizer": tokenizer_cli,
    }


class _Defaults(argparse.HelpFormatter):
    """--help shows each option's default, where it has one and its help does not say it
    already (no default, off, empty: nothing is added), options without a help text included
    (argparse prints nothing after those, so `--ffn-order {greedy,gradient}` hid its default)."""

    @staticmethod
    def _adds_default(action: argparse.Action) -> bool:
        default = action.default
        return not (
            not action.option_strings
            or default is None
            or default is False
            or default in ("", [], argparse.SUPPRESS)
            or "default" in (action.help or "").lower()
        )

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and action.help != argparse.SUPPRESS and self._adds_default(action):
            action = copy.copy(action)
            action.help = "default %(default)s"
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if not self._adds_default(action):
            return action.help
        text = action.help or ""
        return text if "%(default)" in text else f"{text} (default %(default)s)"


class _RawDefaults(_Defaults, argparse.RawDescriptionHelpFormatter):
    """The same, for a parser that keeps its description's own line breaks."""


class _Parser(argparse.ArgumentParser):
    """argparse with one `error: ...` line (the usage block is what --help is for), and --help
    showing the defaults (`_Defaults`); every subcommand's parser is one too."""

    def __init__(self, *args, **kwargs) -> None:
        fmt = kwargs.get("formatter_class", argparse.HelpFormatter)
        raw = issubclass(fmt, argparse.RawDescriptionHelpFormatter)
        kwargs["formatter_class"] = _RawDefaults if raw else _Defaults
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="scaling",
        description="Scaling-law sweeps: train, sweep, fit, predict, flag emergence.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in dict.fromkeys(commands().values()):  # a module owning several registers them once
        module.register(sub)
    return parser


def main(argv: list[str] | None = None, *, restore_signals: bool = True) -> int:
    """Run one command; every expected fault ends in ONE line on stderr and an exit code:
    2 bad input (`UserError`), 1 disk full, 130/143 SIGINT/SIGTERM (`scaling.signals`).
    `restore_signals=False` (the console script) keeps our handlers up to `entry`'s
    `signals.exit_quietly`, so no signal ever reaches Python's default KeyboardInterrupt."""
    previous = signals.install()  # first: a signal while the parser is built is ours too
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
        if is_disk_full(e):
            return _fail_disk_full(str(DiskFullError(e.filename or "an output file")))
        if problem := path_problem(e):  # a read-only or foreign dir, a file where a dir goes
            return _fail(f"error: {problem}", 2)
        raise
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
    signals.ignore_after_exit_hooks()
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
