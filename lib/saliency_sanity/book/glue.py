"""Glued values: their keys, and a chapter's numbers as a plain dict ``{key: value}`` glued in one call.

The decision rule of every chapter (Adebayo et al. 2018, Sec. 4; Khakzar et al. 2020): a method is
"similar" when the whole interval of its excess lies above :data:`~saliency_sanity.book.verdicts.SIMILAR`,
"changed" when it lies below. Keys are made by :func:`glue_key` only, so every notebook sanitises them one way.
"""
from __future__ import annotations

import re
from typing import Mapping

import pandas as pd

from ..metrics.statistics import interval_text
from .verdicts import SIMILAR


def glue_key(*parts) -> str:
    """A glue key from its parts, every run of non-word characters made one ``_``
    (``"cs", "vgg", "top1 vs bottom1", "gradcam/positive"`` -> ``cs_vgg_top1_vs_bottom1_gradcam_positive``)."""
    return re.sub(r"\W+", "_", "_".join(str(p) for p in parts))


def interval_values(key: str, mean: float, low: float, high: float) -> dict:
    """``key`` (the mean), ``key_low``, ``key_high`` as floats and ``key_text`` (the interval in words),
    the four values :func:`glue_interval` glues."""
    values = {key + suffix: float(value) for suffix, value in (("", mean), ("_low", low), ("_high", high))}
    values[key + "_text"] = interval_text(mean, low, high, words=True)
    return values


def n_similar(low: pd.Series) -> int:
    """How many intervals lie wholly above the bound (their ``low`` above it; NaN never counts)."""
    return int((low > SIMILAR).sum())


def n_changed(high: pd.Series) -> int:
    """How many intervals lie wholly below the bound (their ``high`` below it; NaN never counts)."""
    return int((high < SIMILAR).sum())


def glue_all(values: Mapping) -> None:
    """Glue every value under its key, in order, without displaying it (myst-nb)."""
    from myst_nb import glue

    for key, value in values.items():
        glue(key, value, display=False)


def glue_interval(key: str, mean: float, low: float, high: float) -> None:
    """Glue ``key`` (the mean), ``key_low``, ``key_high`` and ``key_text`` (the mean and interval in words)."""
    glue_all(interval_values(key, mean, low, high))
