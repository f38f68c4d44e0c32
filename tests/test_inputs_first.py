"""Every command that loads a model checks its options first: a typo costs milliseconds, not a model load.
Each case runs the real command in-process with loading made to fail loudly, so the only way to pass is to
reject the bad option (exit 2, one `error:` line) before any model, tokenizer or checkpoint values load."""

from __future__ import annotations

import time

import pytest

import glassbox.run
import glassbox.run.load
from glassbox.cli import main


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*_, **__):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(glassbox.run, "load_model", refuse)
    monkeypatch.setattr(glassbox.run.load, "load_model", refuse)
    monkeypatch.setattr(glassbox.run.load, "_assign", refuse)
    monkeypatch.setattr(glassbox.run.load, "_from_pretrained", refuse)


def cases(model: str, text: str) -> dict[str, list[str]]:
    return {
        "atlas --max-per-role -1": ["atlas", model, "--max-per-role", "-1"],
        "heads show bad head": ["heads", "show", model, "four.two"],
        "heads why bad head": ["heads", "why", model, "x", "--text", "a b"],
        "lens --top-k 0": ["lens", model, "--text", "a b", "--top-k", "0"],
        "lens missing --tuned": ["lens", model, "--text", "a b", "--tuned", "no-such-lens.safetensors"],
        "lens train --steps -1": ["lens", "train", model, "--corpus", text, "--out", "x.safetensors",
                                  "--steps", "-1"],
        "lens train missing corpus": ["lens", "train", model, "--corpus", "no-such.txt", "--out", "x.safetensors"],
        "patch --over": ["patch", model, "--clean", "a", "--corrupt", "b", "--over", "neurons"],
        "patch --direction": ["patch", model, "--clean", "a", "--corrupt", "b", "--direction", "sideways"],
        "patch --metric": ["patch", model, "--clean", "a", "--corrupt", "b", "--metric", "logit_diff: A"],
        "patch --batch-size": ["patch", model, "--clean", "a", "--corrupt", "b", "--batch-size", "0"],
        "cluster --k": ["cluster", model, "--texts", text, "--k", "many"],
        "cluster missing texts": ["cluster", model, "--texts", "no-such.txt"],
        "circuits --top -1": ["circuits", model, "--top", "-1"],
        "tour bad head": ["tour", model, "--head", "four.two"],
        "tour --out not html": ["tour", model, "--out", "tour.txt"],
        "tour missing run": ["tour", model, "--run", "no-such-run"],
        "overlay generate --mode": ["overlay", "generate", "no-index", "--prompt", "a", "--mode", "psychic",
                                    "--model", model],
        "facts --samples 0": ["facts", model, "--prompt", "a is b", "--samples", "0"],
        "facts edit missing corpus": ["facts", "edit", model, "--prompt", "a is b", "--subject", "a", "--new", " c",
                                      "--out", "edited", "--corpus", "no-such.txt"],
        "overlay build missing corpus": ["overlay", "build", "--corpus", "no-such.txt", "--out", "idx",
                                         "--model", model],
    }


CASES = sorted(cases("M", "T"))


@pytest.mark.parametrize("case", CASES)
def test_bad_option_rejected_before_loading(case, tiny_folder, tmp_path, monkeypatch, capsys, no_loading):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text("some text " * 50)
    argv = cases(str(tiny_folder("llama")), "t.txt")[case]
    capsys.readouterr()  # drop what building the tiny model printed
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "AssertionError" not in err, err
    assert seconds < 1.0, f"{case}: {seconds:.2f} s"
