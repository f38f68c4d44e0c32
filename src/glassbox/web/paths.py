"""Which files a web request may open: bundled model names, or paths that stay under the served root.

Every name is decoded until it stops changing (so `%2e%2e` and `%252e%252e` are `..` too), then resolved
with symlinks followed; anything absolute, with a `..` part, a NUL, or resolving outside the root is
refused. Pickle checkpoints are refused outright: the web never loads them, even with weights_only.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from glassbox import bundled, fileio

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
MAX_NAME = 1024


class PathRefused(Exception):
    """A request named a file it may not open; `status` is the HTTP code to answer with."""

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.status = status


def decode_fully(raw: str) -> str:
    """Percent-decode until stable (bounded), so double-encoded traversal looks like what it is."""
    s = raw
    for _ in range(4):
        d = unquote(s)
        if d == s:
            return s
        s = d
    raise PathRefused("name is encoded too many times", 400)


def resolve(root: Path, raw: str) -> tuple[str, Path]:
    """A requested name → (canonical id, real path). Raises PathRefused (4xx) for anything not allowed."""
    if not isinstance(raw, str) or not raw or len(raw) > MAX_NAME:
        raise PathRefused("missing or overlong name", 400)
    name = decode_fully(raw)
    if "\x00" in name or "\\" in name:
        raise PathRefused("bad character in name", 400)
    if bundled.is_bundled_name(name):
        try:
            return name, bundled.bundled_path(name)
        except Exception as exc:  # not installed: say so as a 404
            raise PathRefused(str(exc), 404) from None
    rel = Path(name)
    if rel.is_absolute() or name.startswith("~"):
        raise PathRefused("absolute paths are not served; name a file under the root", 403)
    if ".." in rel.parts:
        raise PathRefused("'..' is not allowed in a name", 403)
    base = root.resolve()
    real = _inside(base, rel)
    if not real.exists():
        # a rebuild killed between its two renames left the old folder aside: put it back, as a CLI open does
        fileio.restore_dir(real)
        real = _inside(base, rel)
    if not real.exists():
        raise PathRefused("no such file under the root", 404)
    if real.name.lower().endswith(PICKLE_SUFFIXES):
        raise PathRefused("pickle checkpoints are never loaded from the web", 403)
    return real.relative_to(base).as_posix() or ".", real


def _inside(base: Path, rel: Path) -> Path:
    """base/rel with symlinks followed, or PathRefused (403) when that leaves the root."""
    real = (base / rel).resolve()
    if real != base and base not in real.parents:
        raise PathRefused("outside the served root", 403)
    return real


def is_run(path: Path) -> bool:
    """A training run written by `glassbox train`: a folder with checkpoints/ and metrics."""
    return path.is_dir() and (path / "checkpoints").is_dir() and (path / "metrics.parquet").exists()


def is_index(path: Path) -> bool:
    """An overlay index written by `glassbox overlay build` (its meta.json, no model config)."""
    return path.is_dir() and (path / "meta.json").is_file() and not (path / "config.json").exists()
