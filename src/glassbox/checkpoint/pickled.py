"""torch.save's containers (.bin/.pt/.pth/.ckpt) listed without executing them.

The pickle inside is never unpickled: checkpoint/pickle_machine.py simulates it, refusing any global a torch
checkpoint does not use (BadInput here). This module finds the pickle and the storages' bytes around it.

Both layouts torch.save writes are read: the zip (`<name>/data.pkl` + one stored entry per storage in
`<name>/data/<key>`, whose byte offset we take from the zip's local header) and the legacy stream (magic,
protocol, sys info, the main pickle, the storage keys, then each storage as an int64 count + raw bytes).

Values are only loaded on request, with `allow_pickle`, through `torch.load(weights_only=True)`, which runs
torch's own restricted unpickler; and only after the opcode walk above has accepted the file.
"""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glassbox.checkpoint import dtypes
from glassbox.checkpoint.base import Checkpoint, TensorEntry, find_config
from glassbox.checkpoint.pickle_machine import (
    MAX_NESTING,
    Bounded,
    PickleRefused,
    Storage,
    StorageType,
    TensorRef,
    walk,
)
from glassbox.errors import BadInput

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
MAX_PICKLE_BYTES = 64 << 20  # a checkpoint's data.pkl is kilobytes to a few megabytes: bound what we read
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "weights")


@dataclass
class PickleCheckpoint(Checkpoint):
    allow_pickle: bool = False
    paths: dict[str, tuple] = field(default_factory=dict, repr=False)  # name → keys to reach it in the object
    _loaded: Any = field(default=None, repr=False)

    def tensor(self, name: str):
        if name not in self.tensors:
            raise BadInput(f"no tensor named {name!r}", self.path)
        if not self.allow_pickle:
            raise BadInput("loading values from a pickle checkpoint is refused by default; pass --allow-pickle "
                           "to load it with torch.load(weights_only=True)", self.path)
        import torch

        if self._loaded is None:
            mmap = self.metadata.get("pickle.layout") == "zip"  # torch maps only the zip layout
            try:
                self._loaded = torch.load(self.path, weights_only=True, mmap=mmap, map_location="cpu")
            except Exception as e:  # torch's restricted unpickler says why in its own words
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise BadInput(f"torch.load(weights_only=True) refused or failed: {first}", self.path) from None
        value = self._loaded
        try:
            for key in self.paths[name]:
                value = value[key]
        except (KeyError, IndexError, TypeError):
            raise BadInput(f"tensor {name!r} is not where the opcode walk found it", self.path) from None
        if not isinstance(value, torch.Tensor):
            raise BadInput(f"{name!r} loaded as a {type(value).__name__}, not a tensor", self.path)
        return value.detach()

    def close(self) -> None:
        self._loaded = None


def open_pickle(path: Path, allow_pickle: bool = False) -> PickleCheckpoint:
    """List the tensors of a torch pickle checkpoint from an opcode walk; nothing in it is executed."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise BadInput(f"cannot open: {e.strerror}", path) from None
    with f:
        size = f.seek(0, 2)
        if size == 0:
            raise BadInput("empty file; not a torch checkpoint", path)
        f.seek(0)
        head = f.read(4)
        try:
            if head == b"PK\x03\x04":
                layout, root, records, warnings = _read_zip(f, path)
            else:  # the legacy stream, or some other pickle: the walk refuses whatever is not torch's
                layout, root, records, warnings = _read_legacy(f, path, size)
        except PickleRefused as e:
            raise BadInput(f"pickle checkpoint refused: {e}", path) from None

    tensors, paths, metadata = _collect(root, records, path, warnings)
    metadata["pickle.layout"] = layout
    config, source = find_config(path)
    return PickleCheckpoint(path=path, format="pickle", tensors=tensors, metadata=metadata, config=config,
                            config_source=source, warnings=warnings, allow_pickle=allow_pickle, paths=paths)


def _storage_loader(storages: dict[str, Storage]):
    def persistent_load(pid: Any) -> Storage:
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
            raise PickleRefused(f"persistent id {pid!r} is not a torch storage record")
        _, stype, key, location, size = pid[:5]
        if len(pid) == 6 and pid[5] is not None:
            raise PickleRefused("storage views (torch < 1.0 checkpoints) are not supported")
        if not isinstance(stype, StorageType):
            raise PickleRefused(f"storage record with type {stype!r}, not a torch storage class")
        if not isinstance(key, str) or not isinstance(location, str):
            raise PickleRefused("storage record key and location must be strings")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise PickleRefused(f"storage {key!r} has size {size!r}")
        seen = storages.get(key)
        if seen is None:
            seen = storages[key] = Storage(key, stype.dtype, location, size)
        elif seen.dtype != stype.dtype or seen.size != size:
            raise PickleRefused(f"storage {key!r} is described twice, differently")
        return seen
    return persistent_load


def _read_zip(f, path: Path):
    """The zip layout: walk data.pkl, then find each storage's bytes (stored, uncompressed) in the zip."""
    try:
        z = zipfile.ZipFile(f)
        infos = {i.filename: i for i in z.infolist()}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, struct.error) as e:
        raise BadInput(f"not a readable zip (torch checkpoints are zip files): {e}", path) from None
    pickles = [n for n in infos if n == "data.pkl" or n.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise BadInput(f"a torch zip checkpoint holds exactly one data.pkl; this zip holds {len(pickles)}", path)
    prefix = pickles[0][: -len("data.pkl")]
    info = infos[pickles[0]]
    if info.file_size > MAX_PICKLE_BYTES:
        raise BadInput(f"data.pkl is {info.file_size} bytes; not a checkpoint's pickle", path)
    data = _read_entry(z, info, path)
    storages: dict[str, Storage] = {}
    root = walk(io.BytesIO(data), _storage_loader(storages))
    warnings: list[str] = []
    byteorder = infos.get(prefix + "byteorder")
    if byteorder is not None and byteorder.file_size < 16 and _read_entry(z, byteorder, path).strip() not in (
            b"little", b""):
        warnings.append("storages are big-endian; byte offsets point at big-endian data")
    records = {}  # storage key → (absolute offset or -1, bytes available)
    for key in storages:
        entry = infos.get(f"{prefix}data/{key}")
        if entry is None:
            raise BadInput(f"storage {key!r} is referenced by data.pkl but {prefix}data/{key} is missing", path)
        records[key] = (_stored_offset(f, entry, path, warnings), entry.file_size)
    return "zip", root, (storages, records), warnings


def _read_entry(z: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> bytes:
    # zipfile allocates the size the directory claims before it reads: a claim past the file's end would make a
    # 2 kB file cost whatever the corrupted field says, so the claim is checked against the bytes that exist.
    z.fp.seek(0, 2)
    room = z.fp.tell() - info.header_offset
    if info.compress_size > room or info.file_size > max(room, MAX_PICKLE_BYTES):
        raise BadInput(f"{info.filename} claims {info.compress_size} bytes but the file ends {room} bytes after "
                       "its header", path)
    try:
        return z.read(info)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError,
            struct.error) as e:
        raise BadInput(f"cannot read {info.filename} from the zip: {e}", path) from None


def _stored_offset(f, info: zipfile.ZipInfo, path: Path, warnings: list[str]) -> int:
    """Absolute offset of an entry's bytes: its local header is 30 bytes + name + extra field."""
    if info.compress_type != zipfile.ZIP_STORED:
        warnings.append(f"{info.filename} is compressed; its tensors have no byte offset in the file (-1)")
        return -1
    f.seek(info.header_offset)
    header = f.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise BadInput(f"zip local header of {info.filename} is missing at byte {info.header_offset}", path)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    if start + info.file_size > f.seek(0, 2):
        raise BadInput(f"{info.filename} runs past the end of the file (truncated?)", path)
    return start


def _read_legacy(f, path: Path, size: int):
    """The pre-1.6 stream: magic, protocol, sys info, main pickle, storage keys, then the storages."""
    stream = Bounded(f, 0, size)
    no_storage = _storage_loader({})
    magic = walk(stream, no_storage)
    if magic != LEGACY_MAGIC:
        raise BadInput("a pickle stream that is not a torch checkpoint (no torch magic number); refused "
                       "without running it", path)
    protocol = walk(stream, no_storage)
    if protocol != 1001:
        raise BadInput(f"torch legacy protocol {protocol!r} is not supported (only 1001)", path)
    sys_info = walk(stream, no_storage)
    warnings: list[str] = []
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        warnings.append("storages are not marked little-endian; byte offsets may point at other-endian data")
    storages: dict[str, Storage] = {}
    root = walk(stream, _storage_loader(storages))
    keys = walk(stream, no_storage)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise BadInput("the storage key list after the main pickle is not a list of strings", path)
    records = {}
    pos = stream.tell()
    for key in keys:
        storage = storages.get(key)
        if storage is None:
            raise BadInput(f"storage {key!r} is listed but no tensor uses it", path)
        f.seek(pos)
        raw = f.read(8)
        if len(raw) != 8:
            raise BadInput(f"storage {key!r}: the file ends at byte {pos} (truncated?)", path)
        (count,) = struct.unpack("<q", raw)
        itemsize = dtypes.BY_TORCH_NAME[storage.dtype].itemsize if storage.dtype else 1
        if count != storage.size:
            raise BadInput(f"storage {key!r} holds {count} elements but its record says {storage.size}", path)
        nbytes = count * itemsize
        if pos + 8 + nbytes > size:
            raise BadInput(f"storage {key!r} runs past the end of the file (truncated?)", path)
        records[key] = (pos + 8, nbytes)
        pos += 8 + nbytes
    missing = set(storages) - set(records)
    if missing:
        raise BadInput(f"storages {sorted(missing)[:3]} are used but have no data in the file", path)
    if pos != size:
        warnings.append(f"{size - pos} bytes after the last storage are not part of any tensor")
    return "legacy", root, (storages, records), warnings


def _collect(root: Any, records, path: Path, warnings: list[str]):
    """Name every tensor by the dict keys / list indices that lead to it; bound-check it in its storage."""
    storages, offsets = records
    found: list[tuple[tuple, TensorRef]] = []
    metadata: dict[str, str] = {}

    def visit(value: Any, keys: tuple, on_path: set[int]) -> None:
        if isinstance(value, TensorRef):
            found.append((keys, value))
            return
        if len(keys) > MAX_NESTING or id(value) in on_path:
            return
        if isinstance(value, dict):
            items = value.items()
        elif isinstance(value, (list, tuple)):
            items = enumerate(value)
        else:
            if len(keys) == 1 and isinstance(value, (int, float, str, bool)) and len(str(value)) <= 200:
                metadata[f"pickle.{keys[0]}"] = str(value)
            return
        on_path.add(id(value))
        for k, v in items:
            visit(v, (*keys, k), on_path)
        on_path.discard(id(value))

    visit(root, (), set())
    if not found:
        warnings.append("no tensors found in this pickle")
    # a training checkpoint wraps the weights: {"state_dict": {...}, "epoch": 3}; list them without the wrapper
    tops = {keys[0] for keys, _ in found if keys}
    strip = 0
    if len(tops) == 1 and next(iter(tops)) in WRAPPER_KEYS and isinstance(root, dict) and len(root) > 1:
        warnings.append(f"tensors are under {next(iter(tops))!r}; listed without that prefix, other entries "
                        "ignored")
        strip = 1
    tensors: dict[str, TensorEntry] = {}
    paths: dict[str, tuple] = {}
    for keys, ref in found:
        name = ".".join(str(k) for k in keys[strip:]) or "tensor"
        if name in tensors:
            warnings.append(f"two tensors are both named {name!r}; keeping the first")
            continue
        row = dtypes.BY_TORCH_NAME[ref.dtype]
        dtype, itemsize = row.name, row.itemsize
        storage = ref.storage
        storage_bytes = storage.size * (dtypes.BY_TORCH_NAME[storage.dtype].itemsize if storage.dtype else 1)
        numel, span = 1, 1
        for n, s in zip(ref.shape, ref.stride, strict=True):
            numel *= n
            span += (n - 1) * s if n else 0
        span = span if numel else 0
        start, available = offsets.get(storage.key, (-1, 0))
        if available < storage_bytes:
            raise BadInput(f"storage {storage.key!r} has {available} bytes but its record says {storage_bytes}",
                           path)
        if (ref.offset + span) * itemsize > storage_bytes:
            raise BadInput(f"tensor {name!r} (offset {ref.offset}, shape {ref.shape}, stride {ref.stride}) "
                           f"reaches past the end of its storage ({storage_bytes} bytes)", path)
        offset = -1 if start < 0 else start + ref.offset * itemsize
        if numel and not _contiguous(ref.shape, ref.stride):
            warnings.append(f"tensor {name!r} is a strided view of its storage (stride {ref.stride}); "
                            "no single byte range (offset -1)")
            offset = -1
        tensors[name] = TensorEntry(name=name, source_name=".".join(str(k) for k in keys), dtype=dtype,
                                    shape=ref.shape, file=path, offset=offset, nbytes=numel * itemsize)
        paths[name] = keys
    return tensors, paths, metadata


def _contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    expected = 1
    for n, s in zip(reversed(shape), reversed(stride), strict=True):
        if n != 1 and s != expected:
            return False
        expected *= n
    return True
