"""Run a real HF model: loading (load), the activation cache and edits (hooks), dtype/device (placement)."""

from typing import Any

__all__ = ["Loaded", "load_model"]


def __getattr__(name: str) -> Any:
    # lazy, so `glassbox --help` (whose commands import run.options) does not read the loader's imports
    if name in __all__:
        from glassbox.run import load

        return getattr(load, name)
    raise AttributeError(name)
