"""Atomic output: every file we write goes to a temporary sibling first and is renamed into place,
so an interrupted run never leaves a half-written file and never clobbers a good one.

Temporaries are named `.<target>.<pid>.<random>` so that the next write to the same target removes those
a killed process left behind (their pid no longer runs) and never one that a live writer is still filling.
`kill_point(name)` is the test hook for that: with GLASSBOX_KILL_AT=name the process SIGKILLs itself there,
at a fixed step (after the temporary is complete, before the rename), not after a guessed sleep.
Folders cannot be renamed over a non-empty folder, so `replace_dir` moves the old one aside first and
`restore_dir` (called before every build and open) renames a dead writer's aside back: no kill loses both.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _umask_mode(base: int = 0o666) -> int:
    """The mode a plain open() (base 0o666) or mkdir() (base 0o777) would give; mkstemp's private 0600 and
    mkdtemp's 0700 are wrong for outputs."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def kill_point(name: str) -> None:
    """Die here, as kill -9 would, when GLASSBOX_KILL_AT names this point (the interrupted-write tests)."""
    if os.environ.get("GLASSBOX_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def sweep_stale(target: str | Path) -> list[Path]:
    """Remove temporaries of `target` (files or folders `.<name>.<pid>.*`) whose writer is dead; return them."""
    target = Path(target)
    removed = []
    try:
        siblings = list(target.parent.glob(f".{glob_escape(target.name)}.*"))
    except OSError:
        return removed
    for path in siblings:
        pid = path.name[len(target.name) + 2:].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        removed.append(path)
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def temp_dir_beside(target: str | Path) -> Path:
    """A fresh temporary folder next to `target` (for outputs that are folders), stale ones swept first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", dir=target.parent))
    os.chmod(tmp, _umask_mode(0o777))
    return tmp


def _asides(target: Path, live: bool) -> list[Path]:
    """The complete old copies `.<target>.old-<pid>-<hex>` that `replace_dir` moved aside; with live=False
    only those whose writer is dead (a live one is mid-swap and will finish or restore it itself)."""
    prefix = f".{target.name}.old-"
    found = []
    with contextlib.suppress(OSError):
        for path in target.parent.glob(f"{glob_escape(prefix)}*"):
            pid = path.name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and (live or (int(pid) != os.getpid() and not _pid_alive(int(pid)))):
                found.append(path)
    return found


def _discard_dir(path: Path, target: Path) -> None:
    # renamed to a pid temporary first (atomic), so an `.old-` aside is always whole and a kill mid-rmtree
    # leaves only a temporary the next sweep removes
    trash = target.parent / f".{target.name}.{os.getpid()}.trash-{uuid.uuid4().hex[:6]}"
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)


def restore_dir(target: str | Path) -> Path:
    """If `target` is missing because a writer died between `replace_dir`'s two renames, put its aside copy
    back. Returns the folder to read: `target`, or the aside itself when it cannot be renamed (read-only)."""
    target = Path(target)
    if target.exists() or target.is_symlink():
        return target
    asides = _asides(target, live=False)
    if not asides:
        return target
    newest = max(asides, key=lambda p: p.stat().st_ctime_ns)  # rename sets ctime; there is normally one
    try:
        os.replace(newest, target)
    except FileNotFoundError:  # another reader restored it first
        pass
    except OSError:
        return newest
    return target


def replace_dir(tmp: str | Path, target: str | Path) -> None:
    """Move the finished folder `tmp` to `target`, replacing the folder there: old → aside, tmp → target,
    aside removed. Killed between the renames, `restore_dir` brings the old folder back."""
    tmp, target = Path(tmp), Path(target)
    restore_dir(target)
    aside = None
    if target.exists() or target.is_symlink():
        aside = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        os.replace(target, aside)
        kill_point(f"aside:{target.name}")
    os.replace(tmp, target)
    for old in [*([aside] if aside else []), *_asides(target, live=False)]:
        _discard_dir(old, target)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """For writers that want a path, not a handle (matplotlib, pyarrow): yields a temp path, renames on success.
    The temporary keeps the target's suffix (some writers pick the format by it) unless `suffix` is given."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.",
                               suffix=target.suffix if suffix is None else suffix, dir=target.parent)
    os.close(fd)
    os.chmod(tmp, _umask_mode())
    try:
        yield Path(tmp)
        kill_point(f"rename:{target.name}")
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Yield a file handle on a temp file next to `path`; rename it over `path` only on success."""
    # ".tmp": a killed write's leftover never looks like an output to a folder scan (*.safetensors)
    with atomic_path(path, suffix=".tmp") as tmp, open(tmp, mode) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())  # on disk before the rename makes it the output


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=1)


def save_png(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Write a matplotlib figure as PNG atomically, then free it (pyplot keeps every open figure alive)."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return Path(path)
