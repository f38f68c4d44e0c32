"""Peak resident memory and wall time of one command run as a child process (os.wait4 gives each child's own
rusage, so commands measured one after another do not share a maximum)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def run(argv: list[str], stdout: Path | None = None, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run `argv` (a glassbox command line: ["atlas", ...], or ["-c", code] for Python) → {"seconds",
    "peak_rss_gb", "rc"}; stdout to the given file, stderr passed through."""
    cmd = [sys.executable, *(argv if argv[0] == "-c" else ["-m", "glassbox", *argv])]
    environ = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    out = open(stdout, "wb") if stdout else subprocess.DEVNULL
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, env=environ)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    finally:
        if stdout:
            out.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": seconds, "peak_rss_gb": usage.ru_maxrss * 1024 / 2**30, "rc": proc.returncode}


def write_result(out: Path, result: dict) -> None:
    """The benchmark's figures as JSON at `out` (folders made)."""
    import json

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"written {out}")
