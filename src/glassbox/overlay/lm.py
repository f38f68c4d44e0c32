"""Load the selector LM and its tokenizer: the one place that knows how, so the loader can change here only.

Uses `glassbox.run.load_model` (dequantized safetensors cache) when that module exists; otherwise loads the
GGUF through `transformers` directly. Loaded models are kept for the life of the process (tests share them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glassbox import bundled
from glassbox.errors import BadInput
from glassbox.run.load import set_threads

_models: dict[str, tuple[Any, Any]] = {}


def _gguf_or_dir(spec: str) -> tuple[str, str | None]:
    path = bundled.resolve(spec)
    if path.is_file() and path.suffix == ".gguf":
        return str(path.parent), path.name
    if path.is_dir():
        return str(path), None
    raise BadInput("expected a bundled model name, a .gguf file or a Hugging Face model folder", spec)


def load_tokenizer(spec: str | Path) -> Any:
    """A tokenizer from a bundled name, a .gguf file, or a folder holding tokenizer files."""
    from transformers import AutoTokenizer

    if str(spec) in _models:
        return _models[str(spec)][1]
    folder, gguf = _gguf_or_dir(str(spec))
    try:
        return AutoTokenizer.from_pretrained(folder, gguf_file=gguf) if gguf else AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot load a tokenizer: {exc}", spec) from None


def needs_bos(spec: str | None) -> bool:
    return bool(spec in bundled.BUNDLED and bundled.BUNDLED[spec].needs_bos)


def load_lm(spec: str) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer); float32, one torch thread."""
    import torch

    set_threads()
    if spec in _models:
        return _models[spec]
    try:
        from glassbox.run import load_model  # the shared loader, with its safetensors cache
    except ImportError:
        load_model = None
    if load_model is not None:
        loaded = load_model(spec)
        model, tok = loaded.model, loaded.tokenizer
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder, gguf = _gguf_or_dir(spec)
        kw = {"gguf_file": gguf} if gguf else {}
        try:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kw)
            tok = AutoTokenizer.from_pretrained(folder, **kw)
        except (OSError, ValueError) as exc:
            raise BadInput(f"cannot load a language model: {exc}", spec) from None
    model.eval()
    _models[spec] = (model, tok)
    return model, tok
