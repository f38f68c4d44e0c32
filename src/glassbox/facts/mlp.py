"""One block's MLP seen as a key → value memory (ROME §3): the key is the input of its output projection
W_down (the activation after the nonlinearity, d_ff wide), the value is W_down · key. Finding that module by
the registry's tensor rules, reading keys, and editing them in a forward."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from glassbox.anatomy.roles import classify
from glassbox.errors import BadInput
from glassbox.run.layout import LAYOUTS
from glassbox.run.load import Loaded


@dataclass(frozen=True)
class Down:
    """W_down of one layer: the module, its parameter's name, and W as [d_model, d_ff] (a view)."""

    module: Any
    name: str
    conv1d: bool  # GPT-2's Conv1D stores the transpose

    @property
    def W(self) -> Any:
        w = self.module.weight
        return w.t() if self.conv1d else w


def down(loaded: Loaded, layer: int) -> Down:
    modules = dict(loaded.model.named_modules())
    for name, _ in loaded.model.named_parameters():
        if name.endswith(".weight") and classify(loaded.architecture, name) == ("mlp.out", layer):
            return Down(modules[name.rsplit(".", 1)[0]], name, LAYOUTS[loaded.architecture].conv1d)
    raise BadInput(f"no MLP output projection found for layer {layer} of this {loaded.architecture} model")


@contextlib.contextmanager
def edit_keys(loaded: Loaded, layer: int, fn: Callable[[Any], Any]) -> Iterator[dict[str, Any]]:
    """While inside, W_down of `layer` reads fn(keys) instead of its keys [batch, seq, d_ff]; the keys it
    received are left in the yielded dict under "keys"."""
    seen: dict[str, Any] = {}

    def pre(mod: Any, args: tuple) -> tuple:
        seen["keys"] = args[0]
        return (fn(args[0]), *args[1:])

    handle = down(loaded, layer).module.register_forward_pre_hook(pre)
    try:
        yield seen
    finally:
        handle.remove()


def unembedding_direction(loaded: Loaded, token: int) -> Any:
    """The answer's unembedding row with the final norm's scale folded in: the direction a write at the
    last layer must take to raise that logit (the norm's 1/rms factor ignored)."""
    from glassbox.run.layout import final_norm

    u = loaded.model.get_output_embeddings().weight[token].detach().float()
    norm = final_norm(loaded.model, loaded.architecture)
    w = getattr(norm, "weight", None)
    if w is not None:
        w = w.detach().float()
        u = u * ((1 + w) if loaded.architecture == "gemma3" else w)
    return u
