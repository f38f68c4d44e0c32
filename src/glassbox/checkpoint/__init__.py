"""Strict checkpoint readers. `open_checkpoint` picks the reader from what the path is.

Every reader validates the file's index before trusting any of it, never reads tensor bytes to list
tensors, and raises BadInput (exit 2) naming the file and the rule that broke.
"""

from __future__ import annotations

import os
from pathlib import Path

from glassbox.bundled import resolve
from glassbox.checkpoint.base import Checkpoint, TensorEntry
from glassbox.errors import BadInput

__all__ = ["Checkpoint", "TensorEntry", "open_checkpoint", "pick_in_directory"]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def open_checkpoint(spec: str | os.PathLike, allow_pickle: bool = False) -> Checkpoint:
    """Open a .safetensors file, a sharded index (or the folder holding one), a .gguf file, a pickle
    checkpoint, or a bundled model by short name."""
    path = resolve(spec)
    if path.is_dir():
        path = pick_in_directory(path)
    name = path.name.lower()
    if name.endswith(".safetensors.index.json"):
        from glassbox.checkpoint.sharded import open_sharded

        return open_sharded(path)
    if name.endswith(".safetensors"):
        from glassbox.checkpoint.safetensors import open_safetensors

        return open_safetensors(path)
    if name.endswith(".gguf"):
        from glassbox.checkpoint.gguf import open_gguf

        return open_gguf(path)
    if name.endswith(PICKLE_SUFFIXES):
        from glassbox.checkpoint.pickled import open_pickle

        return open_pickle(path, allow_pickle=allow_pickle)
    raise BadInput("not a checkpoint this tool reads (.safetensors, .safetensors.index.json, .gguf, "
                   f"{', '.join(PICKLE_SUFFIXES)})", path)


def pick_in_directory(folder: Path) -> Path:
    """A model folder: prefer a sharded index, then one safetensors file (model.safetensors among several),
    then GGUF, then pickle."""
    for pattern in ("*.safetensors.index.json", "*.safetensors", "*.gguf", *(f"*{s}" for s in PICKLE_SUFFIXES)):
        found = sorted(folder.glob(pattern))
        if pattern == "*.safetensors" and len(found) > 1:
            if (folder / "model.safetensors") in found:
                return folder / "model.safetensors"
            raise BadInput(f"{len(found)} .safetensors files and no *.safetensors.index.json to tie them "
                           "together; name one file", folder)
        if found:
            return found[0]
    raise BadInput("no checkpoint in this folder (.safetensors, index.json, .gguf, .bin/.pt)", folder)
