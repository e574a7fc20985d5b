"""The readability check of a figure: no two text labels overlap, x tick labels stay short, text is >= 8 pt."""
import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MAX_TICK_CHARS = 16


def _undrawn_ticks(fig):
    """Tick labels outside their axis' view: matplotlib keeps them as texts but never draws them."""
    ids = set()
    for ax in fig.axes:
        for axis, (lo, hi) in ((ax.xaxis, sorted(ax.get_xlim())), (ax.yaxis, sorted(ax.get_ylim()))):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - 1e-9 <= tick.get_loc() <= hi + 1e-9:
                    ids |= {id(tick.label1), id(tick.label2)}
    return ids


def _texts(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    undrawn = _undrawn_ticks(fig)
    out = []
    for text in fig.findobj(matplotlib.text.Text):
        if text.get_visible() and text.get_text().strip() and id(text) not in undrawn:
            out.append((text, text.get_window_extent(renderer)))
    return out


def _overlapping(texts):
    pairs = []
    for (a, box_a), (b, box_b) in itertools.combinations(texts, 2):
        if box_a.overlaps(box_b) and box_a.width * box_a.height > 0 and box_b.width * box_b.height > 0:
            inter_w = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
            inter_h = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
            if inter_w > 1 and inter_h > 1:  # touching edges are fine
                pairs.append((a.get_text(), b.get_text(), round(inter_w), round(inter_h)))
    return pairs


def check_figure(fig, *, x_tick_limit=MAX_TICK_CHARS):
    """Fail on overlapping labels, an x tick label longer than ``x_tick_limit`` or text under 8 pt; close ``fig``."""
    texts = _texts(fig)
    assert not _overlapping(texts), _overlapping(texts)[:5]
    for ax in fig.axes:
        for label in ax.get_xticklabels():
            assert len(label.get_text()) <= x_tick_limit, label.get_text()
    small = [t.get_text() for t, _ in texts if t.get_fontsize() < 8]
    assert not small, small[:5]
    plt.close(fig)
