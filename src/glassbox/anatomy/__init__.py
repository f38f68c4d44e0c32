"""Anatomy of a checkpoint: every tensor mapped to its architectural role, every head to its bytes.

`describe(checkpoint)` needs only the checkpoint's index (no tensor values), so it works on files of any
size and on architectures we cannot run. The result's `to_json()` is the `glassbox anatomy --json` contract.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

from glassbox.anatomy.roles import (
    ARCHITECTURES,
    LEVELS,
    Dims,
    HeadSlice,
    classify,
    detect_from_config,
    detect_from_names,
    head_slices,
)
from glassbox.checkpoint.base import Checkpoint, TensorEntry

__all__ = ["Anatomy", "TensorRole", "describe", "head_bytes"]


@dataclass
class TensorRole:
    entry: TensorEntry
    level: str
    layer: int | None
    heads: list[HeadSlice]


@dataclass
class Anatomy:
    checkpoint: Checkpoint
    architecture: str
    architecture_source: str
    dims: Dims | None
    tensors: list[TensorRole]
    warnings: list[str] = field(default_factory=list)
    labels: dict[str, Any] | None = None  # head atlas written into the file by `glassbox annotate`, if any

    @property
    def n_parameters(self) -> int:
        return sum(t.entry.numel for t in self.tensors if t.level != "buffer")

    def levels(self) -> list[dict[str, Any]]:
        totals: dict[str, list[int]] = {}
        for t in self.tensors:
            if t.level != "buffer":
                row = totals.setdefault(t.level, [0, 0])
                row[0] += t.entry.numel
                row[1] += 1
        return [{"level": lv, "n_parameters": totals[lv][0], "tensors": totals[lv][1]}
                for lv in LEVELS if lv in totals]

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "format": self.checkpoint.format,
            "architecture": self.architecture,
            "architecture_source": self.architecture_source,
            "path": str(self.checkpoint.path),
            "config": self.checkpoint.config or {},
            "config_source": self.checkpoint.config_source,
            "n_parameters": self.n_parameters,
            "warnings": list(self.warnings),
            "levels": self.levels(),
            "tensors": [_tensor_json(t) for t in self.tensors],
        }
        if self.dims is not None:
            doc["dims"] = vars(self.dims) | {"group_size": self.dims.group_size}
        if self.labels is not None:
            doc["labels"] = self.labels
        return doc


def _tensor_json(t: TensorRole) -> dict[str, Any]:
    ndim = len(t.entry.shape)
    return {
        "name": t.entry.name,
        "dtype": t.entry.dtype,
        "shape": list(t.entry.shape),
        "level": t.level,
        "layer": t.layer,
        "file": str(t.entry.file),
        "offset": t.entry.offset,
        "nbytes": t.entry.nbytes,
        "heads": [
            {"head": h.head, "kind": h.kind, "kv_group": h.kv_group, "slice": h.slice_str(ndim), "bytes": run}
            for h, run in zip(t.heads, _runs(t.entry, t.heads), strict=True)
        ],
    }


def describe(checkpoint: Checkpoint) -> Anatomy:
    names = list(checkpoint.tensors)
    warnings = list(checkpoint.warnings)
    architecture = detect_from_config(checkpoint.config)
    source = checkpoint.config_source if architecture else ""
    if architecture is None:
        architecture = detect_from_names(names)
        source = "tensor names" if architecture else ""
    if architecture is None:
        model_type = (checkpoint.config or {}).get("model_type")
        warnings.append(f"unknown architecture{f' {model_type!r}' if model_type else ''}: tensors are listed "
                        "with level 'unknown' and no head split")
        architecture, source = "unknown", "none"

    dims = Dims.from_config(architecture, checkpoint.config) if checkpoint.config else None
    if architecture in ARCHITECTURES and dims is None:
        warnings.append("no usable config (layers, heads, hidden size): heads are not split")

    tensors: list[TensorRole] = []
    unknown: list[str] = []
    for entry in checkpoint.tensors.values():
        level, layer = classify(architecture, entry.name)
        if level == "unknown" and architecture != "unknown":
            unknown.append(entry.name)
        heads = head_slices(architecture, entry.name, entry.shape, dims)
        tensors.append(TensorRole(entry, level, layer, heads))
    tensors.sort(key=_reading_order)
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        warnings.append(f"{len(unknown)} tensor(s) match no role of {architecture}: {shown}")
    return Anatomy(checkpoint, architecture, source, dims, tensors, warnings, _labels(checkpoint))


_TOP = ("embedding", "position_embedding")


def _reading_order(t: TensorRole) -> tuple:
    """Embeddings first, then the layers in numeric order (files list layer 10 before layer 2), then the rest."""
    group = 1 if t.layer is not None else (0 if t.level in _TOP or t.level == "buffer" else 2)
    return (group, t.layer or 0, LEVELS.index(t.level), t.entry.name)


def _labels(checkpoint: Checkpoint) -> dict[str, Any] | None:
    from glassbox.anatomy.labels import read_labels

    return read_labels(checkpoint)


@functools.cache
def _element_bytes(dtype: str):
    """A function n_elements → bytes for this storage format, and the block size runs must align to."""
    from glassbox.checkpoint.safetensors import DTYPE_BITS

    if dtype in DTYPE_BITS:
        bits = DTYPE_BITS[dtype]
        return (lambda n: n * bits // 8), 1
    try:  # GGUF block formats: (elements per block, bytes per block)
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        block, size = GGML_QUANT_SIZES[GGMLQuantizationType[dtype]]
        return (lambda n: n // block * size), block
    except (ImportError, KeyError):
        pass
    torch_sizes = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4,
                   "int16": 2, "int8": 1, "uint8": 1, "bool": 1}
    size = torch_sizes.get(dtype.removeprefix("torch."), 0)
    return (lambda n: n * size), 1


def head_bytes(entry: TensorEntry, head: HeadSlice) -> dict[str, Any]:
    """Where in the file head `head` of this tensor lies: its first run's absolute offset, the run length,
    and (for a slice across the fast axis) the stride between runs and how many there are."""
    return _runs(entry, [head])[0]


def _runs(entry: TensorEntry, heads: list[HeadSlice]) -> list[dict[str, Any]]:
    if not heads:
        return []
    shape, axis = entry.shape, heads[0].axis  # all heads of one tensor lie along the same axis
    inner = math.prod(shape[axis + 1:])
    outer = math.prod(shape[:axis])
    to_bytes, block = _element_bytes(entry.dtype)
    stride = to_bytes(shape[axis] * inner) if outer > 1 else None
    out = []
    for head in heads:
        start, stop = head.start * inner, head.stop * inner
        aligned = start % block == 0 and stop % block == 0
        if not aligned:  # a quantization block holds this head and its neighbour: report the blocks it touches
            start, stop = start // block * block, -(-stop // block) * block
        run = {"offset": entry.offset + to_bytes(start) if entry.offset >= 0 else -1,
               "length": to_bytes(stop - start), "stride": stride, "count": outer}
        if not aligned:
            run["shared_blocks"] = True
        out.append(run)
    return out
