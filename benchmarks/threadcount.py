"""The thread line every benchmark prints: the torch thread count it runs with (torch's default unless
GLASSBOX_THREADS says otherwise) and the time of a workload at one thread ÷ its time at that count."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable


def matmul() -> None:
    """The issue's yardstick: a 512×1024 by 1024×1024 float32 matmul."""
    import torch

    a, b = torch.ones(512, 1024), torch.ones(1024, 1024)
    for _ in range(4):
        a @ b


def report(work: Callable[[], object] | None = None, what: str = "4 matmuls 512×1024·1024×1024",
           repeats: int = 3, model=None) -> float:
    """Time `work` (default: `matmul`) at one thread and at the count glassbox picks (for `model` when given:
    see run.load.set_threads), interleaved, medians; print and return the ratio (> 1: one thread is
    slower). The benchmark's own count is restored afterwards."""
    import torch

    from glassbox.run.load import set_threads

    work = work or matmul
    n = set_threads(model)
    saved = os.environ.get("GLASSBOX_THREADS")
    work()  # warm-up
    times: dict[int, list[float]] = {1: [], n: []}
    try:
        for _ in range(repeats):
            for k in times:  # the env var too: glassbox code inside `work` calls set_threads itself
                os.environ["GLASSBOX_THREADS"] = str(k)
                torch.set_num_threads(k)
                t = time.perf_counter()
                work()
                times[k].append(time.perf_counter() - t)
    finally:
        if saved is None:
            os.environ.pop("GLASSBOX_THREADS", None)
        else:
            os.environ["GLASSBOX_THREADS"] = saved
        torch.set_num_threads(n)
    one, default = statistics.median(times[1]), statistics.median(times[n])
    ratio = one / default
    print(f"torch threads: {n} (glassbox's choice; GLASSBOX_THREADS overrides); one thread vs {n}: "
          f"{ratio:.2f}× the time ({one * 1000:.0f} vs {default * 1000:.0f} ms, {what})")
    return ratio
