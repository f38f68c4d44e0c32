"""Sharded safetensors checkpoints: a `*.safetensors.index.json` weight map over several shard files.

Checked: the index is a JSON object with a str→str `weight_map`; every shard path stays inside the folder
and exists; each shard is itself a valid safetensors file; every tensor lives in exactly one shard, the one
the map names.
"""

from __future__ import annotations

import json
from pathlib import Path

from glassbox.checkpoint.base import Checkpoint, TensorEntry, find_config
from glassbox.checkpoint.safetensors import SafetensorsCheckpoint, open_safetensors
from glassbox.errors import BadInput

MAX_INDEX = 50_000_000


def open_sharded(index_path: Path) -> Checkpoint:
    index_path = Path(index_path)
    folder = index_path.parent.resolve()
    try:
        if index_path.stat().st_size > MAX_INDEX:
            raise BadInput(f"index is larger than {MAX_INDEX} bytes", index_path)
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"index is not valid JSON: {exc}", index_path) from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise BadInput("index has no 'weight_map' object mapping tensor names to shard files", index_path)

    shards: dict[str, Checkpoint] = {}
    for shard_name in sorted(set(weight_map.values())):
        shard_path = Path(shard_name)
        resolved = (folder / shard_path).resolve()
        if shard_path.is_absolute() or ".." in shard_path.parts or not resolved.is_relative_to(folder):
            raise BadInput(f"shard path {shard_name!r} escapes the checkpoint folder", index_path)
        if not resolved.is_file():
            raise BadInput(f"shard {shard_name!r} named in the index is missing", index_path)
        shards[shard_name] = open_safetensors(resolved)

    tensors: dict[str, TensorEntry] = {}
    warnings: list[str] = []
    owner: dict[str, str] = {}
    for shard_name, shard in shards.items():
        warnings += [f"{shard_name}: {w}" for w in shard.warnings]
        for name, entry in shard.tensors.items():
            if name in owner:
                raise BadInput(f"tensor {name!r} is stored in two shards: {owner[name]} and {shard_name}",
                               index_path)
            owner[name] = shard_name
            if weight_map.get(name) != shard_name:
                raise BadInput(f"tensor {name!r} is in shard {shard_name} but the index maps it to "
                               f"{weight_map.get(name)!r}", index_path)
            tensors[name] = entry
    for name, shard_name in weight_map.items():
        if name not in owner:
            raise BadInput(f"tensor {name!r} is mapped to {shard_name} but that shard does not contain it",
                           index_path)

    config, source = find_config(index_path)
    meta = index.get("metadata") if isinstance(index.get("metadata"), dict) else {}
    metadata = {str(k): str(v) for k, v in meta.items()}
    for shard in shards.values():
        metadata.update(shard.metadata)
    return ShardedCheckpoint(path=index_path, format="safetensors", tensors=tensors, metadata=metadata,
                             config=config, config_source=source, warnings=warnings)


class ShardedCheckpoint(SafetensorsCheckpoint):
    """Each entry records its own shard file, so memory-mapping works exactly as for one file."""
