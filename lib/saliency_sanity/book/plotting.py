"""Figure functions shared by every notebook (their look and saving: :mod:`.figure_style`)."""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .figure_style import BOOK_WIDTH, book_style, label_points, shared_xlabel


@book_style
def training_curves(history: pd.DataFrame) -> plt.Figure:
    """Test accuracy and training loss per epoch, one line per architecture (and seed)."""
    frame = history.copy()
    frame["model"] = frame["arch"]
    fig, axes = plt.subplots(1, 2, figsize=(8.2, 3.4))
    sns.lineplot(frame, x="epoch", y="train_loss", hue="model", marker="o", ax=axes[0], errorbar="sd")
    sns.lineplot(frame, x="epoch", y="test_acc", hue="model", marker="o", ax=axes[1], errorbar="sd")
    axes[0].set(ylabel="training loss (cross-entropy)", title="Training loss")
    axes[1].set(ylabel="test accuracy", title="Fashion-MNIST test accuracy")
    axes[1].yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    for ax in axes:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    fig.tight_layout()
    return fig



def _show_map(ax, m, *, signed: bool | None = None):
    """Signed maps on a diverging colormap centred at 0, non-negative maps on a sequential one;
    the colour range is the 99th percentile of |map| so one extreme pixel does not wash it out."""
    m = m.detach().float().cpu()
    signed = bool((m < 0).any()) if signed is None else signed
    scale = float(m.abs().flatten().quantile(0.99)) or float(m.abs().max()) or 1.0
    if signed:
        return ax.imshow(m.numpy(), cmap="RdBu_r", vmin=-scale, vmax=scale)
    return ax.imshow(m.numpy(), cmap="magma", vmin=0, vmax=scale)


@book_style
def map_grid(images, maps: dict, *, row_labels=None, max_rows: int = 10, cell: float | None = None) -> plt.Figure:
    """Images in the first column, one column per method; rows are images.

    ``maps`` maps a column title to a tensor [N, H, W]. Signed maps use a diverging colormap
    (red positive, blue negative), non-negative maps a sequential one. ``cell`` (inches): the side of
    one image; by default as large as fits the book's width, so that the 9-pt titles stay 9 pt there.
    """
    images = images.squeeze(1) if images.dim() == 4 and images.shape[1] == 1 else images
    n = min(len(images), max_rows)
    cols = ["input", *maps]
    cell = cell or min(1.25, (BOOK_WIDTH - 1.2) / len(cols))  # 1.2 in: the row labels
    fig, axes = plt.subplots(n, len(cols), figsize=(cell * len(cols), cell * n), squeeze=False)
    for r in range(n):
        for c, title in enumerate(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if title == "input":
                img = images[r].detach().cpu()
                ax.imshow(img.permute(1, 2, 0).numpy() if img.dim() == 3 else img.numpy(), cmap="gray")
                if row_labels is not None:
                    ax.set_ylabel(str(row_labels[r]), fontsize=9, rotation=0, ha="right", va="center")
            else:
                _show_map(ax, maps[title][r])
            if r == 0:
                ax.set_title(title, fontsize=9, rotation=90, ha="center", va="bottom")
    fig.subplots_adjust(wspace=0.04, hspace=0.04)
    return fig


def stage_label(layers: str) -> str:
    """A short tick label for a randomization stage: ``"layer3.conv1,layer3.bn1,..."`` -> ``"layer3"``
    (the block the stage's layers share); one layer keeps its name."""
    names = [n for n in str(layers).split(",") if n]
    if len(names) <= 1:
        return names[0] if names else str(layers)
    heads = {n.split(".")[0] for n in names}
    return heads.pop() if len(heads) == 1 else f"{names[0]} +{len(names) - 1}"


@book_style
def similarity_curves(frame: pd.DataFrame, *, x: str = "stage", hue: str = "label", col: str = "metric",
                      row: str | None = None, xticklabels=None, y: str = "value") -> sns.FacetGrid:
    """Mean similarity to the original map per stage with 95 % bootstrap confidence bands; panels two
    per row so that the text stays legible at the book's width, stages named by :func:`stage_label`."""
    grid = sns.relplot(frame, x=x, y=y, hue=hue, col=col, row=row, kind="line", marker="o",
                       errorbar=("ci", 95), n_boot=200, seed=0, height=2.4, aspect=1.3,
                       col_wrap=None if row else 2, facet_kws={"sharey": False})
    for ax in grid.axes.flat:
        ax.axhline(0, color="0.5", lw=0.8, ls=":")
        if xticklabels is not None:
            ax.set_xticks(range(len(xticklabels)))
            ax.set_xticklabels([stage_label(t) for t in xticklabels], rotation=45, ha="right", fontsize=9)
    grid.set_axis_labels("randomized down to" if xticklabels is not None else x,
                         "similarity to original" if y == "value" else y)
    return grid


@book_style
def similarity_boxes(frame: pd.DataFrame, *, x: str = "label", hue: str = "pair", col: str = "metric",
                     col_wrap: int = 2, dodge: bool = True) -> sns.FacetGrid:
    """Distribution of similarity per method (box plots), one panel per metric. ``dodge=False``
    when ``hue`` only colours the boxes (one hue per x value). The method names stand upright, the
    legend sits under the panels: two panels of ~22 methods fit the book's width."""
    grid = sns.catplot(frame, x=x, y="value", hue=hue, col=col, col_wrap=col_wrap, kind="box",
                       height=2.6, aspect=1.55, fliersize=1.5, sharey=False, dodge=dodge, legend_out=False)
    for ax in grid.axes.flat:
        plt.setp(ax.get_xticklabels(), rotation=90, fontsize=9)
        ax.axhline(0, color="0.5", lw=0.8, ls=":")
    grid.set_axis_labels("", "similarity")
    grid.tight_layout()
    if grid.legend is not None:
        sns.move_legend(grid, "upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, frameon=False)
    return grid


@book_style
def methods_by_column(image, columns: dict, *, cell: float | None = None) -> plt.Figure:
    """One image: rows are methods, columns are conditions (stages, explained classes, seeds).

    ``columns`` maps a column title to ``{method label: map [H, W]}``; every column has the same
    methods. The input image is drawn at the top of the first column. ``cell`` (inches): the side of
    one map; by default as large as fits the book's width beside the method names.
    """
    titles = list(columns)
    methods = list(next(iter(columns.values())))
    cell = cell or min(1.1, (BOOK_WIDTH - 2.2) / len(titles))  # 2.2 in: the method names
    fig, axes = plt.subplots(len(methods) + 1, len(titles), figsize=(cell * len(titles), cell * (len(methods) + 1)),
                             squeeze=False)
    img = image.detach().cpu().squeeze()
    for c, title in enumerate(titles):
        for r in range(len(methods) + 1):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.imshow(img.permute(1, 2, 0).numpy() if img.dim() == 3 else img.numpy(), cmap="gray")
                ax.set_title(title, fontsize=9, rotation=30, ha="left", va="bottom")
                if c == 0:
                    ax.set_ylabel("input", fontsize=9, rotation=0, ha="right", va="center")
            else:
                _show_map(ax, columns[title][methods[r - 1]])
                if c == 0:
                    ax.set_ylabel(methods[r - 1], fontsize=9, rotation=0, ha="right", va="center")
    fig.subplots_adjust(wspace=0.03, hspace=0.03)
    return fig


HANDLING_PALETTE = {"signed propagation": "#1b9e77", "positive propagation": "#d95f02",
                    "signed aggregation": "#7570b3", "positive aggregation": "#e7298a",
                    "absolute aggregation": "#a6761d", "other": "0.5"}


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")


@book_style
def interval_scatter(summary: pd.DataFrame, *, x: str, y: str, xlabel: str, ylabel: str, col: str = "arch",
                     reference: float | None = None) -> plt.Figure:
    """One point per method with its 95 % intervals on both axes (``{x,y}_mean/_low/_high`` columns),
    one panel per ``col``; colour = handling of gradients, marker = method within it, and a legend
    instead of labels on the points, so that nothing overlaps however close the methods lie."""
    panels = list(dict.fromkeys(summary[col]))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 1.0, 4.4), squeeze=False,
                             sharex=True, sharey=True)
    labels = list(dict.fromkeys(summary.sort_values("handling", kind="stable")["label"]))
    style = {}
    for handling, group in summary.drop_duplicates("label").groupby("handling", sort=False):
        for i, label in enumerate(group["label"]):
            style[label] = (HANDLING_PALETTE.get(handling, "0.3"), _MARKERS[i % len(_MARKERS)])
    for ax, panel in zip(axes[0], panels):
        rows = summary[summary[col] == panel].set_index("label")
        for label in labels:
            if label not in rows.index:
                continue
            r = rows.loc[label]
            color, marker = style[label]
            ax.errorbar(r[f"{x}_mean"], r[f"{y}_mean"],
                        xerr=[[r[f"{x}_mean"] - r[f"{x}_low"]], [r[f"{x}_high"] - r[f"{x}_mean"]]],
                        yerr=[[r[f"{y}_mean"] - r[f"{y}_low"]], [r[f"{y}_high"] - r[f"{y}_mean"]]],
                        fmt=marker, color=color, ms=6, elinewidth=0.8, capsize=0, label=label)
        if reference is not None:
            ax.axvline(reference, color="0.4", ls="--", lw=0.8)
            ax.axhline(reference, color="0.4", ls="--", lw=0.8)
        ax.axvline(0, color="0.6", lw=0.6)
        ax.axhline(0, color="0.6", lw=0.6)
        ax.set_title(str(panel))
    axes[0][0].set_ylabel(ylabel)
    handles, names = axes[0][0].get_legend_handles_labels()
    shared_xlabel(fig, xlabel)
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4, fontsize=9, frameon=False)
    return fig


@book_style
def claims_forest(card: pd.DataFrame) -> plt.Figure:
    """Each claim's parts as a point with its interval against the bound it must clear, coloured by
    the part's verdict: the scorecard at a glance."""
    colors = {"reproduced": "#1b9e77", "partly": "#e6ab02", "not reproduced": "#d95f02", "not testable here": "0.6"}
    rows = []
    for r in card.itertuples():
        several_models = len({p.model for p in r.parts}) > 1
        for p in r.parts:
            suffix = p.model if several_models else p.quantity.split(":")[0] if len(r.parts) > 1 else ""
            rows.append((f"{r.key} · {suffix}" if suffix else r.key, p))
    fig, ax = plt.subplots(figsize=(7.2, 0.24 * len(rows) + 1.2))
    for i, (name, p) in enumerate(rows):
        y = len(rows) - 1 - i
        color = colors[p.verdict]
        ax.plot([p.low, p.high], [y, y], color=color, lw=2.5)
        ax.plot(p.mean, y, "o", color=color, ms=4)
        ax.plot(p.bound, y, "|", color="0.2", ms=9, mew=1.5)
    ax.set_yticks(range(len(rows)), [name for name, _ in reversed(rows)], fontsize=9)
    ax.set_xlabel("measured quantity (point: mean; bar: 95 % interval; |: the claim's bound)")
    handles = [plt.Line2D([], [], color=c, lw=2.5, label=v) for v, c in colors.items()]
    ax.legend(handles=handles, fontsize=9, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, frameon=False)
    fig.tight_layout()
    return fig


@book_style
def completeness_soundness_scatter(table: pd.DataFrame) -> plt.Figure:
    """Mean completeness (x) vs mean soundness (y) per method (Gupta et al. 2022): a method
    that explains the prediction sits top right; the class-agnostic control shows how much
    soundness a map gets by never proving any other label."""
    fig, ax = plt.subplots(figsize=(6.0, 4.8))
    sns.scatterplot(table, x="completeness", y="soundness", hue="method", legend=False, s=60, ax=ax)
    ax.set(xlabel="completeness (predicted label's map)", ylabel="soundness (other labels' maps)")
    fig.tight_layout()
    label_points(ax, table["completeness"], table["soundness"], table["method"])
    return fig


@book_style
def insertion_deletion_curves(curves: pd.DataFrame) -> plt.Figure:
    """Mean probability of the explained label against the fraction of pixels inserted (kept) or
    deleted, most salient first, one line per method (Petsiuk et al. 2018, Sec. 4.1). Columns:
    method, curve ("insertion"/"deletion"), fraction, probability."""
    grid = sns.relplot(curves, x="fraction", y="probability", hue="method", col="curve", kind="line",
                       errorbar=None, height=3.0, aspect=0.95, facet_kws={"sharey": True, "sharex": False})
    grid.set_axis_labels("", "probability of the label")
    shared_xlabel(grid, "fraction of pixels (most salient first)")
    return grid.figure


@book_style
def labelled_scatter(frame: pd.DataFrame, x: str, y: str, label: str, *, hue: str | None = None,
                     xlabel: str | None = None, ylabel: str | None = None) -> plt.Figure:
    """One annotated point per row (e.g. per method or per mitigation)."""
    fig, ax = plt.subplots(figsize=(6.0, 4.6))
    sns.scatterplot(frame, x=x, y=y, hue=hue, s=60, ax=ax, legend=hue is not None)
    ax.set(xlabel=xlabel or x, ylabel=ylabel or y)
    fig.tight_layout()
    label_points(ax, frame[x], frame[y], frame[label])
    return fig


@book_style
def per_sample_scatter(frame: pd.DataFrame, x: str, y: str, *, hue: str | None = None, xlabel: str | None = None,
                       ylabel: str | None = None) -> plt.Figure:
    """Many samples: small translucent points, a panel per ``hue`` value if given (titled by the value, at
    most two rows of panels, the axis labels written once for all of them)."""
    if not hue:
        grid = sns.relplot(frame, x=x, y=y, s=12, alpha=0.4, height=2.6, aspect=1.1)
        grid.set_axis_labels(xlabel or x, ylabel or y)
        return grid.figure
    per_row = max(4, -(-frame[hue].nunique() // 2))
    grid = sns.relplot(frame, x=x, y=y, col=hue, col_wrap=per_row, s=12, alpha=0.4, height=(BOOK_WIDTH - 0.2) / per_row,
                       aspect=1.0)
    grid.set_titles("{col_name}")
    grid.set_axis_labels("", "")
    grid.figure.supylabel(ylabel or y, fontsize=plt.rcParams["axes.labelsize"])
    shared_xlabel(grid, xlabel or x)
    return grid.figure


@book_style
def bars(frame: pd.DataFrame, x: str, y: str, *, hue: str | None = None, xlabel: str | None = None,
         ylabel: str | None = None) -> plt.Figure:
    """Bar chart of one value per category (e.g. unstable test images per class)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    sns.barplot(frame, x=x, y=y, hue=hue, ax=ax)
    ax.set(xlabel=xlabel or x, ylabel=ylabel or y)
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


@book_style
def interval_columns(summary: pd.DataFrame, *, col: str, titles: dict | None = None, row: str = "arch",
                     label: str = "label") -> plt.Figure:
    """Each method's mean with its 95 % interval (``mean``, ``low``, ``high`` columns), one panel per
    ``col`` value (e.g. a test, each on its own x scale; in the order of ``titles`` when given) and
    ``row`` value (at most two rows, e.g. the architectures); methods on one shared y axis, coloured by
    their handling of gradients."""
    cols, rows = list(dict.fromkeys(summary[col])), list(dict.fromkeys(summary[row]))
    if titles:  # the titles' order is the panels' order
        cols = [c for c in titles if c in cols] + [c for c in cols if c not in titles]
    if len(rows) > 2:
        raise ValueError(f"at most two rows of panels, got {len(rows)} values of {row!r}")
    labels = list(dict.fromkeys(summary.sort_values("handling", kind="stable")[label]))
    fig, axes = plt.subplots(len(rows), len(cols), squeeze=False, sharey=True, sharex="col",
                             figsize=(1.55 * len(cols) + 1.9, 0.2 * len(labels) * len(rows) + 1.6))
    position = {lab: len(labels) - 1 - i for i, lab in enumerate(labels)}
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax = axes[i][j]
            part = summary[(summary[row] == r) & (summary[col] == c)]
            for p in part.itertuples():
                y = position[getattr(p, label)]
                color = HANDLING_PALETTE.get(p.handling, "0.3")
                ax.plot([p.low, p.high], [y, y], color=color, lw=2)
                ax.plot(p.mean, y, "o", color=color, ms=3.5)
            ax.axvline(0, color="0.6", lw=0.6)
            ax.set_title((titles or {}).get(c, c), fontsize=9)
            if j == 0:
                ax.set_ylabel(str(r), fontsize=10)
            ax.tick_params(axis="x", labelsize=9)
    axes[0][0].set_yticks(range(len(labels)), list(reversed(labels)), fontsize=9)
    handles = [plt.Line2D([], [], color=HANDLING_PALETTE[h], lw=2, label=h)
               for h in dict.fromkeys(summary.handling) if h in HANDLING_PALETTE]
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=9, frameon=False)
    fig.tight_layout()
    return fig


@book_style
def convergence_curves(table: pd.DataFrame, *, y: str = "value", hue: str = "label", col: str | None = "arch",
                       max_rows: int = 2) -> sns.FacetGrid:
    """Mean cosine similarity of two classes' back-propagated vectors against the layer's distance from
    the output, with 95 % bootstrap bands, one line per method (Sixt et al. 2020, cosine-similarity
    convergence: a modified BP method whose line climbs to 1 towards the input forgets the later
    layers; the gradient stays low). One panel per ``col`` value (``arch``) if that column is present,
    at most ``max_rows`` rows of panels; the legend sits outside on the right. Undefined (NaN)
    similarities are skipped."""
    frame = table[table[y].notna()]
    col = col if col is not None and col in frame.columns else None
    panels = frame[col].nunique() if col else 1
    per_row = -(-panels // max_rows) if panels > max_rows else panels  # ceil: at most max_rows rows
    width = min(3.2, (BOOK_WIDTH - 2.0) / per_row)  # the panels and, 2 in, the y axis and the legend fit the book
    grid = sns.relplot(frame, x="depth", y=y, hue=hue, col=col, kind="line", marker="o",
                       errorbar=("ci", 95), n_boot=200, seed=0, height=width / 1.15, aspect=1.15,
                       col_wrap=per_row if col and panels > 1 else None, facet_kws={"sharey": True, "sharex": False})
    for ax in grid.axes.flat:
        ax.axhline(1, color="0.5", lw=0.8, ls=":")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.tick_params(labelsize=9)
        ax.set_ylim(-0.03 if y == "value" else -1.05, 1.05)
        ax.title.set_fontsize(10)
    xlabel, ylabel = "layers from the output (0 = last)", "|cos| of two classes' vectors" if y == "value" else y
    if col:
        grid.set_titles("{col_name}")
    if per_row < panels:  # two rows of narrow panels: each axis label once, for all of them
        grid.set_axis_labels("", "")
        grid.figure.supylabel(ylabel, fontsize=10)
        shared_xlabel(grid, xlabel, fontsize=10)
    else:
        grid.set_axis_labels(xlabel, ylabel, fontsize=10)
    if grid.legend is not None:
        grid.legend.set_title("method" if hue == "label" else hue)
        for text in grid.legend.get_texts():
            text.set_fontsize(9)
    return grid
