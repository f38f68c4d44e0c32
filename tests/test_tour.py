"""`glassbox tour`: the JSON contract, bytes decoded by hand equal to the gguf package's dequantization and to
the loaded model's parameter, the transformers line that reads the tensor found at run time, the training
chapter's phase change, the label written with tensor bytes unchanged. Real tiny models, a real short run."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from glassbox.cli import main
from glassbox.tour import blocks
from glassbox.tour.bytes import hf_row


def _cli(capsys, args: list[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A short run of the induction preset (its phase change falls inside 120 steps)."""
    from glassbox.train.loop import declare, train

    folder = tmp_path_factory.mktemp("tour-run") / "run"
    train(folder, declare(preset="induction-2l", steps=120))
    return folder


def _phi3(folder: Path, dtype) -> Path:
    import transformers
    from webkit import tiny_with_tokenizer

    tiny_with_tokenizer("phi3", folder)
    transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("fmt", sorted(blocks.DECODERS))
def test_hand_decoding_equals_the_gguf_package(fmt):
    rng = np.random.default_rng(1)
    n, size = blocks.block_size(fmt)
    for _ in range(10):
        raw = bytearray(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        for off in ((208,) if fmt == "Q6_K" else (0, 2) if fmt in ("Q4_1", "Q5_1", "Q4_K") else (0,)):
            raw[off:off + 2] = struct.pack("<e", float(rng.normal()))  # finite scales
        got = blocks.decode(bytes(raw), 0, fmt)
        ref = blocks.reference(bytes(raw), fmt)
        assert len(ref) == n
        np.testing.assert_allclose(got["values"], ref[:len(got["values"])], rtol=1e-6, atol=1e-7)
        assert got["hex"].replace(" ", "") == bytes(raw).hex()


def test_float_words_decode_like_torch():
    x = torch.randn(blocks.SHOW_FLOATS)
    for fmt, dtype in (("F16", torch.float16), ("BF16", torch.bfloat16), ("F32", torch.float32)):
        raw = x.to(dtype).view(torch.uint8).numpy().tobytes()
        assert blocks.decode(raw, 0, fmt)["values"] == x.to(dtype).float().tolist()


def test_row_map_inverts_llama_cpp_permutation():
    from glassbox.checkpoint.gguf import unpermute_rows

    n_heads, d = 3, 8
    hf = torch.arange(n_heads * d).float().unsqueeze(1)
    # llama.cpp's convert: rows of each head interleaved as (d/2, 2) → stored
    stored = hf.reshape(n_heads, 2, d // 2, 1).swapaxes(1, 2).reshape(hf.shape)
    assert torch.equal(unpermute_rows(stored, n_heads), hf)  # the reader's inverse, for reference
    for r in range(n_heads * d):
        start = r // d * d
        assert hf[hf_row(r, start, d, True), 0] == stored[r, 0]
        assert hf_row(r, start, d, False) == r


def _check_bytes_chapter(ch: dict, fused: bool) -> None:
    assert [s["kind"] for s in ch["steps"]] == ["q", "k", "v", "o"]
    for s in ch["steps"]:
        code = s["code"]
        line = Path(code["file"]).read_text().splitlines()[code["line"] - 1]
        assert line.strip() == code["source"]
        assert ("qkv_proj" if fused and s["kind"] != "o" else f"{s['kind']}_proj") in code["source"]
        b, run = s["block"], s["bytes"]
        assert run["offset"] <= b["offset"] < run["offset"] + run["length"]
        np.testing.assert_allclose(b["values"], s["model_values"]["values"], atol=1e-6)
        assert len(b["values"]) > 0


def test_phi3_float16_tour_json(tmp_path, capsys, monkeypatch, run):
    monkeypatch.setenv("GLASSBOX_CACHE", str(tmp_path / "cache"))
    model = _phi3(tmp_path / "phi3", torch.float16)
    code, out, err = _cli(capsys, ["tour", str(model), "--run", str(run), "--work", str(tmp_path / "work"),
                                   "--json", "--quiet"])
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) >= {"model", "head", "chapters"} and len(doc["head"]) == 2
    assert [c["id"] for c in doc["chapters"]] == ["bytes", "training", "specialization"]
    for c in doc["chapters"]:
        assert c["title"] and c["text"]
    ch = doc["chapters"][0]
    assert ch["format"] == "safetensors"
    _check_bytes_chapter(ch, fused=True)
    q = ch["steps"][0]
    assert q["tensor"].endswith("qkv_proj.weight") and q["block"]["format"] == "F16"
    # the slice lies inside the fused tensor: rows of the head's query block
    rows = [int(x) for x in q["slice"].strip("[]").split(",")[0].split(":")]
    assert 0 <= rows[0] <= q["model_values"]["row"] < rows[1] <= q["shape"][0]
    pc = doc["chapters"][1]["phase_change"]
    assert set(pc) >= {"layer", "head", "step"} and pc["step"] is not None
    label = doc["chapters"][2]["label"]
    assert label["bytes_unchanged"] and label["labels_read_back"] and not label["sidecar"]


def test_phi3_bfloat16_bytes_chapter(tmp_path):
    from glassbox.checkpoint import open_checkpoint
    from glassbox.run import load_model
    from glassbox.tour.bytes import chapter

    model = _phi3(tmp_path / "phi3", torch.bfloat16)
    loaded = load_model(str(model))
    with open_checkpoint(str(model)) as ck:
        ch = chapter(ck, loaded.model, 1, 3)
    assert ch["steps"][0]["block"]["format"] == "BF16"
    _check_bytes_chapter(ch, fused=True)


@pytest.mark.parametrize("args, word", [(["--head", "x.y"], "--head"), (["--out", "t.txt"], "--out"),
                                        (["--run", "no-such-run"], "training run")])
def test_bad_options_exit_2_before_loading(capsys, args, word):
    code, out, err = _cli(capsys, ["tour", "no-such-model.safetensors", *args])
    assert code == 2 and err.startswith("error:") and word in err and "Traceback" not in err


@pytest.mark.slow
def test_smollm2_head_18_6(tmp_path, capsys, monkeypatch, reuse_smollm2, run):
    """The GGUF case: Q4_1 blocks decoded by hand = the gguf package = the loaded model; the q line reads q_proj."""
    from glassbox.heads.atlas import Settings, build_atlas

    monkeypatch.setenv("GLASSBOX_CACHE", str(tmp_path / "cache"))
    atlas = tmp_path / "atlas.json"
    atlas.write_text(json.dumps(build_atlas(reuse_smollm2, Settings(validate=False))))
    code, out, err = _cli(capsys, ["tour", "smollm2-135m", "--head", "18.6", "--atlas", str(atlas), "--run", str(run),
                                   "--work", str(tmp_path / "work"), "--json", "--quiet"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["head"] == [18, 6]
    ch = doc["chapters"][0]
    assert ch["format"] == "gguf"
    _check_bytes_chapter(ch, fused=False)
    q = ch["steps"][0]
    assert q["code"]["file"].endswith("modeling_llama.py") and "q_proj" in q["code"]["source"]
    with open(ch["file"], "rb") as f:
        f.seek(q["block"]["offset"])
        raw = f.read(q["block"]["nbytes"])
    ref = blocks.reference(raw, q["block"]["format"])[:len(q["block"]["values"])]
    np.testing.assert_allclose(q["block"]["values"], ref, atol=1e-6)
    np.testing.assert_allclose(q["model_values"]["values"], ref, atol=1e-6)
    assert q["row_map"]["hf_rows"][:2] == [q["row_map"]["stored_rows"][0], q["row_map"]["stored_rows"][0] + 32]
    label = doc["chapters"][2]["label"]
    assert label["sidecar"] and label["bytes_unchanged"]


def test_leading_evidence_not_the_total_effect():
    """A head validated by its group reads '✓ +group effect (group)', not its own (negative) total effect."""
    from rich.console import Console

    from glassbox.heads.render import leading, table, top_heads

    role = {"role": "induction", "score": 0.75, "ablation_effect": -0.0357, "validated": True, "basis": "group",
            "effect": 1.23, "evidence": ["group"], "p": 0.001, "null_mean": 0.01, "null_sd": 0.02, "ci": [1.0, 1.4]}
    weak = dict(role, score=0.9, validated=False, basis=None, effect=-0.5, ablation_effect=-0.5, evidence=[])
    atlas = {"model": "m", "n_layers": 18, "n_heads": 9,
             "heads": [{"layer": 17, "head": 5, "scores": {"induction": 0.75}, "roles": [role]},
                       {"layer": 3, "head": 1, "scores": {"induction": 0.9}, "roles": [weak]}]}
    assert leading(role) == "✓ +1.23 (group)"
    tops = top_heads(atlas)["induction"]
    assert [(t["layer"], t["head"]) for t in tops] == [(17, 5), (3, 1)]  # validated first, then by score
    assert tops[0]["text"] == "17.5 0.75 ✓ +1.23 (group)" and tops[1]["text"].endswith("✗ -0.5 (total)")
    console = Console(width=300, record=True)
    console.print(table(atlas))
    text = console.export_text()
    assert "17.5 0.75 ✓ +1.23 (group)" in text and "-0.0357" not in text
