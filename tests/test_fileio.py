"""glassbox.fileio in-process: atomic files (handle and path forms), and the folder swap with its recovery
(a dead writer's aside copy put back, stale ones swept). The kill -9 runs are in test_interrupted.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from glassbox import fileio


def dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def siblings(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p.name != target.name)


def test_temp_dir_beside_has_the_usual_mode(tmp_path):
    mask = os.umask(0)
    os.umask(mask)
    tmp = fileio.temp_dir_beside(tmp_path / "out folder")
    assert tmp.parent == tmp_path and tmp.name.startswith(".out folder.")
    assert tmp.stat().st_mode & 0o777 == 0o777 & ~mask  # not mkdtemp's private 0700: it becomes the output


def test_atomic_write_and_path(tmp_path):
    out = tmp_path / "sub" / "a.json"
    fileio.write_json(out, {"x": 1})
    assert out.read_text() == '{\n "x": 1\n}'
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's private 0600
    with pytest.raises(RuntimeError), fileio.atomic_write(out, "w") as f:
        f.write("half")
        raise RuntimeError("interrupted")
    assert out.read_text() == '{\n "x": 1\n}' and siblings(out) == []
    png = tmp_path / "sub" / "b.png"
    with fileio.atomic_path(png) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == png.parent  # writers pick the format by it
        tmp.write_bytes(b"1")
    assert png.read_bytes() == b"1" and siblings(out) == ["b.png"]


def make(folder: Path, text: str) -> Path:
    folder.mkdir()
    (folder / "meta.json").write_text(text)
    return folder


def test_replace_dir_swaps_and_leaves_nothing(tmp_path):
    target = make(tmp_path / "idx", "old")
    fileio.replace_dir(make(tmp_path / ".idx.new", "new"), target)
    assert (target / "meta.json").read_text() == "new" and siblings(target) == []


def test_restore_dir_puts_a_dead_writers_aside_back(tmp_path):
    target = tmp_path / "idx"
    aside = make(tmp_path / f".idx.old-{dead_pid()}-abc123", "old")  # killed between the two renames
    assert fileio.restore_dir(target) == target
    assert (target / "meta.json").read_text() == "old" and not aside.exists()
    assert fileio.restore_dir(target) == target  # present: nothing to do


def test_restore_dir_leaves_a_live_writers_aside(tmp_path):
    target = tmp_path / "idx"
    live = make(tmp_path / f".idx.old-{os.getppid()}-abc123", "old")  # a writer still mid-swap
    assert fileio.restore_dir(target) == target and not target.exists() and live.exists()


def test_replace_dir_sweeps_stale_asides(tmp_path):
    target = make(tmp_path / "idx", "current")
    make(tmp_path / f".idx.old-{dead_pid()}-abc123", "older")  # killed after the second rename
    fileio.replace_dir(make(tmp_path / ".idx.new", "new"), target)
    assert (target / "meta.json").read_text() == "new" and siblings(target) == []
