"""Pickle checkpoints (.bin/.pt/.pth/.ckpt) listed without executing them.

A pickle is a program: GLOBAL names a Python object and REDUCE calls it. Unpickling an untrusted file can
run anything. So we never unpickle to list a checkpoint: we walk its opcodes with `pickletools.genops` and
simulate a stack machine whose only callables are stand-ins for the handful of functions a torch checkpoint
uses (rebuild a tensor from a storage, make an OrderedDict, ...). Any other global refuses the file with
BadInput. The stand-ins only record what a tensor would be: storage key, dtype, offset, shape, stride.

Both layouts torch.save writes are read: the zip (`<name>/data.pkl` + one stored entry per storage in
`<name>/data/<key>`, whose byte offset we take from the zip's local header) and the legacy stream (magic,
protocol, sys info, the main pickle, the storage keys, then each storage as an int64 count + raw bytes).

Values are only loaded on request, with `allow_pickle`, through `torch.load(weights_only=True)`, which runs
torch's own restricted unpickler; and only after the opcode walk above has accepted the file.
"""

from __future__ import annotations

import io
import pickletools
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glassbox.checkpoint.base import Checkpoint, TensorEntry, find_config
from glassbox.errors import BadInput

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
MAX_PICKLE_BYTES = 64 << 20  # a checkpoint's data.pkl is kilobytes to a few megabytes: bound what we read
MAX_NESTING = 200
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "weights")

# dtype as the safetensors names it (what every reader here reports) and bytes per element
_DTYPES = {
    "float64": ("F64", 8), "float32": ("F32", 4), "float16": ("F16", 2), "bfloat16": ("BF16", 2),
    "int64": ("I64", 8), "int32": ("I32", 4), "int16": ("I16", 2), "int8": ("I8", 1), "uint8": ("U8", 1),
    "uint16": ("U16", 2), "uint32": ("U32", 4), "uint64": ("U64", 8), "bool": ("BOOL", 1),
    "complex64": ("C64", 8), "complex128": ("C128", 16), "float8_e4m3fn": ("F8_E4M3", 1),
    "float8_e5m2": ("F8_E5M2", 1), "float8_e4m3fnuz": ("F8_E4M3FNUZ", 1), "float8_e5m2fnuz": ("F8_E5M2FNUZ", 1),
    "float8_e8m0fnu": ("F8_E8M0", 1),
}
_DTYPE_ALIASES = {"float": "float32", "double": "float64", "half": "float16", "long": "int64", "int": "int32",
                  "short": "int16", "cfloat": "complex64", "cdouble": "complex128"}
_TYPED_STORAGES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
}


class Refused(Exception):
    """The walk met something a torch checkpoint does not contain; the message says what."""


# --- what the simulated stack holds besides plain Python values ----------------------------------------------


@dataclass(frozen=True, eq=False)
class StorageType:
    dtype: str | None  # None: UntypedStorage (bytes; the tensor's dtype comes with _rebuild_tensor_v3)


@dataclass(frozen=True, eq=False)
class DType:
    name: str  # a key of _DTYPES


@dataclass(eq=False)
class Storage:
    key: str
    dtype: str | None
    location: str
    size: int  # in elements of dtype (bytes when untyped)


@dataclass(eq=False)
class TensorRef:
    storage: Storage
    offset: int  # in elements
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str  # a key of _DTYPES


@dataclass(frozen=True, eq=False)
class Opaque:
    """An allowed value we never need to look inside (a device, a layout, a tensor subclass type)."""

    what: str


class ODict(dict):
    """collections.OrderedDict as the stream builds it (BUILD may attach `_metadata`, which we drop)."""


@dataclass(frozen=True, eq=False)
class Callable_:
    qualname: str
    fn: Any  # args tuple → simulated value


_MARK = object()


# --- the stand-ins for allowed callables ------------------------------------------------------------------


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                       for v in value):
        raise Refused(f"{what} must be a tuple of ints, got {type(value).__name__}")
    if any(v < 0 for v in value):
        raise Refused(f"{what} has a negative entry: {tuple(value)}")
    return tuple(value)


def _tensor(storage: Any, offset: Any, shape: Any, stride: Any, dtype: str | None) -> TensorRef:
    if not isinstance(storage, Storage):
        raise Refused(f"a tensor is rebuilt from a {type(storage).__name__}, not a storage record")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise Refused(f"tensor storage offset {offset!r} is not a non-negative int")
    shape, stride = _ints(shape, "tensor size"), _ints(stride, "tensor stride")
    if len(shape) != len(stride):
        raise Refused(f"tensor size {shape} and stride {stride} differ in length")
    dtype = dtype or storage.dtype
    if dtype is None:
        raise Refused("an untyped storage is used by a tensor without a dtype")
    return TensorRef(storage, offset, shape, stride, dtype)


def _rebuild_tensor(args: tuple) -> TensorRef:  # (storage, offset, size, stride)
    if len(args) != 4:
        raise Refused(f"_rebuild_tensor takes 4 arguments, got {len(args)}")
    return _tensor(*args, None)


def _rebuild_tensor_v2(args: tuple) -> TensorRef:  # (storage, offset, size, stride, requires_grad, hooks[, meta])
    if len(args) not in (6, 7):
        raise Refused(f"_rebuild_tensor_v2 takes 6 or 7 arguments, got {len(args)}")
    return _tensor(*args[:4], None)


def _rebuild_tensor_v3(args: tuple) -> TensorRef:  # (..., requires_grad, hooks, dtype[, meta])
    if len(args) not in (7, 8) or not isinstance(args[6], DType):
        raise Refused("_rebuild_tensor_v3 takes 7 or 8 arguments, the 7th a torch dtype")
    if isinstance(args[0], Storage) and args[0].dtype is not None:
        raise Refused("_rebuild_tensor_v3 expects an untyped storage")
    return _tensor(*args[:4], args[6].name)


def _rebuild_parameter(args: tuple) -> TensorRef:  # (data, requires_grad, hooks[, state])
    if len(args) not in (3, 4) or not isinstance(args[0], TensorRef):
        raise Refused("_rebuild_parameter expects a tensor as its first argument")
    return args[0]


def _rebuild_from_type_v2(args: tuple) -> Any:  # (func, new_type, args, state): tensor subclasses
    if len(args) != 4 or not isinstance(args[0], Callable_) or not isinstance(args[2], tuple):
        raise Refused("_rebuild_from_type_v2 expects (function, type, args, state)")
    if not (isinstance(args[1], Opaque) and args[1].what in ("torch.Tensor", "torch.nn.parameter.Parameter")):
        raise Refused(f"_rebuild_from_type_v2 builds a {args[1]!r}, not a plain tensor or parameter")
    return args[0].fn(args[2])


def _ordered_dict(args: tuple) -> ODict:
    out = ODict()
    if args:
        if len(args) != 1 or not isinstance(args[0], (list, tuple)):
            raise Refused("OrderedDict is built from a list of pairs")
        for pair in args[0]:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise Refused("OrderedDict is built from a list of pairs")
            _setitem(out, pair[0], pair[1])
    return out


def _size(args: tuple) -> tuple:
    if len(args) != 1:
        raise Refused("torch.Size takes one argument")
    return _ints(args[0], "torch.Size")


def _device(args: tuple) -> Opaque:
    if not args or not all(isinstance(a, (str, int)) for a in args):
        raise Refused("torch.device takes a string (and an index)")
    return Opaque("device " + ":".join(str(a) for a in args))


def _layout(args: tuple) -> Opaque:
    if len(args) != 1 or not isinstance(args[0], str):
        raise Refused("_get_layout takes a string")
    return Opaque(args[0])


def _encode(args: tuple) -> bytes:  # how protocol 2 writes bytes: _codecs.encode(text, "latin1")
    if len(args) not in (1, 2) or not all(isinstance(a, str) for a in args):
        raise Refused("_codecs.encode takes strings")
    if len(args) == 2 and args[1].replace("-", "").lower() not in ("latin1", "iso88591"):
        raise Refused(f"_codecs.encode with encoding {args[1]!r}")
    try:
        return args[0].encode("latin-1")
    except UnicodeEncodeError:
        raise Refused("_codecs.encode of text that is not latin-1") from None


def _container(kind: type):
    def build(args: tuple):
        if len(args) > 1 or (args and not isinstance(args[0], (list, tuple, bytes, str))):
            raise Refused(f"{kind.__name__} takes one sequence")
        try:
            return kind(args[0]) if args else kind()
        except TypeError:
            raise Refused(f"{kind.__name__} of unhashable items") from None
    return build


def _allowlist() -> dict[tuple[str, str], Any]:
    """(module, name) → the simulated value of that global. Nothing else may appear in the stream."""
    allowed: dict[tuple[str, str], Any] = {}

    def fn(module: str, name: str, impl) -> None:
        allowed[(module, name)] = Callable_(f"{module}.{name}", impl)

    fn("collections", "OrderedDict", _ordered_dict)
    for module in ("torch._utils",):
        fn(module, "_rebuild_tensor", _rebuild_tensor)
        fn(module, "_rebuild_tensor_v2", _rebuild_tensor_v2)
        fn(module, "_rebuild_tensor_v3", _rebuild_tensor_v3)
        fn(module, "_rebuild_parameter", _rebuild_parameter)
        fn(module, "_rebuild_parameter_with_state", _rebuild_parameter)
    fn("torch._tensor", "_rebuild_from_type_v2", _rebuild_from_type_v2)
    fn("torch", "Size", _size)
    fn("torch", "device", _device)
    fn("torch.serialization", "_get_layout", _layout)
    for module in ("_codecs",):
        fn(module, "encode", _encode)
    for module in ("builtins", "__builtin__"):
        fn(module, "set", _container(set))
        fn(module, "frozenset", _container(frozenset))
        fn(module, "bytearray", _container(bytearray))
    for name, dtype in _TYPED_STORAGES.items():
        allowed[("torch", name)] = StorageType(dtype)
    allowed[("torch.storage", "UntypedStorage")] = StorageType(None)
    allowed[("torch", "UntypedStorage")] = StorageType(None)
    for name in [*_DTYPES, *_DTYPE_ALIASES]:
        allowed[("torch", name)] = DType(_DTYPE_ALIASES.get(name, name))
    for module, name in (("torch", "Tensor"), ("torch.nn.parameter", "Parameter"), ("torch", "strided"),
                         ("torch", "sparse_coo")):
        allowed[(module, name)] = Opaque(f"{module}.{name}")
    return allowed


ALLOWED = _allowlist()


def _refuse_global(module: str, name: str) -> Refused:
    return Refused(f"refused global {module}.{name}: not one of the functions a torch checkpoint uses "
                   "(tensors, storages, OrderedDict, dtypes), so unpickling this file could run code from it; "
                   "nothing was executed")


def _setitem(target: Any, key: Any, value: Any) -> None:
    if not isinstance(target, dict):
        raise Refused(f"SETITEM on a {type(target).__name__}: only dicts take items in a checkpoint")
    try:
        target[key] = value
    except TypeError:
        raise Refused(f"unhashable dict key of type {type(key).__name__}") from None


# --- the opcode walk ----------------------------------------------------------------------------------------


class _Bounded(io.RawIOBase):
    """A read-only view of a byte range that never hands pickletools more than is there (a length field
    of 2**63 must not become an allocation) and caps line reads (protocol-0 text opcodes)."""

    def __init__(self, f, start: int, end: int):
        self.f, self.pos, self.end = f, start, end

    def read(self, n: int = -1) -> bytes:
        n = self.end - self.pos if n is None or n < 0 else min(n, self.end - self.pos)
        self.f.seek(self.pos)
        data = self.f.read(n)
        self.pos += len(data)
        return data

    def readline(self, limit: int = -1) -> bytes:
        self.f.seek(self.pos)
        data = self.f.readline(min(1 << 20, self.end - self.pos))
        self.pos += len(data)
        return data

    def tell(self) -> int:
        return self.pos


def walk(stream, persistent_load) -> Any:
    """Simulate one pickle (up to its STOP) and return the value it builds. Raises Refused."""
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[int, Any] = {}

    def pop_mark() -> list[Any]:
        if not marks:
            raise Refused("unbalanced MARK")
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    def pop() -> Any:
        if len(stack) <= (marks[-1] if marks else 0):
            raise Refused("stack underflow")
        return stack.pop()

    def call(target: Any, args: Any, how: str) -> Any:
        if not isinstance(target, Callable_):
            raise Refused(f"{how} calls a {type(target).__name__}, which is not an allowed function")
        if not isinstance(args, tuple):
            raise Refused(f"{how} of {target.qualname} with non-tuple arguments")
        return target.fn(args)

    try:
        ops = pickletools.genops(stream)
        for op, arg, _pos in ops:
            name = op.name
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                if len(stack) != 1 or marks:
                    raise Refused("STOP with a malformed stack")
                return stack[0]
            if name in ("NONE",):
                stack.append(None)
            elif name in ("NEWTRUE", "NEWFALSE"):
                stack.append(name == "NEWTRUE")
            elif name in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
                          "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
                          "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8"):
                stack.append(arg)
            elif name == "BYTEARRAY8":
                stack.append(bytearray(arg))
            elif name == "EMPTY_LIST":
                stack.append([])
            elif name == "EMPTY_DICT":
                stack.append({})
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name == "EMPTY_SET":
                stack.append(set())
            elif name == "MARK":
                if len(marks) > MAX_NESTING * 10:
                    raise Refused("marks nested too deep")
                marks.append(len(stack))
            elif name == "TUPLE":
                stack.append(tuple(pop_mark()))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                items = [pop() for _ in range(n)][::-1]
                stack.append(tuple(items))
            elif name == "LIST":
                stack.append(pop_mark())
            elif name == "DICT":
                items = pop_mark()
                d: dict = {}
                for i in range(0, len(items) - 1, 2):
                    _setitem(d, items[i], items[i + 1])
                stack.append(d)
            elif name == "FROZENSET":
                try:
                    stack.append(frozenset(pop_mark()))
                except TypeError:
                    raise Refused("frozenset of unhashable items") from None
            elif name in ("APPEND", "APPENDS"):
                items = [pop()] if name == "APPEND" else pop_mark()
                target = pop()
                if not isinstance(target, list):
                    raise Refused(f"{name} on a {type(target).__name__}: only lists are appended to")
                target.extend(items)
                stack.append(target)
            elif name in ("SETITEM", "SETITEMS"):
                if name == "SETITEM":
                    value, key = pop(), pop()
                    items = [key, value]
                else:
                    items = pop_mark()
                    if len(items) % 2:
                        raise Refused("SETITEMS with an odd number of items")
                target = pop()
                for i in range(0, len(items), 2):
                    _setitem(target, items[i], items[i + 1])
                stack.append(target)
            elif name == "ADDITEMS":
                items = pop_mark()
                target = pop()
                if not isinstance(target, set):
                    raise Refused("ADDITEMS on something that is not a set")
                try:
                    target.update(items)
                except TypeError:
                    raise Refused("set of unhashable items") from None
                stack.append(target)
            elif name == "POP":
                if marks and len(stack) == marks[-1]:
                    marks.pop()  # POP of a bare MARK, as pickle allows
                else:
                    pop()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(stack[-1] if stack else pop())
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                if not stack:
                    raise Refused("PUT on an empty stack")
                memo[int(arg)] = stack[-1]
            elif name == "MEMOIZE":
                if not stack:
                    raise Refused("MEMOIZE on an empty stack")
                memo[len(memo)] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if int(arg) not in memo:
                    raise Refused(f"GET of memo slot {arg} that was never PUT")
                stack.append(memo[int(arg)])
            elif name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                value = ALLOWED.get((module, attr))
                if value is None:
                    raise _refuse_global(module, attr)
                if name == "INST":  # INST = GLOBAL + call with the items since MARK
                    value = call(value, tuple(pop_mark()), "INST")
                stack.append(value)
            elif name == "STACK_GLOBAL":
                attr, module = pop(), pop()
                if not isinstance(module, str) or not isinstance(attr, str):
                    raise Refused("STACK_GLOBAL with non-string names")
                value = ALLOWED.get((module, attr))
                if value is None:
                    raise _refuse_global(module, attr)
                stack.append(value)
            elif name == "REDUCE":
                args = pop()
                stack.append(call(pop(), args, "REDUCE"))
            elif name == "NEWOBJ":
                args = pop()
                stack.append(call(pop(), args, "NEWOBJ"))
            elif name == "NEWOBJ_EX":
                kwargs, args = pop(), pop()
                if kwargs:
                    raise Refused("NEWOBJ_EX with keyword arguments")
                stack.append(call(pop(), args, "NEWOBJ_EX"))
            elif name == "OBJ":
                items = pop_mark()
                if not items:
                    raise Refused("OBJ without a class")
                stack.append(call(items[0], tuple(items[1:]), "OBJ"))
            elif name == "BUILD":
                state = pop()
                target = stack[-1] if stack else pop()
                if isinstance(target, dict) and isinstance(state, dict):
                    continue  # OrderedDict._metadata and the like: attributes we do not need
                if isinstance(target, TensorRef):
                    continue  # tensor attributes (e.g. a parameter's state)
                raise Refused(f"BUILD (setting state) on a {type(target).__name__}")
            elif name == "PERSID":
                stack.append(persistent_load(arg))
            elif name == "BINPERSID":
                stack.append(persistent_load(pop()))
            elif name in ("EXT1", "EXT2", "EXT4"):
                raise Refused(f"{name} (the copyreg extension registry) is not used by torch checkpoints")
            else:
                raise Refused(f"opcode {name} is not used by torch checkpoints")
        raise Refused("the pickle ends without STOP (truncated?)")
    except (ValueError, EOFError, struct.error, UnicodeDecodeError, OverflowError) as e:
        raise Refused(f"not a valid pickle stream: {e}") from None


# --- checkpoints --------------------------------------------------------------------------------------------


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
        except Refused as e:
            raise BadInput(f"pickle checkpoint refused: {e}", path) from None

    tensors, paths, metadata = _collect(root, records, path, warnings)
    metadata["pickle.layout"] = layout
    config, source = find_config(path)
    return PickleCheckpoint(path=path, format="pickle", tensors=tensors, metadata=metadata, config=config,
                            config_source=source, warnings=warnings, allow_pickle=allow_pickle, paths=paths)


def _storage_loader(storages: dict[str, Storage]):
    def persistent_load(pid: Any) -> Storage:
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
            raise Refused(f"persistent id {pid!r} is not a torch storage record")
        _, stype, key, location, size = pid[:5]
        if len(pid) == 6 and pid[5] is not None:
            raise Refused("storage views (torch < 1.0 checkpoints) are not supported")
        if not isinstance(stype, StorageType):
            raise Refused(f"storage record with type {stype!r}, not a torch storage class")
        if not isinstance(key, str) or not isinstance(location, str):
            raise Refused("storage record key and location must be strings")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise Refused(f"storage {key!r} has size {size!r}")
        seen = storages.get(key)
        if seen is None:
            seen = storages[key] = Storage(key, stype.dtype, location, size)
        elif seen.dtype != stype.dtype or seen.size != size:
            raise Refused(f"storage {key!r} is described twice, differently")
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
    stream = _Bounded(f, 0, size)
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
        itemsize = _DTYPES[storage.dtype][1] if storage.dtype else 1
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
        dtype, itemsize = _DTYPES[ref.dtype]
        storage = ref.storage
        storage_bytes = storage.size * (_DTYPES[storage.dtype][1] if storage.dtype else 1)
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
