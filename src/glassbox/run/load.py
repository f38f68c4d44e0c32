"""Load a real Hugging Face `transformers` model from any checkpoint glassbox reads; never re-implement one.

Accepted specs: a bundled short name, a folder with config.json + safetensors (single or sharded), a
.safetensors file whose config.json sits in its folder or the folder above (training runs keep
`DIR/config.json` beside `DIR/checkpoints/`), a .gguf file, or (only with allow_pickle) a .bin/.pt file.

GGUF files are dequantized by `transformers` once (~20 s for SmolLM2) and then cached as a plain
safetensors folder in `bundled.cache_dir()/gguf/<key>`; the key is a sha256 over the file's size,
its mtime in ns and its first and last 4 MiB, so a changed or replaced file misses the cache while a
lookup costs milliseconds instead of hashing ~100 MB. The cache folder is built in a temp folder
and renamed into place, so an interrupted run never leaves a half-written cache.

Threads: on the 2-core machines this project runs on, one torch thread was faster than two for every
forward we timed (shared/models.md, and benchmarks/atlas.py prints both), so `load_model` sets one
thread unless GLASSBOX_THREADS says otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glassbox import bundled
from glassbox.checkpoint import PICKLE_SUFFIXES, open_checkpoint, pick_in_directory
from glassbox.errors import BadInput

# model_type → the layout family the hooks know (run/layout.py). Qwen2/Mistral are llama-shaped.
ARCHITECTURES = {
    "llama": "llama", "qwen2": "llama", "mistral": "llama", "gemma3_text": "gemma3", "gemma3": "gemma3",
    "gpt2": "gpt2", "gpt_neox": "gpt_neox", "bert": "bert",
}
ENCODERS = {"bert"}
_HASH_SPAN = 4 << 20


@dataclass
class Loaded:
    """A model ready to run: the HF module (eval, float32, eager attention) and what the probes need."""

    model: Any
    tokenizer: Any | None
    architecture: str  # layout family: llama | gemma3 | gpt2 | gpt_neox | bert
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


def set_threads() -> int:
    """One torch thread unless GLASSBOX_THREADS is set (measured faster here; see the module docstring)."""
    import torch

    n = int(os.environ.get("GLASSBOX_THREADS", "1"))
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
    if suffix.endswith((".gguf", ".safetensors", ".safetensors.index.json", *PICKLE_SUFFIXES)):
        _validate(path, allow_pickle)
    if suffix.endswith(".gguf"):
        folder = gguf_cache(path)
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
    arch = ARCHITECTURES[model.config.model_type]
    needs_bos = needs_bos or arch == "gemma3"
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
    """Any weights file with its config: link both into a temp folder under the names `from_pretrained`
    expects, so transformers applies its own key renames (e.g. NeoX `embed_out` → `lm_head`) and ties."""
    folder = _config_folder(path)
    _config(folder)  # a clear error for an architecture we cannot run, before transformers tries
    with tempfile.TemporaryDirectory(prefix="glassbox-load-") as tmp:
        staged = Path(tmp)
        os.symlink(folder / "config.json", staged / "config.json")
        lower = path.name.lower()
        if lower.endswith(".index.json"):
            os.symlink(path, staged / "model.safetensors.index.json")
            try:
                shards = set(json.loads(path.read_text())["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise BadInput(f"bad sharded index: {exc}", path) from None
            for shard in shards:
                if "/" in shard or "\\" in shard or not (path.parent / shard).is_file():
                    raise BadInput(f"shard {shard!r} is missing or outside the folder", path)
                os.symlink(path.parent / shard, staged / shard)
        else:
            os.symlink(path, staged / ("model.safetensors" if lower.endswith(".safetensors") else "pytorch_model.bin"))
        model = _from_folder(staged, path)
    return model, _tokenizer(folder)


def _from_folder(folder: Path, source: Path) -> Any:
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    config = _config(folder)
    cls = AutoModel if config.model_type in ENCODERS else AutoModelForCausalLM
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
    """Cache key of a GGUF file: size, mtime (ns) and the first and last 4 MiB (see module docstring)."""
    st = path.stat()
    h = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode())
    with open(path, "rb") as f:
        h.update(f.read(_HASH_SPAN))
        if st.st_size > _HASH_SPAN:
            f.seek(max(_HASH_SPAN, st.st_size - _HASH_SPAN))
            h.update(f.read(_HASH_SPAN))
    return h.hexdigest()[:32]


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
    """The plain safetensors folder for a GGUF file, building it (dequantize once) when missing."""
    target = bundled.cache_dir() / "gguf" / gguf_key(path)
    if (target / "config.json").is_file():
        return target
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
    # A GGUF-loaded model refuses save_pretrained: rebuild a plain one from its config and move the weights.
    plain = _build(quantized.config)
    plain.load_state_dict(quantized.state_dict())
    del quantized
    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except Exception:
        tok = None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
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
    return target
