"""How the book's figures look and are saved: its seaborn theme, its column width, one x label under
several panels, scatter labels placed where they overlap nothing, and the saving under a stable name.
"""
from __future__ import annotations

import functools
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns


def book_style(figure_function):
    """Draw inside the book's seaborn theme (paper context, white grid) without changing the caller's
    matplotlib settings: importing the package leaves the global style alone."""
    @functools.wraps(figure_function)
    def drawn(*args, **kwargs):
        with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.1):
            return figure_function(*args, **kwargs)
    return drawn

FIGURE_FORMATS = ("png", "svg")
# The width (inches) at which the HTML book shows a figure: a wider one is shrunk to it, its text with it
# (tests/helpers/figures.py derives it from the theme). Figures with one column per method fit in it.
BOOK_WIDTH = 8.2


def save_figure(fig: plt.Figure, name: str, directory: str | Path = "book/figures") -> list[Path]:
    """Save ``fig`` as ``directory/name.png`` (for the web) and ``.svg`` (vector, for print)."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"figure name {name!r} must be a plain file stem like 'models_training'")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in FIGURE_FORMATS:
        path = directory / f"{name}.{fmt}"
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
        tmp.replace(path)
        paths.append(path)
    return paths


def shared_xlabel(fig, label: str, fontsize: float | None = None) -> None:
    """One x label centred under all the panels of ``fig`` (a figure or a seaborn grid, laid out once it
    returns) instead of one under each, which would run into its neighbour's when longer than a panel."""
    grid = fig if isinstance(fig, sns.axisgrid.Grid) else None
    fig = getattr(fig, "figure", fig)
    layout = grid.tight_layout if grid is not None else fig.tight_layout
    layout()
    panels = [ax.get_position() for ax in fig.axes if ax.has_data()]
    fig.supxlabel(label, x=(min(p.x0 for p in panels) + max(p.x1 for p in panels)) / 2,
                  fontsize=fontsize or plt.rcParams["axes.labelsize"])
    layout()


# where a point's label may go, in order of preference: right, upper right, lower right, up, down, left, ...
_LABEL_DIRECTIONS = ((1, 0), (1, 1), (1, -1), (0, 1), (0, -1), (-1, 0), (-1, 1), (-1, -1))


def label_points(ax, xs, ys, labels, *, fontsize: float = 9, marker: float = 4.0) -> None:
    """Write each point's label beside it (data coordinates ``xs``, ``ys``) where it overlaps no other
    label and no marker (radius ``marker`` points) and stays inside the axes: the nearest free place
    among eight directions at growing distances, joined to its point by a thin line when it is not the
    nearest ring. Call it last, once the axes' position and limits are final (the places are pixels)."""
    fig = ax.figure
    per_pt = fig.dpi / 72
    data = np.column_stack([np.asarray(xs, float), np.asarray(ys, float)])
    points = ax.transData.transform(data)
    r = marker * per_pt
    taken = [(x - r, y - r, x + r, y + r) for x, y in points]  # markers, then the labels placed so far
    frame = ax.bbox

    def overlap(box):
        x0, y0, x1, y1 = box
        return sum(max(0.0, min(x1, b[2]) - max(x0, b[0])) * max(0.0, min(y1, b[3]) - max(y0, b[1])) for b in taken)

    for (px, py), xy, label in zip(points, data, labels):
        probe = matplotlib.text.Text(0, 0, str(label), fontsize=fontsize)
        probe.set_figure(fig)
        extent = probe.get_window_extent()  # the figure's renderer, whatever the backend
        w, h = extent.width, extent.height
        best = None
        for ring in range(8):
            distance = (marker + 2 + ring * fontsize) * per_pt
            for dx, dy in _LABEL_DIRECTIONS:
                norm = (dx * dx + dy * dy) ** 0.5
                ox, oy = dx / norm * distance, dy / norm * distance
                x0 = px + ox - (0 if dx > 0 else w if dx < 0 else w / 2)
                y0 = py + oy - (0 if dy > 0 else h if dy < 0 else h / 2)
                box = (x0, y0, x0 + w, y0 + h)
                outside = x0 < frame.x0 or y0 < frame.y0 or box[2] > frame.x1 or box[3] > frame.y1
                cost = (outside, overlap(box), ring)
                if best is None or cost < best[0]:
                    best = (cost, box, ox, oy, dx, dy, ring)
                if cost[:2] == (False, 0):
                    break
            if best[0][:2] == (False, 0):
                break
        _, box, ox, oy, dx, dy, ring = best
        taken.append(box)
        ax.annotate(str(label), tuple(xy), xytext=(ox / per_pt, oy / per_pt), textcoords="offset points",
                    fontsize=fontsize, ha="left" if dx > 0 else "right" if dx < 0 else "center",
                    va="bottom" if dy > 0 else "top" if dy < 0 else "center",
                    arrowprops=dict(arrowstyle="-", lw=0.5, color="0.5", shrinkA=0, shrinkB=2) if ring else None)
