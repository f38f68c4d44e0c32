"""Load the selector LM and its tokenizer: the one place that knows how, so the loader can change here only.

Uses `glassbox.run.load_model` (the shared loader, with its dequantized safetensors cache). Loaded models are
kept for the life of the process (tests share them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glassbox import bundled
from glassbox.errors import BadInput
from glassbox.run import placement
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
    """(model in eval mode, tokenizer); float32 unless --dtype says otherwise, one torch thread."""
    set_threads()
    key = spec if placement.chosen() == ("auto", "auto") else f"{spec}|{'|'.join(placement.chosen())}"
    if key in _models:
        return _models[key]
    from glassbox.run import load_model

    loaded = load_model(spec)  # in what --dtype/--device chose (run/options.py)
    model, tok = loaded.model, loaded.tokenizer
    model.eval()
    _models[key] = (model, tok)
    return model, tok
