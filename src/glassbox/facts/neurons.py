"""The neurons that write the answer at the traced MLP, checked by zeroing, and where their weights sit in the
file.

A neuron i of block L's MLP writes a_i · W_down[:, i] into the residual stream (a_i: its activation, the key's
i-th entry). Its `write` is that vector projected on the answer's unembedding (final norm scale folded in).
The check: zero the top-k neurons' activations at the subject's last token and measure the drop in the answer's
probability, against `n_random` random sets of k neurons of the same layer (one batch row each). Each neuron's
weights are one row of W_gate and W_in and one column of W_down; their bytes are given in the form of
`anatomy --json` (offset, length, stride, count; GGUF: the quantization blocks that hold them).
"""

from __future__ import annotations

from typing import Any

from glassbox.anatomy import head_bytes
from glassbox.anatomy.roles import HeadSlice, classify
from glassbox.facts.mlp import down, edit_keys, unembedding_direction
from glassbox.run import hooks
from glassbox.run.load import Loaded

# level → (axis of one neuron in the HF layout, in nn.Linear storage; Conv1D swaps it)
LEVEL_AXIS = {"mlp.gate": 0, "mlp.in": 0, "mlp.out": 1}


def peak_layer(doc: dict[str, Any]) -> int:
    """The layer whose MLP window restores most at the subject's last token."""
    t = doc["subject"]["tokens"][-1]
    grid = doc["restore"]["mlp_window"]
    return max(range(len(grid)), key=lambda layer: grid[layer][t])


def writing_neurons(loaded: Loaded, ids: list[int], token: int, target: int, layer: int, k: int = 10,
                    n_random: int = 20, seed: int = 0) -> dict[str, Any]:
    """Top-k writers of `target` at (layer, token), the zeroing check, and their bytes."""
    import torch

    x = torch.tensor([ids])
    with edit_keys(loaded, layer, lambda keys: keys) as seen:
        logits = hooks.run(loaded, x, logits_at=[len(ids) - 1])
    p_clean = float(logits[0, -1].float().softmax(-1)[target])
    a = seen["keys"][0, token].detach().float()
    W = down(loaded, layer).W.detach().float()
    write = a * (unembedding_direction(loaded, target) @ W)
    top = torch.argsort(write, descending=True)[:k].tolist()

    gen = torch.Generator().manual_seed(seed)
    sets = [top] + [torch.randperm(a.shape[0], generator=gen)[:k].tolist() for _ in range(n_random)]

    def zero(keys: Any) -> Any:
        keys = keys.clone()
        for row, idx in enumerate(sets):
            keys[row, token, idx] = 0.0
        return keys

    with edit_keys(loaded, layer, zero):
        logits = hooks.run(loaded, x.repeat(len(sets), 1), logits_at=[len(ids) - 1])
    p = logits[:, -1].float().softmax(-1)[:, target].tolist()
    drops = [p_clean - q for q in p]
    where = neuron_bytes(loaded, layer, top)
    return {
        "layer": layer, "token": token,
        "neurons": [{"layer": layer, "index": i, "write": float(write[i]), "activation": float(a[i]),
                     "bytes": where[i]} for i in top],
        "zeroing": {"k": k, "p_clean": p_clean, "p_zeroed": p[0], "random_p": p[1:],
                    "beats": sum(drops[0] > d for d in drops[1:]), "of": n_random},
    }


def neuron_bytes(loaded: Loaded, layer: int, neurons: list[int]) -> dict[int, dict[str, Any]]:
    """For each neuron: {"gate"|"in"|"out": {"tensor", "slice", "offset", "length", "stride", "count"}}
    read from the checkpoint the model was loaded from ({} for levels the file does not have)."""
    from glassbox.checkpoint import open_checkpoint
    from glassbox.run.layout import LAYOUTS

    conv1d = LAYOUTS[loaded.architecture].conv1d
    names = {"mlp.gate": "gate", "mlp.in": "in", "mlp.out": "out"}
    out: dict[int, dict[str, Any]] = {i: {} for i in neurons}
    with open_checkpoint(loaded.source) as ckpt:
        for name, entry in ckpt.tensors.items():
            level, at = classify(loaded.architecture, name)
            if at != layer or level not in LEVEL_AXIS or len(entry.shape) != 2 or not name.endswith("weight"):
                continue
            axis = LEVEL_AXIS[level] ^ int(conv1d)
            for i in neurons:
                hs = HeadSlice(head=i, kind=names[level], kv_group=None, axis=axis, start=i, stop=i + 1)
                out[i][names[level]] = {"tensor": name, "slice": hs.slice_str(2), "format": entry.dtype,
                                        **head_bytes(entry, hs)}
    return out
