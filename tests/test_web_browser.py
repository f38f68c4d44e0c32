"""The web app and the offline report in a real browser (Debian's chromium via Playwright).

Each test opens a view, clicks what a user clicks, and checks what is drawn against the library: byte
offsets against `glassbox anatomy --json`, pattern values against the activation cache. Screenshots go to
out/screenshots/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from webkit import live_site, screenshot, tiny_with_tokenizer

TEXT = "the cat sat on the mat and then the cat sat on the mat because it was tired"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("webroot")
    tiny_with_tokenizer("llama", root / "tiny")  # GQA: 4 query heads, 2 kv groups
    with live_site(root, ["tiny"]) as (url, b):
        yield url, b, root


def anatomy_json(path: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "glassbox", "anatomy", str(path), "--json"], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def expected_offsets(doc: dict, layer: int, head: int) -> dict[tuple[str, str], int]:
    """(tensor, kind) → offset of head `head` (K/V: its kv group) from the anatomy contract."""
    group = next(h["kv_group"] for t in doc["tensors"] if t["layer"] == layer
                 for h in t["heads"] if h["kind"] == "q" and h["head"] == head)
    return {(t["name"], h["kind"]): h["bytes"]["offset"] for t in doc["tensors"] if t["layer"] == layer
            for h in t["heads"] if h["head"] == (group if h["kind"] in "kv" else head)}


def open_view(b, url: str, fragment: str, ready: str):
    page = b.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{url}/#{fragment}")
    page.wait_for_selector(f"body[data-ready={ready}]", timeout=60_000)
    return page


def test_file_map_click_tensor_and_head(site):
    url, b, root = site
    page = open_view(b, url, "view=map", "map")
    doc = anatomy_json(root / "tiny")
    name = "model.layers.1.self_attn.q_proj.weight"
    page.click(f'button.tblock[data-tensor="{name}"]')
    card = page.locator("#tensor-card")
    assert name in card.inner_text()
    shape = next(t["shape"] for t in doc["tensors"] if t["name"] == name)
    assert card.locator('td[data-key="shape"]').inner_text() == f"[{', '.join(map(str, shape))}]"
    assert "attention.q" in card.locator('td[data-key="level"]').inner_text()
    assert "W_q" in card.locator('td[data-key="formula"]').inner_text()
    page.select_option("#pick-layer", "1")
    page.select_option("#pick-head", "3")
    rows = page.locator("#slice-table tr[data-kind]")
    shown = {}
    for i in range(rows.count()):
        cells = rows.nth(i).locator("td")
        shown[(cells.nth(1).inner_text(), rows.nth(i).get_attribute("data-kind"))] = \
            int(cells.nth(4).get_attribute("data-offset"))
    assert shown == expected_offsets(doc, 1, 3)
    assert set(k for _, k in shown) == {"q", "k", "v", "o"}
    path_line = page.locator("#path-line").inner_text()
    assert "num_attention_heads: 4" in path_line and "q_proj" in path_line
    # the zoomed byte map paints the head's runs in their kind's colour (not the grey of the rest)
    painted = page.evaluate("""() => { const c = document.getElementById('headstrip'); const g = c.getContext('2d');
        const d = g.getImageData(0, 30, c.width, 1).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] !== d[i+1] || d[i+1] !== d[i+2]) n++; return n; }""")
    assert painted > 0
    screenshot(page, "file-map")
    page.close()


def test_atlas_compute_click_head_and_pattern(site):
    import torch

    from glassbox.run import hooks, load_model
    from glassbox.run.text import start_ids

    url, b, root = site
    page = open_view(b, url, "view=atlas", "atlas")
    page.click("#compute-atlas")  # a job: the page polls it and then draws the heatmap
    page.wait_for_selector("#heatmap", timeout=300_000)
    page.wait_for_selector("body[data-ready=atlas]")
    geom = page.evaluate("window.glassbox.last.atlas_geom")
    layer, head = 1, 2
    page.locator("#heatmap").click(position={"x": geom["left"] + head * geom["cell"] + geom["cell"] / 2,
                                             "y": geom["top"] + layer * geom["cell"] + geom["cell"] / 2})
    panel = page.locator("#head-scores")
    panel.wait_for()
    assert f"Head {layer}.{head}" in panel.inner_text()
    assert "kv group 1" in panel.inner_text()  # GQA: query heads 2, 3 share kv head 1
    atlas = page.evaluate("window.glassbox.atlas")
    entry = next(h for h in atlas["heads"] if (h["layer"], h["head"]) == (layer, head))
    page.locator("#head-scores details summary").click()
    assert f"{entry['scores']['previous_token']:g}"[:4] in panel.inner_text()
    page.fill("#pattern-text", TEXT)
    page.click("#pattern-go")
    page.wait_for_selector("body[data-pattern]", timeout=120_000)
    shown = page.evaluate("(() => { const p = window.glassbox.last.pattern; return {tokens: p.tokens, "
                          "shape: p.shape, values: Array.from(p.pattern)}; })()")
    loaded = load_model(root / "tiny")
    start = start_ids(loaded)  # texts are read after the start token, where the model needs one (run/text)
    ids = start + [loaded.tokenizer.convert_tokens_to_ids(w) for w in TEXT.split()]
    _, cache = hooks.run_with_cache(loaded, torch.tensor([ids]), names=[f"blocks.{layer}.attn.pattern"])
    want = cache[f"blocks.{layer}.attn.pattern"][0, head]
    assert shown["tokens"][len(start):] == TEXT.split()
    got = torch.tensor(shown["values"]).reshape(shown["shape"])
    assert torch.allclose(got, want.float(), atol=1e-6)
    # hovering a cell names both tokens and the weight the cache has
    canvas = page.locator("#pattern-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    n = len(ids)
    q, k = n - 1, 2
    canvas.hover(position={"x": (k + 0.5) * box["width"] / n, "y": (q + 0.5) * box["height"] / n})
    info = page.locator("#pattern-info").inner_text()
    assert f"query #{q}" in info and f"key #{k}" in info and f"{float(want[q, k]):.4f}"[:5] in info
    screenshot(page, "atlas")
    page.close()


def test_head_page_bytes_ov_and_pattern(site):
    url, b, root = site
    page = open_view(b, url, "view=head&head=1.3", "head")
    doc = anatomy_json(root / "tiny")
    offsets = {int(x) for x in page.eval_on_selector_all("#hp-bytes td[data-offset]",
                                                        "els => els.map(e => e.dataset.offset)")}
    assert offsets == set(expected_offsets(doc, 1, 3).values())
    page.wait_for_selector("#ov-writes li", timeout=120_000)
    assert page.locator("#ov-writes li").count() == 12
    page.click("#pattern-go")
    page.wait_for_selector("body[data-pattern]", timeout=120_000)
    screenshot(page, "head-page")
    page.close()


def test_report_offline(site, tmp_path):
    url, b, root = site
    from glassbox.report import build_report

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLASSBOX_CACHE", str(root / ".cache"))  # the atlas computed above opens from the cache
        out = build_report([str(root / "tiny")], tmp_path / "report.html", compute_atlas=True)
    html = out.read_text()
    for bad in ("http://", "https://", "//cdn", 'src="/', "href=\"/"):
        assert bad not in html.split('id="glassbox-data"')[0], bad
    ctx = b.new_context(offline=True)
    attempted = []

    def route(r):
        if not r.request.url.startswith("file://"):
            attempted.append(r.request.url)
            return r.abort()
        return r.continue_()

    ctx.route("**/*", route)
    page = ctx.new_page()
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(out.as_uri() + "#view=atlas&head=1.2")
    page.wait_for_selector("body[data-ready=atlas]", timeout=60_000)
    page.wait_for_selector("body[data-pattern]", timeout=60_000)
    assert page.locator("#heatmap").count() == 1
    assert "Head 1.2" in page.locator("#head-scores").inner_text()
    screenshot(page, "report-atlas")
    page.click('button[data-view="head"]')
    page.wait_for_selector("body[data-ready=head]")
    page.wait_for_selector("body[data-pattern]")
    screenshot(page, "report-head")
    page.click('button[data-view="map"]')
    page.wait_for_selector("body[data-ready=map]")
    assert page.locator("button.tblock").count() > 10
    screenshot(page, "report-map")
    assert attempted == []
    ctx.close()


def test_serve_refuses_public_host_without_expose(tmp_path):
    r = subprocess.run([sys.executable, "-m", "glassbox", "serve", "--host", "0.0.0.0", "--root", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, env=os.environ | {"GLASSBOX_CACHE": str(tmp_path)})
    assert r.returncode == 2
    assert r.stderr.startswith("error:") and "--expose" in r.stderr and "Traceback" not in r.stderr


def test_lens_and_patching_grids_equal_the_library(site):
    from glassbox.lens import logit, patching
    from glassbox.run import load_model

    url, b, root = site
    page = open_view(b, url, "view=lens", "lens")
    text = "the cat sat on the mat and then the dog sat"
    page.fill("#lens-text", text)
    page.click("#lens-go")
    page.wait_for_selector("body[data-lens]", timeout=120_000)
    shown = page.evaluate("window.glassbox.last.lens")
    loaded = load_model(root / "tiny")
    want = logit.to_json(loaded, logit.apply(loaded, logit.encode(loaded, text)))
    assert shown["tokens"] == want["tokens"]
    assert [[t[0] for t in la["top_tokens"]] for la in shown["layers"]] == \
        [[t[0] for t in la["top_tokens"]] for la in want["layers"]]
    assert shown["layers"][-1]["kl_to_final"] == pytest.approx([0.0] * len(want["tokens"]), abs=1e-5)
    clean, corrupt = "when Mary and John went to the store John gave a drink to", \
        "when Mary and John went to the store Mary gave a drink to"
    page.fill("#patch-clean", clean)
    page.fill("#patch-corrupt", corrupt)
    page.click("#patch-go")
    page.wait_for_selector("body[data-patch]", timeout=120_000)
    got = page.evaluate("window.glassbox.last.patch")
    res = patching.patch(loaded, logit.encode(loaded, clean), logit.encode(loaded, corrupt),
                         patching.parse_metric(loaded, "logit_diff: Mary - John"), "heads", "denoise", 32)
    assert sum(got["effect"], []) == pytest.approx(sum(res.effect.tolist(), []), abs=1e-4)
    screenshot(page, "lens-patching")
    page.close()


def test_atlas_view_marks_a_precision_sensitive_verdict(site):
    """A verdict rounding could have changed (heads/precision.py) reads ✓≈ in the top-heads card, with one
    legend line naming the dtype, and the head card says why."""
    from glassbox.heads.atlas import Settings, build_atlas
    from glassbox.run import load_model
    from glassbox.web import documents

    url, b, root = site
    atlas = build_atlas(load_model(root / "tiny"), Settings(seed=documents.ATLAS_SEED, validate=False))
    why = "validated, but not with every effect 0.088 nats lower (one rounding step of the logits)"
    entry = next(h for h in atlas["heads"] if (h["layer"], h["head"]) == (1, 2))
    entry["roles"] = [{"role": "previous_token", "score": entry["scores"]["previous_token"], "ablation_effect": 0.133,
                       "validated": True, "evidence": ["total"], "basis": "total", "effect": 0.133,
                       "ci": [0.035, 0.23], "p": 0.016, "null_mean": -0.013, "null_sd": 0.035,
                       "random_effect": -0.013, "metric": "loss (mean ablation)", "kinds": {},
                       "precision_sensitive": True, "precision_why": why}]
    documents.store_atlas(root / "tiny", dict(atlas, dtype="bfloat16"))
    page = open_view(b, url, "view=atlas&head=1.2", "atlas")
    top = page.locator("#atlas-top").inner_text()
    assert "1.2 " in top and "✓≈ +0.133 (total)" in top
    assert "rounding in bfloat16" in page.locator("#precision-legend").inner_text()
    page.locator("#head-scores").wait_for()
    assert why in page.locator("#head-scores").inner_text()
    page.close()
