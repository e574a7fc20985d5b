"""Markdown tables for the performance appendix, written from the benchmark CSVs (never by hand).

    python benchmarks/report.py        # benchmarks/results/*.csv -> benchmarks/results/*.md

``book/performance.md`` includes the ``.md`` files, so a rerun of a benchmark followed by this
script updates the book's numbers.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"

METHODS = {"method": "method", "ours_maps_per_s": "ours (maps/s)", "peer_maps_per_s": "peer (maps/s)",
           "speedup_vs_peer": "ours / peer", "cost_in_passes": "cost (passes)"}
RANDOMIZATION = {"case": "case", "images": "images", "stages": "layers", "ours_s": "ours (s)",
                 "quantus_s": "Quantus (s)", "speedup_vs_quantus": "Quantus / ours",
                 "ours_per_stage_s": "ours per stage (s)",
                 "unavoidable_passes_per_stage_s": "passes per stage (s)",
                 "per_stage_over_passes": "per stage / passes"}


def table(frame: pd.DataFrame, columns: dict) -> str:
    shown = frame[[c for c in columns if c in frame.columns]].rename(columns=columns)
    # tabulate writes its missingval only for None, a float NaN would print "nan"
    shown = shown.astype(object).where(shown.notna(), None)
    return shown.to_markdown(index=False, floatfmt=".3g", missingval="—")


def main() -> None:
    for csv in sorted(RESULTS.glob("*.csv")):
        frame = pd.read_csv(csv)
        if csv.stem.startswith("methods_"):
            columns = METHODS
        elif csv.stem.startswith("randomization_"):
            columns = RANDOMIZATION
        else:
            columns = {c: c for c in frame.columns}
        csv.with_suffix(".md").write_text(table(frame, columns) + "\n")
        print(f"wrote {csv.with_suffix('.md')}")


if __name__ == "__main__":
    main()
