"""The one dtype table of the checkpoint readers: each element type by its safetensors name (what every reader
reports in `TensorEntry.dtype`), its size in bits, its torch name and the numpy type its raw bytes are read as.

The safetensors reader accepts the names marked `safetensors` (the kinds safetensors ≥0.6 knows, sub-byte and
fp8 included); the pickle reader names torch's dtypes by the same spelling (`torch_name` → row); the loader turns
a name into a torch dtype with `torch_dtype`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DType:
    name: str  # the safetensors spelling: F32, BF16, F8_E4M3, ...
    bits: int  # per element
    torch_name: str | None  # the torch dtype's attribute name; None: torch has no such type
    numpy_raw: str | None  # read the bytes as this numpy type (then view as torch_name when they differ); None:
    # the values cannot be memory-mapped
    safetensors: bool = True  # a dtype the safetensors format knows

    @property
    def itemsize(self) -> int:
        """Bytes per element (whole-byte types only)."""
        return self.bits // 8


TABLE: tuple[DType, ...] = (
    DType("BOOL", 8, "bool", "bool"),
    DType("U8", 8, "uint8", "uint8"),
    DType("I8", 8, "int8", "int8"),
    DType("F8_E5M2", 8, "float8_e5m2", "uint8"),
    DType("F8_E4M3", 8, "float8_e4m3fn", "uint8"),
    DType("F8_E8M0", 8, "float8_e8m0fnu", None),
    DType("I16", 16, "int16", "int16"),
    DType("U16", 16, "uint16", "uint16"),
    DType("F16", 16, "float16", "float16"),
    DType("BF16", 16, "bfloat16", "uint16"),
    DType("I32", 32, "int32", "int32"),
    DType("U32", 32, "uint32", "uint32"),
    DType("F32", 32, "float32", "float32"),
    DType("I64", 64, "int64", "int64"),
    DType("U64", 64, "uint64", "uint64"),
    DType("F64", 64, "float64", "float64"),
    DType("C64", 64, "complex64", "complex64"),
    DType("F4", 4, None, None),
    DType("F6_E2M3", 6, None, None),
    DType("F6_E3M2", 6, None, None),
    # torch types a pickle checkpoint can hold that safetensors has no name for
    DType("C128", 128, "complex128", None, safetensors=False),
    DType("F8_E4M3FNUZ", 8, "float8_e4m3fnuz", None, safetensors=False),
    DType("F8_E5M2FNUZ", 8, "float8_e5m2fnuz", None, safetensors=False),
)
BY_NAME: dict[str, DType] = {d.name: d for d in TABLE}
BY_TORCH_NAME: dict[str, DType] = {d.torch_name: d for d in TABLE if d.torch_name}
SAFETENSORS_BITS: dict[str, int] = {d.name: d.bits for d in TABLE if d.safetensors}


def torch_dtype(name: str) -> Any:
    """The torch dtype of a safetensors dtype name, or None when torch has none (or the name is unknown)."""
    import torch

    row = BY_NAME.get(name)
    return getattr(torch, row.torch_name, None) if row is not None and row.torch_name else None
