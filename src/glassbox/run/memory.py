"""Memory, asked before it is spent: what a model needs in a dtype, what the device has, and batch sizes that fit.

- `need(n_params, dtype)`: the weights' bytes plus WORKING (a fixed working set for a command's activations and
  the interpreter's own tables, measured below 0.4 GB for SmolLM2's atlas beyond its weights) — the figure the
  too-big refusal prints.
- `total(device)`, `available(device)`: /proc/meminfo (MemTotal, MemAvailable; a cgroup limit when smaller) on
  the CPU, `torch.cuda.mem_get_info` on CUDA, the recommended working set on MPS.
- `set_budget(bytes)` is `--max-memory`; `budget(device)` is it or, unset, what the device has free;
  `rows(per_row, device)` is how many batch rows of `per_row` bytes fit half of it (probes, ablations,
  patching, the lens's chunks size themselves with it).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from glassbox.errors import BadInput

WORKING = 512 * 2**20
_budget: int | None = None
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}


def parse_size(text: str) -> int:
    """"24GB", "512 MiB", "1.5g", "1000000" (bytes) → bytes (binary units: 1 GB = 2^30 bytes)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise BadInput(f"--max-memory {text!r}: expected a size such as 8GB, 512MB or a byte count")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise BadInput(f"--max-memory {text!r}: must be more than zero")
    return value


def gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB"


def set_budget(n_bytes: int | None) -> None:
    """`--max-memory` for this process (None: the device's free memory, read when asked)."""
    global _budget
    _budget = n_bytes


def asked() -> int | None:
    """The --max-memory of this process (bytes), or None when it was not given."""
    return _budget


def _meminfo() -> dict[str, int]:
    out = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(path).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 2**60:
            return int(raw)
    return None


def total(device: Any) -> int:
    """The device's whole memory in bytes."""
    if device.type == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[1])
    info = _meminfo()
    whole = info.get("MemTotal") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _cgroup_limit()
    return min(whole, limit) if limit else whole


def available(device: Any) -> int:
    """Bytes the device can still give (free + reclaimable page cache on the CPU)."""
    if device.type == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "mps":
        import torch

        return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    info = _meminfo()
    free = info.get("MemAvailable", total(device))
    limit = _cgroup_limit()
    if limit:
        try:
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            free = min(free, limit - used)
        except (OSError, ValueError):
            pass
    return free


def budget(device: Any) -> int:
    """--max-memory when given, else the device's available memory now."""
    return _budget if _budget is not None else available(device)


def need(n_params: int, dtype: str) -> int:
    """Bytes a command needs to hold the model in `dtype`: its weights plus the WORKING set."""
    return n_params * _itemsize(dtype) + WORKING


def _itemsize(dtype: str) -> int:
    return 4 if dtype == "float32" else 2


def check_fits(n_params: int, dtype: str, device: Any, other: str | None = None) -> None:
    """BadInput, before a weight is read, when the model in `dtype` exceeds the budget: the figures, and the
    option that would fit (`other`: the half type this device runs), e.g. "needs 32.1 GB in float32, 22.8 GB
    free; --dtype bfloat16 needs 16.1 GB"."""
    have = budget(device)
    needed = need(n_params, dtype)
    if needed <= have:
        return
    where = f"--max-memory is {gb(have)}" if _budget is not None else f"{gb(have)} free on {device}"
    msg = f"the model needs {gb(needed)} in {dtype} ({n_params / 1e9:.2f} B parameters), {where}"
    if dtype == "float32" and other and need(n_params, other) <= have:
        msg += f"; --dtype {other} needs {gb(need(n_params, other))}"
    elif dtype == "float32" and other:
        msg += f"; even --dtype {other} needs {gb(need(n_params, other))}"
    raise BadInput(msg)


def rows(per_row: int, device: Any, at_least: int = 1) -> int:
    """Batch rows of `per_row` bytes that fit half of the budget (the other half: weights' working copies,
    the allocator's slack): what probes, ablations and patching batch by."""
    return max(at_least, int(budget(device) // 2 // max(per_row, 1)))


def forward_row_bytes(config: Any, seq: int, itemsize: int) -> int:
    """Bytes one batch row of `seq` tokens holds at its peak in an eager forward: the logits (float32 when read),
    ~12 residual-width activations per layer, one layer's attention patterns (scores and softmax)."""
    d, layers, vocab = int(config.hidden_size), int(config.num_hidden_layers), int(config.vocab_size)
    heads = int(config.num_attention_heads)
    return seq * vocab * 4 + seq * d * layers * 12 * itemsize + 2 * heads * seq * seq * itemsize


def batch_rows(loaded: Any, seq: int, wanted: int) -> int:
    """`wanted` rows per forward, fewer when they would not fit half of the budget (see `rows`)."""
    import torch

    p = next(loaded.model.parameters())
    return min(wanted, rows(forward_row_bytes(loaded.config, seq, p.element_size()), torch.device(p.device)))
