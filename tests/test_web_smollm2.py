"""The web app on the bundled SmolLM2-135M (slow): GQA head bytes in the GGUF file, a 512-token pattern."""

from __future__ import annotations

import pytest
from webkit import browser, live_server, screenshot

pytestmark = pytest.mark.slow

LONG = " ".join(["The cat sat on the mat because it was tired, and then the dog ran after it."] * 40)


def test_smollm2_head_page_bytes_and_long_pattern(smollm2, tmp_path):
    import torch

    from glassbox import bundled
    from glassbox.anatomy import describe
    from glassbox.checkpoint import open_checkpoint
    from glassbox.run import hooks
    from glassbox.web import documents

    path = bundled.bundled_path("smollm2-135m")
    documents._models[str(path.resolve())] = smollm2  # the session's model: no second 0.6 GB copy
    with open_checkpoint("smollm2-135m") as ck:
        doc = describe(ck).to_json()
    layer, head = 18, 6
    group = next(h["kv_group"] for t in doc["tensors"] if t["layer"] == layer
                 for h in t["heads"] if h["kind"] == "q" and h["head"] == head)
    want = {h["bytes"]["offset"] for t in doc["tensors"] if t["layer"] == layer
            for h in t["heads"] if h["head"] == (group if h["kind"] in "kv" else head)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLASSBOX_CACHE", str(tmp_path))
        with live_server(tmp_path, ["smollm2-135m"]) as url, browser() as b:
            page = b.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{url}/#view=head&head={layer}.{head}")
            page.wait_for_selector("body[data-ready=head]", timeout=120_000)
            shown = {int(x) for x in page.eval_on_selector_all("#hp-bytes td[data-offset]",
                                                              "els => els.map(e => e.dataset.offset)")}
            assert shown == want and len(want) == 4
            page.fill("#pattern-text", LONG)
            page.click("#pattern-go")
            page.wait_for_selector("body[data-pattern]", timeout=300_000)
            got = page.evaluate("(() => { const p = window.glassbox.last.pattern; "
                                "return {shape: p.shape, values: Array.from(p.pattern)}; })()")
            n = got["shape"][0]
            assert n >= 512
            ids = documents.tokenize(smollm2, LONG)
            _, cache = hooks.run_with_cache(smollm2, torch.tensor([ids]), names=[f"blocks.{layer}.attn.pattern"])
            expect = cache[f"blocks.{layer}.attn.pattern"][0, head]
            assert torch.allclose(torch.tensor(got["values"]).reshape(n, n), expect.float(), atol=1e-6)
            screenshot(page, "smollm2-head")
            page.close()
