"""Reading values to look for trouble (NaN, Inf): opt-in, since it touches every byte of the file."""

from __future__ import annotations

from glassbox import progress
from glassbox.checkpoint.base import Checkpoint


def scan_values(checkpoint: Checkpoint) -> list[str]:
    import torch

    warnings = []
    for name in progress.track(list(checkpoint.tensors), "checking values"):
        values = checkpoint.tensor(name)
        if not (values.is_floating_point() or values.is_complex()):
            continue
        bad = ~torch.isfinite(values)
        if bool(bad.any()):
            n_nan = int(torch.isnan(values).sum())
            warnings.append(f"tensor {name!r} has {n_nan} NaN and {int(bad.sum()) - n_nan} Inf value(s)")
    return warnings
