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
from glassbox.run.text import start_ids

_models: dict[str, Any] = {}  # spec (and the --dtype/--device chosen, when not auto) → run.Loaded


def _key(spec: str | Path) -> str:
    chosen = placement.chosen()
    return str(spec) if chosen == ("auto", "auto") else f"{spec}|{'|'.join(chosen)}"


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

    if _key(spec) in _models:
        return _models[_key(spec)].tokenizer
    folder, gguf = _gguf_or_dir(str(spec))
    try:
        return AutoTokenizer.from_pretrained(folder, gguf_file=gguf) if gguf else AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot load a tokenizer: {exc}", spec) from None


def needs_bos(spec: str | None) -> bool:
    """Whether the LM's input starts with its start token: run/text's one rule, on the loaded model (an LM not
    loaded here runs nothing, so it needs nothing)."""
    return spec is not None and _key(spec) in _models and bool(start_ids(_models[_key(spec)]))


def load(spec: str) -> Any:
    """The selector LM as `run.Loaded` (the same one every other command gets); kept for the process."""
    set_threads()
    key = _key(spec)
    if key not in _models:
        from glassbox.run import load_model

        loaded = load_model(spec)  # in what --dtype/--device chose (run/options.py)
        loaded.model.eval()
        start, tok = start_ids(loaded), loaded.tokenizer
        if start and tok is not None and tok.bos_token_id != start[0]:
            # the start token comes from the model's config; the overlay reads it as tok.bos_token_id
            tok.bos_token = tok.convert_ids_to_tokens(start[0])
        _models[key] = loaded
    return _models[key]


def load_lm(spec: str) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer); float32 unless --dtype says otherwise, one torch thread."""
    loaded = load(spec)
    return loaded.model, loaded.tokenizer
