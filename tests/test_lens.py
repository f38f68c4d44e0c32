"""Logit lens on tiny models with constructed weights (identity layers, a planted readout) and the CLI
contract on the bundled SmolLM2."""

from __future__ import annotations

import json

import pytest
import torch

from glassbox.cli import main
from glassbox.lens import logit
from glassbox.run import load_model


def _identity_block(loaded, layer: int) -> None:
    """Zero a llama block's two writes (attention output, MLP down projection): the block becomes the identity."""
    block = loaded.model.model.layers[layer]
    with torch.no_grad():
        block.self_attn.o_proj.weight.zero_()
        block.mlp.down_proj.weight.zero_()


def test_identity_last_layer_gives_final_answer_there(tiny_folder):
    loaded = load_model(tiny_folder("llama"))
    n = loaded.n_layers
    _identity_block(loaded, n - 1)
    ids = torch.randint(0, 96, (12,), generator=torch.Generator().manual_seed(1)).tolist()
    result = logit.apply(loaded, ids)
    assert result.logprobs.shape[0] == n + 1
    # the input of the identity block is the final residual: same distribution, KL 0, same answer
    assert result.kl_to_final[n - 1].max() < 1e-5
    assert torch.equal(result.logprobs[n - 1].argmax(-1), result.logprobs[n].argmax(-1))
    # the layer before it still has work left to do (the block it skips is not the identity)
    assert result.kl_to_final[n - 2].max() > 1e-3
    assert result.kl_to_final[n].abs().max() < 1e-6


def test_planted_readout_is_read_at_every_layer(tiny_folder):
    """All blocks identity, embeddings one-hot, unembedding a permutation: every layer must say perm(t)."""
    loaded = load_model(tiny_folder("llama"))
    d = loaded.config.hidden_size
    for layer in range(loaded.n_layers):
        _identity_block(loaded, layer)
    perm = torch.randperm(d, generator=torch.Generator().manual_seed(0)) + 40  # token t<32 → a token ≥40
    with torch.no_grad():
        emb = loaded.model.get_input_embeddings().weight
        emb[:d] = torch.eye(d)
        head = loaded.model.get_output_embeddings().weight
        head.zero_()
        head[perm] = torch.eye(d)
    ids = [3, 17, 0, 31, 8, 8, 22]
    result = logit.apply(loaded, ids)
    expected = perm[torch.tensor(ids)]
    for layer in range(loaded.n_layers + 1):
        assert torch.equal(result.logprobs[layer].argmax(-1), expected), layer
        assert torch.equal(result.rank_of(int(expected[0]))[layer, 0], torch.tensor(0))


def test_encoder_is_refused(tiny_folder, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["lens", str(tiny_folder("bert")), "--text", "hi"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("error:")


@pytest.mark.slow
def test_lens_json_contract_on_smollm2(reuse_smollm2, capsys, tmp_path):
    png = tmp_path / "lens.png"
    main_args = ["lens", "smollm2-135m", "--text", "The Eiffel Tower is in the city of", "--json", "--png", str(png)]
    with pytest.raises(SystemExit) as exc:
        main(main_args)
    assert exc.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    n = reuse_smollm2.n_layers
    assert [entry["layer"] for entry in doc["layers"]] == list(range(n + 1))
    seq = len(doc["tokens"])
    assert "".join(doc["tokens"]) == "The Eiffel Tower is in the city of"
    for entry in doc["layers"]:
        assert len(entry["kl_to_final"]) == seq and len(entry["top_tokens"]) == seq
        assert all(0.0 <= p <= 1.0 for _, p in entry["top_tokens"])
    final = doc["layers"][-1]
    assert max(final["kl_to_final"]) < 1e-4
    assert final["top_tokens"][-1][0].strip() == "Paris"
    # early layers are far from the answer; the lens converges toward the end
    assert doc["layers"][1]["kl_to_final"][-1] > doc["layers"][n - 1]["kl_to_final"][-1]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
