"""Tuned lens: on a tiny model its held-out KL is below the logit lens's at every layer; files round-trip;
the CLI trains and reads one for the bundled SmolLM2."""

from __future__ import annotations

import json

import pytest
import torch

from glassbox.cli import main
from glassbox.errors import BadInput
from glassbox.lens import logit, tuned
from glassbox.run import load_model


def _rows(seed: int, n: int, seq: int = 32) -> torch.Tensor:
    return torch.randint(0, 96, (n, seq), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_tuned_beats_logit_lens_on_held_out(arch, tiny_folder, tmp_path):
    loaded = load_model(tiny_folder(arch))
    H, final = tuned.collect(loaded, _rows(0, 32))
    lens = tuned.fit_ridge(H, final)
    lens = tuned.fit_kl(loaded, lens, H, final, steps=30, positions=64, lr=1e-3)
    Hh, fh = tuned.collect(loaded, _rows(1, 8))
    plain = tuned.kl_per_layer(loaded, None, Hh, fh)
    fitted = tuned.kl_per_layer(loaded, lens, Hh, fh)
    assert len(plain) == loaded.n_layers
    for layer in range(loaded.n_layers):
        assert fitted[layer] < plain[layer], (layer, plain, fitted)
    # an identity translator is the logit lens, exactly
    same = tuned.kl_per_layer(loaded, tuned.TunedLens.identity(loaded.n_layers, H.shape[-1]), Hh, fh)
    assert same == pytest.approx(plain, rel=1e-5)
    # the apply() path with translators: the final layer stays the model's own output
    ids = _rows(2, 1)[0].tolist()
    result = logit.apply(loaded, ids, lens)
    assert result.kl_to_final[-1].abs().max() < 1e-6
    assert result.kl_to_final[:-1].mean() < logit.apply(loaded, ids).kl_to_final[:-1].mean()

    path = tuned.save(lens, tmp_path / "lens.safetensors", loaded, {"corpus": "random"})
    back = tuned.load(path, loaded)
    assert torch.equal(back.weight, lens.weight) and torch.equal(back.bias, lens.bias)
    other = load_model(tiny_folder("gemma3" if arch == "llama" else "llama"))
    if other.config.hidden_size != loaded.config.hidden_size or other.n_layers != loaded.n_layers:
        with pytest.raises(BadInput):
            tuned.load(path, other)


def test_bad_lens_file_is_refused(tiny_folder, tmp_path):
    loaded = load_model(tiny_folder("llama"))
    bogus = tmp_path / "x.safetensors"
    bogus.write_bytes(b"not a safetensors file")
    with pytest.raises(BadInput):
        tuned.load(bogus, loaded)
    with pytest.raises(BadInput):
        tuned.load(tmp_path / "missing.safetensors", loaded)


@pytest.mark.slow
def test_lens_train_and_tuned_cli_on_smollm2(reuse_smollm2, capsys, tmp_path):
    from glassbox import corpora

    out = tmp_path / "lens.safetensors"
    text = tmp_path / "train.txt"
    text.write_text(corpora.read_spec("pydoc")[:20000])
    with pytest.raises(SystemExit) as exc:
        main(["lens", "train", "smollm2-135m", "--corpus", str(text), "--out", str(out),
              "--tokens", "1024", "--steps", "2", "--json"])
    assert exc.value.code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["layers"] == reuse_smollm2.n_layers and out.is_file()
    prompt = "In the beginning God created the heaven and the earth. And the earth was without form"
    docs = {}
    for name, extra in (("logit", []), ("tuned", ["--tuned", str(out)])):
        with pytest.raises(SystemExit) as exc:
            main(["lens", "smollm2-135m", "--text", prompt, "--json", *extra])
        assert exc.value.code == 0
        docs[name] = json.loads(capsys.readouterr().out)
    assert docs["tuned"]["tokens"] == docs["logit"]["tokens"]
    assert [e["layer"] for e in docs["tuned"]["layers"]] == list(range(reuse_smollm2.n_layers + 1))

    def mean_kl(doc, layer):
        kl = doc["layers"][layer]["kl_to_final"][1:]  # position 0 is the sink; the lens is not trained on it
        return sum(kl) / len(kl)

    middle = range(1, reuse_smollm2.n_layers - 1)
    assert sum(mean_kl(docs["tuned"], i) for i in middle) < sum(mean_kl(docs["logit"], i) for i in middle)
    with pytest.raises(SystemExit) as exc:
        main(["lens", "train", "smollm2-135m", "--corpus", str(tmp_path / "nope.txt"), "--out", str(out)])
    assert exc.value.code == 2
