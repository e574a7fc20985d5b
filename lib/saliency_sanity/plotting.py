"""Figure functions shared by every notebook; each figure is saved under a stable name to cite."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
FIGURE_FORMATS = ("png", "svg")


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


def training_curves(history: pd.DataFrame) -> plt.Figure:
    """Test accuracy and training loss per epoch, one line per architecture (and seed)."""
    frame = history.copy()
    frame["model"] = frame["arch"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    sns.lineplot(frame, x="epoch", y="train_loss", hue="model", marker="o", ax=axes[0], errorbar="sd")
    sns.lineplot(frame, x="epoch", y="test_acc", hue="model", marker="o", ax=axes[1], errorbar="sd")
    axes[0].set(ylabel="training loss (cross-entropy)", title="Training loss")
    axes[1].set(ylabel="test accuracy", title="Fashion-MNIST test accuracy")
    axes[1].yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    for ax in axes:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


def image_grid(images, titles=None, ncols: int = 10, cmap: str = "gray") -> plt.Figure:
    """A row-major grid of images [N, 1, H, W] or [N, H, W] with optional titles."""
    images = images.squeeze(1) if images.dim() == 4 else images
    n = len(images)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, 1.45 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i].cpu().numpy(), cmap=cmap)
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return fig
