"""What reproduces: one row per published claim, our number with its interval and a computed verdict.

The claims are those of Adebayo et al. (2018), Khakzar et al. (2020, abstract), Gupta et al. (2022,
abstract and code) and Datta et al. (2023, abstract), plus this book's own; each is measured from
the tables the chapters' notebooks saved (no recomputation) and judged by :func:`statistics.verdict`
on a 95 % interval, never by eye.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from .._core.draws import keyed_seed
from ..metrics.statistics import (VERDICTS, bootstrap_difference, bootstrap_intervals, bootstrap_mean,
                                  bootstrap_statistic, interval_text, verdict)

# An excess of Spearman (absolute maps) over the support-preserving null of at least this much calls two
# maps "similar", below it "changed". Fixed before any number of this edition was seen: the smallest
# rank correlation conventionally called more than weak.
SIMILAR = 0.2
# "a high similarity" of raw values (Input x Gradient, IG keep the input's structure): above this
HIGH = 0.5
UNSTABLE_SHARE = 0.01  # "a significant fraction" of inputs change label across seeds: at least 1 in 100
ENSEMBLE_SHARE = 0.9  # Datta et al.'s abstract: "within 90% of the gold standard, achieved by ensembling"
METRIC = "spearman_abs"
READING = "top"  # the claims are about the top layers (Adebayo et al. Sec. 4; Sixt et al.)
PAIR = "top1 vs bottom1"  # Khakzar et al.'s class pair
ALPHA = 0.05  # a contrast counts when its Holm-corrected Wilcoxon p is below it
# Two tests "rank the methods alike" when the Spearman correlation of their method rankings is at least
# this; fixed, like SIMILAR, before any number of the repaired tests was seen
SAME_RANKING = 0.9
# Back-propagated vectors of two classes have "converged" (Sixt et al. 2020) when their cosine at the
# layer nearest the input is above this (1 = identical direction); fixed before any number was seen
CONVERGED = 0.9

Tables = Mapping[str, pd.DataFrame]


def similar_or_changed(low: float, high: float) -> str:
    """The rule in words for an excess interval: "similar" above :data:`SIMILAR`, "changed" below."""
    if low != low or high != high:
        return "undefined"
    return ("similar" if low > SIMILAR else "changed" if high < SIMILAR else
            f"neither similar nor changed, its interval containing {SIMILAR:g}")

# how the scorecard names its sources (the book's chapters cite them with these bibliography keys)
SOURCE_NAMES = {"adebayo2018sanity": "Adebayo et al. (2018)", "khakzar2020rethinking": "Khakzar et al. (2020)",
                "gupta2022new": "Gupta et al. (2022)", "datta2023measuring": "Datta et al. (2023)",
                "hedstrom2023sanity": "Hedström et al. (2023)", "sixt2020explanations": "Sixt et al. (2020)",
                "": "this book"}


@dataclass(frozen=True)
class Part:
    """One measured quantity of a claim on one model: its mean, interval and the side it must fall on."""

    model: str
    quantity: str
    mean: float
    low: float
    high: float
    n: int
    claim: str  # ">" or "<"
    bound: float
    p: float = float("nan")  # Holm-corrected p of a contrast, where the part is one

    @property
    def verdict(self) -> str:
        v = verdict(self.low, self.high, claim=self.claim, bound=self.bound)
        # a contrast needs its test too: an interval on the right side with p >= alpha is only "partly"
        if v == "reproduced" and not np.isnan(self.p) and self.p >= ALPHA:
            return "partly"
        return v

    def text(self) -> str:
        p = "" if np.isnan(self.p) else f", Holm p={self.p:.2g}"
        return interval_text(self.mean, self.low, self.high) + p


@dataclass(frozen=True)
class Claim:
    key: str
    source: str  # bibliography key
    text: str  # the claim in one sentence
    measure: Callable[[Tables], list[Part]]
    quantity: str  # what the number is
    reason: str  # the likeliest reason when it does not reproduce here


def combine(verdicts: list[str]) -> str:
    """One verdict from several parts: all the same -> that one; any untestable -> not testable here;
    otherwise (mixed) partly."""
    if not verdicts or "not testable here" in verdicts:
        return "not testable here"
    return verdicts[0] if len(set(verdicts)) == 1 else "partly"


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


def scorecard(tables: Tables, claims: tuple[Claim, ...] = CLAIMS) -> pd.DataFrame:
    """One row per claim: ``claim``, ``source``, ``rule``, ``number`` ("mean [low, high]" per model or
    part), ``verdict`` (one of :data:`statistics.VERDICTS`, :func:`combine` of its parts) and ``why``
    (computed: which part is on which side of its bound; the likeliest reason where it does not reproduce)
    and ``parts`` (the :class:`Part` objects, for figures).
    A claim whose tables are missing is "not testable here"."""
    rows = []
    for claim in claims:
        try:
            parts = claim.measure(tables)
        except KeyError as missing:
            parts, why = [], f"no table {missing} in this build"
        else:
            why = _why(parts, claim)
        several_models = len({p.model for p in parts}) > 1
        number = "; ".join((f"{p.model}: " if several_models else "") + (f"{p.quantity} " if len(parts) > 1
                           and not several_models else "") + p.text() for p in parts)
        rows.append({"key": claim.key, "claim": claim.text, "source": claim.source, "rule": claim.quantity,
                     "number": number or "–", "verdict": combine([p.verdict for p in parts]), "why": why,
                     "parts": parts})
    out = pd.DataFrame(rows)
    assert set(out.verdict) <= set(VERDICTS)
    return out


def _why(parts: list[Part], claim: Claim) -> str:
    sides = []
    for p in parts:
        if p.verdict == "not testable here":
            sides.append("not among this build's methods" if p.model == "–" else
                         f"{p.model}: no interval ({p.n} defined values; a pair with a constant map has no similarity)")
            continue
        where = {"reproduced": "on the claimed side of", "not reproduced": "on the other side of",
                 "partly": "across"}[verdict(p.low, p.high, claim=p.claim, bound=p.bound)]
        test = "" if np.isnan(p.p) else f" (Holm p {'<' if p.p < ALPHA else '>='} {ALPHA:g})"
        sides.append(f"{p.model}: interval {where} {p.bound:g}{test}")
    text = "; ".join(sides)
    if combine([p.verdict for p in parts]) != "reproduced":
        text += f". Likeliest reason: {claim.reason}."
    return text


def verdict_counts(card: pd.DataFrame) -> dict[str, int]:
    """How many claims got each verdict (every verdict listed, zeros included)."""
    return {v: int((card.verdict == v).sum()) for v in VERDICTS}


def scorecard_markdown(card: pd.DataFrame, *, name: str = "tab-scorecard") -> str:
    """The scorecard as a MyST ``list-table`` (citations as ``{cite:t}`` roles) for a chapter to include."""
    def cell(text: str) -> str:
        return " ".join(str(text).split()) or "–"

    lines = [f"```{{list-table}} The scorecard: each claim, its source, the rule that judges it, our number "
             "(mean [95 % interval]; for contrasts the Holm-corrected p), the verdict, and why.",
             ":header-rows: 1", f":name: {name}", ":widths: 28 12 16 20 10 14", "",
             "* - Claim", "  - Source", "  - Rule", "  - Our number", "  - Verdict", "  - Why"]
    for row in card.itertuples():
        source = f"{{cite:t}}`{row.source}`" if row.source else "this book"
        lines += [f"* - {cell(row.claim)}", f"  - {source}", f"  - {cell(row.rule)}", f"  - {cell(row.number)}",
                  f"  - **{row.verdict}**", f"  - {cell(row.why)}"]
    return "\n".join(lines + ["```", ""])
