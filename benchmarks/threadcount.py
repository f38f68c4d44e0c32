"""The thread line every benchmark prints: the torch thread count it runs with (torch's default unless
GLASSBOX_THREADS says otherwise) and the time of a workload at one thread ÷ its time at that count."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def report(work: Callable[[], object], what: str, repeats: int = 3) -> float:
    """Time `work` at one thread and at the benchmark's count (interleaved, medians); print and return the
    ratio (> 1: one thread is slower). The benchmark's own count is restored afterwards."""
    import torch

    from glassbox.run.load import set_threads

    n = set_threads()
    work()  # warm-up
    times: dict[int, list[float]] = {1: [], n: []}
    for _ in range(repeats):
        for k in times:
            torch.set_num_threads(k)
            t = time.perf_counter()
            work()
            times[k].append(time.perf_counter() - t)
    torch.set_num_threads(n)
    one, default = statistics.median(times[1]), statistics.median(times[n])
    ratio = one / default
    print(f"torch threads: {n} (torch's default unless GLASSBOX_THREADS is set); one thread vs {n}: "
          f"{ratio:.2f}× the time ({one * 1000:.0f} vs {default * 1000:.0f} ms, {what})")
    return ratio
