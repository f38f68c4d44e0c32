"""The tour in a real browser (Debian's chromium via Playwright): the report opens on it, every chapter shows
numbers and no placeholder, clicking a step's tensor opens the file map at that head, and the Atlas tab names
each role's top heads in text. The model is the last checkpoint of a short run of the induction preset, so it
has an induction head to name."""

from __future__ import annotations

import re

import pytest
from webkit import browser, screenshot


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from glassbox.guide import walk, write_report
    from glassbox.train.checkpoints import list_checkpoints
    from glassbox.train.loop import declare, train

    root = tmp_path_factory.mktemp("tour-web")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLASSBOX_CACHE", str(root / ".cache"))
        run = root / "run"
        train(run, declare(preset="induction-2l", steps=120))
        model = str(list_checkpoints(run)[-1][1])
        doc = walk(model, list_checkpoints(run)[-1][1], None, run, None, root / "work", quiet=True)
        out = write_report(model, doc, root / "report.html")
    return out, doc


def test_report_opens_on_the_tour(report):
    from glassbox.heads.render import top_heads

    out, doc = report
    layer, head = doc["head"]
    with browser() as b:
        ctx = b.new_context(offline=True)
        remote = []
        ctx.route("**/*", lambda r: (remote.append(r.request.url), r.abort()) if not r.request.url.startswith("file://")
                  else r.continue_())
        page = ctx.new_page()
        page.set_viewport_size({"width": 1400, "height": 1000})
        page.goto(out.as_uri())  # no fragment: the first page
        page.wait_for_selector("body[data-ready=tour]", timeout=60_000)
        chapters = page.locator(".chapter")
        assert chapters.count() == 3
        for i in range(3):
            text = chapters.nth(i).inner_text()
            assert re.search(r"\d", text), text[:200]
            for bad in ("undefined", "NaN", "[object Object]"):
                assert bad not in text, (bad, text[:300])
        values = page.locator("#tour-steps td.tour-values").first.inner_text().split()
        expected = doc["chapters"][0]["steps"][0]["block"]["values"][:4]
        assert [float(v) for v in values] == pytest.approx(expected, abs=1e-5)
        screenshot(page, "report-tour")

        page.locator("button.tour-tensor").first.click()
        page.wait_for_selector("body[data-ready=map]", timeout=60_000)
        page.wait_for_selector("#headstrip-wrap:not([hidden])", timeout=30_000)
        assert f"head={layer}.{head}" in page.evaluate("location.hash")
        assert page.locator("#pick-layer").input_value() == str(layer)
        assert page.locator("#pick-head").input_value() == str(head)
        screenshot(page, "report-tour-map")

        page.click('button[data-view="atlas"]')
        page.wait_for_selector("body[data-ready=atlas]", timeout=60_000)
        card = page.locator("#atlas-top").inner_text()
        atlas = page.evaluate("window.glassbox.atlas")
        tops = top_heads(atlas, 3)
        assert tops.get("induction"), "the trained model has an induction head"
        for role, heads in tops.items():
            for x in heads:
                assert f"{x['layer']}.{x['head']} {x['score']:.2f}" in card, (role, x, card)
        line = page.locator('#atlas-top li[data-role="induction"]').inner_text()
        first = tops["induction"][0]
        assert line.startswith("induction:") and f"{first['layer']}.{first['head']}" in line and "✓" in line
        assert remote == []
        ctx.close()
