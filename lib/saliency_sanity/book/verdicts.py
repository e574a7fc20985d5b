"""The rules a claim is judged by: the bounds fixed before any number was seen, and the verdict of
an interval against them.

Adebayo et al. (2018), Khakzar et al. (2020), Gupta et al. (2022), Datta et al. (2023), Hedström et al.
(2023), Sixt et al. (2020): each published claim becomes a :class:`Claim` whose measured :class:`Part`
(mean, 95 % interval) is judged by :func:`saliency_sanity.metrics.statistics.verdict` against its bound.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from ..metrics.statistics import interval_text, verdict


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
