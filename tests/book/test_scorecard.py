"""The scorecard's verdicts, computed from hand-made tables whose answer is known."""
import numpy as np
import pandas as pd
import pytest

from saliency_sanity.book import claims, verdicts
from saliency_sanity.book import scorecard as sc
from saliency_sanity.metrics.statistics import VERDICTS


def _readings(label_values: dict, archs=("vgg", "resnet"), seeds=(0, 1, 2), images=40, spread=0.05):
    rng = np.random.default_rng(0)
    rows = []
    for arch in archs:
        for label, excess in label_values.items():
            value = excess[arch] if isinstance(excess, dict) else excess
            for seed in seeds:
                for image in range(images):
                    e = value + spread * rng.standard_normal()
                    rows.append({"arch": arch, "seed": seed, "label": label, "metric": "spearman_abs",
                                 "reading": "top", "image": image, "value": e + 0.3, "null": 0.3, "excess": e})
    return pd.DataFrame(rows)


def _card(tables, keys):
    chosen = tuple(c for c in claims.CLAIMS if c.key in keys)
    return sc.scorecard(tables, chosen).set_index("key")


def test_randomization_claims_follow_the_interval_rule():
    tables = {"readings": _readings({"gradient": 0.02, "gradcam": {"vgg": 0.02, "resnet": 0.6},
                                     "guided_backprop": 0.6, "guided_gradcam": 0.2})}
    card = _card(tables, {"adebayo-gradient", "adebayo-gradcam", "adebayo-guided-backprop", "adebayo-guided-gradcam"})
    assert card.loc["adebayo-gradient", "verdict"] == "reproduced"  # changed on both models
    assert card.loc["adebayo-gradcam", "verdict"] == "partly"  # the models disagree
    assert card.loc["adebayo-guided-backprop", "verdict"] == "reproduced"  # similar on both
    assert card.loc["adebayo-guided-gradcam", "verdict"] == "partly"  # the interval contains the bound
    assert "vgg:" in card.loc["adebayo-gradient", "number"] and "resnet:" in card.loc["adebayo-gradient", "number"]
    assert "Likeliest reason" in card.loc["adebayo-gradcam", "why"]
    assert "Likeliest reason" not in card.loc["adebayo-gradient", "why"]


def test_a_claim_that_fails_everywhere_is_not_reproduced():
    card = _card({"readings": _readings({"guided_backprop": -0.1})}, {"adebayo-guided-backprop"})
    assert card.loc["adebayo-guided-backprop", "verdict"] == "not reproduced"


def test_missing_table_or_method_is_not_testable():
    card = _card({}, {"adebayo-gradient", "datta-temporal"})
    assert set(card.verdict) == {"not testable here"}
    assert "no table" in card.loc["adebayo-gradient", "why"]
    card = _card({"readings": _readings({"gradient": 0.0})}, {"adebayo-guided-backprop"})
    assert card.loc["adebayo-guided-backprop", "verdict"] == "not testable here"


def test_contrast_needs_its_test_too():
    base = {"arch": "vgg", "a": "gradcam_pp/signed", "b": "gradcam_pp", "test": "class", "n": 100}
    contrasts = pd.DataFrame([{**base, "difference": -0.2, "low": -0.3, "high": -0.1, "p_holm": 0.001},
                              {**base, "arch": "resnet", "difference": -0.2, "low": -0.3, "high": -0.1,
                               "p_holm": 0.2}])
    card = _card({"contrasts": contrasts}, {"khakzar-gradcam-pp-signed"})
    parts = card.loc["khakzar-gradcam-pp-signed", "parts"]
    assert [p.verdict for p in parts] == ["reproduced", "partly"]
    assert card.loc["khakzar-gradcam-pp-signed", "verdict"] == "partly"


def test_combine_and_counts():
    assert verdicts.combine(["reproduced", "reproduced"]) == "reproduced"
    assert verdicts.combine(["reproduced", "not reproduced"]) == "partly"
    assert verdicts.combine(["reproduced", "not testable here"]) == "not testable here"
    assert verdicts.combine([]) == "not testable here"
    card = pd.DataFrame({"verdict": ["reproduced", "partly", "reproduced"]})
    assert sc.verdict_counts(card) == {"reproduced": 2, "partly": 1, "not reproduced": 0, "not testable here": 0}


def test_every_claim_has_a_source_and_a_unique_key():
    keys = [c.key for c in claims.CLAIMS]
    assert len(keys) == len(set(keys)) and len(keys) >= 14
    assert all(c.source in verdicts.SOURCE_NAMES for c in claims.CLAIMS)


def test_instability_claims_on_a_known_table():
    rng = np.random.default_rng(1)
    n = 400
    across = np.where(rng.random(n) < 0.2, rng.random(n), 0.0)
    inst = pd.DataFrame({"sample": range(n), "label_entropy": across,
                         "temporal_label_entropy": across + 0.05 * rng.random(n),
                         "accuracy": np.where(across > 0, 0.5, 1.0)})
    card = _card({"instability": inst}, {"datta-unstable", "datta-singles-out", "datta-temporal"})
    assert (card.verdict == "reproduced").all(), card[["number", "why"]]


@pytest.mark.parametrize("share, expected", [(1.0, "reproduced"), (0.0, "not reproduced")])
def test_localized_share(share, expected):
    n = 1000
    none = np.zeros(n, bool)
    none[:300] = True
    ens = np.zeros(n, bool)
    ens[:100] = True
    local = ens.copy() if share == 1.0 else none.copy()
    frame = pd.concat([pd.DataFrame({"mitigation": m, "sample": range(n), "unstable": u})
                       for m, u in (("none", none), ("ensemble", ens), ("localized_distillation", local))])
    card = _card({"mitigation": frame}, {"datta-localized"})
    assert card.loc["datta-localized", "verdict"] == expected
    assert card.loc["datta-localized", "verdict"] in VERDICTS


@pytest.mark.parametrize("low, high, word", [(0.25, 0.4, "similar"), (-0.1, 0.1, "changed"), (np.nan, 0.1, "undefined")])
def test_similar_or_changed(low, high, word):
    assert verdicts.similar_or_changed(low, high) == word
    assert verdicts.similar_or_changed(0.1, 0.3).startswith("neither")


def test_interval_text_never_prints_nan():
    from saliency_sanity.metrics.statistics import interval_text

    assert interval_text(0.123, 0.05, 0.2) == "+0.12 [+0.05, +0.20]"
    assert interval_text(np.nan, np.nan, np.nan) == "–"
    assert "nan" not in interval_text(np.nan, np.nan, np.nan, words=True)
    assert interval_text(0.1, np.nan, np.nan, words=True).startswith("+0.10 (too few")


def test_glue_key_joins_parts_with_one_underscore():
    from saliency_sanity.book.glue import glue_key

    assert glue_key("cs", "vgg", "top1 vs bottom1", "gradcam/positive") == "cs_vgg_top1_vs_bottom1_gradcam_positive"


def _mprt_scores(orders: dict, labels=8, seeds=(0, 1), images=10, noise=0.02):
    """Per test, the methods' sensitivities in the given order ("same" as the plain MPRT or "reversed")."""
    from saliency_sanity.checks.readings import MPRT_TESTS

    rng = np.random.default_rng(3)
    rows = []
    for test, order in {"mprt": "same", **orders}.items():
        for i in range(labels):
            s = i if order == "same" else labels - i
            for seed in seeds:
                for image in range(images):
                    v = s + noise * rng.standard_normal()
                    rows.append({"arch": "vgg", "seed": seed, "image": image, "label": f"m{i}", "handling": "h",
                                 "test": test, "sensitivity": v, "score": v * MPRT_TESTS[test]})
    return pd.DataFrame(rows)


def test_ranking_claims_read_the_rank_correlation():
    tables = {"mprt_scores": _mprt_scores({"smooth_mprt": "same", "efficient_mprt": "reversed"})}
    card = _card(tables, {"hedstrom-smooth-ranking", "hedstrom-efficient-ranking"})
    assert card.loc["hedstrom-smooth-ranking", "verdict"] == "not reproduced"  # the same ranking: rho = 1
    assert card.loc["hedstrom-efficient-ranking", "verdict"] == "reproduced"  # rho = -1 < SAME_RANKING
    assert "Likeliest reason" in card.loc["hedstrom-smooth-ranking", "why"]


def test_convergence_claims_read_the_first_layer():
    rng = np.random.default_rng(4)
    rows = [{"arch": arch, "seed": seed, "image": image, "label": label, "position": position,
             "value": float(np.clip(v + 0.01 * rng.standard_normal(), 0, 1))}
            for arch in ("vgg", "resnet") for seed in (0, 1) for image in range(20)
            for label, first in (("lrp_zplus", 0.98), ("lrp_alpha1_beta0", 0.5), ("gradient", 0.2))
            for position, v in ((0, first), (3, 0.1))]
    card = _card({"convergence": pd.DataFrame(rows)},
                 {"sixt-converge-lrp_zplus", "sixt-converge-lrp_alpha1_beta0", "sixt-gradient-control"})
    assert card.loc["sixt-converge-lrp_zplus", "verdict"] == "reproduced"
    assert card.loc["sixt-converge-lrp_alpha1_beta0", "verdict"] == "not reproduced"
    assert card.loc["sixt-gradient-control", "verdict"] == "reproduced"
