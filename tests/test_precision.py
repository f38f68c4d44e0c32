"""Verdicts half precision could have changed are marked (issue 22): heads/precision.py's rule on constructed
evidence (a borderline kind, a robust one, a score at its threshold), the same evidence read in float32 (nothing
marked), and the atlas of a tiny model carrying the marks exactly where the rule puts them."""

from __future__ import annotations

import pytest
from planted import planted_induction

from glassbox.heads import precision, validate
from glassbox.heads.atlas import Settings, build_atlas, threshold
from glassbox.run import load_model
from glassbox.run.placement import eps

N_TESTS = 90
LOGIT_RMS = 11.3  # SmolLM2's probe batch: one bfloat16 rounding step ≈ 0.088 nats


def kind(effect: float, ci: tuple[float, float], null_mean: float, null_sd: float, n: int = 20) -> dict:
    """One kind of evidence as the atlas keeps it, its p's from validate's own test and Holm's bound."""
    up, down = validate.tails(effect, n, null_mean, null_sd)
    return {"effect": effect, "ci": list(ci), "null_n": n, "null_mean": null_mean, "null_sd": null_sd,
            "p": min(1.0, up * N_TESTS), "p_negative": min(1.0, down * N_TESTS)}


# 11.1 previous_token in bfloat16 (6 Dec 2026): validated, its interval's lower end inside one rounding step
BORDERLINE = {"total": kind(0.133, (0.035, 0.23), -0.012, 0.012)}
ROBUST = {"total": kind(1.5, (1.2, 1.8), 0.02, 0.05)}
NEARLY = {"total": kind(0.11, (0.02, 0.2), 0.0, 0.04)}  # not validated (p too high), close to it


def marks(kinds: dict, dtype: str) -> tuple[str | None, list[str]]:
    step = validate.rounding_step(dtype, LOGIT_RMS)
    return precision.verdict(kinds, step, validate.noise_floor(dtype, LOGIT_RMS), N_TESTS, dtype)


def test_the_borderline_case_is_validated_and_marked_in_bfloat16_only():
    view = {k: dict(e, p_down=e["p_negative"]) for k, e in BORDERLINE.items()}
    assert validate.decide(view, validate.noise_floor("bfloat16", LOGIT_RMS))[0]  # validated in both
    assert validate.decide(view, validate.noise_floor("float32", LOGIT_RMS))[0]
    why, touchy = marks(BORDERLINE, "bfloat16")
    assert why and why.startswith("validated, but not") and touchy == ["total"]
    assert marks(BORDERLINE, "float32") == (None, [])


def test_a_robust_verdict_is_never_marked():
    for dtype in ("bfloat16", "float16", "float32"):
        assert marks(ROBUST, dtype) == (None, [])


def test_a_verdict_that_rounding_could_grant_is_marked_the_other_way():
    view = {k: dict(e, p_down=e["p_negative"]) for k, e in NEARLY.items()}
    assert not validate.decide(view, validate.noise_floor("bfloat16", LOGIT_RMS))[0]
    why, _ = marks(NEARLY, "bfloat16")
    assert why and why.startswith("not validated, but validated")
    assert marks(NEARLY, "float32") == (None, [])


def test_moving_by_nothing_decides_as_the_atlas_did():
    for kinds in (BORDERLINE, ROBUST, NEARLY):
        for name, e in kinds.items():
            same = precision._moved(e, 0.0, N_TESTS)
            assert (same["p"], same["p_down"]) == (e["p"], e["p_negative"]), name


def test_a_score_at_its_threshold_is_marked_in_half_precision_only():
    # 23.3 successor: 0.3455 in float32 (not listed), 0.3636 in bfloat16 (listed and validated)
    assert precision.near_threshold("successor", 0.3636, threshold("successor"), "bfloat16")
    assert precision.near_threshold("successor", 0.3455, threshold("successor"), "bfloat16")
    assert precision.near_threshold("successor", 0.3636, threshold("successor"), "float32") is None
    assert precision.near_threshold("previous_token", 0.82, threshold("previous_token"), "bfloat16") is None
    assert precision.score_margin("successor", "bfloat16") > precision.score_margin("induction", "bfloat16")
    assert precision.score_margin("induction", "float32") < 1e-5 * 2 ** 7 * eps("float32") * 2 ** 23


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> object:
    return planted_induction(tmp_path_factory.mktemp("planted"))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_atlas_carries_the_marks_where_the_rule_puts_them(planted, dtype):
    """The planted previous-token → induction circuit (tests/planted.py), its atlas in each dtype."""
    atlas = build_atlas(load_model(planted, dtype=dtype), Settings(seed=0))
    sig = atlas["significance"]
    assert atlas["dtype"] == dtype and sig["rounding_step"] > 0 and dtype in sig["precision_rule"]
    checked = 0
    for h in atlas["heads"]:
        for r in h["roles"]:
            checked += 1
            why, touchy = precision.verdict(r["kinds"], sig["rounding_step"], sig["noise_floor"], sig["tests"], dtype)
            near = precision.near_threshold(r["role"], r["score"], threshold(r["role"]), dtype)
            assert r.get("precision_sensitive", False) == bool(why or near), (h["layer"], h["head"], r["role"])
            assert {k for k, e in r["kinds"].items() if e.get("precision_sensitive")} == set(touchy)
    near = {(x["layer"], x["head"], x["role"]) for x in sig["precision_near_threshold"]}
    for h in atlas["heads"]:  # listed exactly when within the margin (the JSON's scores are rounded to 1e-4)
        for n in threshold_roles(atlas):
            gap = abs(h["scores"][n] - threshold(n)) - precision.score_margin(n, dtype)
            assert gap <= 1e-4 if (h["layer"], h["head"], n) in near else gap >= -1e-4, (h["layer"], h["head"], n)
    assert checked, "the tiny model has checked roles"
    if dtype == "float32":  # float32's step is ~1e-7 of the logits' scale: nothing is marked
        assert not any(r.get("precision_sensitive") for h in atlas["heads"] for r in h["roles"])


def threshold_roles(atlas: dict) -> list[str]:
    from glassbox.heads.atlas import role_names

    return role_names(atlas)


def test_bfloat16_marks_appear_in_the_table():
    from rich.console import Console

    from glassbox.heads.render import leading, table

    role = {"role": "previous_token", "score": 0.82, "ablation_effect": 0.133, "validated": True, "basis": "total",
            "effect": 0.133, "evidence": ["total"], "p": 0.016, "null_mean": -0.012, "null_sd": 0.012,
            "precision_sensitive": True, "precision_why": "validated, but not with every effect 0.088 nats lower"}
    atlas = {"model": "m", "dtype": "bfloat16", "n_layers": 12, "n_heads": 9,
             "heads": [{"layer": 11, "head": 1, "scores": {"previous_token": 0.82}, "roles": [role]}]}
    assert leading(role) == "✓≈ +0.133 (total)"
    console = Console(width=300, record=True)
    console.print(table(atlas))
    text = console.export_text()
    assert "11.1 0.82 ✓≈ +0.133 (total)" in text and "≈ precision-sensitive: rounding in bfloat16" in text
    plain = dict(role, precision_sensitive=False)
    assert leading(plain) == "✓ +0.133 (total)"


def test_float16_marks_every_sink_removal_verdict():
    """float16's range flushes the weights the sink removal renormalizes: its verdicts are marked whatever
    their size; in bfloat16 (float32's range) and float32 they are not, nor any other intervention."""
    assert precision.range_hazard("no_sink", "float16")
    assert precision.range_hazard("no_sink", "bfloat16") is None and precision.range_hazard("no_sink", "float32") is None
    assert precision.range_hazard("mean", "float16") is None
    assert "float16" in precision.rule("float16", 0.011) and "sink" not in precision.rule("bfloat16", 0.088)
