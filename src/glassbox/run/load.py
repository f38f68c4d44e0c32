"""Load a real Hugging Face `transformers` model from any checkpoint glassbox reads; never re-implement one.

Accepted specs: a bundled short name, a folder with config.json + safetensors (single or sharded), a
.safetensors file whose config.json sits in its folder or the folder above (training runs keep
`DIR/config.json` beside `DIR/checkpoints/`), a .gguf file, or (only with allow_pickle) a .bin/.pt file.

`load_model(spec, dtype=, device=)`: before any weight is read, the options are checked (run/placement.py: the
device is here, it can run the dtype), the checkpoint's header is counted, `auto` is resolved, and a model that
would not fit the memory budget is refused with the figures (run/memory.py).

Safetensors load fast and straight into the target dtype and device: the model is built with its parameters on
the meta device (no memory, no random init) and the file's tensors, memory-mapped copy-on-write, are assigned to
it, each converted once when its dtype or device differs (a float32 file run in float32 on the CPU is never
copied or read up front); tied weights are tied by transformers' own `tie_weights`. Only names that need more
than transformers' pure renames (or a pickle) go through `from_pretrained`. GGUF files go through their
dequantized cache (run/gguf_cache.py); the thread policy is run/threads.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glassbox import bundled, progress, registry
from glassbox.checkpoint import PICKLE_SUFFIXES, open_checkpoint, pick_in_directory
from glassbox.checkpoint.dtypes import torch_dtype
from glassbox.errors import BadInput
from glassbox.run import memory, placement
from glassbox.run.build import ENCODERS, build, model_class, quiet_transformers
from glassbox.run.gguf_cache import cached_count, gguf_cache, gguf_key, source_key
from glassbox.run.heap import map_large_blocks
from glassbox.run.threads import SMALL_MODEL, set_threads

# model_type → family (glassbox.registry; its layout is what the hooks know). Qwen2/Mistral are llama-shaped.
ARCHITECTURES: dict[str, str] = registry.MODEL_TYPES
_quiet_transformers = quiet_transformers  # the names benchmarks and tests knew before the split
__all__ = ["ARCHITECTURES", "ENCODERS", "SMALL_MODEL", "Loaded", "build", "gguf_cache", "gguf_key", "load_model",
           "set_threads"]


def __getattr__(name: str) -> Any:
    if name == "_DEFAULT_THREADS":  # lives in run/threads.py since the split; read through for old callers
        from glassbox.run import threads

        return threads.default_threads()
    raise AttributeError(name)


@dataclass
class Loaded:
    """A model ready to run: the HF module (eval, eager attention) and what the probes need."""

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
    def dtype(self) -> str:
        """The parameters' float type: "float32", "bfloat16" or "float16"."""
        return placement.name_of(next(self.model.parameters()).dtype)

    @property
    def device(self) -> str:
        """Where the parameters are: "cpu", "cuda:0", "mps"."""
        return str(next(self.model.parameters()).device)

    @property
    def placement(self) -> dict[str, str]:
        """{"dtype", "device"}: the keys every JSON document of a command that ran this model carries."""
        return placement.of(self.model)

    @property
    def bos_id(self) -> int | None:
        tok = self.tokenizer
        if tok is not None and tok.bos_token_id is not None:
            return int(tok.bos_token_id)
        if tok is not None and self.is_encoder and tok.cls_token_id is not None:
            return int(tok.cls_token_id)
        bos = getattr(self.config, "bos_token_id", None)  # config defaults can point outside a tiny vocab
        return int(bos) if isinstance(bos, int) and 0 <= bos < int(self.config.vocab_size) else None


@dataclass
class _Target:
    """What the loader converts every tensor to, once."""

    dtype: Any  # torch dtype
    device: Any  # torch device


def load_model(spec: str | os.PathLike, allow_pickle: bool = False, dtype: str | None = None,
               device: str | None = None) -> Loaded:
    """A bundled name, a folder or a file → Loaded, in `dtype` on `device` (auto|float32|bfloat16|float16 and
    auto|cpu|cuda|cuda:N|mps; None: what --dtype/--device chose, else auto; see run/placement.py: auto keeps
    float32 for every model whose float32 weights take at most half the device's memory).
    Bad input raises BadInput (exit 2) before any weight is read."""
    import torch

    dtype, where = _asked(dtype, device)
    set_threads()
    map_large_blocks()  # freed tensors go back to the system (run/heap.py): the peak is what is alive
    quiet_transformers()
    name = str(spec)
    path = bundled.resolve(spec)
    needs_bos = bundled.BUNDLED[name].needs_bos if bundled.is_bundled_name(name) else False
    if path.is_dir():
        path = pick_in_directory(path)
    suffix = path.name.lower()
    if suffix.endswith(".gguf"):
        key, count = source_key(path)  # validates the file unless this very file passed before
        count = count if count is not None else cached_count(key)
        if count is None:
            count = _count(path, allow_pickle=False)
        chosen = _choose(dtype, where, count, None)
        folder = gguf_cache(path, chosen, key)
        model, tok = _from_folder(folder, path, _Target(getattr(torch, chosen), where)), _tokenizer(folder)
    elif suffix.endswith((".safetensors", ".safetensors.index.json", *PICKLE_SUFFIXES)):
        count, stored = _header(path, allow_pickle)  # the strict reader, so a malformed file gets its rule named
        if suffix.endswith(PICKLE_SUFFIXES) and not allow_pickle:
            raise BadInput("pickle checkpoints can run code when loaded; refusing (pass --allow-pickle to "
                           "load it with torch.load(weights_only=True))", path)
        chosen = _choose(dtype, where, count, stored)
        model, tok = _from_weights(path, _Target(getattr(torch, chosen), where))
    else:
        raise BadInput("not a checkpoint this tool can run (.safetensors, .gguf, a folder with config.json)", path)
    set_threads(model)  # by the model's size (see set_threads)
    arch = ARCHITECTURES[model.config.model_type]
    needs_bos = needs_bos or registry.get(arch).needs_bos
    label = name if bundled.is_bundled_name(name) else Path(name).resolve().name  # the folder's name for a folder
    loaded = Loaded(model, tok, arch, label, needs_bos, path)
    placement.last.update(loaded.placement)
    if progress.enabled():  # said on a terminal; recorded in every JSON document ("dtype", "device")
        print(f"{label}: {loaded.dtype} on {loaded.device}", file=sys.stderr)
    return loaded


def _asked(dtype: str | None, device: str | None) -> tuple[str, Any]:
    """(dtype name, torch device) asked for: the arguments, else what --dtype/--device chose; both checked
    (spelling, the device is here, it can run a dtype that is not auto) before anything is read."""
    asked_dtype, asked_device = placement.chosen()
    dtype, device = dtype or asked_dtype, device or asked_device
    placement.check_names(dtype, device)
    where = placement.resolve_device(device)
    if dtype != "auto":
        placement.check_dtype(where, dtype)
    return dtype, where


def choose_for(count: int, stored: str | None, dtype: str | None = None, device: str | None = None
               ) -> tuple[str, Any]:
    """load_model's checks (the options, the device, the fit in the budget) and auto's choice for a model of
    `count` parameters stored as `stored` → (dtype name, torch device); BadInput before anything is read."""
    dtype, where = _asked(dtype, device)
    return _choose(dtype, where, count, stored), where


def place(model: Any, dtype: str | None = None, device: str | None = None) -> Any:
    """A model built here rather than read from a checkpoint (a training run's declaration, for the timeline)
    → converted once to `dtype` on `device`, by load_model's rules (auto, the budget; None: the options'
    choice). The workers of `timeline`/`sweep` call it with the names their command was given."""
    import torch

    count = sum(p.numel() for p in model.parameters())
    chosen, where = choose_for(count, placement.name_of(next(model.parameters()).dtype), dtype, device)
    return model.to(device=where, dtype=getattr(torch, chosen))


def preflight(path: str | os.PathLike, dtype: str | None = None, device: str | None = None) -> str:
    """load_model's checks of a .safetensors checkpoint from its header alone → the dtype it would load in. A
    command that fans models out to workers runs it in the driver first, so a bad choice exits 2 with one
    line before any worker starts."""
    return choose_for(*_header(Path(path), False), dtype, device)[0]


def _choose(requested: str, device: Any, count: int, stored: str | None) -> str:
    """auto resolved, then the budget checked: BadInput with the figures when the model would not fit."""
    chosen = placement.choose_dtype(requested, device, count, stored, memory.total(device))
    memory.check_fits(count, chosen, device, placement.half_for(device))
    return chosen


def _header(path: Path, allow_pickle: bool) -> tuple[int, str | None]:
    """(float element count, the stored float type holding most of them) from the checkpoint's index alone.
    Runs the strict reader, so a malformed file gets its rule named (and a pickle's opcodes are checked
    against the allowlist before torch.load ever sees it)."""
    with contextlib.closing(open_checkpoint(path, allow_pickle=allow_pickle)) as ck:
        by_type: dict[str, int] = {}
        for e in ck.tensors.values():
            t = torch_dtype(e.dtype)
            if t is not None and t.is_floating_point:
                by_type[placement.name_of(t)] = by_type.get(placement.name_of(t), 0) + math.prod(e.shape)
    count = sum(by_type.values())
    return count, (max(by_type, key=by_type.__getitem__) if by_type else None)


def _count(path: Path, allow_pickle: bool) -> int:
    with contextlib.closing(open_checkpoint(path, allow_pickle=allow_pickle)) as ck:
        return sum(math.prod(e.shape) for e in ck.tensors.values())


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


def _tokenizer(folder: Path) -> Any | None:
    names = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model")
    if not any((folder / n).exists() for n in names):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except Exception:  # a model without a usable tokenizer still runs on token ids
        return None


def _from_weights(path: Path, target: _Target) -> tuple[Any, Any | None]:
    """Any weights file with its config. Safetensors: the fast path (`_assign`). Otherwise (a pickle, or keys
    only transformers knows how to rename): link both into a temp folder under the names `from_pretrained`
    expects, so transformers applies its own key renames (e.g. NeoX `embed_out` → `lm_head`) and ties."""
    folder = _config_folder(path)
    config = _config(folder)  # a clear error for an architecture we cannot run, before transformers tries
    model = _assign(config, _safetensors_files(path), path, target)
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
            model = _from_pretrained(staged, path, config, target)
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
            dtype = torch_dtype(e.dtype)
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


def _assign(config: Any, files: list[Path], source: Path, target: _Target) -> Any | None:
    """The warm-load fast path: build the model with its parameters on the meta device and assign the
    memory-mapped safetensors tensors to them, each converted once to the target's dtype and device (a float32
    file run in float32 on the CPU: no copy at all). None when the file's names
    do not map onto the model's one to one (then `from_pretrained`, which knows every legacy rename)."""
    if not files:
        return None
    cls = model_class(config)
    with warnings.catch_warnings(), _parameters_on_meta(), _no_init():
        warnings.simplefilter("ignore")
        model = cls.from_config(config, dtype=target.dtype, attn_implementation="eager")
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
        state[key] = value.to(device=target.device, dtype=want.dtype)  # the same tensor when nothing changes
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
    return model.to(target.device).eval()  # the buffers (RoPE frequencies); parameters are there already


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


def _from_folder(folder: Path, source: Path, target: _Target) -> Any:
    config = _config(folder)
    index, single = folder / "model.safetensors.index.json", folder / "model.safetensors"
    files = _safetensors_files(index) if index.is_file() else ([single] if single.is_file() else [])
    model = _assign(config, files, source, target)
    return model if model is not None else _from_pretrained(folder, source, config, target)


def _from_pretrained(folder: Path, source: Path, config: Any, target: _Target) -> Any:
    cls = model_class(config)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, info = cls.from_pretrained(folder, dtype=target.dtype, attn_implementation="eager",
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
    return model.to(target.device).eval()
