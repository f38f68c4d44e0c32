"""The safe pickle machine: run a pickle's opcodes on a simulated stack without executing anything.

A pickle is a program: GLOBAL names a Python object and REDUCE calls it. Unpickling an untrusted file can
run anything. So we never unpickle: `walk` reads the opcodes with `pickletools.genops` and hands each to its
handler in `HANDLERS` (opcode → handler, each opcode's rule beside it). The only callables are stand-ins for
the handful of functions a torch checkpoint uses (rebuild a tensor from a storage, make an OrderedDict, ...);
any other global refuses the stream (PickleRefused). The stand-ins only record what a tensor would be:
storage, dtype, offset, shape, stride. The containers around the pickle are checkpoint/pickled.py's.
"""

from __future__ import annotations

import io
import pickletools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from glassbox.checkpoint import dtypes

MAX_NESTING = 200
_DTYPE_ALIASES = {"float": "float32", "double": "float64", "half": "float16", "long": "int64", "int": "int32",
                  "short": "int16", "cfloat": "complex64", "cdouble": "complex128"}
_TYPED_STORAGES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
}


class PickleRefused(Exception):
    """The walk met something a torch checkpoint does not contain; the message says what."""


# --- what the simulated stack holds besides plain Python values ----------------------------------------------


@dataclass(frozen=True, eq=False)
class StorageType:
    dtype: str | None  # None: UntypedStorage (bytes; the tensor's dtype comes with _rebuild_tensor_v3)


@dataclass(frozen=True, eq=False)
class DType:
    name: str  # a torch dtype name (checkpoint/dtypes.py BY_TORCH_NAME)


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
    dtype: str  # a torch dtype name (checkpoint/dtypes.py BY_TORCH_NAME)


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



# --- the stand-ins for allowed callables ------------------------------------------------------------------


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                       for v in value):
        raise PickleRefused(f"{what} must be a tuple of ints, got {type(value).__name__}")
    if any(v < 0 for v in value):
        raise PickleRefused(f"{what} has a negative entry: {tuple(value)}")
    return tuple(value)


def _tensor(storage: Any, offset: Any, shape: Any, stride: Any, dtype: str | None) -> TensorRef:
    if not isinstance(storage, Storage):
        raise PickleRefused(f"a tensor is rebuilt from a {type(storage).__name__}, not a storage record")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise PickleRefused(f"tensor storage offset {offset!r} is not a non-negative int")
    shape, stride = _ints(shape, "tensor size"), _ints(stride, "tensor stride")
    if len(shape) != len(stride):
        raise PickleRefused(f"tensor size {shape} and stride {stride} differ in length")
    dtype = dtype or storage.dtype
    if dtype is None:
        raise PickleRefused("an untyped storage is used by a tensor without a dtype")
    return TensorRef(storage, offset, shape, stride, dtype)


def _rebuild_tensor(args: tuple) -> TensorRef:  # (storage, offset, size, stride)
    if len(args) != 4:
        raise PickleRefused(f"_rebuild_tensor takes 4 arguments, got {len(args)}")
    return _tensor(*args, None)


def _rebuild_tensor_v2(args: tuple) -> TensorRef:  # (storage, offset, size, stride, requires_grad, hooks[, meta])
    if len(args) not in (6, 7):
        raise PickleRefused(f"_rebuild_tensor_v2 takes 6 or 7 arguments, got {len(args)}")
    return _tensor(*args[:4], None)


def _rebuild_tensor_v3(args: tuple) -> TensorRef:  # (..., requires_grad, hooks, dtype[, meta])
    if len(args) not in (7, 8) or not isinstance(args[6], DType):
        raise PickleRefused("_rebuild_tensor_v3 takes 7 or 8 arguments, the 7th a torch dtype")
    if isinstance(args[0], Storage) and args[0].dtype is not None:
        raise PickleRefused("_rebuild_tensor_v3 expects an untyped storage")
    return _tensor(*args[:4], args[6].name)


def _rebuild_parameter(args: tuple) -> TensorRef:  # (data, requires_grad, hooks[, state])
    if len(args) not in (3, 4) or not isinstance(args[0], TensorRef):
        raise PickleRefused("_rebuild_parameter expects a tensor as its first argument")
    return args[0]


def _rebuild_from_type_v2(args: tuple) -> Any:  # (func, new_type, args, state): tensor subclasses
    if len(args) != 4 or not isinstance(args[0], Callable_) or not isinstance(args[2], tuple):
        raise PickleRefused("_rebuild_from_type_v2 expects (function, type, args, state)")
    if not (isinstance(args[1], Opaque) and args[1].what in ("torch.Tensor", "torch.nn.parameter.Parameter")):
        raise PickleRefused(f"_rebuild_from_type_v2 builds a {args[1]!r}, not a plain tensor or parameter")
    return args[0].fn(args[2])


def _ordered_dict(args: tuple) -> ODict:
    out = ODict()
    if args:
        if len(args) != 1 or not isinstance(args[0], (list, tuple)):
            raise PickleRefused("OrderedDict is built from a list of pairs")
        for pair in args[0]:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise PickleRefused("OrderedDict is built from a list of pairs")
            _setitem(out, pair[0], pair[1])
    return out


def _size(args: tuple) -> tuple:
    if len(args) != 1:
        raise PickleRefused("torch.Size takes one argument")
    return _ints(args[0], "torch.Size")


def _device(args: tuple) -> Opaque:
    if not args or not all(isinstance(a, (str, int)) for a in args):
        raise PickleRefused("torch.device takes a string (and an index)")
    return Opaque("device " + ":".join(str(a) for a in args))


def _layout(args: tuple) -> Opaque:
    if len(args) != 1 or not isinstance(args[0], str):
        raise PickleRefused("_get_layout takes a string")
    return Opaque(args[0])


def _encode(args: tuple) -> bytes:  # how protocol 2 writes bytes: _codecs.encode(text, "latin1")
    if len(args) not in (1, 2) or not all(isinstance(a, str) for a in args):
        raise PickleRefused("_codecs.encode takes strings")
    if len(args) == 2 and args[1].replace("-", "").lower() not in ("latin1", "iso88591"):
        raise PickleRefused(f"_codecs.encode with encoding {args[1]!r}")
    try:
        return args[0].encode("latin-1")
    except UnicodeEncodeError:
        raise PickleRefused("_codecs.encode of text that is not latin-1") from None


def _container(kind: type):
    def build(args: tuple):
        if len(args) > 1 or (args and not isinstance(args[0], (list, tuple, bytes, str))):
            raise PickleRefused(f"{kind.__name__} takes one sequence")
        try:
            return kind(args[0]) if args else kind()
        except TypeError:
            raise PickleRefused(f"{kind.__name__} of unhashable items") from None
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
    for name in [*dtypes.BY_TORCH_NAME, *_DTYPE_ALIASES]:
        allowed[("torch", name)] = DType(_DTYPE_ALIASES.get(name, name))
    for module, name in (("torch", "Tensor"), ("torch.nn.parameter", "Parameter"), ("torch", "strided"),
                         ("torch", "sparse_coo")):
        allowed[(module, name)] = Opaque(f"{module}.{name}")
    return allowed


ALLOWED = _allowlist()


def _refuse_global(module: str, name: str) -> PickleRefused:
    return PickleRefused(f"refused global {module}.{name}: not one of the functions a torch checkpoint uses "
                   "(tensors, storages, OrderedDict, dtypes), so unpickling this file could run code from it; "
                   "nothing was executed")


def _setitem(target: Any, key: Any, value: Any) -> None:
    if not isinstance(target, dict):
        raise PickleRefused(f"SETITEM on a {type(target).__name__}: only dicts take items in a checkpoint")
    try:
        target[key] = value
    except TypeError:
        raise PickleRefused(f"unhashable dict key of type {type(key).__name__}") from None


# --- the machine and its opcodes ----------------------------------------------------------------------------


class Bounded(io.RawIOBase):
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


class Machine:
    """The simulated unpickler's state: the stack, the MARK positions and the memo."""

    def __init__(self, persistent_load: Callable[[Any], Any]):
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        self.persistent_load = persistent_load

    def push(self, value: Any) -> None:
        self.stack.append(value)

    def pop(self) -> Any:
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise PickleRefused("stack underflow")
        return self.stack.pop()

    def pop_mark(self) -> list[Any]:
        if not self.marks:
            raise PickleRefused("unbalanced MARK")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def top(self) -> Any:
        return self.stack[-1] if self.stack else self.pop()  # pop() names the underflow

    def call(self, target: Any, args: Any, how: str) -> Any:
        if not isinstance(target, Callable_):
            raise PickleRefused(f"{how} calls a {type(target).__name__}, which is not an allowed function")
        if not isinstance(args, tuple):
            raise PickleRefused(f"{how} of {target.qualname} with non-tuple arguments")
        return target.fn(args)


Handler = Callable[[Machine, Any, str], None]  # (machine, the opcode's argument, its name)
HANDLERS: dict[str, Handler] = {}


def _opcodes(*names: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for name in names:
            HANDLERS[name] = fn
        return fn
    return register


@_opcodes("PROTO", "FRAME")
def _framing(m: Machine, arg: Any, name: str) -> None:
    """The protocol number and frame lengths change nothing on the stack."""


@_opcodes("NONE")
def _none(m: Machine, arg: Any, name: str) -> None:
    m.push(None)


@_opcodes("NEWTRUE", "NEWFALSE")
def _bool(m: Machine, arg: Any, name: str) -> None:
    m.push(name == "NEWTRUE")


@_opcodes("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT", "STRING",
          "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES",
          "SHORT_BINBYTES", "BINBYTES8")
def _literal(m: Machine, arg: Any, name: str) -> None:
    """A number, a string or bytes: pickletools has decoded it already."""
    m.push(arg)


@_opcodes("BYTEARRAY8")
def _bytearray(m: Machine, arg: Any, name: str) -> None:
    m.push(bytearray(arg))


@_opcodes("EMPTY_LIST", "EMPTY_DICT", "EMPTY_TUPLE", "EMPTY_SET")
def _empty(m: Machine, arg: Any, name: str) -> None:
    m.push({"EMPTY_LIST": list, "EMPTY_DICT": dict, "EMPTY_TUPLE": tuple, "EMPTY_SET": set}[name]())


@_opcodes("MARK")
def _mark(m: Machine, arg: Any, name: str) -> None:
    """Remember where the items of the next TUPLE/LIST/DICT/... begin; bounded, like the nesting."""
    if len(m.marks) > MAX_NESTING * 10:
        raise PickleRefused("marks nested too deep")
    m.marks.append(len(m.stack))


@_opcodes("TUPLE")
def _tuple(m: Machine, arg: Any, name: str) -> None:
    m.push(tuple(m.pop_mark()))


@_opcodes("TUPLE1", "TUPLE2", "TUPLE3")
def _tuple_n(m: Machine, arg: Any, name: str) -> None:
    """The top n items, in stack order."""
    m.push(tuple([m.pop() for _ in range(int(name[-1]))][::-1]))


@_opcodes("LIST")
def _list(m: Machine, arg: Any, name: str) -> None:
    m.push(m.pop_mark())


@_opcodes("DICT")
def _dict(m: Machine, arg: Any, name: str) -> None:
    """Key, value, key, value ... since MARK; a dangling last key is dropped, as pickle does."""
    items = m.pop_mark()
    d: dict = {}
    for i in range(0, len(items) - 1, 2):
        _setitem(d, items[i], items[i + 1])
    m.push(d)


@_opcodes("FROZENSET")
def _frozenset(m: Machine, arg: Any, name: str) -> None:
    try:
        m.push(frozenset(m.pop_mark()))
    except TypeError:
        raise PickleRefused("frozenset of unhashable items") from None


@_opcodes("APPEND", "APPENDS")
def _append(m: Machine, arg: Any, name: str) -> None:
    """Only lists are appended to (pickle would call any object's append or extend)."""
    items = [m.pop()] if name == "APPEND" else m.pop_mark()
    target = m.pop()
    if not isinstance(target, list):
        raise PickleRefused(f"{name} on a {type(target).__name__}: only lists are appended to")
    target.extend(items)
    m.push(target)


@_opcodes("SETITEM", "SETITEMS")
def _setitems(m: Machine, arg: Any, name: str) -> None:
    """Only dicts take items (pickle would call any object's __setitem__)."""
    if name == "SETITEM":
        value, key = m.pop(), m.pop()
        items = [key, value]
    else:
        items = m.pop_mark()
        if len(items) % 2:
            raise PickleRefused("SETITEMS with an odd number of items")
    target = m.pop()
    for i in range(0, len(items), 2):
        _setitem(target, items[i], items[i + 1])
    m.push(target)


@_opcodes("ADDITEMS")
def _additems(m: Machine, arg: Any, name: str) -> None:
    items = m.pop_mark()
    target = m.pop()
    if not isinstance(target, set):
        raise PickleRefused("ADDITEMS on something that is not a set")
    try:
        target.update(items)
    except TypeError:
        raise PickleRefused("set of unhashable items") from None
    m.push(target)


@_opcodes("POP")
def _pop(m: Machine, arg: Any, name: str) -> None:
    """Drop the top item, or a bare MARK on top, as pickle allows."""
    if m.marks and len(m.stack) == m.marks[-1]:
        m.marks.pop()
    else:
        m.pop()


@_opcodes("POP_MARK")
def _pop_mark(m: Machine, arg: Any, name: str) -> None:
    m.pop_mark()


@_opcodes("DUP")
def _dup(m: Machine, arg: Any, name: str) -> None:
    m.push(m.top())


@_opcodes("PUT", "BINPUT", "LONG_BINPUT")
def _put(m: Machine, arg: Any, name: str) -> None:
    if not m.stack:
        raise PickleRefused("PUT on an empty stack")
    m.memo[int(arg)] = m.stack[-1]


@_opcodes("MEMOIZE")
def _memoize(m: Machine, arg: Any, name: str) -> None:
    """PUT into the next free slot."""
    if not m.stack:
        raise PickleRefused("MEMOIZE on an empty stack")
    m.memo[len(m.memo)] = m.stack[-1]


@_opcodes("GET", "BINGET", "LONG_BINGET")
def _get(m: Machine, arg: Any, name: str) -> None:
    if int(arg) not in m.memo:
        raise PickleRefused(f"GET of memo slot {arg} that was never PUT")
    m.push(m.memo[int(arg)])


@_opcodes("GLOBAL", "INST")
def _global(m: Machine, arg: Any, name: str) -> None:
    """A global is looked up in ALLOWED, never imported; INST = GLOBAL + a call with the items since MARK."""
    module, _, attr = str(arg).partition(" ")
    value = ALLOWED.get((module, attr))
    if value is None:
        raise _refuse_global(module, attr)
    if name == "INST":
        value = m.call(value, tuple(m.pop_mark()), "INST")
    m.push(value)


@_opcodes("STACK_GLOBAL")
def _stack_global(m: Machine, arg: Any, name: str) -> None:
    """GLOBAL with the module and name taken from the stack."""
    attr, module = m.pop(), m.pop()
    if not isinstance(module, str) or not isinstance(attr, str):
        raise PickleRefused("STACK_GLOBAL with non-string names")
    value = ALLOWED.get((module, attr))
    if value is None:
        raise _refuse_global(module, attr)
    m.push(value)


@_opcodes("REDUCE", "NEWOBJ")
def _reduce(m: Machine, arg: Any, name: str) -> None:
    """callable(*args): only an allowed stand-in is called."""
    args = m.pop()
    m.push(m.call(m.pop(), args, name))


@_opcodes("NEWOBJ_EX")
def _newobj_ex(m: Machine, arg: Any, name: str) -> None:
    kwargs, args = m.pop(), m.pop()
    if kwargs:
        raise PickleRefused("NEWOBJ_EX with keyword arguments")
    m.push(m.call(m.pop(), args, "NEWOBJ_EX"))


@_opcodes("OBJ")
def _obj(m: Machine, arg: Any, name: str) -> None:
    """MARK class args... OBJ: call the class on the args."""
    items = m.pop_mark()
    if not items:
        raise PickleRefused("OBJ without a class")
    m.push(m.call(items[0], tuple(items[1:]), "OBJ"))


@_opcodes("BUILD")
def _build(m: Machine, arg: Any, name: str) -> None:
    """Setting state: ignored on a dict (OrderedDict._metadata and the like, attributes we do not need) and on
    a tensor (a parameter's state); refused on anything else."""
    state = m.pop()
    target = m.top()
    if isinstance(target, dict) and isinstance(state, dict):
        return
    if isinstance(target, TensorRef):
        return
    raise PickleRefused(f"BUILD (setting state) on a {type(target).__name__}")


@_opcodes("PERSID", "BINPERSID")
def _persid(m: Machine, arg: Any, name: str) -> None:
    """A reference to data outside the pickle (a torch storage); the container's loader resolves it."""
    m.push(m.persistent_load(arg if name == "PERSID" else m.pop()))


@_opcodes("EXT1", "EXT2", "EXT4")
def _ext(m: Machine, arg: Any, name: str) -> None:
    raise PickleRefused(f"{name} (the copyreg extension registry) is not used by torch checkpoints")


def walk(stream: Any, persistent_load: Callable[[Any], Any]) -> Any:
    """Simulate one pickle (up to its STOP) and return the value it builds. Raises PickleRefused."""
    m = Machine(persistent_load)
    try:
        for op, arg, _pos in pickletools.genops(stream):
            if op.name == "STOP":
                if len(m.stack) != 1 or m.marks:
                    raise PickleRefused("STOP with a malformed stack")
                return m.stack[0]
            handler = HANDLERS.get(op.name)
            if handler is None:
                raise PickleRefused(f"opcode {op.name} is not used by torch checkpoints")
            handler(m, arg, op.name)
        raise PickleRefused("the pickle ends without STOP (truncated?)")
    except (ValueError, EOFError, struct.error, UnicodeDecodeError, OverflowError) as e:
        raise PickleRefused(f"not a valid pickle stream: {e}") from None
