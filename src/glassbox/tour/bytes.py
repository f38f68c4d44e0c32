"""Chapter 1 of the tour, from the mathematics to the bytes, for one head: per q, k, v and o the config keys
that fix the tensor's shape, the module and the installed `transformers` line that multiplies by it, the
formula, the tensor, the head's slice and byte range, the first stored block of that slice decoded by hand,
and the same floats read back from the loaded model's parameter (at the HF row they land on: llama.cpp stores
the Q/K rows of each head interleaved for its rotary kernel, so in a llama GGUF file stored row r of a head
is HF row (r mod 2)·d/2 + r div 2)."""

from __future__ import annotations

from typing import Any

from glassbox.anatomy import describe
from glassbox.anatomy.render import FORMULAS
from glassbox.anatomy.roles import ARCHITECTURES
from glassbox.tour import blocks
from glassbox.tour.code import module_of, reading_line

KINDS = ("q", "k", "v", "o")
SYMBOL = {"q": "W_q", "k": "W_k", "v": "W_v", "o": "W_o"}


def _permuted(checkpoint: Any) -> bool:
    """Does this file store Q/K rows in llama.cpp's rotary order?"""
    from glassbox.registry import GGUF_ARCHS

    if checkpoint.format != "gguf":
        return False
    known = GGUF_ARCHS.get(getattr(checkpoint, "architecture", ""))
    return bool(known and known[1].permuted_qk)


def hf_row(stored_row: int, head_start: int, head_dim: int, permuted: bool) -> int:
    """The HF row a stored row becomes (inverse of llama.cpp's per-head interleave when `permuted`)."""
    if not permuted:
        return stored_row
    local = stored_row - head_start
    return head_start + (local % 2) * (head_dim // 2) + local // 2


def _config_keys(anatomy: Any, kind: str) -> dict[str, Any]:
    config = anatomy.checkpoint.config or {}
    config = config.get("text_config", config)
    _, k_heads, k_kv, k_model = ARCHITECTURES[anatomy.architecture].config_keys
    keys = [k_model, k_heads if kind in ("q", "o") else (k_kv or k_heads), "head_dim"]
    out = {k: config[k] for k in keys if k and k in config}
    out.setdefault("head_dim", anatomy.dims.head_dim)  # derived: hidden size / heads when the config omits it
    return out


def _slice_of(anatomy: Any, run: dict[str, Any], kind: str):
    for t in anatomy.tensors:
        if t.entry.name == run["tensor"]:
            for s in t.heads:
                if s.kind == kind and s.slice_str(len(t.entry.shape)) == run["slice"]:
                    return t, s
    raise LookupError(f"{run['tensor']}{run['slice']} not in the anatomy")


def step(anatomy: Any, model: Any, buf: Any, run: dict[str, Any], kind: str, permuted: bool) -> dict[str, Any]:
    """One of the four steps: q, k, v or o of the chosen head."""
    role, hs = _slice_of(anatomy, run, kind)
    entry = role.entry
    fmt = entry.dtype
    cols = entry.shape[-1]
    if fmt in blocks.FLOATS:  # plain floats: the first values of the head's run, never past it or the row
        first = (run["offset"] - entry.offset) // blocks.FLOATS[fmt]
        count = min(blocks.SHOW_FLOATS, run["length"] // blocks.FLOATS[fmt], cols - first % cols)
        block = blocks.decode(buf, run["offset"], fmt, count)
    else:  # a quantized block: the head's runs start on block boundaries (anatomy widens them when not)
        n_vals, n_bytes = blocks.block_size(fmt)
        first = (run["offset"] - entry.offset) // n_bytes * n_vals  # element index of the block's first value
        block = blocks.decode(buf, run["offset"], fmt)
    stored_row, col = divmod(first, cols)
    qk = kind in ("q", "k") and permuted
    row = hf_row(stored_row, hs.start if hs.axis == 0 else 0, anatomy.dims.head_dim, qk)
    parent, attr, module = module_of(model, entry.name)
    param = model.get_parameter(entry.name)
    n = len(block["values"])
    values = param.detach()[row, col:col + n].float().tolist()
    code = reading_line(module, attr) or {"file": "", "line": 0, "source": "", "function": ""}
    linear = getattr(module, attr)
    out = {
        "kind": kind, "config": _config_keys(anatomy, kind),
        "module": f"{parent}.{attr} ({type(linear).__name__} in {type(module).__name__})",
        "code": code,
        "formula": FORMULAS[role.level] + f";   {SYMBOL[kind]} = {entry.name}{run['slice']}",
        "tensor": entry.name, "slice": run["slice"], "dtype": fmt, "shape": list(entry.shape),
        "bytes": {k: run[k] for k in ("offset", "length", "stride", "count")},
        "block": block,
        "model_values": {"row": row, "col": col, "values": values},
        "stored_row": stored_row,
    }
    if qk:
        start = hs.start
        out["row_map"] = {"stored_rows": list(range(start, start + 4)),
                          "hf_rows": [hf_row(r, start, anatomy.dims.head_dim, True) for r in range(start, start + 4)],
                          "why": "llama.cpp stores each head's Q/K rows interleaved (pairs of the rotary halves "
                                 "side by side) for its rotary kernel; reading the file, stored row "
                                 "start+r is HF row start+(r mod 2)·head_dim/2+(r div 2)"}
    return out


def chapter(checkpoint: Any, model: Any, layer: int, head: int, spec: str | None = None) -> dict[str, Any]:
    """The `bytes` chapter: {"id", "title", "text", "steps", "format", "file"}; `spec` names the model in the
    commands (default: the file's path)."""
    from glassbox import weights

    anatomy = describe(checkpoint)
    # per kind the weight matrix's run (biases have head slices too)
    runs = {k: next(r for r in rs if len(checkpoint.tensors[r["tensor"]].shape) == 2)
            for k, rs in weights.head(checkpoint, layer, head).bytes.items()
            if any(len(checkpoint.tensors[r["tensor"]].shape) == 2 for r in rs)}
    permuted = _permuted(checkpoint)
    buf = _mapped(checkpoint.tensors[runs["q"]["tensor"]].file)
    try:
        steps = [step(anatomy, model, buf, runs[k], k, permuted) for k in KINDS if k in runs]
    finally:
        buf.close()
    q = steps[0]
    agree = max(abs(a - b) for s in steps for a, b in zip(s["block"]["values"], s["model_values"]["values"], strict=True))
    text = (f"Head {layer}.{head} is four weight slices of {checkpoint.path.name} ({checkpoint.format}). "
            f"Its query is the slice {q['slice']} of {q['tensor']}: {', '.join(f'{k}={v}' for k, v in q['config'].items())} fix that shape. "
            f"PyTorch multiplies by it in {q['code']['function']} ({q['code']['file'].rsplit('/', 1)[-1]} line "
            f"{q['code']['line']}: {q['code']['source']}). In the file the slice starts at byte "
            f"{q['bytes']['offset']:,}, stored as {q['dtype']}; its first block decodes to "
            f"{q['block']['values'][0]:.6g}, {q['block']['values'][1]:.6g}, … — the same floats the loaded model holds "
            f"at row {q['model_values']['row']}, columns {q['model_values']['col']}… (largest difference {agree:.2g}).")
    if permuted:
        text += (" In this llama-family GGUF file the Q and K rows of each head are stored interleaved for "
                 "llama.cpp's rotary kernel, so stored row r of a head is HF row (r mod 2)·d/2 + r div 2.")
    return {"id": "bytes", "title": "From the mathematics to the bytes", "text": text, "steps": steps,
            "format": checkpoint.format, "file": str(checkpoint.path), "max_abs_diff": agree,
            "commands": [f"glassbox anatomy {spec or checkpoint.path} --json",
                         f"glassbox heads show {spec or checkpoint.path} {layer}.{head}"]}


def _mapped(path: Any) -> Any:
    import mmap

    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
