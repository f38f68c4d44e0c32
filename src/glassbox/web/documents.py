"""The documents the views draw, from the existing contracts and library calls, cached where it pays.

- `anatomy_doc(path)`: `anatomy.describe(...).to_json()` plus the formulas, file sizes and each tensor's module;
- `cached_atlas(path)` / `compute_atlas(path)`: the `glassbox atlas` document, kept on disk under
  `bundled.cache_dir()/web/atlas/<key>.json` (key: real path, size, mtime, seed), so an atlas computed once
  opens at once; an atlas written into the file by `glassbox annotate` counts too;
- `pattern(loaded, layer, head, text)`: one head's attention on a text (from the activation cache) and the
  lens of its output (its direct contribution read through the final norm and the unembedding);
- `ov_tokens(loaded, layer, head)`: what the head's OV circuit reads and writes (top singular direction);
- `head_bytes(anatomy, layer, head)`: the head's Q/K/V/O slices with their byte runs (K/V by kv group);
- `timeline_doc(run)`: `timeline.analyze` plus the write-share table of `glassbox writes`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from glassbox import bundled, weights
from glassbox.anatomy import describe
from glassbox.checkpoint import open_checkpoint
from glassbox.errors import BadInput
from glassbox.fileio import write_json
from glassbox.heads.atlas import Settings, build_atlas
from glassbox.heads.probes import ov_readout
from glassbox.lens import logit, patching
from glassbox.overlay import lm
from glassbox.overlay.store import Store
from glassbox.run import hooks, layout
from glassbox.run.text import encode
from glassbox.timeline.analyze import analyze
from glassbox.timeline.spans import attach
from glassbox.timeline.writes import write_table
from glassbox.web.paths import is_run

ATLAS_SEED = 0
MAX_TOKENS = 1024  # a typed text is cut here (the page says so): patterns are T² floats
LENS_TOP = 3
OV_TOP = 12

# One lock for every forward: hooks are installed on the shared modules, so two at once would mix.
model_lock = threading.RLock()
_models: OrderedDict[str, Any] = OrderedDict()
MAX_MODELS = 2  # loaded models kept in memory (SmolLM2 is ~0.6 GB as float32)
# serve's --dtype/--device (set by create_app): every model, atlas and timeline of the app is computed there.
# Process-wide like the model cache above; the keys of both caches name it when it is not the default.
where = {"dtype": "auto", "device": "auto"}


def _where_key() -> str:
    return "" if (where["dtype"], where["device"]) == ("auto", "auto") else f"@{where['dtype']}/{where['device']}"


def file_key(path: Path, extra: str = "") -> str:
    """A cache key that changes when the file does: real path, size and mtime (of every file in a folder)."""
    real = path.resolve()
    parts = [str(real), extra]
    files = sorted(p for p in real.rglob("*") if p.is_file()) if real.is_dir() else [real]
    for f in files[:200]:
        st = f.stat()
        parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:20]


def cache_folder(kind: str) -> Path:
    folder = bundled.cache_dir() / "web" / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def checkpoint_path(path: Path) -> Path:
    """A run's last checkpoint stands for the run in the file map; anything else is itself."""
    if is_run(path):
        steps = sorted((path / "checkpoints").glob("step-*.safetensors"))
        if steps:
            return steps[-1]
    return path


_anatomies: dict[str, tuple[str, dict[str, Any]]] = {}


def anatomy_doc(path: Path) -> dict[str, Any]:
    """The anatomy document, remembered per file version (the page asks for it on every view)."""
    key = file_key(path)
    hit = _anatomies.get(str(path))
    if hit is None or hit[0] != key:
        hit = _anatomies[str(path)] = (key, _anatomy_doc(path))
    return dict(hit[1])


def _anatomy_doc(path: Path) -> dict[str, Any]:
    from glassbox.anatomy.render import FORMULAS

    with open_checkpoint(checkpoint_path(path)) as ck:
        doc = describe(ck).to_json()
    files = sorted({t["file"] for t in doc["tensors"]})
    doc["files"] = [{"file": f, "size": Path(f).stat().st_size} for f in files]
    doc["formulas"] = FORMULAS
    for t in doc["tensors"]:
        t["module"] = t["name"].rsplit(".", 1)[0]
    return doc


def atlas_cache_file(path: Path) -> Path:
    return cache_folder("atlas") / f"{file_key(path, f'seed={ATLAS_SEED}{_where_key()}')}.json"


def cached_atlas(path: Path, anatomy: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The atlas if one exists already: on disk in our cache, or written into the checkpoint by annotate."""
    f = atlas_cache_file(path)
    if f.exists():
        try:
            return json.loads(f.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            f.unlink(missing_ok=True)  # a broken cache entry is recomputed, never shown
    labels = (anatomy or {}).get("labels")
    if isinstance(labels, dict) and isinstance(labels.get("heads"), list) and labels["heads"] \
            and "scores" in labels["heads"][0]:
        return labels
    return None


def store_atlas(path: Path, atlas: dict[str, Any]) -> Path:
    """Put an atlas computed elsewhere (the demo) into the cache, so serve and report open it at once."""
    f = atlas_cache_file(path)
    write_json(f, atlas)
    return f


def _stored_file(kind: str, path: Path) -> Path:
    return cache_folder(kind) / f"{file_key(path)}.json"


def _cached(kind: str, path: Path) -> dict[str, Any] | None:
    f = _stored_file(kind, path)
    try:
        return json.loads(f.read_text(encoding="utf-8")) if f.exists() else None
    except (OSError, json.JSONDecodeError):
        return None


def _store(kind: str, path: Path, doc: dict[str, Any]) -> Path:
    from glassbox.fileio import write_json

    f = _stored_file(kind, path)
    write_json(f, doc)
    return f


def tour_cache_file(path: Path) -> Path:
    return _stored_file("tour", path)


def cached_tour(path: Path) -> dict[str, Any] | None:
    """The tour of this model (`glassbox tour` stores it), or None: the Start here page says how to make one."""
    return _cached("tour", path)


def store_tour(path: Path, tour: dict[str, Any]) -> Path:
    return _store("tour", path, tour)


def cached_facts(path: Path) -> dict[str, Any] | None:
    """`{"trace": facts --json | None, "edit": facts edit --json | None}` of this model's last `glassbox facts`
    and `glassbox facts edit`, or None: the Facts view says how to make one."""
    return _cached("facts", path)


def store_facts(path: Path, part: str, doc: dict[str, Any]) -> Path:
    """Keep `doc` as the model's last trace (`part="trace"`) or edit (`part="edit"`); the other part stays."""
    facts = _cached("facts", path) or {"trace": None, "edit": None}
    facts[part] = doc
    return _store("facts", path, facts)


def load(path: Path, name: str | None = None) -> Any:
    """A loaded model, kept in a small LRU. A bundled `name` loads by name (its GGUF cache and start-token
    rule come with it); never a pickle: paths.resolve refused those already, and allow_pickle stays off."""
    from glassbox.run import load_model

    key = str(path.resolve()) + _where_key()
    with model_lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
        spec = name if name and bundled.is_bundled_name(name) else str(checkpoint_path(path))
        _models[key] = load_model(spec, allow_pickle=False, **where)
        while len(_models) > MAX_MODELS:
            _models.popitem(last=False)
        return _models[key]


def is_loaded(path: Path) -> bool:
    return str(path.resolve()) + _where_key() in _models


def compute_atlas(path: Path, name: str | None = None) -> dict[str, Any]:
    loaded = load(path, name)
    with model_lock:
        atlas = build_atlas(loaded, Settings(seed=ATLAS_SEED))
    store_atlas(path, atlas)
    return atlas


def tokenize(loaded: Any, text: str) -> list[int]:
    """The text's token ids as every command reads text (run/text); typed token ids if there is no tokenizer."""
    return encode(loaded, text, ids_without_tokenizer=True)


def token_strings(loaded: Any, ids: list[int]) -> list[str]:
    if loaded.tokenizer is None:
        return [str(i) for i in ids]
    # a token that decodes to nothing (an id past a small vocab, a partial byte) is shown by its id
    return [loaded.tokenizer.decode([i]) or f"<{i}>" for i in ids]


def pattern(loaded: Any, layer: int, head: int, text: str) -> dict[str, Any]:
    """One head's attention [q, k] on `text` from the activation cache, and the lens of its output."""
    import torch

    if not (0 <= layer < loaded.n_layers and 0 <= head < loaded.n_heads):
        raise BadInput(f"no head {layer}.{head} in this model ({loaded.n_layers} layers × {loaded.n_heads} heads)")
    ids = tokenize(loaded, text)
    cut = len(ids) > MAX_TOKENS
    ids = ids[:MAX_TOKENS]
    if len(ids) < 1:
        raise BadInput("the text has no tokens")
    names = [f"blocks.{layer}.attn.pattern"] + ([] if loaded.is_encoder else [f"blocks.{layer}.attn.head_out"])
    with model_lock, torch.inference_mode():
        cache = hooks.run_with_cache_until(loaded, torch.tensor([ids]), layer, names=names)
        pat = cache[f"blocks.{layer}.attn.pattern"][0, head].float().contiguous()  # [q, k]
        lens: list[list[list[Any]]] = []
        if not loaded.is_encoder:
            out = cache[f"blocks.{layer}.attn.head_out"][0, :, head]  # [pos, d_model]: its direct write
            norm = layout.final_norm(loaded.model, loaded.architecture)
            logits = loaded.model.get_output_embeddings()(norm(out) if norm is not None else out)
            top = logits.float().topk(LENS_TOP, dim=-1)
            for vals, idx in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                lens.append([[s, round(v, 3)] for s, v in zip(token_strings(loaded, idx), vals, strict=True)])
    groups = _kv_groups(loaded)
    return {"layer": layer, "head": head, "tokens": token_strings(loaded, ids), "ids": ids, "truncated": cut,
            "kv_group": groups[head], "heads_in_group": [h for h in range(loaded.n_heads) if groups[h] == groups[head]],
            "pattern": pat.numpy(), "lens": lens, "causal": not loaded.is_encoder}


def _kv_groups(loaded: Any) -> list[int]:
    cfg = loaded.config
    n_kv = getattr(cfg, "num_key_value_heads", None) or loaded.n_heads
    size = max(1, loaded.n_heads // n_kv)
    return [h // size for h in range(loaded.n_heads)]


def _head_weights(loaded: Any, layer: int, head: int) -> tuple[Any, Any]:
    """(W_V [d_head, d_model], W_O [d_model, d_head]) of one head."""
    hw = weights.head(loaded, layer, head)
    return hw.W_V, hw.W_O


def ov_tokens(loaded: Any, layer: int, head: int, top: int = OV_TOP) -> dict[str, Any]:
    """The head's OV circuit W_O·W_V, by its strongest singular direction: which tokens (through the
    embedding) it reads most along v₁, and which it writes most along u₁ (through the unembedding)."""
    import torch

    with model_lock, torch.inference_mode():
        w_v, w_o = _head_weights(loaded, layer, head)
        ov = w_o.float() @ w_v.float()  # [m, m]
        u, s, vh = torch.linalg.svd(ov)
        u1, v1 = u[:, 0], vh[0]
        w_u, _ = ov_readout(loaded)  # [vocab, m]
        w_e = loaded.model.get_input_embeddings().weight.detach().float()
        reads = w_e @ v1
        writes = w_u.float() @ u1
        # the SVD's sign is arbitrary: orient so that the tokens read most positively are the reads
        if reads.max() < -reads.min():
            reads, writes = -reads, -writes
        r, w = reads.topk(top), writes.topk(top)
        share = float(s[0] ** 2 / (s**2).sum().clamp_min(1e-12))
    return {"layer": layer, "head": head, "share_of_first_direction": round(share, 4),
            "reads": [[t, round(v, 3)] for t, v in zip(token_strings(loaded, r.indices.tolist()), r.values.tolist(), strict=True)],
            "writes": [[t, round(v, 3)] for t, v in zip(token_strings(loaded, w.indices.tolist()), w.values.tolist(), strict=True)]}


def head_bytes(anatomy: dict[str, Any], layer: int, head: int) -> list[dict[str, Any]]:
    """Every slice of one head in the file: its Q and O slices, and the K/V slices of its kv group."""
    rows = [t for t in anatomy["tensors"] if t["layer"] == layer and t["heads"]]
    group = head
    for t in rows:
        for h in t["heads"]:
            if h["kind"] == "q" and h["head"] == head and h["kv_group"] is not None:
                group = h["kv_group"]
    out = []
    for t in rows:
        for h in t["heads"]:
            want = group if h["kind"] in ("k", "v") else head
            if h["head"] == want:
                out.append({"tensor": t["name"], "module": t["module"], "level": t["level"], "kind": h["kind"],
                            "kv_group": h["kv_group"], "slice": h["slice"], "dtype": t["dtype"],
                            "shape": t["shape"], "file": t["file"], **h["bytes"]})
    return out


def timeline_doc(run: Path) -> dict[str, Any]:
    """`glassbox timeline RUN --json` (its own cache makes a second call cheap) and `glassbox writes RUN`."""
    doc = attach(analyze(run, **where), run)  # + `examples` when the run has writes --examples files
    doc["writes"] = write_table(run)
    try:
        from glassbox.train.store import read_table

        metrics = read_table(run, "metrics")
        cols = [c for c in ("step", "loss") if c in metrics.column_names]
        doc["metrics"] = {c: metrics.column(c).to_pylist() for c in cols}
    except Exception:  # the loss curve is a nicety; the probes above already need the run to be whole
        doc["metrics"] = {}
    return doc


def all_patterns(loaded: Any, text: str, lens_heads: set[tuple[int, int]]) -> dict[str, Any]:
    """Every head's pattern on `text` from one cached forward (the report), and the lens of `lens_heads`."""
    import torch

    ids = tokenize(loaded, text)[:MAX_TOKENS]
    names = ["blocks.*.attn.pattern"] + ([] if loaded.is_encoder else ["blocks.*.attn.head_out"])
    with model_lock, torch.inference_mode():
        _, cache = hooks.run_with_cache(loaded, torch.tensor([ids]), names=names)
        patterns = {(la, he): cache[f"blocks.{la}.attn.pattern"][0, he].float().numpy()
                    for la in range(loaded.n_layers) for he in range(loaded.n_heads)}
        lens: dict[tuple[int, int], Any] = {}
        norm = None if loaded.is_encoder else layout.final_norm(loaded.model, loaded.architecture)
        for la, he in sorted(lens_heads) if not loaded.is_encoder else []:
            out = cache[f"blocks.{la}.attn.head_out"][0, :, he]
            top = loaded.model.get_output_embeddings()(norm(out) if norm is not None else out).float().topk(LENS_TOP, -1)
            lens[(la, he)] = [[[s, round(v, 3)] for s, v in zip(token_strings(loaded, i), vals, strict=True)]
                              for vals, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]
    return {"tokens": token_strings(loaded, ids), "patterns": patterns, "lens": lens}


LENS_MAX_TOKENS = 48  # the lens keeps [layers + 1, tokens, vocab] log-probs: ~0.3 GB for SmolLM2 at 48


def lens_doc(loaded: Any, text: str) -> dict[str, Any]:
    """`glassbox lens MODEL --text T --json` (the logit lens), on the first LENS_MAX_TOKENS tokens."""
    ids = logit.encode(loaded, text)
    cut = len(ids) > LENS_MAX_TOKENS
    with model_lock:
        doc = logit.to_json(loaded, logit.apply(loaded, ids[:LENS_MAX_TOKENS]))
    doc["truncated"] = cut
    return doc


def patch_doc(loaded: Any, clean: str, corrupt: str, metric: str, over: str) -> dict[str, Any]:
    """`glassbox patch MODEL --clean C --corrupt X --metric M --over heads|resid|mlp --json` (denoising)."""
    if over not in ("heads", "resid", "mlp"):
        raise BadInput("over must be heads, resid or mlp")
    m = patching.parse_metric(loaded, metric)
    clean_ids, corrupt_ids = logit.encode(loaded, clean), logit.encode(loaded, corrupt)
    if max(len(clean_ids), len(corrupt_ids)) > 64:
        raise BadInput("clean and corrupt prompts are limited to 64 tokens here")
    with model_lock:
        result = patching.patch(loaded, clean_ids, corrupt_ids, m, over, "denoise", 32)
    result.tokens = [logit.token_str(loaded, t) for t in clean_ids]
    if over != "heads":
        result.cols = [f"{i}:{t}" for i, t in enumerate(result.tokens)]
    return result.to_json()


OVERLAY_MAX_TOKENS = 64


def overlay_generate(index: Path, prompt: str, max_tokens: int, mode: str) -> dict[str, Any]:
    """`glassbox overlay generate INDEX --prompt P` (table mode: no LM; mixture/select: SmolLM2 selects);
    the trace goes to the overlay store ($GLASSBOX_HOME/overlay/store.sqlite), as on the command line."""
    from glassbox.overlay.generate import GenerateConfig
    from glassbox.overlay.trace import run

    if mode not in ("table", "mixture", "select"):
        raise BadInput("mode must be table, mixture or select")
    if not 1 <= max_tokens <= OVERLAY_MAX_TOKENS:
        raise BadInput(f"max_tokens must be in 1..{OVERLAY_MAX_TOKENS}")
    cfg = GenerateConfig(mode=mode, max_tokens=max_tokens)
    cfg.check()
    st = Store(None)
    try:
        with model_lock:
            return run(index, prompt, cfg, None if mode == "table" else bundled.DEFAULT_MODEL, st)
    finally:
        st.close()


def overlay_trace(trace_id: str) -> dict[str, Any]:
    st = Store(None)
    try:
        return st.trace(trace_id)
    finally:
        st.close()


def overlay_feedback(trace_id: str, step: int, text: str, prefer: bool) -> dict[str, Any]:
    """`glassbox overlay feedback TRACE --step N --prefer|--reject TEXT`."""
    from glassbox.overlay.feedback import record

    st = Store(None)
    try:
        trace = st.trace(trace_id)
        if not 0 <= step < len(trace["steps"]):
            raise BadInput(f"trace {trace_id} has steps 0..{len(trace['steps']) - 1}")
        folder = Path(trace["index"]) / "tokenizer"
        tok = lm.load_tokenizer(folder if folder.exists() else (trace["model"] or bundled.DEFAULT_MODEL))
        return record(st, trace, step, text, prefer, tok)
    finally:
        st.close()


def overlay_replay(trace_id: str) -> dict[str, Any]:
    from glassbox.overlay.trace import replay

    st = Store(None)
    try:
        with model_lock:
            return replay(st.trace(trace_id), st)
    finally:
        st.close()
