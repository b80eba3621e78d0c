"""The exception types the CLI turns into one clear line (never a traceback).

- `UserError`: bad input from the user (config, grid, table, flag). Exit code 2. Raise it before
  any compute is spent, and say what was wrong and how to fix it.
- `DiskFullError`: no space left writing a file. Exit code 1; everything written before is
  intact (writes are atomic) and a rerun resumes.
- Ctrl-C / SIGTERM: see `scaling.signals` (exit 130 / 143).
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (config, grid, table, flag). The CLI exits with code 2."""

    exit_code = 2


class DiskFullError(Exception):
    """No space left on the device (or quota) while writing `path`. The CLI exits with code 1."""

    exit_code = 1

    def __init__(self, path: object) -> None:
        super().__init__(path)
        self.path = str(path)

    def __str__(self) -> str:
        return f"no space left on device writing {self.path}; free space and rerun to resume"


def install_interrupt_handler() -> None:
    """Kept for callers of the old name: see `scaling.signals.install`."""
    from scaling import signals

    signals.install()


def check_interrupt() -> None:
    """Kept for callers of the old name: see `scaling.signals.check`."""
    from scaling import signals

    signals.check()
