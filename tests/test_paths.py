"""Every command that takes a path, given the path a new user would type: relative (`./model`, `model/`),
with spaces and non-ASCII letters, through symlinked files and folders, run from another working directory.
In-process through `cli.main` (the real commands, no subprocess start-up per case)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from tiny import tiny_model
from workspace import TOKENIZER_FILES, tokenized_llama

from glassbox.cli import main

WORD = "mödel dir"  # a space and a non-ASCII letter in every folder name


def run(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """root/ holds `mödel dir/` (a tiny llama with a real tokenizer: MiniLM's WordPiece vocabulary, so text
    commands work), a symlink to that folder, a symlink to its weights file, and a text corpus; the tests run
    from root/elsewhere/, so every path is relative and climbs out of the working directory."""
    root = tmp_path_factory.mktemp("wörk space")
    folder = tokenized_llama(root / WORD)
    os.symlink(folder, root / "linked folder")
    (root / "weights only").mkdir()
    os.symlink(folder / "model.safetensors", root / "weights only" / "model.safetensors")
    for name in ("config.json", *TOKENIZER_FILES):
        shutil.copy(folder / name, root / "weights only" / name)
    (root / "corpus ü.txt").write_text("the cat sat on the mat and the dog sat on the log. " * 40)
    (root / "elsewhere").mkdir()
    return root


@pytest.fixture
def here(workspace, monkeypatch):
    monkeypatch.chdir(workspace / "elsewhere")
    return workspace


MODEL_SPECS = [f"../{WORD}", f"../{WORD}/", f"./../{WORD}/model.safetensors", "../linked folder",
               "../weights only/model.safetensors"]


@pytest.mark.parametrize("spec", MODEL_SPECS)
def test_anatomy_relative(here, capsys, spec):
    code, out, err = run(capsys, "anatomy", spec, "--json")
    assert code == 0, err
    assert json.loads(out)["architecture"] == "llama"


@pytest.mark.parametrize("spec", MODEL_SPECS)
def test_atlas_relative(here, capsys, spec):
    """The reported bug: staging symlinks pointed at a relative path from a temp folder."""
    code, out, err = run(capsys, "atlas", spec, "--json", "--no-validate")
    assert code == 0, err
    assert json.loads(out)["n_layers"] == 2


def test_atlas_files_annotate_and_show(here, capsys):
    code, _, err = run(capsys, "atlas", f"../{WORD}", "--no-validate", "--out", "./atlas out/")
    assert code == 0, err
    assert Path("atlas out/atlas.json").is_file()
    code, out, err = run(capsys, "annotate", f"../{WORD}/model.safetensors", "--atlas", "atlas out/atlas.json",
                         "--out", "./labelled ü.safetensors", "--json")
    assert code == 0, err
    assert Path("labelled ü.safetensors").is_file() and json.loads(out)["sidecar"] is False
    code, out, err = run(capsys, "heads", "show", "../linked folder", "1.0", "--atlas", "atlas out/atlas.json",
                         "--text", "the cat sat", "--json")
    assert code == 0, err


def test_lens_patch_cluster(here, capsys):
    code, out, err = run(capsys, "lens", f"../{WORD}/", "--text", "the cat sat on the", "--json",
                         "--png", "./lens ü.png")
    assert code == 0, err
    assert Path("lens ü.png").is_file()
    code, out, err = run(capsys, "lens", "train", "../linked folder", "--corpus", "../corpus ü.txt",
                         "--out", "./tuned lens.safetensors", "--tokens", "64", "--steps", "1", "--seq-len", "16",
                         "--json")
    assert code == 0, err
    code, out, err = run(capsys, "lens", f"../{WORD}", "--text", "the cat", "--tuned", "tuned lens.safetensors",
                         "--json")
    assert code == 0, err
    code, out, err = run(capsys, "patch", "../weights only/model.safetensors", "--clean", "the cat sat",
                         "--corrupt", "the dog sat", "--json")
    assert code == 0, err
    code, out, err = run(capsys, "cluster", f"./../{WORD}", "--texts", "../corpus ü.txt", "--n-texts", "4",
                         "--seq-len", "16", "--k", "2", "--json")
    assert code == 0, err


def test_train_timeline_writes(here, capsys):
    code, out, err = run(capsys, "train", "--out", "./rün/", "--preset", "text-2l", "--corpus", "../corpus ü.txt",
                         "--steps", "3", "--batch-size", "2", "--seq-len", "16", "--json")
    assert code == 0, err
    os.symlink(Path("rün").absolute(), "linked run")
    for cmd in (["timeline", "./linked run/", "--json", "--no-plot", "--no-ablation"], ["writes", "rün", "--json"]):
        code, out, err = run(capsys, *cmd)
        assert code == 0, (cmd, err)
        json.loads(out)


def test_overlay_build_and_generate(here, capsys):
    code, out, err = run(capsys, "overlay", "build", "--corpus", "../corpus ü.txt", "--out", "./índex dir/",
                         "--model", f"../{WORD}/", "--json")
    assert code == 0, err
    code, out, err = run(capsys, "overlay", "generate", "./índex dir", "--prompt", "the cat", "--no-lm",
                         "--max-tokens", "3", "--store", "./störe dir/", "--json")
    assert code == 0, err


def test_pickle_relative_goes_through_staging(here, capsys, tmp_path):
    """A pickle checkpoint loads through from_pretrained on a staging folder of symlinks: they must point at
    absolute paths (the reported bug: relative links resolved inside the temp folder)."""
    import torch

    folder = here / "pickled ü"
    if not folder.exists():
        folder.mkdir()
        model = tiny_model("llama")
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
        model.config.to_json_file(folder / "config.json")
    code, out, err = run(capsys, "atlas", "../pickled ü", "--json", "--no-validate", "--allow-pickle")
    assert code == 0, err
    assert json.loads(out)["n_heads"] == 4


def test_circuits_why_report(here, capsys):
    code, out, err = run(capsys, "circuits", "../linked folder", "--json", "--out", "./circuits ü/")
    assert code == 0, err
    assert json.loads(out)["n_layers"] == 2 and Path("circuits ü/circuits.json").is_file()
    code, out, err = run(capsys, "heads", "why", f"../{WORD}/", "1.0", "--text", "the cat sat on the", "--json",
                         "--png", "./why ü.png")
    assert code == 0, err
    code, out, err = run(capsys, "report", f"./../{WORD}", "--out", "./repört ü.html", "--no-compute")
    assert code == 0, err
    assert Path("repört ü.html").stat().st_size > 0


def test_tour(here, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("GLASSBOX_CACHE", str(tmp_path / "cache"))
    code, out, err = run(capsys, "train", "--out", "./tour rün/", "--preset", "induction-2l", "--steps", "4", "--json")
    assert code == 0, err
    os.symlink(Path("tour rün").absolute(), "linked tour run")
    code, out, err = run(capsys, "tour", "../weights only/model.safetensors", "--run", "./linked tour run/",
                         "--work", "./tour wörk/", "--out", "./tour ü.html", "--json", "--quiet")
    assert code == 0, err
    doc = json.loads(out)
    assert Path("tour ü.html").stat().st_size > 0 and Path(doc["report"]).resolve() == Path("tour ü.html").resolve()
    steps = doc["chapters"][0]["steps"]
    assert all(s["block"]["values"] == pytest.approx(s["model_values"]["values"], abs=1e-6) for s in steps)
    assert doc["chapters"][2]["label"]["bytes_unchanged"]


def test_facts_trace_and_edit(here, capsys):
    prompt = "the cat sat on the mat and the dog"
    code, out, err = run(capsys, "facts", "../linked folder", "--prompt", prompt, "--subject", "the cat",
                         "--min-p", "0", "--samples", "2", "--kinds", "mlp_window", "--png", "./facts ü.png",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["subject"]["tokens"] and Path("facts ü.png").stat().st_size > 0
    code, out, err = run(capsys, "facts", "edit", f"../{WORD}/", "--prompt", prompt, "--subject", "the cat",
                         "--new", " log", "--out", "./edited ü/", "--layer", "0", "--corpus", "../corpus ü.txt",
                         "--cov-tokens", "256", "--steps", "3", "--json")
    assert code == 0, err
    assert json.loads(out)["diff"][0]["tensor"] == "model.layers.0.mlp.down_proj.weight"
    assert Path("edited ü/model.safetensors").is_file()
