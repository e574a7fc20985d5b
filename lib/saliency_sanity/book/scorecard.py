"""What reproduces: one row per published claim, our number with its interval and a computed verdict.

The claims are those of Adebayo et al. (2018), Khakzar et al. (2020, abstract), Gupta et al. (2022,
abstract and code) and Datta et al. (2023, abstract), plus this book's own; each is measured from
the tables the chapters' notebooks saved (no recomputation) and judged by :func:`statistics.verdict`
on a 95 % interval, never by eye. The claims are in :mod:`.claims`, the rules in :mod:`.verdicts`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics.statistics import VERDICTS, verdict
from .claims import CLAIMS
from .verdicts import ALPHA, Claim, Part, Tables, combine


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
