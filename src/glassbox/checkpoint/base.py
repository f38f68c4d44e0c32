"""What every checkpoint reader hands back: an index of named tensors with their exact place in the
file, read from headers alone, and values on demand; `find_config`, the config.json beside a checkpoint."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glassbox.errors import BadInput


@dataclass(frozen=True)
class TensorEntry:
    name: str  # the Hugging Face name (for GGUF, mapped from source_name)
    source_name: str  # the name as stored in the file
    dtype: str  # safetensors dtype ("F32", "BF16", ...), GGUF block format ("Q4_1", "F32", ...), or torch dtype
    shape: tuple[int, ...]  # Hugging Face layout ([out, in] for linear weights; GGUF's reversed order undone)
    file: Path
    offset: int  # absolute byte offset of the first byte in `file`
    nbytes: int

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class Checkpoint:
    """A checkpoint whose index has been read and validated. Values are read only through `tensor()`."""

    path: Path
    format: str  # "safetensors" | "gguf" | "pickle"
    tensors: dict[str, TensorEntry]
    metadata: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] | None = None  # Hugging Face style config dict, when one was found or derived
    config_source: str = "none"  # where the config came from: "config.json", "gguf metadata", ...
    warnings: list[str] = field(default_factory=list)

    def tensor(self, name: str):  # -> torch.Tensor
        """Float values of one tensor in Hugging Face layout. Readers override this."""
        raise NotImplementedError(f"{self.format} reader cannot load values")

    def close(self) -> None:
        pass

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def find_config(path: Path) -> tuple[dict[str, Any] | None, str]:
    """config.json beside the checkpoint, if it is there and is a JSON object."""
    candidate = path.parent / "config.json"
    if not candidate.is_file():
        return None, "none"
    try:
        config = json.loads(candidate.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"config.json is not valid JSON: {exc}", candidate) from None
    if not isinstance(config, dict):
        raise BadInput("config.json is not a JSON object", candidate)
    return config, "config.json"
