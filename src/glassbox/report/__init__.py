"""`glassbox report MODEL|RUN --out FILE.html`: the web app's views in one self-contained, offline file.

The page is the server's own (web/static/app.js and app.css, inlined); the data are the same documents the
API serves, as JSON deflated and base64-encoded into a `<script type="application/json">` (the page
inflates it with the browser's DecompressionStream). A Content-Security-Policy of `default-src 'none'` means
nothing can be fetched from anywhere. What a report cannot hold is said: attention patterns are on one
fixed text (uint8-quantized), OV and lens only for heads that hold a role.
"""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path
from typing import Any

from glassbox import bundled, progress
from glassbox.errors import BadInput

SAMPLE_TEXT = ("When Mary and John went to the store, John gave a drink to Mary. "
               "When Mary and John went to the store, John gave a drink to Mary.")
PATCH_CLEAN = "When Mary and John went to the store, John gave a drink to"
PATCH_CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
PATCH_METRIC = "logit_diff: Mary - John"
WARN_BYTES = 50 * 1024 * 1024


def _source(spec: str) -> tuple[str, Path]:
    path = bundled.resolve(spec)
    if path.name.lower().endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt")):
        raise BadInput("pickle checkpoints are not loaded for reports", path)
    return spec, path


def model_payload(spec: str, path: Path, atlas: dict[str, Any] | None = None, compute: bool = True,
                  text: str = SAMPLE_TEXT) -> dict[str, Any]:
    """Anatomy, atlas (cached, else computed when `compute`), patterns on `text`, OV and lens of role heads."""
    import numpy as np

    from glassbox.web import documents

    doc: dict[str, Any] = {"src": spec, "kind": "model"}
    doc["anatomy"] = documents.anatomy_doc(path)
    atlas = atlas or documents.cached_atlas(path, doc["anatomy"])
    loaded = documents.load(path, spec)
    if atlas is None and compute:
        atlas = documents.compute_atlas(path, spec)
    doc["atlas"] = atlas
    if loaded.tokenizer is None:  # no tokenizer: the patterns are shown on ids 0..31
        text = " ".join(str(i) for i in range(32))
    role_heads = {(h["layer"], h["head"]) for h in (atlas or {}).get("heads", []) if h["roles"]}
    run = documents.all_patterns(loaded, text, role_heads)
    patterns = {f"{la}.{he}": base64.b64encode(np.clip(np.rint(p * 255), 0, 255).astype(np.uint8).tobytes()).decode()
                for (la, he), p in run["patterns"].items()}
    doc["sample"] = {"text": text, "tokens": run["tokens"], "patterns": patterns,
                     "lens": {f"{la}.{he}": v for (la, he), v in run["lens"].items()},
                     "kv_groups": documents._kv_groups(loaded), "causal": not loaded.is_encoder}
    if not loaded.is_encoder and loaded.tokenizer is not None:
        try:  # the Lens & patching tab: the lens on the sample text, the Mary/John patching run
            doc["lens"] = documents.lens_doc(loaded, text)
            doc["patch"] = documents.patch_doc(loaded, PATCH_CLEAN, PATCH_CORRUPT, PATCH_METRIC, "heads")
        except BadInput as exc:  # e.g. a tokenizer that splits Mary or John: say so in the page instead
            doc["lens_error"] = str(exc)
    if not loaded.is_encoder:
        doc["ov"] = {f"{la}.{he}": documents.ov_tokens(loaded, la, he)
                     for la, he in progress.track(sorted(role_heads), "report: OV circuits")}
    return doc


def run_payload(spec: str, path: Path) -> dict[str, Any]:
    from glassbox.web import documents

    return {"src": spec, "kind": "run", "anatomy": documents.anatomy_doc(path), "timeline": documents.timeline_doc(path)}


def build_report(specs: list[str], out: str | Path, compute_atlas: bool = True,
                 atlas: dict[str, Any] | None = None, tour: dict[str, Any] | None = None) -> Path:
    """Write the report of every spec (models and runs) into one HTML file → its path."""
    from glassbox.fileio import atomic_write
    from glassbox.web import documents
    from glassbox.web.paths import is_run
    from glassbox.web.server import page

    sources = []
    for spec in specs:
        spec, path = _source(spec)
        sources.append(run_payload(spec, path) if is_run(path)
                       else model_payload(spec, path, atlas if len(specs) == 1 else None, compute_atlas))
    payload: dict[str, Any] = {"sources": sources}
    if tour is None and sources and sources[0]["kind"] == "model":
        tour = documents.cached_tour(bundled.resolve(specs[0]))
    if tour is not None:  # the report opens on it ("Start here")
        payload["tour"] = tour
    facts = documents.cached_facts(bundled.resolve(specs[0])) if sources and sources[0]["kind"] == "model" else None
    if facts is not None:  # the Facts view of the first model
        payload["facts"] = facts
    packed = base64.b64encode(zlib.compress(json.dumps(payload, separators=(",", ":")).encode(), 6)).decode()
    title = "glassbox report: " + ", ".join(s["src"] for s in sources)
    html = page({"mode": "report", "sample_text": SAMPLE_TEXT}, inline=True, payload=packed, title=title)
    out = Path(out)
    with atomic_write(out, "w") as f:
        f.write(html)
    if out.stat().st_size > WARN_BYTES:
        import sys

        print(f"warning: {out} is {out.stat().st_size / 2**20:.0f} MiB; browsers open it slowly", file=sys.stderr)
    return out
