"""The two values the execution seam passes around (where items run, one unit of work) and the thread setting of
a worker process; kept apart from `seam` so that the Ray back end can use them without importing the seam."""

from __future__ import annotations

from dataclasses import dataclass

from glassbox.run import memory
from glassbox.run.load import set_threads


@dataclass(frozen=True)
class Backend:
    """Where items run: `local` (this process), `pool` (N local processes) or `ray` (a cluster)."""

    kind: str = "local"
    workers: int = 1  # pool size; for ray, an upper bound on actors (0: one per cluster CPU)
    address: str | None = None  # ray: "auto" or "ray://HOST:PORT"
    max_retries: int = 3  # how often an item is retried after its worker process died
    threads: int = 1  # torch threads per worker: set to the driver's count when the job starts
    budget: int | None = None  # the driver's --max-memory (bytes; None: each worker's free memory), likewise

    def describe(self) -> str:
        if self.kind == "ray":
            return f"ray ({self.address})"
        return f"pool of {self.workers}" if self.kind == "pool" else "local"


@dataclass(frozen=True)
class Item:
    """One unit of work: `key` names its saved result (file-safe, unique in the job), `args` go to the worker,
    `stamp` is what the result depends on besides the job (a saved result with another stamp is recomputed)."""

    key: str
    args: tuple
    stamp: str = ""


def worker_threads(threads: int, budget: int | None = None) -> None:
    """In a worker process: compute with `threads` torch threads, also where the work calls set_threads(), and
    within the driver's --max-memory `budget` (a worker process does not share the driver's option state)."""
    import os

    os.environ["GLASSBOX_THREADS"] = str(threads)
    set_threads()
    if budget is not None:
        memory.set_budget(budget)
