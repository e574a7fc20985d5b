"""The published claims the scorecard tests, each with the quantity that measures it from the saved tables.

Adebayo et al. (2018), Khakzar et al. (2020, abstract), Gupta et al. (2022, abstract and code), Datta et
al. (2023, abstract), Hedström et al. (2023), Sixt et al. (2020), plus this book's own: one declarative
row per claim (same shape on purpose); the measures read the chapters' tables, never recompute them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .._core.draws import keyed_seed
from ..metrics.statistics import bootstrap_difference, bootstrap_intervals, bootstrap_mean, bootstrap_statistic
from .verdicts import (ALPHA, CONVERGED, ENSEMBLE_SHARE, HIGH, METRIC, PAIR, READING, SAME_RANKING, SIMILAR,
                       UNSTABLE_SHARE, Claim, Part, Tables)

# ----------------------------------------------------------------------------------------- quantities
def _interval_parts(frame: pd.DataFrame, column: str, claim: str, bound: float, quantity: str) -> list[Part]:
    if frame.empty:
        return [Part("–", quantity, np.nan, np.nan, np.nan, 0, claim, bound)]
    by = ["arch"] if "arch" in frame else []
    rows = bootstrap_intervals(frame if by else frame.assign(arch="vgg"), ["arch"], value=column)
    return [Part(r.arch, quantity, r.mean, r.low, r.high, int(r.n), claim, bound) for r in rows.itertuples()]


def randomization(label: str, claim: str, column: str = "excess", bound: float = SIMILAR):
    def measure(t: Tables) -> list[Part]:
        r = t["readings"]
        rows = r[(r.label == label) & (r.metric == METRIC) & (r.reading == READING)]
        return _interval_parts(rows, column, claim, bound, f"{column}, {METRIC}, top-half randomization")
    return measure


def class_pair(label: str, claim: str, bound: float = SIMILAR):
    def measure(t: Tables) -> list[Part]:
        c = t["class"]
        rows = c[(c.label == label) & (c.metric == METRIC) & (c.pair == PAIR)]
        return _interval_parts(rows, "excess", claim, bound, f"excess, {METRIC}, {PAIR}")
    return measure


def data_randomization(label: str, claim: str):
    def measure(t: Tables) -> list[Part]:
        d = t["data"]
        rows = d[(d.label == label) & (d.metric == METRIC)]
        return _interval_parts(rows, "excess", claim, SIMILAR, f"excess, {METRIC}, true vs permuted labels")
    return measure


def signed_restores(signed: str, other: str):
    """The signed variant's class similarity is lower than the positive/absolute one's (paired, Holm)."""
    def measure(t: Tables) -> list[Part]:
        c = t["contrasts"]
        rows = c[(c.a == signed) & (c.b == other) & (c.test == "class")]
        return [Part(r.arch, f"difference of excess ({signed} − {other})", r.difference, r.low, r.high, int(r.n),
                     "<", 0.0, r.p_holm) for r in rows.itertuples()]
    return measure


def _paired(frame: pd.DataFrame, index: str, column: str, a, b) -> np.ndarray:
    wide = frame.pivot_table(index=index, columns=column[0], values=column[1], aggfunc="first")
    return (wide[a] - wide[b]).dropna().to_numpy()


def _mean_part(values: np.ndarray, quantity: str, claim: str, bound: float, key: str) -> Part:
    mean, low, high = bootstrap_mean([values], seed=keyed_seed(0, "scorecard", key)) if len(values) else (np.nan,) * 3
    return Part("vgg", quantity, mean, low, high, len(values), claim, bound)


def soundness_difference(metric: str, a: str, b: str, claim: str):
    def measure(t: Tables) -> list[Part]:
        diff = _paired(t["soundness"], "image", ("method", metric), a, b)
        return [_mean_part(diff, f"{metric}: {a} − {b}", claim, 0.0, f"{metric}{a}{b}")]
    return measure


def both(*measures):
    def measure(t: Tables) -> list[Part]:
        return [part for m in measures for part in m(t)]
    return measure


def ablation_difference(metric: str, claim: str):
    def measure(t: Tables) -> list[Part]:
        a = t["ablation"].assign(setting=lambda f: np.where(f.tv & (f.upsampling > 1), "tv_up", "neither"))
        a = a[(a.tv & (a.upsampling > 1)) | (~a.tv & (a.upsampling == 1))]
        diff = _paired(a, "image", ("setting", metric), "tv_up", "neither")
        return [_mean_part(diff, f"{metric}: TV + upsampling − neither", claim, 0.0, f"ablation{metric}")]
    return measure


def unstable_share(t: Tables) -> list[Part]:
    inst = t["instability"]
    values = (inst.label_entropy > 0).astype(float).to_numpy()
    return [_mean_part(values, "share of test images whose label changes across seeds", ">", UNSTABLE_SHARE,
                       "unstable")]


def unstable_less_accurate(t: Tables) -> list[Part]:
    inst = t["instability"]
    stable = inst.label_entropy == 0
    mean, low, high = bootstrap_difference(inst.accuracy[stable], inst.accuracy[~stable],
                                           seed=keyed_seed(0, "scorecard", "accuracy"))
    return [Part("vgg", "accuracy across seeds: stable − unstable images", mean, low, high, len(inst), ">", 0.0)]


def temporal_predicts(t: Tables) -> list[Part]:
    inst = t["instability"][["temporal_label_entropy", "label_entropy"]].dropna()
    x, y = inst.temporal_label_entropy.to_numpy(), inst.label_entropy.to_numpy()
    rho, low, high = bootstrap_statistic(lambda i: _spearman(x[i], y[i]), len(x), n_boot=1000,
                                         seed=keyed_seed(0, "scorecard", "temporal"))
    return [Part("vgg", "Spearman(within-run entropy, across-run entropy)", rho, low, high, len(x), ">", 0.0)]


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return np.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def localized_share(t: Tables) -> list[Part]:
    """Share of the ensemble's reduction of unstable images that localized distillation reaches, with a
    bootstrap over test images (the same images resampled for all three predictors)."""
    m = t["mitigation"].pivot(index="sample", columns="mitigation", values="unstable").astype(float)
    if not {"none", "localized_distillation", "ensemble"} <= set(m.columns):
        return [Part("vgg", "share of the ensemble's reduction", np.nan, np.nan, np.nan, 0, ">", ENSEMBLE_SHARE)]
    none, local, ens = (m[c].to_numpy() for c in ("none", "localized_distillation", "ensemble"))

    def share(i):
        gain = none[i].mean() - ens[i].mean()
        return (none[i].mean() - local[i].mean()) / gain if gain > 0 else np.nan

    estimate, low, high = bootstrap_statistic(share, len(none), seed=keyed_seed(0, "scorecard", "localized"))
    return [Part("vgg", "share of the ensemble's reduction of unstable images", estimate, low, high,
                 len(none), ">", ENSEMBLE_SHARE)]


def agreement_lower_on_unstable(t: Tables) -> list[Part]:
    a = t["agreement"]
    a = a[(a.target == "true label") & ~a.method.str.startswith("control")]
    per_image = a.groupby("sample").agg(map_stability=("map_stability", "mean"), unstable=("unstable", "first"))
    unstable = per_image.unstable.astype(bool)
    mean, low, high = bootstrap_difference(per_image.map_stability[~unstable], per_image.map_stability[unstable],
                                           seed=keyed_seed(0, "scorecard", "agreement"))
    return [Part("vgg", "map agreement (true class): stable − unstable images", mean, low, high, len(per_image),
                 ">", 0.0)]


def ranking(a: str, b: str):
    """How alike tests ``a`` and ``b`` rank the methods (:func:`readings.ranking_agreement`): must be
    below :data:`SAME_RANKING` for "ranks differently"."""
    def measure(t: Tables) -> list[Part]:
        from ..checks.readings import ranking_agreement

        rows = ranking_agreement(t["mprt_scores"], a, b)
        return [Part(r.arch, f"Spearman of the method rankings ({a} vs {b})", r.rho, r.low, r.high,
                     int(r.n_units), "<", SAME_RANKING) for r in rows.itertuples()]
    return measure


def converged(label: str, claim: str):
    """Cosine of the back-propagated vectors of two classes at the layer nearest the input (Sixt et al.)."""
    def measure(t: Tables) -> list[Part]:
        c = t["convergence"]
        rows = c[(c.label == label) & (c.position == 0)]
        return _interval_parts(rows, "value", claim, CONVERGED, "cosine of two classes' vectors at the first layer")
    return measure


# ----------------------------------------------------------------------------------------- the claims
_CHANGED = "a change of the model's output does not reach the map's ranks beyond the shared support"
CLAIMS: tuple[Claim, ...] = (
    Claim("adebayo-gradient", "adebayo2018sanity", "Gradient maps change once the top layers are randomized.",
          randomization("gradient", "<"), f"excess < {SIMILAR:g} after top-half randomization", _CHANGED),
    Claim("adebayo-gradcam", "adebayo2018sanity", "Grad-CAM maps change once the top layers are randomized.",
          randomization("gradcam", "<"), f"excess < {SIMILAR:g} after top-half randomization", _CHANGED),
    Claim("adebayo-guided-backprop", "adebayo2018sanity",
          "Guided Backprop maps stay similar when the top layers are randomized.",
          randomization("guided_backprop", ">"), f"excess > {SIMILAR:g} after top-half randomization",
          "on a small network the guided backward pass reaches the randomized layers' weights"),
    Claim("adebayo-guided-gradcam", "adebayo2018sanity",
          "Guided Grad-CAM maps stay similar when the top layers are randomized.",
          randomization("guided_gradcam", ">"), f"excess > {SIMILAR:g} after top-half randomization",
          "its Grad-CAM factor changes with the top layers and masks the guided part"),
    Claim("adebayo-input-x-gradient", "adebayo2018sanity",
          "Input × Gradient keeps a high similarity of absolute maps under randomization, because of the input.",
          randomization("input_x_gradient", ">", column="value", bound=HIGH),
          f"Spearman (abs) > {HIGH:g} after top-half randomization", "the input's zeros do not dominate the ranks"),
    Claim("adebayo-integrated-gradients", "adebayo2018sanity",
          "Integrated Gradients keeps a high similarity of absolute maps under randomization, because of the input.",
          randomization("integrated_gradients", ">", column="value", bound=HIGH),
          f"Spearman (abs) > {HIGH:g} after top-half randomization", "the input's zeros do not dominate the ranks"),
    Claim("adebayo-data-gradient", "adebayo2018sanity",
          "Gradient maps of a model trained on permuted labels differ from the true-label model's.",
          data_randomization("gradient", "<"), f"excess < {SIMILAR:g}, true vs permuted labels",
          "both models share the same images' edges, which the gradient follows"),
    Claim("adebayo-data-guided-backprop", "adebayo2018sanity",
          "Guided Backprop maps of a model trained on permuted labels stay similar to the true-label model's.",
          data_randomization("guided_backprop", ">"), f"excess > {SIMILAR:g}, true vs permuted labels",
          "the two models' weights differ enough to reach the guided maps"),
    Claim("khakzar-gradcam-pp-class", "khakzar2020rethinking",
          "Positive aggregation makes Grad-CAM++ maps insensitive to the explained class.",
          class_pair("gradcam_pp", ">"), f"excess > {SIMILAR:g}, top-1 vs least likely class",
          "the positive channel weights still differ between classes on this model"),
    Claim("khakzar-fullgrad-class", "khakzar2020rethinking",
          "Absolute aggregation makes FullGrad maps insensitive to the explained class.",
          class_pair("fullgrad", ">"), f"excess > {SIMILAR:g}, top-1 vs least likely class",
          "the bias-gradient terms differ between classes on this model"),
    *(Claim(f"khakzar-{label}-class", "khakzar2020rethinking",
            f"Positive propagation makes {name} maps insensitive to the explained class.",
            class_pair(label, ">"), f"excess > {SIMILAR:g}, top-1 vs least likely class",
            "on a small network the positive backward pass still carries the class")
      for label, name in (("guided_backprop", "Guided Backprop"), ("rectgrad", "RectGrad"),
                          ("lrp_alpha1_beta0", "LRP-α1β0"), ("lrp_zplus", "LRP-z⁺"))),
    *(Claim(f"khakzar-{label}-randomization", "khakzar2020rethinking",
            f"Positive propagation makes {name} maps insensitive to parameter randomization.",
            randomization(label, ">"), f"excess > {SIMILAR:g} after top-half randomization",
            "on a small network the positive backward pass reaches the randomized weights")
      for label, name in (("rectgrad", "RectGrad"), ("lrp_alpha1_beta0", "LRP-α1β0"), ("lrp_zplus", "LRP-z⁺"))),
    Claim("khakzar-gradcam-pp-signed", "khakzar2020rethinking",
          "Keeping the sign restores class sensitivity: signed Grad-CAM++ maps are less class-similar "
          "than positive ones.",
          signed_restores("gradcam_pp/signed", "gradcam_pp"), f"difference < 0, Holm p < {ALPHA:g}",
          "the positive weights already separate the classes here"),
    Claim("khakzar-fullgrad-signed", "khakzar2020rethinking",
          "Keeping the sign restores class sensitivity: signed FullGrad maps are less class-similar "
          "than absolute ones.",
          signed_restores("fullgrad/signed", "fullgrad"), f"difference < 0, Holm p < {ALPHA:g}",
          "the absolute terms already separate the classes here"),
    Claim("gupta-gradient", "gupta2022new", "Gradient maps are sound but incomplete.",
          both(soundness_difference("soundness", "gradient", "control: gradient, class-agnostic", ">"),
               soundness_difference("completeness", "gradient", "sound_mask", "<")),
          "soundness above the class-agnostic control; completeness below the mask's",
          "the 28×28 inputs and the mean fill make few pixels prove any class"),
    Claim("gupta-mask", "gupta2022new", "The sound-mask method is complete and sound.",
          both(soundness_difference("completeness", "sound_mask", "gradient", ">"),
               soundness_difference("soundness", "sound_mask", "control: gradient, class-agnostic", ">")),
          "completeness above the gradient's; soundness above the class-agnostic control",
          "masks optimised for a wrong label still find pixels that raise it"),
    Claim("gupta-ablation", "gupta2022new", "TV regularization and upsampling trade completeness for soundness.",
          both(ablation_difference("soundness", ">"), ablation_difference("completeness", "<")),
          "soundness up and completeness down with TV and ×4 upsampling (vs neither)",
          "on 28×28 images a 7×7 mask is already smooth"),
    Claim("datta-unstable", "datta2023measuring",
          "Retraining with another seed changes the prediction of a significant fraction of inputs.",
          unstable_share, f"share > {UNSTABLE_SHARE:.0%} of the test images", "a small network on an easy task"),
    Claim("datta-singles-out", "datta2023measuring",
          "Label entropy across runs singles out the inputs the models get wrong.",
          unstable_less_accurate, "accuracy higher on stable than on unstable images",
          "unstable images are as easy as stable ones here"),
    Claim("datta-temporal", "datta2023measuring", "Within-run (temporal) label entropy predicts across-run entropy.",
          temporal_predicts, "Spearman > 0", "too few epochs for the within-run entropy to vary"),
    Claim("datta-localized", "datta2023measuring",
          "Localized mitigation comes within 90 % of the ensemble's reduction of instability.",
          localized_share, f"share > {ENSEMBLE_SHARE:g}", "too few unstable images flagged in short runs"),
    Claim("hedstrom-smooth-ranking", "hedstrom2023sanity",
          "The smooth MPRT ranks the methods differently from the plain MPRT.",
          ranking("mprt", "smooth_mprt"), f"Spearman of the rankings < {SAME_RANKING:g}",
          "on 28×28 inputs the maps carry little shattered-gradient noise for the smoothing to remove"),
    Claim("hedstrom-efficient-ranking", "hedstrom2023sanity",
          "The efficient MPRT ranks the methods differently from the plain MPRT.",
          ranking("mprt", "efficient_mprt"), f"Spearman of the rankings < {SAME_RANKING:g}",
          "the maps that change most under randomization are also those whose histograms spread most"),
    *(Claim(f"sixt-converge-{label}", "sixt2020explanations",
            f"{name}'s back-propagated vectors of two classes converge towards the input.",
            converged(label, ">"), f"cosine > {CONVERGED:g} at the first layer",
            "too few layers between the logits and the input for the vectors to converge")
      for label, name in (("lrp_zplus", "LRP-z⁺"), ("lrp_alpha1_beta0", "LRP-α1β0"))),
    Claim("sixt-gradient-control", "sixt2020explanations",
          "The gradient's back-propagated vectors of two classes do not converge.",
          converged("gradient", "<"), f"cosine < {CONVERGED:g} at the first layer",
          "on a small ReLU network two classes' gradients share most of their active paths"),
    Claim("own-fixed-class-agreement", "",
          "Map agreement across seeds is lower on unstable inputs, also for a fixed (true) class.",
          agreement_lower_on_unstable, "difference > 0", "the map's instability does not follow the prediction's"),
)
