"""The GGUF dequantization cache: a GGUF file → a plain safetensors folder that `run.load` loads fast.

GGUF files are dequantized by `transformers` once (~20 s for SmolLM2) into the target dtype and then cached in
`bundled.cache_dir()/gguf/<key>` (float32) or `<key>-<dtype>` (bfloat16, float16): a half-precision run never
holds a float32 copy after the first build. The key is the sha256 of the file's bytes, so a reinstalled package
finds its cache and a changed file misses it. The hash (and the strict reader) run once per version of a file:
a note keyed by path, size, mtime, ctime and inode remembers the key. The cache folder is built in a temp folder
and renamed into place, so an interrupted run never leaves a half-written cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

from glassbox import bundled, fileio, progress, registry
from glassbox.checkpoint import open_checkpoint
from glassbox.errors import BadInput
from glassbox.run.build import build

_HASH_SPAN = 4 << 20


def gguf_key(path: Path) -> str:
    """Cache key of a GGUF file: the sha256 of its bytes, so a reinstall of the same package (new mtime, new
    inode) finds the same cache, and any changed byte misses it. Hashing costs ~0.2 s per 100 MB, paid once
    per file version: `_seen_note` remembers the key for an unchanged file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_SPAN):
            h.update(chunk)
    return h.hexdigest()[:32]


def _seen_note(path: Path) -> Path:
    """Where the content key of this very file (same path, size, mtime, ctime, inode) is remembered. Any
    write changes ctime, which no user can set back, so a note never vouches for changed bytes."""
    st = path.stat()
    ident = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\0{st.st_dev}"
    return bundled.cache_dir() / "gguf" / "seen" / hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()[:32]


@contextlib.contextmanager
def _gguf_bar():
    """transformers draws its dequantization bar with plain tqdm; our contract allows bars only on a terminal."""
    if progress.enabled():
        yield
        return
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    original = gguf_utils.tqdm
    gguf_utils.tqdm = lambda items, **_: items
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def _validate(path: Path) -> int:
    """The strict reader over the file (its rule named when malformed) → the element count of its tensors."""
    with contextlib.closing(open_checkpoint(path)) as ck:
        return sum(_count(e.shape) for e in ck.tensors.values())


def _count(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def source_key(path: Path) -> tuple[str, int | None]:
    """(content key, element count when the strict reader ran now, else None): a file seen before and unchanged
    since (its `_seen_note`) skips both the strict reader (it passed) and the content hash."""
    note = _seen_note(path)
    try:
        key = note.read_text().strip()
    except OSError:
        key = ""
    if len(key) == 32 and all(c in "0123456789abcdef" for c in key):
        return key, None
    count = _validate(path)
    key = gguf_key(path)
    with fileio.atomic_write(note, "w") as f:
        f.write(key)
    return key, count


def folder_for(key: str, dtype: str = "float32") -> Path:
    """The cache folder of a key in a dtype (float32 keeps the key alone, as caches built before dtypes do)."""
    return bundled.cache_dir() / "gguf" / (key if dtype == "float32" else f"{key}-{dtype}")


def cached_count(key: str) -> int | None:
    """The element count from any dtype's cache of this key (safetensors headers only), None when none exists."""
    from glassbox.checkpoint.safetensors import open_safetensors

    for dtype in ("float32", "bfloat16", "float16"):
        folder = folder_for(key, dtype)
        files = sorted(folder.glob("*.safetensors")) if (folder / "config.json").is_file() else []
        if files:
            total = 0
            for file in files:
                with contextlib.closing(open_safetensors(file)) as ck:
                    total += sum(_count(e.shape) for e in ck.tensors.values())
            return total
    return None


def gguf_cache(path: Path, dtype: str = "float32", key: str | None = None) -> Path:
    """The plain safetensors folder for a GGUF file in `dtype`, building it (dequantize once) when missing."""
    if key is None:
        key, _ = source_key(path)
    target = folder_for(key, dtype)
    if not (target / "config.json").is_file():
        _build_gguf_cache(path, target, dtype)
    return target


def _build_gguf_cache(path: Path, target: Path, dtype: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with warnings.catch_warnings(), _gguf_bar():
            warnings.simplefilter("ignore")
            quantized = AutoModelForCausalLM.from_pretrained(
                path.parent, gguf_file=path.name, dtype=getattr(torch, dtype), attn_implementation="eager")
    except Exception as exc:
        raise BadInput(f"transformers cannot load this GGUF file: {type(exc).__name__}: {exc}", path) from None
    if quantized.config.model_type not in registry.MODEL_TYPES:
        raise BadInput(f"architecture {quantized.config.model_type!r} cannot be run", path)
    with contextlib.closing(open_checkpoint(path)) as ours:  # the registry's reading of the metadata
        kinds = (ours.config or {}).get("layer_types")
    if kinds and len(kinds) == quantized.config.num_hidden_layers:
        # transformers' GGUF loader ignores a file's per-layer kinds (Gemma 3's sliding_window_pattern flags)
        quantized.config.layer_types = kinds
    # A GGUF-loaded model refuses save_pretrained: rebuild a plain one from its config and move the weights.
    plain = build(quantized.config, getattr(torch, dtype))
    plain.load_state_dict(quantized.state_dict())
    del quantized
    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except Exception:
        tok = None
    tmp = fileio.temp_dir_beside(target)  # `.<key>.<pid>.*`; a killed build's folder is swept by the next
    try:
        plain.save_pretrained(tmp)
        if tok is not None:
            tok.save_pretrained(tmp)
        (tmp / "glassbox-source.json").write_text(json.dumps({"gguf": str(path), "key": target.name,
                                                               "dtype": dtype}))
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():  # not a lost race with another process
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


