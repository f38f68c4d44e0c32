"""kill -9 in the middle of a write: the previous output stays intact, nothing partial sits at the target,
and the next run sweeps the dead run's temporary. The kill happens at a fixed step (GLASSBOX_KILL_AT, see
glassbox.fileio.kill_point: after the temporary is complete, just before the rename), never after a sleep.
Each killed run is a real `glassbox` subprocess; the runs around it are in-process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from workspace import tokenized_llama

from glassbox.cli import main

pytestmark = pytest.mark.slow


def cli(capsys, *args) -> str:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert exc.value.code == 0, err
    return out


def killed(point: str, *args, cwd: Path) -> None:
    env = {**os.environ, "GLASSBOX_KILL_AT": point}
    run = subprocess.run([sys.executable, "-m", "glassbox", *map(str, args)], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == -signal.SIGKILL, (run.returncode, run.stderr)


def temporaries(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.*"))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tokenized_llama(tmp_path_factory.mktemp("model") / "llama")


def test_annotate(model, tmp_path, capsys):
    cli(capsys, "atlas", model, "--no-validate", "--out", tmp_path / "a")
    out = tmp_path / "labelled.safetensors"
    cli(capsys, "annotate", model / "model.safetensors", "--atlas", tmp_path / "a" / "atlas.json", "--out", out)
    before = out.read_bytes()
    doc = json.loads((tmp_path / "a" / "atlas.json").read_text())
    doc["model"] = "a different atlas, so a finished write would change the file"
    (tmp_path / "b.json").write_text(json.dumps(doc))
    killed(f"rename:{out.name}", "annotate", model / "model.safetensors", "--atlas", "b.json", "--out", out.name,
           cwd=tmp_path)
    assert out.read_bytes() == before
    assert len(temporaries(out)) == 1  # the dead run's complete-but-unrenamed temporary
    cli(capsys, "annotate", model / "model.safetensors", "--atlas", tmp_path / "b.json", "--out", out)
    assert temporaries(out) == [] and out.read_bytes() != before


def test_lens_train(model, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat and the dog sat on the log. " * 40)
    out = tmp_path / "lens.safetensors"
    common = ["--corpus", corpus, "--out", out, "--tokens", "64", "--seq-len", "16"]
    cli(capsys, "lens", "train", model, *common, "--steps", "0")
    before = out.read_bytes()
    killed(f"rename:{out.name}", "lens", "train", model, *common, "--steps", "2", cwd=tmp_path)
    assert out.read_bytes() == before and len(temporaries(out)) == 1
    cli(capsys, "lens", "train", model, *common, "--steps", "2")
    assert temporaries(out) == [] and out.read_bytes() != before


def overlay_index(model: Path, tmp_path: Path, capsys) -> tuple[Path, Path]:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. the dog sat on the log. the cat ate the fish. " * 30)
    idx = tmp_path / "idx"
    cli(capsys, "overlay", "build", "--corpus", corpus, "--out", idx, "--model", model)
    return idx, corpus


def test_overlay_build(model, tmp_path, capsys):
    idx, corpus = overlay_index(model, tmp_path, capsys)
    meta = (idx / "meta.json").read_text()
    corpus.write_text("a different corpus. " * 50)
    # killed after the new index folder is complete, before it replaces the old one
    killed("overlay-build:swap", "overlay", "build", "--corpus", corpus, "--out", idx, "--model", model,
           cwd=tmp_path)
    assert (idx / "meta.json").read_text() == meta and len(temporaries(idx)) == 1
    assert temporaries(idx)[0].is_dir()
    cli(capsys, "overlay", "build", "--corpus", corpus, "--out", idx, "--model", model)
    assert temporaries(idx) == [] and (idx / "meta.json").read_text() != meta


def test_overlay_build_between_renames(model, tmp_path, capsys):
    """Killed after the old index went aside and before the new one took its place: no folder at the target.
    The next open puts the old one back, and it answers exactly as before; the next build then succeeds."""
    idx, corpus = overlay_index(model, tmp_path, capsys)
    meta = (idx / "meta.json").read_text()
    gen = ["overlay", "generate", idx, "--prompt", "the cat sat", "--no-lm", "--max-tokens", "4", "--json",
           "--store", tmp_path / "store.sqlite"]
    before = json.loads(cli(capsys, *gen))
    corpus.write_text("a different corpus. " * 50)
    killed(f"aside:{idx.name}", "overlay", "build", "--corpus", corpus, "--out", idx, "--model", model,
           cwd=tmp_path)
    assert not idx.exists()  # the window this test is about: only the aside copy holds the old index
    assert [p.name.startswith(".idx.old-") for p in temporaries(idx)].count(True) == 1
    after = json.loads(cli(capsys, *gen))
    assert (idx / "meta.json").read_text() == meta
    def answer(trace: dict) -> dict:  # everything but the step timings
        steps = [{k: v for k, v in step.items() if k != "ms"} for step in trace["steps"]]
        return {"steps": steps, **{k: trace[k] for k in ("index_id", "output_ids", "output")}}

    assert before["output_ids"] and answer(after) == answer(before)
    cli(capsys, "overlay", "build", "--corpus", corpus, "--out", idx, "--model", model)
    assert temporaries(idx) == [] and (idx / "meta.json").read_text() != meta


def test_overlay_consolidate(model, tmp_path, capsys):
    idx, _ = overlay_index(model, tmp_path, capsys)
    store = tmp_path / "store.sqlite"
    traces = [json.loads(cli(capsys, "overlay", "generate", idx, "--prompt", p, "--no-lm", "--max-tokens", "3",
                             "--store", store, "--json"))["id"] for p in ("the cat", "the dog")]
    cli(capsys, "overlay", "consolidate", idx, "--answers", traces[0], "--store", store)
    answers = idx / "answers.npz"
    before = answers.read_bytes()
    # killed after the second answer's new answers.npz is complete, before it replaces the first
    killed("rename:answers.npz", "overlay", "consolidate", idx, "--answers", traces[1], "--store", store,
           cwd=tmp_path)
    assert answers.read_bytes() == before and len(temporaries(answers)) == 1
    cli(capsys, "overlay", "consolidate", idx, "--forget", traces[0], "--store", store)
    assert temporaries(answers) == [] and answers.read_bytes() != before


def test_web_names_restore_an_index_left_aside(tmp_path):
    """The web app resolves names the way a CLI open does: an index whose rebuild died between the two renames
    (only `.idx.old-<dead pid>-<hex>` is left) is put back, not answered with 404."""
    from glassbox.web.paths import PathRefused, resolve

    idx = tmp_path / "idx"
    idx.mkdir()
    (idx / "meta.json").write_text("{}")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    os.replace(idx, tmp_path / f".idx.old-{int(dead.stdout)}-abc123")
    assert resolve(tmp_path, "idx") == ("idx", idx.resolve())
    assert (idx / "meta.json").read_text() == "{}" and temporaries(idx) == []
    with pytest.raises(PathRefused) as exc:
        resolve(tmp_path, "other")  # nothing aside for this name: still a 404
    assert exc.value.status == 404
