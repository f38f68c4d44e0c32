"""Load a real Hugging Face `transformers` model from any checkpoint glassbox reads; never re-implement one.

Accepted specs: a bundled short name, a folder with config.json + safetensors (single or sharded), a
.safetensors file whose config.json sits in its folder or the folder above (training runs keep
`DIR/config.json` beside `DIR/checkpoints/`), a .gguf file, or (only with allow_pickle) a .bin/.pt file.

Safetensors load fast: the model is built with its parameters on the meta device (no memory, no random
init) and the file's tensors, memory-mapped copy-on-write, are assigned to it: a float32 file is never
copied or read up front, and tied weights are tied by transformers' own `tie_weights`. Only names that
need more than transformers' pure renames (or a pickle) go through `from_pretrained`.

GGUF files are dequantized by `transformers` once (~20 s for SmolLM2) and then cached as a plain
safetensors folder in `bundled.cache_dir()/gguf/<key>`; the key is the sha256 of the file's bytes, so a
reinstalled package finds its cache and a changed file misses it. The hash (and the strict reader) run
once per version of a file: a note keyed by path, size, mtime, ctime and inode remembers the key. The
cache folder is built in a temp folder and renamed into place, so an interrupted run never leaves a
half-written cache.

Threads: torch's own default (one per physical core) unless GLASSBOX_THREADS says otherwise; on this
project's 2-core machines two threads ran a GPT-2-small forward 1.9× faster than one (issue 9), and every
benchmark prints the count it used and the one-thread ratio. Models under SMALL_MODEL parameters (the
training presets, the tests' tiny models) get one thread: their ops are too small to split.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glassbox import bundled, registry
from glassbox.checkpoint import PICKLE_SUFFIXES, open_checkpoint, pick_in_directory
from glassbox.errors import BadInput

# model_type → family (glassbox.registry; its layout is what the hooks know). Qwen2/Mistral are llama-shaped.
ARCHITECTURES: dict[str, str] = registry.MODEL_TYPES
# encoder families and their model_types (both get asked)
ENCODERS = {n for f in registry.FAMILIES.values() if not f.causal for n in (f.name, *f.model_types)}
_HASH_SPAN = 4 << 20
_DEFAULT_THREADS: int | None = None  # torch's count when first asked (its default, or the host program's choice)
SMALL_MODEL = 10_000_000  # parameters; below this one thread (see set_threads)


@dataclass
class Loaded:
    """A model ready to run: the HF module (eval, float32, eager attention) and what the probes need."""

    model: Any
    tokenizer: Any | None
    architecture: str  # family (glassbox.registry): llama | qwen3 | phi3 | gemma3 | gpt2 | gpt_neox | bert
    name: str
    needs_bos: bool
    source: Path

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def is_encoder(self) -> bool:
        return self.architecture in ENCODERS

    @property
    def n_layers(self) -> int:
        return int(self.config.num_hidden_layers)

    @property
    def n_heads(self) -> int:
        return int(self.config.num_attention_heads)

    @property
    def bos_id(self) -> int | None:
        tok = self.tokenizer
        if tok is not None and tok.bos_token_id is not None:
            return int(tok.bos_token_id)
        if tok is not None and self.is_encoder and tok.cls_token_id is not None:
            return int(tok.cls_token_id)
        bos = getattr(self.config, "bos_token_id", None)  # config defaults can point outside a tiny vocab
        return int(bos) if isinstance(bos, int) and 0 <= bos < int(self.config.vocab_size) else None


def _quiet_transformers() -> None:
    """Our progress bars are ours to draw; transformers' tqdm bars and warnings would clutter stderr."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def set_threads(model: Any = None) -> int:
    """The torch thread count: GLASSBOX_THREADS when set (a positive integer); else one thread for a model of
    fewer than SMALL_MODEL parameters (its ops are too small to split: measured 15× faster on one thread for
    the induction-2l training preset on a loaded 2-core machine), else torch's own default. Returns it."""
    import torch

    global _DEFAULT_THREADS
    if _DEFAULT_THREADS is None:
        _DEFAULT_THREADS = torch.get_num_threads()
    raw = os.environ.get("GLASSBOX_THREADS", "").strip()
    if raw and (not raw.isdigit() or int(raw) < 1):
        raise BadInput(f"GLASSBOX_THREADS={raw!r}: expected a positive integer (the torch thread count)")
    if raw:
        n = int(raw)
    elif model is not None and sum(p.numel() for p in model.parameters()) < SMALL_MODEL:
        n = 1
    else:
        n = _DEFAULT_THREADS
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def load_model(spec: str | os.PathLike, allow_pickle: bool = False) -> Loaded:
    """A bundled name, a folder or a file → Loaded. Bad input raises BadInput (exit 2)."""
    set_threads()
    _quiet_transformers()
    name = str(spec)
    path = bundled.resolve(spec)
    needs_bos = bundled.BUNDLED[name].needs_bos if bundled.is_bundled_name(name) else False
    if path.is_dir():
        path = pick_in_directory(path)
    suffix = path.name.lower()
    if suffix.endswith((".safetensors", ".safetensors.index.json", *PICKLE_SUFFIXES)):
        _validate(path, allow_pickle)
    if suffix.endswith(".gguf"):
        folder = gguf_cache(path)  # validates the file unless this very file passed before (see gguf_cache)
        model, tok = _from_folder(folder, path), _tokenizer(folder)
    elif suffix.endswith(".safetensors") or suffix.endswith(".safetensors.index.json"):
        model, tok = _from_weights(path)
    elif suffix.endswith(PICKLE_SUFFIXES):
        if not allow_pickle:
            raise BadInput("pickle checkpoints can run code when loaded; refusing (pass --allow-pickle to "
                           "load it with torch.load(weights_only=True))", path)
        model, tok = _from_weights(path)
    else:
        raise BadInput("not a checkpoint this tool can run (.safetensors, .gguf, a folder with config.json)", path)
    set_threads(model)  # by the model's size (see set_threads)
    arch = ARCHITECTURES[model.config.model_type]
    needs_bos = needs_bos or registry.get(arch).needs_bos
    label = name if bundled.is_bundled_name(name) else Path(name).resolve().name  # the folder's name for a folder
    return Loaded(model, tok, arch, label, needs_bos, path)


def _validate(path: Path, allow_pickle: bool) -> None:
    """Run the strict reader over the file's index first, so a malformed file gets its rule named (and a
    pickle's opcodes are checked against the allowlist before torch.load ever sees it)."""
    with contextlib.closing(open_checkpoint(path, allow_pickle=allow_pickle)):
        pass


def _config_folder(path: Path) -> Path:
    for folder in (path.parent, path.parent.parent):
        if (folder / "config.json").is_file():
            return folder
    raise BadInput("no config.json beside this checkpoint (or in the folder above); a model cannot be "
                   "built without its architecture declaration", path)


def _config(folder: Path) -> Any:
    from transformers import AutoConfig

    try:
        raw = json.loads((folder / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"config.json is not valid JSON: {exc}", folder / "config.json") from None
    if not isinstance(raw, dict) or raw.get("model_type") not in ARCHITECTURES:
        kind = raw.get("model_type") if isinstance(raw, dict) else None
        raise BadInput(f"architecture {kind!r} cannot be run (supported: {', '.join(sorted(ARCHITECTURES))})",
                       folder / "config.json")
    try:
        return AutoConfig.from_pretrained(folder)
    except Exception as exc:  # transformers raises many kinds for a config it cannot read
        raise BadInput(f"config.json rejected by transformers: {exc}", folder / "config.json") from None


def _build(config: Any) -> Any:
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    config._attn_implementation = "eager"  # attention patterns need the eager kernel
    cls = AutoModel if config.model_type in ENCODERS else AutoModelForCausalLM
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cls.from_config(config, dtype=torch.float32, attn_implementation="eager")
    return model.eval()


def _tokenizer(folder: Path) -> Any | None:
    names = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model")
    if not any((folder / n).exists() for n in names):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except Exception:  # a model without a usable tokenizer still runs on token ids
        return None


def _from_weights(path: Path) -> tuple[Any, Any | None]:
    """Any weights file with its config. Safetensors: the fast path (`_assign`). Otherwise (a pickle, or keys
    only transformers knows how to rename): link both into a temp folder under the names `from_pretrained`
    expects, so transformers applies its own key renames (e.g. NeoX `embed_out` → `lm_head`) and ties."""
    folder = _config_folder(path)
    config = _config(folder)  # a clear error for an architecture we cannot run, before transformers tries
    model = _assign(config, _safetensors_files(path), path)
    if model is None:
        with tempfile.TemporaryDirectory(prefix="glassbox-load-") as tmp:
            staged = Path(tmp)
            # absolute targets: a link is resolved from the staging folder, not from where the user stood
            path, folder = path.absolute(), folder.absolute()
            os.symlink(folder / "config.json", staged / "config.json")
            lower = path.name.lower()
            if lower.endswith(".index.json"):
                os.symlink(path, staged / "model.safetensors.index.json")
                for shard in _shards(path):
                    os.symlink(path.parent / shard, staged / shard)
            else:
                os.symlink(path, staged / ("model.safetensors" if lower.endswith(".safetensors")
                                           else "pytorch_model.bin"))
            model = _from_pretrained(staged, path, config)
    return model, _tokenizer(folder)


def _shards(index: Path) -> list[str]:
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadInput(f"bad sharded index: {exc}", index) from None
    for shard in shards:
        if not isinstance(shard, str) or "/" in shard or "\\" in shard or not (index.parent / shard).is_file():
            raise BadInput(f"shard {shard!r} is missing or outside the folder", index)
    return shards


def _safetensors_files(path: Path) -> list[Path]:
    """The safetensors files a weights path stands for: itself, a sharded index's shards, or none (pickle)."""
    lower = path.name.lower()
    if lower.endswith(".safetensors.index.json"):
        return [path.parent / shard for shard in _shards(path)]
    return [path] if lower.endswith(".safetensors") else []


@contextlib.contextmanager
def _parameters_on_meta():
    """Every parameter created inside lands on the meta device: no memory, and the random init that follows
    in each module's constructor runs on nothing. Buffers (RoPE frequencies, position ids) stay real, so
    the model needs no second pass to compute them."""
    import torch

    register = torch.nn.Module.register_parameter

    def on_meta(module: Any, name: str, param: Any) -> None:
        if param is not None and param.device.type != "meta":
            param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    torch.nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def _no_init() -> Any:
    """transformers' own switch that skips `init_weights` (random init of meta tensors still costs ~2 s of
    dispatch for SmolLM2); a no-op where this transformers lacks it."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            return contextlib.nullcontext()
    return no_init_weights()


def _mapped(files: list[Path]) -> dict[str, Any]:
    """name → a tensor viewing the file's bytes through a copy-on-write memory map (nothing is read until
    used; an in-place edit of a weight stays private to this process and never reaches the file)."""
    import mmap

    import torch

    from glassbox.checkpoint.safetensors import open_safetensors

    out: dict[str, Any] = {}
    for file in files:
        with contextlib.closing(open_safetensors(file)) as ck:
            entries = list(ck.tensors.values())
        with open(file, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if entries else None
        for e in entries:
            dtype = _torch_dtype(e.dtype)
            if dtype is None:
                raise BadInput(f"tensor {e.name!r}: dtype {e.dtype} cannot be loaded as values", file)
            count = math.prod(e.shape)
            if count == 0:
                out[e.name] = torch.zeros(e.shape, dtype=dtype)
            elif e.offset % dtype.itemsize:  # a misaligned tensor (no standard writer makes one): copy it
                out[e.name] = torch.frombuffer(bytearray(buf[e.offset:e.offset + e.nbytes]), dtype=dtype).view(e.shape)
            else:
                out[e.name] = torch.frombuffer(buf, dtype=dtype, count=count, offset=e.offset).view(e.shape)
    return out


def _torch_dtype(name: str) -> Any:
    import torch

    return {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
            "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
            "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}.get(name)


def _assign(config: Any, files: list[Path], source: Path) -> Any | None:
    """The warm-load fast path: build the model with its parameters on the meta device and assign the
    memory-mapped safetensors tensors to them (float32 files: no copy at all). None when the file's names
    do not map onto the model's one to one (then `from_pretrained`, which knows every legacy rename)."""
    if not files:
        return None
    import torch

    cls = _model_class(config)
    with warnings.catch_warnings(), _parameters_on_meta(), _no_init():
        warnings.simplefilter("ignore")
        model = cls.from_config(config, dtype=torch.float32, attn_implementation="eager")
    expected = model.state_dict()
    tensors = _mapped(files)
    rename = _renamer(model, expected)
    tensors = {rename(n): t for n, t in tensors.items()}
    prefix = getattr(model, "base_model_prefix", "") or ""
    state, missing, mismatched = {}, set(), []
    for key, want in expected.items():
        name = next((n for n in (key, key.removeprefix(prefix + "."), f"{prefix}.{key}") if n in tensors), None)
        if name is None:
            if want.is_meta:
                missing.add(key)
            continue
        value = tensors[name]
        if tuple(value.shape) != tuple(want.shape):
            mismatched.append(key)
            continue
        state[key] = value if value.dtype == want.dtype else value.to(want.dtype)
    if mismatched:
        raise BadInput(f"{len(mismatched)} tensors have shapes the config does not allow, e.g. {mismatched[0]}",
                       source)
    if missing and not missing <= set(_tied_targets(model)):
        return None
    model.load_state_dict(state, strict=False, assign=True)
    if missing:
        model.tie_weights()
    if any(p.is_meta for p in model.parameters()):
        return None
    return model.eval()


def _renamer(model: Any, expected: dict[str, Any]) -> Any:
    """checkpoint name → the model's name by transformers' own pure renames (e.g. NeoX `embed_out` →
    `lm_head`, legacy `gamma`/`beta`, the base-model prefix), where this transformers version has them.
    A name that needs a real conversion (fused or split tensors) is left alone: it will not match, and the
    load falls back to `from_pretrained`."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, rename_source_key

        transforms = get_model_conversion_mapping(model)
    except (ImportError, AttributeError, TypeError):  # another transformers: names as they are
        return lambda name: name
    renamings = [t for t in transforms if not isinstance(t, WeightConverter)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]

    def rename(name: str) -> str:
        try:
            new, converter = rename_source_key(name, renamings, converters, model.base_model_prefix, expected)
        except Exception:  # a transformers-internal API: a surprise means "no rename", never a failed load
            return name
        return name if converter is not None else new

    return rename


def _tied_targets(model: Any) -> list[str]:
    """Parameter names the model ties to another (transformers 5 exposes the mapping; 4.x a key list)."""
    keys = getattr(model, "all_tied_weights_keys", None)
    if keys is None:
        keys = getattr(model, "_tied_weights_keys", None) or []
    return list(keys)


def _model_class(config: Any) -> Any:
    from transformers import AutoModel, AutoModelForCausalLM

    return AutoModel if config.model_type in ENCODERS else AutoModelForCausalLM


def _from_folder(folder: Path, source: Path) -> Any:
    config = _config(folder)
    index, single = folder / "model.safetensors.index.json", folder / "model.safetensors"
    files = _safetensors_files(index) if index.is_file() else ([single] if single.is_file() else [])
    model = _assign(config, files, source)
    return model if model is not None else _from_pretrained(folder, source, config)


def _from_pretrained(folder: Path, source: Path, config: Any) -> Any:
    import torch

    cls = _model_class(config)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, info = cls.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager",
                                              output_loading_info=True)
    except BadInput:
        raise
    except Exception as exc:  # corrupt bytes, wrong shapes, unreadable pickle: transformers' many kinds
        raise BadInput(f"cannot load the weights: {type(exc).__name__}: {exc}".splitlines()[0], source) from None
    missing = [k for k in info.get("missing_keys", []) if not k.endswith("position_ids")]
    if missing:
        raise BadInput(f"checkpoint lacks {len(missing)} tensors this architecture needs, e.g. {sorted(missing)[0]}",
                       source)
    mismatched = info.get("mismatched_keys") or []
    if mismatched:
        raise BadInput(f"{len(mismatched)} tensors have shapes the config does not allow, e.g. {mismatched[0]}",
                       source)
    return model.eval()


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
    from glassbox import progress

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


def gguf_cache(path: Path) -> Path:
    """The plain safetensors folder for a GGUF file, building it (dequantize once) when missing.

    A file seen before and unchanged since (its `_seen_note`) skips both the strict reader (it passed) and
    the content hash; otherwise the file is validated and hashed, and the note written."""
    note = _seen_note(path)
    try:
        key = note.read_text().strip()
    except OSError:
        key = ""
    if not (len(key) == 32 and all(c in "0123456789abcdef" for c in key)):
        _validate(path, allow_pickle=False)
        key = gguf_key(path)
    target = bundled.cache_dir() / "gguf" / key
    if not (target / "config.json").is_file():
        _build_gguf_cache(path, target)
    if not note.is_file():
        from glassbox.fileio import atomic_write

        with atomic_write(note, "w") as f:
            f.write(key)
    return target


def _build_gguf_cache(path: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with warnings.catch_warnings(), _gguf_bar():
            warnings.simplefilter("ignore")
            quantized = AutoModelForCausalLM.from_pretrained(
                path.parent, gguf_file=path.name, dtype=torch.float32, attn_implementation="eager")
    except Exception as exc:
        raise BadInput(f"transformers cannot load this GGUF file: {type(exc).__name__}: {exc}", path) from None
    if quantized.config.model_type not in ARCHITECTURES:
        raise BadInput(f"architecture {quantized.config.model_type!r} cannot be run", path)
    with contextlib.closing(open_checkpoint(path)) as ours:  # the registry's reading of the metadata
        kinds = (ours.config or {}).get("layer_types")
    if kinds and len(kinds) == quantized.config.num_hidden_layers:
        # transformers' GGUF loader ignores a file's per-layer kinds (Gemma 3's sliding_window_pattern flags)
        quantized.config.layer_types = kinds
    # A GGUF-loaded model refuses save_pretrained: rebuild a plain one from its config and move the weights.
    plain = _build(quantized.config)
    plain.load_state_dict(quantized.state_dict())
    del quantized
    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except Exception:
        tok = None
    from glassbox import fileio

    tmp = fileio.temp_dir_beside(target)  # `.<key>.<pid>.*`; a killed build's folder is swept by the next
    try:
        plain.save_pretrained(tmp)
        if tok is not None:
            tok.save_pretrained(tmp)
        (tmp / "glassbox-source.json").write_text(json.dumps({"gguf": str(path), "key": target.name}))
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():  # not a lost race with another process
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
