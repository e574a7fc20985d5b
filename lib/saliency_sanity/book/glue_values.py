"""A chapter's glued numbers as a plain dict ``{key: value}``: built and tested without a kernel, glued in one call.

The decision rule of every chapter (Adebayo et al. 2018, Sec. 4; Khakzar et al. 2020): a method is
"similar" when the whole interval of its excess lies above :data:`~saliency_sanity.book.verdicts.SIMILAR`,
"changed" when it lies below. Keys are made by :func:`~saliency_sanity.book.chapter.glue_key` only.
"""
from __future__ import annotations

from typing import Mapping

import pandas as pd

from ..metrics.statistics import interval_text
from .verdicts import SIMILAR


def interval_values(key: str, mean: float, low: float, high: float) -> dict:
    """``key`` (the mean), ``key_low``, ``key_high`` as floats and ``key_text`` (the interval in words),
    the four values :func:`~saliency_sanity.book.chapter.glue_interval` glues."""
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
