"""The middle of the path from the mathematics to the bytes: the line of the installed `transformers` source
that multiplies by a tensor. Found at run time from the loaded module's own class (its `forward`, read with
`inspect`), never from remembered line numbers, so it follows whatever version is installed."""

from __future__ import annotations

import inspect
import re
from typing import Any


def module_of(model: Any, tensor: str) -> tuple[str, str, Any]:
    """'model.layers.3.self_attn.q_proj.weight' → ('model.layers.3.self_attn', 'q_proj', the parent module)."""
    path = tensor.rsplit(".", 1)[0]  # the Linear holding the weight
    parent, _, attr = path.rpartition(".")
    return parent, attr, model.get_submodule(parent)


def reading_line(module: Any, attr: str) -> dict[str, Any] | None:
    """The line of `type(module).forward` (or of a forward it inherits) that calls `self.<attr>(`, preferring a
    call on `hidden_states` (GPT-2's forward also calls it on the cross-attention input, in a branch a decoder
    never takes): {"file", "line" (1-based in that file), "source", "function"}; None when no line reads it."""
    call = re.compile(rf"self\.{re.escape(attr)}\b\s*\(")
    on_input = re.compile(rf"self\.{re.escape(attr)}\b\s*\(\s*hidden_states\b")
    for cls in type(module).__mro__:
        forward = cls.__dict__.get("forward")
        if forward is None:
            continue
        forward = inspect.unwrap(forward)  # hub-kernel decorators wrap forward; the lines are the model's
        try:
            lines, start = inspect.getsourcelines(forward)
            file = inspect.getsourcefile(forward)
        except (OSError, TypeError):
            continue
        found = [i for i, text in enumerate(lines) if call.search(text)]
        if found:
            i = next((i for i in found if on_input.search(lines[i])), found[0])
            return {"file": file, "line": start + i, "source": lines[i].strip(), "function": f"{cls.__name__}.forward"}
    return None
