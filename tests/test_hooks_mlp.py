"""run.hooks.MlpEdit: the MLP's write replaced at chosen rows and positions, recorded as edited, on every
architecture the run layer covers (the edit lives with the other edits, not in lens/patching)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from glassbox.run import hooks, load_model  # noqa: E402


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_mlp_edit_replaces_the_write_where_asked(tiny_folder, arch):
    loaded = load_model(tiny_folder(arch))
    ids = torch.randint(3, 90, (2, 7), generator=torch.Generator().manual_seed(0))
    clean_logits, clean = hooks.run_with_cache(loaded, ids, names=["blocks.0.mlp.out"])
    value = torch.full((clean["blocks.0.mlp.out"].shape[-1],), 0.5)
    edit = hooks.MlpEdit(0, value, positions=[2, 4], batch=1)
    logits, cache = hooks.run_with_cache(loaded, ids, names=["blocks.0.mlp.out"], edits=[edit])
    out, before = cache["blocks.0.mlp.out"], clean["blocks.0.mlp.out"]
    assert torch.equal(out[1, [2, 4]], value.expand(2, -1))
    untouched = torch.ones(out.shape[:2], dtype=torch.bool)
    untouched[1, [2, 4]] = False
    assert torch.allclose(out[untouched], before[untouched], atol=1e-6)
    assert torch.allclose(logits[0], clean_logits[0], atol=1e-5)  # row 0 is not edited
    assert not torch.allclose(logits[1, 2:], clean_logits[1, 2:], atol=1e-4)  # row 1 changes from position 2 on
    assert torch.allclose(logits[1, :2], clean_logits[1, :2], atol=1e-5)  # and not before it (causal)
