"""The torch thread policy: how many threads a model's forward gets on this machine.

torch's own default (one per physical core) unless GLASSBOX_THREADS says otherwise; on this project's 2-core
machines two threads ran a GPT-2-small forward 1.9× faster than one (issue 9), and every benchmark prints the
count it used and the one-thread ratio. Models under SMALL_MODEL parameters (the training presets, the tests'
tiny models) get one thread: their ops are too small to split.
"""

from __future__ import annotations

import os
from typing import Any

from glassbox.errors import BadInput

SMALL_MODEL = 10_000_000  # parameters; below this one thread (see set_threads)
_DEFAULT_THREADS: int | None = None  # torch's count when first asked (its default, or the host program's choice)


def default_threads() -> int | None:
    """torch's own count as first seen by set_threads (None before its first call)."""
    return _DEFAULT_THREADS


def set_threads(model: Any = None) -> int:
    """The torch thread count: GLASSBOX_THREADS when set (a positive integer); else one thread for a model of
    fewer than SMALL_MODEL parameters (its ops are too small to split: measured 15× faster on one thread for
    the induction-2l training preset on a loaded 2-core machine), else torch's own default. Returns it."""
    import torch

    global _DEFAULT_THREADS
    if _DEFAULT_THREADS is None:
        _DEFAULT_THREADS = torch.get_num_threads()
    raw = os.environ.get("GLASSBOX_THREADS", "").strip()
    if raw and (not raw.isdigit() or int(raw) < 1):
        raise BadInput(f"GLASSBOX_THREADS={raw!r}: expected a positive integer (the torch thread count)")
    if raw:
        n = int(raw)
    elif model is not None and sum(p.numel() for p in model.parameters()) < SMALL_MODEL:
        n = 1
    else:
        n = _DEFAULT_THREADS
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
