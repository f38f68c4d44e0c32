"""The Timeline view in a real browser: two short training runs (seeds 0 and 1) side by side, their probe
scores over steps, the loss, phase changes, the write-share table equal to `glassbox writes`, and the
examples that wrote a head (spans with the repeated part marked) equal to the timeline JSON's."""

from __future__ import annotations

import pytest
from webkit import live_site, screenshot

STEPS = 4  # five checkpoints (0..4): enough to draw, cheap enough for the suite

pytestmark = pytest.mark.timeout(1800)  # two trainings and their timelines: minutes on a loaded 2-core box


def write_examples(run):
    """What `glassbox writes RUN --examples --head 1.0 --steps 2-3 --retrain` writes (in-process: cheaper)."""
    from glassbox.fileio import write_json
    from glassbox.timeline import examples as E

    doc = E.rank(run, 1, 0, (2, 3), top=5, quiet=True)
    doc["retrain"] = E.retrain(run, 1, 0, doc, quiet=True, every=1, n_random=2)
    write_json(run / "examples-L1H0.json", doc)
    # periodic rows are marked end to end (source, then repeats); a second file with the sources dropped gives
    # rows with unmarked text too, as real text has
    for r in doc["top"]:
        r["span"] = dict(r["span"], source=[], source_chars=[])
    write_json(run / "examples-L1H1.json", dict(doc, head=1, retrain=None))


def check_examples(page, run):
    """The examples card shows the spans of the timeline JSON's `examples` section: each row's text, the
    repeated part highlighted exactly at its character ranges, the summary line and the retrain steps."""
    from glassbox.timeline.spans import section

    entries = section(run)
    assert [(e["layer"], e["head"]) for e in entries] == [(1, 0), (1, 1)]
    assert page.evaluate("window.glassbox.timeline.examples.length") == 2
    for want in entries:
        card = page.locator(f"#examples-L{want['layer']}H{want['head']}")
        assert card.count() == 1
        rows = card.locator("tr.ex-row")
        assert rows.count() == len(want["top"]) == 5
        for k, r in enumerate(want["top"]):
            row = rows.nth(k)
            assert (row.get_attribute("data-step"), row.get_attribute("data-row")) == (str(r["step"]), str(r["row"]))
            assert row.locator("td.span").text_content() == r["text"]
            marked = row.locator("mark.rep").all_text_contents()
            assert marked == [r["text"][a:b] for a, b in r["repeated_chars"]] and marked
            sources = row.locator("mark.src").all_text_contents()
            assert sources == [r["text"][a:b] for a, b in r["source_chars"]]
            underlined = "".join(row.locator("u.ind").all_text_contents())
            assert underlined == "".join(r["text"][a:b] for a, b in r["induction_chars"])
        assert card.locator(".ex-summary").text_content() == want["summary_line"]
        f = want["window_writes"]["focus"]
        assert f"{100 * f['share']:.1f}% of the attention head writes" in card.locator(".ex-writes").text_content()
        if want["retrain"] is None:
            assert card.locator(".ex-retrain").count() == 0
            continue
        rt = want["retrain"]
        variants = [("baseline", rt["baseline"]), ("top_replaced", rt["top_replaced"])]
        variants += [(f"random_replaced_{k}", v) for k, v in enumerate(rt["random_sets"])]
        assert len(variants) == 4 and card.locator("tr[data-variant]").count() == 4
        for name, v in variants:
            cells = card.locator(f'tr[data-variant="{name}"] td.num').all_text_contents()
            step, cross = v["phase_change_step"], v["crossing_step"]
            assert cells[0] == ("no full rise" if step is None else str(step))  # a window may start mid-rise
            assert cells[1] == ("–" if cross is None else str(round(cross, 1)).removesuffix(".0"))


@pytest.fixture(scope="module")
def runs_site(tmp_path_factory):
    from glassbox.train.loop import declare, train

    root = tmp_path_factory.mktemp("runs")
    from glassbox.timeline.analyze import analyze

    for seed in (0, 1):
        train(root / f"s{seed}", declare(preset="induction-2l", seed=seed, steps=STEPS))
        analyze(root / f"s{seed}")  # what `glassbox timeline` writes; the server reads it from the run's cache
    write_examples(root / "s0")
    with live_site(root, ["s0", "s1"]) as (url, b):
        yield url, b, root


def test_timeline_two_seeds_loss_and_write_shares(runs_site):
    from glassbox.timeline.analyze import analyze
    from glassbox.timeline.writes import write_table

    url, b, root = runs_site
    page = b.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{url}/#src=s0&view=timeline&role=previous_token")
    page.wait_for_selector("body[data-ready=timeline]", timeout=600_000)
    assert page.locator(".runs canvas").count() == 2  # both seeds, side by side
    tl = page.evaluate("window.glassbox.timeline")
    want = analyze(root / "s0")  # cached by the server's run: the same document
    assert [c["step"] for c in tl["checkpoints"]] == [c["step"] for c in want["checkpoints"]]
    assert tl["phase_changes"] == want["phase_changes"]
    writes = write_table(root / "s0")
    first = writes["windows"][0]
    header = page.locator("#writes-table tr").first.locator("th").all_inner_texts()
    row = page.locator("#writes-table tr").nth(1).locator("td").all_inner_texts()
    for lv in first["levels"]:
        assert row[header.index(lv["level"])] == f"{100 * lv['update_share']:.1f}%"
    # the chart is drawn: the top head's line is in colour somewhere on the canvas
    coloured = page.evaluate("""() => { const c = document.getElementById('timeline-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - d[i+2]) > 60) n++; return n; }""")
    assert coloured > 50
    check_examples(page, root / "s0")
    screenshot(page, "timeline")
    page.close()


def test_run_report_offline(runs_site, tmp_path):
    from glassbox.report import build_report

    url, b, root = runs_site
    out = build_report([str(root / "s0")], tmp_path / "run.html")
    ctx = b.new_context(offline=True)
    attempted = []
    ctx.route("**/*", lambda r: (attempted.append(r.request.url), r.abort()) if not r.request.url.startswith("file://")
              else r.continue_())
    page = ctx.new_page()
    page.goto(out.as_uri())
    page.wait_for_selector("body[data-ready=map]", timeout=60_000)
    # the head-bytes strip is hidden until a head is shown, then drawn (issue 10's empty box)
    assert not page.locator("#headstrip-wrap").is_visible()
    page.click("#show-head")
    page.wait_for_selector("#head-card")
    assert page.locator("#headstrip-wrap").is_visible()
    painted = page.evaluate("""() => { const c = document.getElementById('headstrip');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] < 250 || d[i+1] < 250 || d[i+2] < 250) n++; return n; }""")
    assert painted > 100
    page.click('button[data-view="timeline"]')
    page.wait_for_selector("body[data-ready=timeline]", timeout=60_000)
    assert page.locator("#timeline-canvas").count() == 1 and page.locator("#writes-table tr").count() > 1
    check_examples(page, root / "s0")
    screenshot(page, "report-timeline")
    assert attempted == []
    ctx.close()
