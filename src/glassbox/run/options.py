"""The one definition of --dtype, --device and --max-memory, shared by every command that runs a model.

A command takes them as parameters (`dtype: str = options.DTYPE`, ...); their callbacks check the spelling while
the command line is parsed (exit 2, one line, before anything loads) and record the values for the process
(`placement.choose`, `memory.set_budget`), which `load_model` and the batch sizing read. The checks that need the
machine (no CUDA here, a dtype the device cannot do, a model too big) run in `load_model` before any weight is
read. A command's JSON document takes "dtype" and "device" from `Loaded.placement`.
"""

from __future__ import annotations

from typing import Any

import typer

from glassbox.run import memory, placement


def _dtype(value: str) -> str:
    placement.choose(dtype=value)
    return value


def _device(value: str) -> str:
    placement.choose(device=value)
    if value not in ("auto", "cpu"):  # is it here? (imports torch, which the command needs anyway)
        placement.resolve_device(value)
    return value


def _max_memory(value: str | None) -> str | None:
    memory.set_budget(None if value is None else memory.parse_size(value))
    return value


DTYPE: Any = typer.Option(
    "auto", "--dtype", callback=_dtype, metavar="auto|float32|bfloat16|float16",
    help="Float type of the weights and activations. auto: float32 when its weights take at most half the "
         "device's memory (today's results, bit for bit), else the checkpoint's stored half type.")
DEVICE: Any = typer.Option(
    "auto", "--device", callback=_device, metavar=placement.DEVICE_SYNTAX,
    help="Where the model runs. auto: CUDA when present, then MPS, then the CPU.")
MAX_MEMORY: Any = typer.Option(
    None, "--max-memory", callback=_max_memory, metavar="SIZE",
    help="Memory budget (e.g. 8GB): a model that needs more is refused before loading; probes, ablations and "
         "patching batch within it. Default: the device's free memory.")


def reset() -> None:
    """Back to auto and no budget (cli.main, after each command: in-process callers share the process)."""
    placement.reset()
    memory.set_budget(None)
