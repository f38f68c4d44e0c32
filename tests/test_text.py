"""run/text: the one --text reader of the lens, patching and `heads why` (BOS rule, token ids without a
tokenizer, the refusals), on a real tiny model with and without its word-level tokenizer."""

from __future__ import annotations

import dataclasses

import pytest
from tiny import save_tiny
from webkit import tiny_with_tokenizer

from glassbox.errors import BadInput
from glassbox.run import load_model
from glassbox.run.text import encode, token_str


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    return load_model(tiny_with_tokenizer("llama", root / "tok")), load_model(save_tiny("llama", root / "bare"))


def test_bos_first_only_where_the_model_needs_it(models):
    with_tok, _ = models
    plain = list(with_tok.tokenizer("cat sat on", add_special_tokens=False)["input_ids"])
    assert len(plain) == 3
    bos = dataclasses.replace(with_tok, needs_bos=True)
    if bos.bos_id is None:
        pytest.skip("this tokenizer and config name no start token")
    assert encode(bos, "cat sat on") == [bos.bos_id, *plain]
    assert encode(bos, "") == [bos.bos_id]
    assert encode(dataclasses.replace(with_tok, needs_bos=False), "cat sat on") == plain
    with pytest.raises(BadInput, match="no tokens"):
        encode(dataclasses.replace(with_tok, needs_bos=False), "")
    assert [token_str(with_tok, t) for t in plain] == ["cat", "sat", "on"]


def test_token_ids_without_a_tokenizer(models):
    _, bare = models
    assert bare.tokenizer is None
    with pytest.raises(BadInput, match="cannot be encoded"):
        encode(bare, "3 4 5")  # the lens and patching: text needs a tokenizer
    assert encode(bare, "3 4 5", ids_without_tokenizer=True) == [3, 4, 5]  # heads why: ids are accepted
    vocab = int(bare.config.vocab_size)
    for bad in ("three", f"1 {vocab}", "-1", ""):
        with pytest.raises(BadInput):
            encode(bare, bad, ids_without_tokenizer=True)
    assert token_str(bare, 7) == "<7>"
