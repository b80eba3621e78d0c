"""The persistent JAX compilation cache: compile a shape once, reuse it in every later process.

On by default, in `<data dir>/jax_compile_cache` (the data dir is `data.data_dir`, else
$SCALING_DATA_DIR, else ~/.cache/scaling/tfds; see `scaling.data.default_data_dir`). Set
$SCALING_COMPILE_CACHE to a directory to put it elsewhere, or to `off` to disable it. A
directory set through JAX's own $JAX_COMPILATION_CACHE_DIR (or `jax.config`) is left alone.

Every compilation is cached (no minimum compile time or size), so a rerun, a resume, or a later
cell with a seen shape loads its executables instead of compiling them; only a new shape (or a
new JAX/XLA version, device, or flag) compiles. Cached executables are the same programs, so
results are unchanged. The directory can be deleted at any time.

The cache is kept under a size cap, 2 GiB by default ($SCALING_COMPILE_CACHE_MAX_MB to change
it): whenever a run starts (`enable` is called per run, so a long sweep in one process is
checked before each cell, not only at its first) and the cache has grown past the cap, the least
recently used entries (by access or modification time, whichever is later) are deleted until it
is under 80% of it. A deleted entry only costs one recompilation.

`cache_events()` counts JAX's compilation-cache monitoring events (hits, misses) since the
first call to `enable`, which is how tests check that a rerun compiled nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import Counter
from pathlib import Path

from scaling.errors import UserError

ENV = "SCALING_COMPILE_CACHE"
MAX_ENV = "SCALING_COMPILE_CACHE_MAX_MB"
DEFAULT_MAX_MB = 2048
OFF = ("off", "0", "false", "no", "none")
SUBDIR = "jax_compile_cache"
_EVENTS: Counter[str] = Counter()
_listening = False


def cache_dir(data_dir: Path) -> Path | None:
    """The cache directory for a run whose data dir is `data_dir`; None when switched off.
    UserError when that path is an existing file (checked before any compute)."""
    raw = os.environ.get(ENV, "").strip()
    if raw.lower() in OFF:
        return None
    path = Path(raw).expanduser() if raw else Path(data_dir).expanduser() / SUBDIR
    if path.exists() and not path.is_dir():
        via = f"{ENV}={raw!r}" if raw else f"the data dir's {SUBDIR}"
        raise UserError(
            f"{via}: {path} is a file, not a directory; set {ENV} to a directory for JAX's "
            f"compiled programs (or to off)"
        )
    return path


def enable(data_dir: Path) -> Path | None:
    """Point JAX's persistent compilation cache at `cache_dir(data_dir)` (before compiling);
    returns the directory in use, or None when off. Idempotent; safe to call per run."""
    import jax  # noqa: PLC0415 - only the engine calls this
    from jax.experimental.compilation_cache import compilation_cache as cc  # noqa: PLC0415

    _listen()
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])  # the user's own setting wins
    path = cache_dir(data_dir)
    current = jax.config.jax_compilation_cache_dir
    if path is None:
        if current is not None:
            jax.config.update("jax_compilation_cache_dir", None)
            cc.reset_cache()
        return None
    path.mkdir(parents=True, exist_ok=True)
    prune(path, max_bytes())  # every run: the cells of one process add entries too
    if current != str(path):
        jax.config.update("jax_compilation_cache_dir", str(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        cc.reset_cache()  # the next compile opens the cache at the new path
    return path


def max_bytes() -> int:
    """The size cap in bytes, from $SCALING_COMPILE_CACHE_MAX_MB (default DEFAULT_MAX_MB)."""
    raw = os.environ.get(MAX_ENV, "").strip()
    try:
        mb = float(raw) if raw else float(DEFAULT_MAX_MB)
    except ValueError:
        mb = float("nan")
    if not mb > 0 or mb == float("inf"):
        raise UserError(
            f"{MAX_ENV}={raw!r}: the compilation cache's size cap must be a positive number of "
            f"megabytes (default {DEFAULT_MAX_MB}); set {ENV}=off to switch the cache off"
        )
    return int(mb * 2**20)


# what JAX names a cache entry: `<program name>-<sha256 hex>-cache` (and `-atime` beside it)
ENTRY = re.compile(r"^[\w.\-]+-[0-9a-f]{64}-(cache|atime)$")


def prune(path: Path, limit: int, keep: float = 0.8) -> int:
    """If JAX's cache entries in `path` exceed `limit` bytes, delete the least recently used
    ones until they fit in `keep * limit`; the number of files deleted. Only files named as JAX
    names its entries (`ENTRY`, directly in `path`) are counted or deleted: $SCALING_COMPILE_CACHE
    may name a directory that holds other files too, and those are never touched. Files another
    process removes first are skipped, and so are files this process may not delete (a shared
    read-only cache): a cache it cannot prune must not stop the run."""
    entries = []
    with contextlib.suppress(OSError):
        for f in path.iterdir():
            with contextlib.suppress(OSError):
                st = f.stat()
                if ENTRY.match(f.name) and f.is_file():
                    entries.append((max(st.st_atime, st.st_mtime), st.st_size, f))
    total = sum(size for _, size, _ in entries)
    if total <= limit:
        return 0
    removed = 0
    for _, size, f in sorted(entries, key=lambda e: e[0]):
        if total <= keep * limit:
            break
        try:
            f.unlink()
        except FileNotFoundError:
            pass  # another process pruned it first
        except OSError:
            continue  # not ours to delete: it still counts
        else:
            removed += 1
        total -= size
    return removed


def _listen() -> None:
    global _listening
    if _listening:
        return
    from jax._src import monitoring  # noqa: PLC0415 - the only hook for cache hits/misses

    def on_event(event: str, **_: object) -> None:
        if event.startswith("/jax/compilation_cache/"):
            _EVENTS[event.rsplit("/", 1)[-1]] += 1

    monitoring.register_event_listener(on_event)
    _listening = True


def cache_events() -> dict[str, int]:
    """Counts of compilation-cache events since `enable` was first called in this process:
    `cache_hits`, `cache_misses` (each a compile), `compile_requests_use_cache`."""
    return dict(_EVENTS)
