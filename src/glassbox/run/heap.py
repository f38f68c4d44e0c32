"""Freed memory goes back to the system: glibc's malloc, told to map large blocks on their own.

glibc serves an allocation from its heaps unless it is larger than the mmap threshold, and that threshold grows
(up to 32 MB) each time a mapped block is freed. After the first large tensor is freed, every tensor below 32 MB
is cut from a heap, and a freed one stays resident until its neighbours are freed too. The atlas's validation
runs batches of many sizes (tens of MB of logits each), so its resident memory grew by ~1.8 GB of blocks that
were freed but never returned (benchmarks/memprofile.py, SmolLM2-135M: 1.40 GB → 3.30 GB over the ablations,
while what is alive stays near the probe phase's 1.4 GB). Fixing the threshold at THRESHOLD maps each larger
block on its own and unmaps it when freed, so the peak is what is alive. Numerics are unaffected (torch aligns
every tensor to 64 bytes either way). Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

THRESHOLD = 1 << 20  # bytes: blocks at least this large get their own mapping (a tensor of 256k float32)
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
_done = False


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def map_large_blocks() -> bool:
    """Once per process: large blocks are mapped on their own and returned when freed → whether it applied."""
    global _done
    if _done:
        return True
    libc = _libc()
    if libc is None:
        return False
    _done = bool(libc.mallopt(_M_MMAP_THRESHOLD, THRESHOLD))
    return _done


def trim() -> None:
    """Hand the heaps' free pages back to the system now (after a phase that freed many small blocks)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
