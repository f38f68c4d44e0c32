"""Activation patching on a tiny GPT-2 with a hand-built previous-token copying head: the planted head must be
the single large cell; the residual stream must show the token's information moving to the last position."""

from __future__ import annotations

import json

import pytest
import torch
from lens_models import planted_gpt2

from glassbox.cli import main
from glassbox.lens import patching
from glassbox.run import load_model

PLANTED = 2


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Layer 0: head 2 copies the previous token into the unembedding's input, head 0 attends uniformly and
    copies too (a weak, spread-out copier); the rest is random init."""
    return load_model(planted_gpt2(tmp_path_factory.mktemp("planted-gpt2"), previous=[(0, PLANTED)],
                                   uniform=[(0, 0)]))


CLEAN = [5, 9, 14, 22, 31, 40, 47, 53, 60, 66, 71, 11, 80]
CORRUPT = CLEAN[:-2] + [88, CLEAN[-1]]  # only the previous-to-last token differs
METRIC = f"logit_diff: {CLEAN[-2]} - {CORRUPT[-2]}"


def test_planted_head_attends_to_previous_token(planted):
    from glassbox.run import hooks

    _, cache = hooks.run_with_cache(planted, torch.tensor([CLEAN]), names="blocks.0.attn.pattern")
    pattern = cache["blocks.0.attn.pattern"][0, PLANTED]
    assert pattern.diagonal(-1).min() > 0.95


def test_planted_head_is_the_single_large_cell(planted):
    metric = patching.parse_metric(planted, METRIC)
    result = patching.patch(planted, CLEAN, CORRUPT, metric, "heads", "denoise")
    assert result.clean > 0 > result.corrupt
    effect = result.effect
    assert effect.shape == (2, 4)
    assert effect[0, PLANTED] > 0.7
    others = torch.cat([effect.flatten()[: PLANTED], effect.flatten()[PLANTED + 1 :]])
    assert others.abs().max() < 0.3
    assert result.top(1)[0][:2] == (0, PLANTED)
    noised = patching.patch(planted, CLEAN, CORRUPT, metric, "heads", "noise")
    assert noised.top(1)[0][:2] == (0, PLANTED) and noised.effect[0, PLANTED] > 0.7


def test_batched_patching_equals_one_run_per_cell(planted):
    metric = patching.parse_metric(planted, METRIC)
    batched = patching.patch(planted, CLEAN, CORRUPT, metric, "heads", batch_size=8)
    single = patching.patch(planted, CLEAN, CORRUPT, metric, "heads", batch_size=1)
    assert torch.allclose(batched.effect, single.effect, atol=1e-4)
    assert batched.forwards == 3 and single.forwards == 2 + 8


def test_residual_patching_shows_the_token_moving(planted):
    metric = patching.parse_metric(planted, METRIC)
    result = patching.patch(planted, CLEAN, CORRUPT, metric, "resid")
    n = len(CLEAN)
    assert result.effect.shape == (2, n)
    # layer 0's input: only the changed token matters; layer 1's input: it has been copied to the last position
    assert result.effect[0, n - 2] > 0.9 and result.effect[0, : n - 2].abs().max() < 1e-4
    assert result.effect[1, n - 1] > 0.7 and result.effect[1, : n - 2].abs().max() < 1e-4
    mlp = patching.patch(planted, CLEAN, CORRUPT, metric, "mlp")
    assert mlp.effect.abs().max() < 0.3  # the MLPs hold random init, not the mechanism


def test_patch_cli_json_and_errors(planted, capsys, tmp_path):
    folder = str(planted.source.parent if planted.source.is_file() else planted.source)
    with pytest.raises(SystemExit) as exc:
        main(["patch", folder, "--clean", "1 2", "--corrupt", "1 3", "--metric", METRIC, "--json"])
    assert exc.value.code == 2  # no tokenizer: text prompts cannot be encoded
    assert capsys.readouterr().err.startswith("error:")


@pytest.mark.slow
def test_ioi_patching_on_smollm2(reuse_smollm2, capsys, tmp_path):
    png = tmp_path / "ioi.png"
    with pytest.raises(SystemExit) as exc:
        main(["patch", "smollm2-135m", "--clean", "When Mary and John went to the store, John gave a drink to",
              "--corrupt", "When Mary and John went to the store, Mary gave a drink to",
              "--metric", "logit_diff: Mary - John", "--over", "heads", "--json", "--png", str(png)])
    assert exc.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    effect = torch.tensor(doc["effect"])
    assert effect.shape == (reuse_smollm2.n_layers, reuse_smollm2.n_heads)
    assert doc["clean"] > 0 > doc["corrupt"]  # the model prefers the indirect object
    # non-trivial: a few heads carry much of the effect, most carry little
    assert effect.abs().max() > 0.2
    assert (effect.abs() < 0.05).float().mean() > 0.5
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit) as exc:
        main(["patch", "smollm2-135m", "--clean", "a b c", "--corrupt", "a b", "--metric", "kl"])
    assert exc.value.code == 2
