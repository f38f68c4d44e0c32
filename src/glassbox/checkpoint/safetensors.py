"""A strict safetensors reader: every byte of the header is validated before anything is trusted.

The rules are the reference library's (header size, UTF-8 JSON object, known dtypes, shapes, offsets that
tile the buffer exactly, a str→str `__metadata__`), plus warnings for what the reference accepts silently
(duplicate keys, odd names). Listing reads only the header; values are memory-mapped on demand.
"""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path
from typing import Any

from glassbox.checkpoint import dtypes
from glassbox.checkpoint.base import Checkpoint, TensorEntry, find_config
from glassbox.errors import BadInput

MAX_HEADER = 100_000_000  # the reference library's limit
MAX_ELEMENTS = 2**62  # shapes whose product overflows this are absurd, and would overflow usize math

DTYPE_BITS = dtypes.SAFETENSORS_BITS  # dtype → bits per element (checkpoint/dtypes.py)


class _Pairs:
    """object_pairs_hook that builds each JSON object as a dict (C speed) and remembers which objects had a
    key twice: a duplicate tensor name or a duplicate key in a tensor entry only warns (the reference reader keeps
    the last), but `__metadata__` twice at the top level, or a key twice inside it, is rejected, as the
    reference reader rejects it."""

    def __init__(self) -> None:
        # id(dict) → (the dict, its duplicated keys); holding the dict keeps its id from being reused by a
        # later object when a duplicate entry's first value is dropped
        self.duplicated: dict[int, tuple[dict[str, Any], list[str]]] = {}

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            self.duplicated[id(obj)] = (obj, [k for k, _ in pairs if k in seen or seen.add(k)])
        return obj


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _lone_surrogate(value: Any) -> str | None:
    """The first string (key or value) holding a lone surrogate, which no UTF-8 text can encode."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return item
    return None


def read_header(path: Path) -> tuple[dict[str, Any], int, int, list[str]]:
    """Return (header dict, header length N, file size, warnings) after checking the framing rules."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise BadInput(f"file is {size} bytes; a safetensors file has at least 8 (the header length)", path)
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_HEADER:
                raise BadInput(f"header length {n} exceeds the limit of {MAX_HEADER} bytes", path)
            if 8 + n > size:
                raise BadInput(f"header length {n} runs past the end of the {size}-byte file (truncated?)", path)
            raw = f.read(n)
    except OSError as exc:
        raise BadInput(f"cannot read: {exc.strerror or exc}", path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"header is not valid UTF-8 (byte {exc.start + 8})", path) from None
    if not text.startswith("{"):
        raise BadInput("header is not a JSON object (it must start with '{')", path)
    warnings: list[str] = []
    pairs = _Pairs()
    try:
        header = json.loads(text, object_pairs_hook=pairs)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise BadInput(f"header is not valid JSON: {exc}", path) from None
    # JSON may spell a lone surrogate as an escape ("\\ud800"): valid JSON syntax, but not text; the
    # reference reader rejects it. The regex keeps the walk off the common path.
    if _SURROGATE_ESCAPE.search(text) and (bad := _lone_surrogate(header)) is not None:
        raise BadInput(f"header holds a lone surrogate escape ({bad[:40]!r}), which is not valid Unicode text", path)
    if isinstance(header, dict):
        if "__metadata__" in pairs.duplicated.get(id(header), (None, []))[1]:  # the reference: a duplicate field
            raise BadInput("duplicate field __metadata__ at the top level of the JSON header", path)
        meta = header.get("__metadata__")
        if isinstance(meta, dict) and id(meta) in pairs.duplicated:
            keys = ", ".join(repr(k) for k in pairs.duplicated[id(meta)][1])
            raise BadInput(f"duplicate key(s) {keys} inside __metadata__ (which value wins is undefined)", path)
        for obj, keys in pairs.duplicated.values():
            if obj is not meta:
                warnings.extend(f"duplicate key {k!r} in the JSON header: the reference reader keeps the last one"
                                for k in keys)
    if not isinstance(header, dict):
        raise BadInput("header is not a JSON object", path)
    return header, n, size, warnings


def _check_name(name: str) -> str | None:
    if name == "":
        return "a tensor has an empty name"
    if "/.." in name or name.startswith(".."):
        return f"tensor name {name!r} contains a path traversal ('..')"
    if "\x00" in name or "\n" in name or "\r" in name:
        return f"tensor name {name!r} contains a NUL or newline character"
    return None


def parse_entries(path: Path, header: dict[str, Any], n: int, size: int,
                  warnings: list[str]) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """Validate every tensor entry and the offsets' tiling of the data buffer."""
    metadata: dict[str, str] = {}
    raw_meta = header.get("__metadata__")
    if raw_meta is not None:
        if not isinstance(raw_meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw_meta.items()
        ):
            raise BadInput("__metadata__ must be a JSON object mapping strings to strings", path)
        metadata = dict(raw_meta)

    rows: list[tuple[int, int, str, str, tuple[int, ...]]] = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise BadInput(f"tensor {name!r}: entry is not a JSON object", path)
        extra = set(info) - {"dtype", "shape", "data_offsets"}
        missing = {"dtype", "shape", "data_offsets"} - set(info)
        if missing:
            raise BadInput(f"tensor {name!r}: missing field(s) {', '.join(sorted(missing))}", path)
        if extra:  # a newer writer may add fields; the reference reader ignores them, so we only say so
            warnings.append(f"tensor {name!r}: unknown field(s) {', '.join(sorted(extra))} ignored")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
            raise BadInput(f"tensor {name!r}: unknown dtype {dtype!r}", path)
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise BadInput(f"tensor {name!r}: shape must be a list of non-negative integers, got {shape!r}", path)
        numel = 1
        for d in shape:
            numel *= d
            if numel > MAX_ELEMENTS:
                raise BadInput(f"tensor {name!r}: shape {shape} overflows (more than 2^62 elements)", path)
        if (
            not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
        ):
            raise BadInput(f"tensor {name!r}: data_offsets must be two non-negative integers", path)
        begin, end = offsets
        if end < begin:
            raise BadInput(f"tensor {name!r}: data_offsets end {end} is before begin {begin}", path)
        bits = numel * DTYPE_BITS[dtype]
        if bits % 8:
            raise BadInput(f"tensor {name!r}: {numel} elements of {dtype} do not fill whole bytes", path)
        if end - begin != bits // 8:
            raise BadInput(f"tensor {name!r}: data_offsets span {end - begin} bytes but shape {shape} of "
                           f"{dtype} needs {bits // 8}", path)
        if (problem := _check_name(name)) is not None:
            warnings.append(problem)
        rows.append((begin, end, name, dtype, tuple(shape)))

    rows.sort()
    buffer = size - 8 - n
    cursor = 0
    for begin, end, name, _, _ in rows:
        if begin < cursor:
            raise BadInput(f"tensor {name!r}: data_offsets [{begin}, {end}] overlap the previous tensor "
                           f"(which ends at {cursor})", path)
        if begin > cursor:
            raise BadInput(f"tensor {name!r}: gap of {begin - cursor} bytes before it in the data buffer "
                           f"(offsets must be contiguous from 0)", path)
        cursor = end
    if cursor != buffer:
        what = "trailing bytes after the last tensor" if cursor < buffer else "tensors run past the end of the file"
        raise BadInput(f"{what}: tensors cover {cursor} bytes, the data buffer is {buffer}", path)

    # Keep the file's header order for listing (that is how people read it), offsets made absolute.
    order = {name: i for i, name in enumerate(k for k in header if k != "__metadata__")}
    rows.sort(key=lambda r: order[r[2]])
    entries = {
        name: TensorEntry(name=name, source_name=name, dtype=dtype, shape=shape, file=path,
                          offset=8 + n + begin, nbytes=end - begin)
        for begin, end, name, dtype, shape in rows
    }
    return entries, metadata


class SafetensorsCheckpoint(Checkpoint):
    """Values are memory-mapped slices of the file: no copy, and only the pages touched are read."""

    def tensor(self, name: str):
        import numpy as np
        import torch

        entry = self.tensors.get(name)
        if entry is None:
            raise BadInput(f"no tensor named {name!r}", self.path)
        return _mmap_tensor(np, torch, entry)


def _mmap_tensor(np, torch, entry: TensorEntry):
    row = dtypes.BY_NAME.get(entry.dtype)
    raw_dtype = row.numpy_raw if row is not None else None
    if raw_dtype is None:
        raise BadInput(f"tensor {entry.name!r}: dtype {entry.dtype} cannot be loaded as values", entry.file)
    count = math.prod(entry.shape)
    if count == 0:
        array = np.zeros(entry.shape, dtype=raw_dtype)
    else:
        array = np.memmap(entry.file, dtype=raw_dtype, mode="r", offset=entry.offset, shape=(count,))
        array = array.reshape(entry.shape)
    import warnings

    with warnings.catch_warnings():  # a read-only mmap; we never write through it
        warnings.simplefilter("ignore", UserWarning)
        tensor = torch.from_numpy(array)
    # dtypes numpy lacks (bfloat16, fp8) are read raw, then reinterpreted in torch
    return tensor.view(getattr(torch, row.torch_name)) if row.torch_name != raw_dtype else tensor


def open_safetensors(path: Path) -> SafetensorsCheckpoint:
    path = Path(path)
    header, n, size, warnings = read_header(path)
    entries, metadata = parse_entries(path, header, n, size, warnings)
    config, source = find_config(path)
    return SafetensorsCheckpoint(path=path, format="safetensors", tensors=entries, metadata=metadata,
                                 config=config, config_source=source, warnings=warnings)
