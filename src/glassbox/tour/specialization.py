"""Chapter 3 of the tour, what the file does not say: the atlas's top heads per role in words, the chosen
head's evidence against its null, where it attends on a text and why (the logit split over the residual's
parts), and its label written into the checkpoint with every tensor byte left as it was (checked)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

TEXT = "The cat sat on the mat. The cat sat on the"
SHOWN_ROLES = ("induction", "previous_token", "duplicate_token", "first_token", "copying", "successor")


def pick_head(atlas: dict[str, Any], role: str = "induction") -> tuple[int, int]:
    """The top validated head of `role` (else its best-scoring head)."""
    from glassbox.heads.render import top_heads

    tops = top_heads(atlas, 1).get(role)
    if tops:
        return tops[0]["layer"], tops[0]["head"]
    best = max(atlas["heads"], key=lambda h: h["scores"].get(role, 0.0))
    return best["layer"], best["head"]


def _tensor_digest(checkpoint: Any) -> str:
    """SHA-256 over every tensor's stored bytes, in name order (metadata and header left out)."""
    digest = hashlib.sha256()
    for name in sorted(checkpoint.tensors):
        e = checkpoint.tensors[name]
        with open(e.file, "rb") as f:
            f.seek(e.offset)
            left = e.nbytes
            while left:
                chunk = f.read(min(left, 1 << 22))
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
    return digest.hexdigest()


def label_file(source: Path, atlas: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Annotate a copy (safetensors: a new file with the atlas in `__metadata__`; GGUF and others: a link to the
    file, the atlas in the sidecar beside it) and check that every tensor byte is unchanged."""
    from glassbox.checkpoint import open_checkpoint
    from glassbox.heads.annotate import annotate, read_labels

    folder.mkdir(parents=True, exist_ok=True)
    with open_checkpoint(source) as ck:
        before, fmt, path = _tensor_digest(ck), ck.format, Path(ck.path)
    if fmt == "safetensors" and path.suffix == ".safetensors":
        target = folder / path.name
        done = annotate(path, atlas, target)
    else:  # the sidecar goes beside the file: a link in our folder keeps the user's folder untouched
        target = folder / path.name
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(path.resolve())
        done = annotate(target, atlas, None)
    with open_checkpoint(target) as ck:
        after, labels = _tensor_digest(ck), read_labels(ck)
    return {"path": done["path"], "checkpoint": str(target), "sidecar": done["sidecar"], "key": done["key"],
            "tensors_sha256_before": before, "tensors_sha256_after": after, "bytes_unchanged": before == after,
            "labels_read_back": labels is not None and len(labels.get("heads", [])) == len(atlas["heads"])}


def _ids_text(loaded: Any) -> str:
    """Without a tokenizer: a block of token ids repeated (the induction probe's shape), as text of ids."""
    vocab = int(loaded.config.vocab_size)
    block = [(7 * i + 3) % vocab for i in range(min(8, vocab))]
    return " ".join(str(i) for i in block + block[:-1])


def _attention(loaded: Any, layer: int, head: int, text: str) -> dict[str, Any]:
    from glassbox.run import hooks
    from glassbox.run.text import encode, token_str

    if loaded.tokenizer is None:
        text = _ids_text(loaded)
    ids = encode(loaded, text, ids_without_tokenizer=True)
    _, cache = hooks.run_with_cache(loaded, [ids], names=[f"blocks.{layer}.attn.pattern"])
    row = cache[f"blocks.{layer}.attn.pattern"][0, head, -1]
    top = row.topk(min(3, len(ids)))
    return {"text": text, "ids": ids, "tokens": [token_str(loaded, i) for i in ids], "query": len(ids) - 1,
            "top": [{"key": int(k), "token": token_str(loaded, ids[int(k)]), "weight": float(w)}
                    for w, k in zip(top.values, top.indices, strict=True)]}


def _why(loaded: Any, ids: list[int], layer: int, head: int) -> dict[str, Any] | None:
    from glassbox.circuits.why import decompose
    from glassbox.errors import BadInput

    try:
        doc = decompose(loaded, ids, layer, head, keys=1, queries=[len(ids) - 1])
    except BadInput as exc:  # encoders, soft-capping: said, not hidden
        return {"refused": str(exc)}
    p = doc["positions"][0]
    return {"query": p["query"], "key": p["key"], "logit": p["logit"], "attention": p["attention"],
            "parts": p["parts"][:4]}


def chapter(loaded: Any, atlas: dict[str, Any], layer: int, head: int, folder: Path, text: str = TEXT,
            spec: str = "MODEL") -> dict[str, Any]:
    """The `specialization` chapter document (`spec` names the model in its commands)."""
    from glassbox.heads.render import leading, top_heads

    tops = {r: v for r, v in top_heads(atlas, 3).items() if r in SHOWN_ROLES}
    entry = next(h for h in atlas["heads"] if h["layer"] == layer and h["head"] == head)
    roles = sorted(entry["roles"], key=lambda r: (not r["validated"], -r["score"]))
    evidence = [{k: r.get(k) for k in ("role", "score", "validated", "basis", "effect", "ci", "p", "null_mean",
                                       "null_sd", "ablation_effect", "evidence", "metric")} for r in roles]
    att = _attention(loaded, layer, head, text)
    why = _why(loaded, att["ids"], layer, head)
    label = label_file(loaded.source, atlas, folder)
    lines = [f"{role}: " + ", ".join(t["text"] for t in v) for role, v in tops.items()]
    if lines:
        text_out = ("The file stores numbers, not roles. Measured on this model (✓ = validated: the head's leading "
                    "evidence beats its null), each role's top heads are — " + "; ".join(lines) + ". ")
    else:
        best = max(atlas["heads"], key=lambda x: x["scores"].get("induction", 0.0))
        text_out = ("The file stores numbers, not roles, and on this model no head passes a role's threshold "
                    f"(best induction score: head {best['layer']}.{best['head']} at "
                    f"{best['scores'].get('induction', 0.0):.2f}). ")
    if roles:
        r = roles[0]
        text_out += (f"Head {layer}.{head} is a {r['role']} head: score {r['score']:.2f}, {leading(r)}"
                     + (f", interval [{r['ci'][0]:+.3g}, {r['ci'][1]:+.3g}]" if r.get("ci") else "")
                     + (f", null {r['null_mean']:+.3g} ± {r['null_sd']:.2g}" if r.get("null_mean") is not None else "")
                     + ". ")
    if att["top"]:
        t = att["top"][0]
        text_out += (f"On “{att['text']}” its last query puts {t['weight']:.0%} of its attention on token {t['key']} "
                     f"({t['token']!r}). ")
    if why and "parts" in why:
        text_out += ("That logit is mostly written by " + ", ".join(f"{p['component']} ({p['value']:+.2f})"
                                                                     for p in why["parts"][:3]) + ". ")
    text_out += (f"Written back with annotate: {label['path']}; every tensor byte unchanged: "
                 f"{'yes' if label['bytes_unchanged'] else 'NO'} (SHA-256 of the tensor data before and after). "
                 "Where the model holds a fact rather than a role (which layer, which MLP rows, which bytes): "
                 "the Facts view, made by `glassbox facts MODEL --prompt P`.")
    return {"id": "specialization", "title": "What the file does not say", "text": text_out,
            "top_heads": tops, "evidence": evidence, "attention": att, "why": why, "label": label,
            "commands": [f"glassbox atlas {spec} --json", f"glassbox heads show {spec} {layer}.{head}",
                         f"glassbox heads why {spec} {layer}.{head}",
                         f"glassbox annotate {spec} --atlas ATLAS --out FILE"]}
