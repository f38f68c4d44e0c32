"""The Facts view in a real browser (Debian's chromium via Playwright), on a tiny model: `glassbox facts` and
`glassbox facts edit` store their documents where `glassbox report` and `glassbox serve` find them; the view
draws one heatmap per restored kind and shows the peaks, the neurons with their bytes and the edit's diff as
numbers from those documents, no placeholder; a model never traced says how to make a tracing."""

from __future__ import annotations

import json
import re

import pytest
from webkit import browser, live_server, screenshot, tiny_with_tokenizer

from glassbox import cli

PROMPT = "the big red dog sat on the mat and then it"
SUBJECT = "big red dog"


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("facts-web")
    tiny_with_tokenizer("llama", root / "tiny")
    tiny_with_tokenizer("llama", root / "bare", seed=1)
    (root / "corpus.txt").write_text(" ".join(["the cat sat on the mat and then it ran to the store"] * 60))
    return root


def test_facts_view_in_report_and_serve(made, capsys, monkeypatch):
    from glassbox.report import build_report

    monkeypatch.setenv("GLASSBOX_CACHE", str(made / ".cache"))
    model = str(made / "tiny")
    trace = _cli(["facts", model, "--prompt", PROMPT, "--subject", SUBJECT, "--answer", " store", "--min-p", "0",
                  "--samples", "2", "--neurons", "3", "--json"], capsys)
    edit = _cli(["facts", "edit", model, "--prompt", PROMPT, "--subject", SUBJECT, "--new", " store", "--out",
                 str(made / "edited"), "--layer", "0", "--corpus", str(made / "corpus.txt"), "--cov-tokens", "256",
                 "--steps", "3", "--json"], capsys)
    out = build_report([model], made / "report.html", compute_atlas=False)
    with browser() as b:
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(out.as_uri() + "#view=facts")
        page.wait_for_selector("body[data-ready=facts]", timeout=60_000)
        text = page.locator("section.facts").inner_text()
        for bad in ("undefined", "NaN", "[object Object]", "No tracing"):
            assert bad not in text, (bad, text[:300])
        assert page.locator("canvas").count() == len(trace["restore"]) == 4
        for kind, peak in trace["peak"].items():
            row = page.locator(f'#facts-peaks tr[data-kind="{kind}"]').inner_text().split("\t")
            assert int(row[1]) == peak["layer"] and row[2].startswith(str(peak["token"]))
            assert float(row[3]) == pytest.approx(peak["p"], abs=1e-4)
            # the canvas is drawn: its peak cell is not the background
            lit = page.evaluate(f"""(() => {{ const c = document.getElementById('facts-{kind}');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] < 600) n++; return n; }})()""")
            assert lit > 100, kind
        neurons = page.locator("#facts-neurons").inner_text().replace(",", "")
        for n in trace["neurons"]:
            assert f"bytes {n['bytes']['out']['offset']} + {n['bytes']['out']['length']}" in neurons
        diff = page.locator("#facts-diff").inner_text().replace(",", "")
        assert edit["diff"][0]["tensor"] in diff and f"\t{edit['diff'][0]['bytes_changed']}\t" in diff
        assert re.search(r"p\(new\) [\d.]+", page.locator("#facts-edit").inner_text())
        screenshot(page, "report-facts")
        page.close()

        with live_server(made, ["tiny", "bare"]) as url:
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/#view=facts")
            page.wait_for_selector("body[data-ready=facts]", timeout=60_000)
            assert page.locator("canvas").count() == 4
            assert page.evaluate("window.glassbox.facts.trace.answer.p_clean") == trace["answer"]["p_clean"]
            page.select_option("#src", "bare")
            page.wait_for_selector("#facts-none", timeout=60_000)
            assert "glassbox facts bare --prompt" in page.locator("#facts-none").inner_text()
            page.close()
