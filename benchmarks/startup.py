"""Start-up time of the CLI against `main`: `glassbox --help` and `glassbox anatomy smollm2-135m`, each a fresh
Python process, this tree's code vs main's (its `src/` taken out of git into a temporary folder), interleaved,
medians of REPEATS. A ratio ≤ 1 means this tree starts as fast as main or faster.

Run: .venv/bin/python benchmarks/startup.py [--base REF] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {"glassbox --help": ["--help"], "glassbox anatomy smollm2-135m": ["anatomy", "smollm2-135m"]}


def _export(ref: str, into: Path) -> Path:
    """`ref`'s src/ folder, unpacked from `git archive` (no checkout: the work tree is left alone)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", ref, "src"], check=True,
                             capture_output=True).stdout
    tar = into / "src.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(into, filter="data")
    return into / "src"


def _time(src: Path, args: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(src))
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "glassbox", *args], env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="the git ref to compare with (default: main)")
    parser.add_argument("--repeats", type=int, default=7)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": ROOT / "src", opts.base: _export(opts.base, Path(tmp))}
        for what, args in COMMANDS.items():
            for src in trees.values():
                _time(src, args)  # warm-up: the file cache and the bundled model's dequantized copy
            times: dict[str, list[float]] = {name: [] for name in trees}
            for _ in range(opts.repeats):
                for name, src in trees.items():
                    times[name].append(_time(src, args))
            this, base = statistics.median(times["this tree"]), statistics.median(times[opts.base])
            print(f"{what}: this tree {this * 1000:.0f} ms, {opts.base} {base * 1000:.0f} ms "
                  f"(medians of {opts.repeats}): ratio {this / base:.2f}")
    print("threads: not used (start-up imports only; no torch work is timed)")


if __name__ == "__main__":
    main()
