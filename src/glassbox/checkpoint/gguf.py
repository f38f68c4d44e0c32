"""GGUF reader: a strict walk of the header and tensor index, GGUF names mapped to Hugging Face names,
values dequantized on demand with the `gguf` package and put back into the Hugging Face layout.

We walk the header ourselves (with the `gguf` package's type tables) instead of handing the file to
`gguf.GGUFReader`: that reader trusts every count and length it reads (a corrupt array length makes it loop
for hours or read garbage), and it builds a numpy object per vocabulary string, which costs seconds on a
real tokenizer. Here every count is checked against the bytes left before it is used, so a malformed file
fails fast with BadInput. Listing reads the header only; no tensor byte is touched until `tensor()`.

Layout facts (see shared/models.md): GGUF lists dims innermost first, so the HF shape is the reverse; for
llama/mistral llama.cpp permutes the rows of attn_q/attn_k inside each head for its rope kernel; Gemma
stores every RMSNorm weight as 1 + w.
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glassbox import registry
from glassbox.checkpoint.base import Checkpoint, TensorEntry
from glassbox.errors import BadInput

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_COUNT = 10_000_000  # tensors or metadata keys; real files have hundreds
MAX_ARRAY_DEPTH = 8

# GGUF metadata value types: id → (name, struct code or None for string/array)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
KEEP_ARRAY = 4096  # numeric arrays up to this length keep their values (per-layer settings); longer: length only

# GGUF → Hugging Face names: each family's table (and its Q/K permutation and norm rule) is declared in
# glassbox.registry, under the GGUF architecture names it reads; "blk.{n}.<key>" is layer n.
GGUF_ARCHS = registry.GGUF_ARCHS

# GGUF "<arch>.<key>" → HF config key (transformers' integrations/ggml.py uses the same correspondence)
_CONFIG_KEYS = {
    "context_length": "max_position_embeddings", "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size", "embedding_length": "hidden_size",
    "attention.head_count": "num_attention_heads", "attention.head_count_kv": "num_key_value_heads",
    "attention.key_length": "head_dim", "rope.freq_base": "rope_theta",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps", "attention.layer_norm_epsilon": "layer_norm_eps",
    "attention.sliding_window": "sliding_window", "vocab_size": "vocab_size",
    "final_logit_softcapping": "final_logit_softcapping", "attn_logit_softcapping": "attn_logit_softcapping",
}
_TOKEN_KEYS = {"bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id", "padding_token_id": "pad_token_id"}

_LAYER_NAME = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")


def hf_name(arch: str, gguf_name: str) -> str | None:
    """The Hugging Face name of a GGUF tensor, or None when this architecture's table has no entry."""
    known = GGUF_ARCHS.get(arch)
    if known is None:
        return None
    names = known[0].gguf
    m = _LAYER_NAME.fullmatch(gguf_name)
    if m:
        module = names.layer.get(m.group(2))
        return f"model.layers.{m.group(1)}.{module}.{m.group(3)}" if module else None
    base, _, suffix = gguf_name.rpartition(".")
    module = names.globals.get(base)
    return f"{module}.{suffix}" if module and suffix in ("weight", "bias") else None


# ---------------------------------------------------------------------------------------------------------
# The header walk


class _Header:
    """Reads little-endian values from the mapped file, checking every read against the file's end."""

    def __init__(self, buf, path: Path):
        self.buf, self.path, self.pos, self.size = buf, path, 0, len(buf)

    def fail(self, rule: str) -> BadInput:
        return BadInput(f"malformed GGUF: {rule}", self.path)

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"{what} at byte {self.pos} needs {n} bytes but the file ends at {self.size} "
                            "(truncated?)")

    def scalar(self, code: str, what: str):
        n = struct.calcsize("<" + code)
        self.need(n, what)
        (value,) = struct.unpack_from("<" + code, self.buf, self.pos)
        self.pos += n
        return value

    def string(self, what: str, decode: bool = True) -> str | None:
        n = self.scalar("Q", f"length of {what}")
        self.need(n, what)
        raw = self.buf[self.pos:self.pos + n] if decode else None
        self.pos += n
        if not decode:
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"{what} at byte {self.pos - n} is not valid UTF-8 ({e.reason})") from None

    def value(self, vtype: int, key: str, depth: int = 0) -> Any:
        """One metadata value. Long arrays are skipped over (bounds-checked) and summarized by length."""
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype], f"value of {key!r}")
        if vtype == _STRING:
            return self.string(f"string value of {key!r}")
        if vtype != _ARRAY:
            raise self.fail(f"metadata key {key!r} has unknown value type {vtype}")
        if depth >= MAX_ARRAY_DEPTH:
            raise self.fail(f"metadata key {key!r}: arrays nested deeper than {MAX_ARRAY_DEPTH}")
        itype = self.scalar("I", f"array type of {key!r}")
        count = self.scalar("Q", f"array length of {key!r}")
        if itype in _SCALARS:
            width = struct.calcsize("<" + _SCALARS[itype])
            self.need(count * width, f"{count} array elements of {key!r}")
            if count <= KEEP_ARRAY:
                values = list(struct.unpack_from(f"<{count}{_SCALARS[itype]}", self.buf, self.pos))
            else:
                values = _Skipped(count, itype)
            self.pos += count * width
            return values
        # strings and nested arrays take at least 8 bytes each: bound the count before looping
        self.need(count * 8, f"{count} array elements of {key!r}")
        if itype == _STRING:
            keep = count <= KEEP_ARRAY
            values = [self.string(f"element {i} of {key!r}", decode=keep) for i in range(count)]
            return values if keep else _Skipped(count, itype)
        if itype == _ARRAY:
            return [self.value(_ARRAY, key, depth + 1) for _ in range(count)]
        raise self.fail(f"metadata key {key!r} is an array of unknown type {itype}")


@dataclass(frozen=True)
class _Skipped:
    """A long array (a vocabulary) whose elements were bounds-checked but not kept."""

    length: int
    itype: int

    def __len__(self) -> int:
        return self.length


@dataclass
class GGUFCheckpoint(Checkpoint):
    architecture: str = "unknown"  # general.architecture
    values: dict[str, Any] = field(default_factory=dict, repr=False)  # metadata with typed values
    _mm: Any = field(default=None, repr=False)
    _file: Any = field(default=None, repr=False)

    def tensor(self, name: str):
        """Dequantized float32 values in Hugging Face layout (Q/K un-permuted, Gemma norms as w)."""
        import numpy as np
        import torch
        from gguf.constants import GGMLQuantizationType
        from gguf.quants import dequantize, quant_shape_to_byte_shape

        entry = self.tensors.get(name) or next((e for e in self.tensors.values() if e.source_name == name), None)
        if entry is None:
            raise BadInput(f"no tensor named {name!r}", self.path)
        if self._mm is None:
            raise BadInput("checkpoint is closed", self.path)
        qtype = GGMLQuantizationType[entry.dtype]
        raw = np.frombuffer(self._mm, dtype=np.uint8, count=entry.nbytes, offset=entry.offset)
        try:
            if qtype in _PLAIN:  # stored as plain numbers: view them with their own dtype
                values = raw.view(_PLAIN[qtype]).astype(np.float32).reshape(entry.shape)
            else:
                data = raw.reshape(quant_shape_to_byte_shape(entry.shape, qtype))
                values = np.array(dequantize(data, qtype), dtype=np.float32).reshape(entry.shape)
        except (NotImplementedError, ValueError, KeyError) as e:
            raise BadInput(f"tensor {entry.source_name!r}: cannot dequantize {entry.dtype}: {e}", self.path) from None
        finally:
            del raw
        family, garch = GGUF_ARCHS.get(self.architecture, (None, None))
        kind = entry.source_name.split(".")[-2] if entry.source_name.startswith("blk.") else ""
        if garch and garch.permuted_qk and kind in ("attn_q", "attn_k"):
            key = "num_attention_heads" if kind == "attn_q" else "num_key_value_heads"
            n = (self.config or {}).get(key)
            if not n:
                raise BadInput(f"tensor {entry.source_name!r}: cannot undo llama.cpp's Q/K row order "
                               f"without {key} in the metadata", self.path)
            values = unpermute_rows(values, n)
        if family and family.norm_plus_one and entry.name.endswith("norm.weight"):
            values = values - np.float32(1.0)
        return torch.from_numpy(np.ascontiguousarray(values))

    def close(self) -> None:
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # a caller still holds a view; the map goes when that does
                pass
            self._mm = None
        if self._file is not None:
            self._file.close()
            self._file = None


def _plain_dtypes():
    import numpy as np
    from gguf.constants import GGMLQuantizationType as T

    return {T.F32: np.float32, T.F16: np.float16, T.F64: np.float64, T.I8: np.int8, T.I16: np.int16,
            T.I32: np.int32, T.I64: np.int64}


_PLAIN: dict = {}


def unpermute_rows(w, n: int):
    """Undo llama.cpp's per-head row interleave of Q/K (rows of head h stay in head h's block)."""
    if w.shape[0] % (2 * n):
        return w
    return w.reshape(n, w.shape[0] // n // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def open_gguf(path: Path) -> GGUFCheckpoint:
    """Read and validate a GGUF file's header and tensor index (no tensor bytes are read)."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    path = Path(path)
    if not _PLAIN:
        _PLAIN.update(_plain_dtypes())
    try:
        f = open(path, "rb")
    except OSError as e:
        raise BadInput(f"cannot open: {e.strerror}", path) from None
    try:
        size = f.seek(0, 2)
        if size < 24:
            raise BadInput(f"malformed GGUF: {size} bytes is shorter than the 24-byte GGUF header", path)
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except BaseException:
        f.close()
        raise
    try:
        ckpt = _read_index(mm, f, path, size, GGML_QUANT_SIZES, GGMLQuantizationType)
    except BaseException:
        mm.close()
        f.close()
        raise
    return ckpt


def _read_index(mm, f, path: Path, size: int, quant_sizes, qtypes) -> GGUFCheckpoint:
    h = _Header(mm, path)
    magic = bytes(mm[:4])
    if magic != MAGIC:
        raise h.fail(f"wrong magic {magic!r} (expected b'GGUF'); not a GGUF file")
    h.pos = 4
    version = h.scalar("I", "version")
    if version & 0xFFFF == 0 and version:
        raise h.fail("big-endian GGUF files are not supported")
    if version not in (2, 3):
        raise h.fail(f"version {version} is not supported (only GGUF v2 and v3)")
    n_tensors = h.scalar("Q", "tensor count")
    n_kv = h.scalar("Q", "metadata count")
    # every key takes ≥ 13 bytes (length, type, 1-byte value) and every tensor info ≥ 24: absurd counts end here
    if n_kv > MAX_COUNT or n_kv * 13 > size - h.pos:
        raise h.fail(f"metadata count {n_kv} cannot fit in a {size}-byte file")
    if n_tensors > MAX_COUNT or n_tensors * 24 > size - h.pos:
        raise h.fail(f"tensor count {n_tensors} cannot fit in a {size}-byte file")

    values: dict[str, Any] = {}
    for i in range(n_kv):
        key = h.string(f"metadata key #{i}")
        vtype = h.scalar("I", f"value type of {key!r}")
        if key in values:
            raise h.fail(f"metadata key {key!r} appears twice")
        values[key] = h.value(vtype, key)

    infos = []  # (name, gguf dims, qtype, relative offset)
    seen: set[str] = set()
    for i in range(n_tensors):
        name = h.string(f"name of tensor #{i}")
        if name in seen:
            raise h.fail(f"tensor {name!r} appears twice in the index")
        seen.add(name)
        n_dims = h.scalar("I", f"dimension count of {name!r}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise h.fail(f"tensor {name!r} has {n_dims} dimensions (GGUF allows 1 to {MAX_DIMS})")
        dims = [h.scalar("Q", f"dimension of {name!r}") for _ in range(n_dims)]
        raw_type = h.scalar("I", f"type of {name!r}")
        offset = h.scalar("Q", f"data offset of {name!r}")
        infos.append((name, dims, raw_type, offset))

    alignment = values.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & (alignment - 1):
        raise h.fail(f"general.alignment {alignment!r} is not a positive power of two")
    data_start = -(-h.pos // alignment) * alignment

    warnings: list[str] = []
    arch = values.get("general.architecture")
    if not isinstance(arch, str):
        warnings.append("no general.architecture in the GGUF metadata; tensor names kept as stored")
        arch = "unknown"
    family = GGUF_ARCHS.get(arch)
    if family is None and arch != "unknown":
        warnings.append(f"GGUF architecture {arch!r} has no name table here; tensor names kept as stored")

    entries: dict[str, TensorEntry] = {}
    spans = []
    for name, dims, raw_type, offset in infos:
        try:
            qtype = qtypes(raw_type)
            block, type_size = quant_sizes[qtype]
        except (ValueError, KeyError):
            raise h.fail(f"tensor {name!r} has unknown type {raw_type}") from None
        numel = 1
        for d in dims:
            numel *= d
        if numel >= 2**62:
            raise h.fail(f"tensor {name!r}: shape {dims} has more elements than any file can hold")
        if dims[0] % block:
            raise h.fail(f"tensor {name!r}: row length {dims[0]} is not a multiple of the {qtype.name} block "
                         f"size {block}")
        nbytes = numel // block * type_size
        if offset % alignment:
            raise h.fail(f"tensor {name!r}: data offset {offset} is not a multiple of the alignment {alignment}")
        start = data_start + offset
        if start + nbytes > size:
            raise h.fail(f"tensor {name!r}: data [{start}, {start + nbytes}) runs past the end of the file "
                         f"({size} bytes; truncated?)")
        spans.append((start, start + nbytes, name))
        mapped = hf_name(arch, name)
        if mapped is None:
            if family is not None:
                warnings.append(f"GGUF tensor {name!r} has no Hugging Face name for {arch}; kept as stored")
            mapped = name
        if mapped in entries:
            raise h.fail(f"tensors {entries[mapped].source_name!r} and {name!r} both map to {mapped!r}")
        entries[mapped] = TensorEntry(name=mapped, source_name=name, dtype=qtype.name,
                                      shape=tuple(int(d) for d in reversed(dims)), file=path,
                                      offset=start, nbytes=nbytes)
    _check_layout(sorted(spans), data_start, alignment, size, h, warnings)

    config = _config(arch, values, entries) if family is not None or arch != "unknown" else None
    return GGUFCheckpoint(
        path=path, format="gguf", tensors=entries, metadata={k: _show(v) for k, v in values.items()},
        config=config, config_source="gguf metadata" if config is not None else "none", warnings=warnings,
        architecture=arch, values=values, _mm=mm, _file=f,
    )


def _check_layout(spans, data_start: int, alignment: int, size: int, h: _Header, warnings: list[str]) -> None:
    """Overlapping tensors are an error; gaps and trailing bytes are legal here but worth a warning
    (llama.cpp itself insists on tensors packed in index order)."""
    expected, gaps = data_start, 0
    for start, end, name in spans:
        if start < expected and start != end:
            raise h.fail(f"tensor {name!r} data [{start}, {end}) overlaps the tensor before it (ends at {expected})")
        if start > expected and start - expected >= alignment:
            gaps += 1
        expected = max(expected, end)
    if gaps:
        warnings.append(f"{gaps} gaps between tensor data blocks (llama.cpp would refuse this file)")
    if size - expected >= alignment:
        warnings.append(f"{size - expected} bytes after the last tensor are not part of any tensor")


def _show(value: Any) -> str:
    if isinstance(value, _Skipped):
        return f"[array of {value.length}]"
    if isinstance(value, list):
        return f"[array of {len(value)}]" if len(value) > 16 else str(value)
    return str(value)


def _config(arch: str, values: dict[str, Any], entries: dict[str, TensorEntry]) -> dict[str, Any]:
    """An HF-style config dict from the `<arch>.*` metadata keys."""
    family, garch = GGUF_ARCHS.get(arch, (None, None))
    config: dict[str, Any] = {"model_type": garch.model_type if garch else arch}
    if family and garch:
        config["architectures"] = [garch.hf_class]
        config[family.gguf.hidden_act_key] = family.gguf.hidden_act
    for key, target in _CONFIG_KEYS.items():
        value = values.get(f"{arch}.{key}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            config[target] = value
        elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            config[target] = max(value)  # per-layer counts (some architectures): the largest
    for key, target in _TOKEN_KEYS.items():
        value = values.get(f"tokenizer.ggml.{key}")
        if isinstance(value, int):
            config[target] = value
    if "vocab_size" not in config:
        tokens = values.get("tokenizer.ggml.tokens")
        embed = entries.get("model.embed_tokens.weight") or entries.get("token_embd.weight")
        if tokens is not None:
            config["vocab_size"] = len(tokens)
        elif embed is not None:
            config["vocab_size"] = embed.shape[0]
    heads, hidden = config.get("num_attention_heads"), config.get("hidden_size")
    if "head_dim" not in config:
        rope_dims = values.get(f"{arch}.rope.dimension_count")
        if isinstance(rope_dims, int) and garch is not None and garch.rope_dims_are_head_dim:
            config["head_dim"] = rope_dims
        elif heads and hidden:
            config["head_dim"] = hidden // heads
    if heads and "num_key_value_heads" not in config:
        config["num_key_value_heads"] = heads
    config["tie_word_embeddings"] = not any(e.source_name == "output.weight" for e in entries.values())
    kinds = family.gguf.layer_types if family else None
    if kinds is not None:
        config["layer_types"] = _layer_types(kinds, values.get(f"{arch}.{kinds.key}"),
                                             config.get("num_hidden_layers", 0))
    for key, value in (family.gguf.config_defaults if family else {}).items():
        config.setdefault(key, value)
    return config


def _layer_types(spec: registry.GGUFLayerTypes, flags: Any, n_layers: int) -> list[str]:
    """The registry's per-layer attention kinds: from the file's per-layer flags, or a period the file gives
    (every n-th layer is `other`, as llama.cpp reads an integer there), else the registry's period."""
    if isinstance(flags, list) and flags:
        return [spec.flagged if f else spec.other for f in flags]
    every = flags if isinstance(flags, int) and not isinstance(flags, bool) and flags > 0 else spec.every
    return [spec.other if (i + 1) % every == 0 else spec.flagged for i in range(n_layers)]
