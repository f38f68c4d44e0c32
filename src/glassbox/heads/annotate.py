"""Write an atlas into a checkpoint: safetensors `__metadata__["glassbox.atlas"]`, or a sidecar JSON for GGUF.

A safetensors file is rewritten as: 8-byte header length, the same header JSON with the atlas added to
`__metadata__` (padded with spaces to a multiple of 8, as the reference writer aligns it), then the
original tensor bytes streamed unchanged (offsets in the header are relative to the data start, so
they stay valid). The result goes through a temp file and a rename. GGUF and pickle checkpoints are
left untouched; their atlas goes to `<file>.glassbox-atlas.json` beside them, where `anatomy` looks.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from glassbox.anatomy.labels import ATLAS_KEY, SIDECAR_SUFFIX, sidecar_path
from glassbox.anatomy.labels import read_labels as _read_labels
from glassbox.checkpoint import open_checkpoint
from glassbox.errors import BadInput
from glassbox.fileio import atomic_write, write_json

CHUNK = 8 << 20

__all__ = ["ATLAS_KEY", "SIDECAR_SUFFIX", "annotate", "load_atlas", "read_labels"]


def read_labels(checkpoint: Any) -> dict[str, Any] | None:
    """The atlas stored with an open Checkpoint (metadata key or sidecar), or None."""
    return _read_labels(checkpoint)


def load_atlas(path: str | Path) -> dict[str, Any]:
    """Read and sanity-check an atlas JSON file (the `glassbox atlas --json` document)."""
    path = Path(path)
    try:
        atlas = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput("no such atlas file", path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"not a JSON atlas: {exc}", path) from None
    ok = (isinstance(atlas, dict) and isinstance(atlas.get("heads"), list)
          and isinstance(atlas.get("n_layers"), int) and isinstance(atlas.get("n_heads"), int)
          and all(isinstance(h, dict) and {"layer", "head", "scores", "roles"} <= set(h) for h in atlas["heads"]))
    if not ok:
        raise BadInput("not an atlas (needs n_layers, n_heads and heads with layer, head, scores, roles)", path)
    return atlas


def _check_dims(atlas: dict[str, Any], config: dict[str, Any] | None, path: Path) -> None:
    if not config:
        return
    layers = config.get("num_hidden_layers", config.get("n_layer"))
    heads = config.get("num_attention_heads", config.get("n_head"))
    if isinstance(layers, int) and isinstance(heads, int) and (layers, heads) != (atlas["n_layers"], atlas["n_heads"]):
        raise BadInput(f"the atlas is for {atlas['n_layers']} layers × {atlas['n_heads']} heads but this "
                       f"checkpoint has {layers} × {heads}", path)


def annotate(checkpoint: str | Path, atlas: dict[str, Any], out: str | Path | None) -> dict[str, Any]:
    """Store `atlas` with `checkpoint`; → a summary {path, format, key, ...}. Bad input raises BadInput."""
    with open_checkpoint(checkpoint) as ck:  # strict validation of the input first
        fmt, src, config = ck.format, Path(ck.path), ck.config
        n_tensors = len(ck.tensors)
    _check_dims(atlas, config, src)
    text = json.dumps(atlas, separators=(",", ":"), sort_keys=False)
    if fmt != "safetensors" or src.name.endswith(".index.json"):
        side = sidecar_path(src)
        write_json(side, atlas)
        return {"path": str(side), "format": fmt, "sidecar": True, "key": None, "tensors": n_tensors}
    if out is None:
        raise BadInput("--out is required for a safetensors checkpoint (the annotated copy)")
    out = Path(out)
    data_bytes = _rewrite(src, out, text)
    return {"path": str(out), "format": fmt, "sidecar": False, "key": ATLAS_KEY, "tensors": n_tensors,
            "data_bytes": data_bytes}


def _rewrite(src: Path, out: Path, atlas_text: str) -> int:
    """Copy src to out with the atlas in __metadata__; tensor bytes streamed unchanged → bytes copied."""
    with open(src, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n).decode("utf-8"))
        meta = dict(header.pop("__metadata__", None) or {})
        meta[ATLAS_KEY] = atlas_text
        blob = json.dumps({"__metadata__": meta, **header}, separators=(",", ":")).encode("utf-8")
        blob += b" " * (-len(blob) % 8)
        copied = 0
        with atomic_write(out, "wb") as g:
            g.write(struct.pack("<Q", len(blob)))
            g.write(blob)
            while chunk := f.read(CHUNK):
                g.write(chunk)
                copied += len(chunk)
    return copied
