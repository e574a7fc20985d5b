"""The readability check of a figure (issue #17), as the book shows it.

What counts as a *text label*: every matplotlib ``Text`` artist of the figure (tick labels, axis labels,
titles, the suptitle, legend titles and entries, annotations) that is visible and whose text is not
blank, except tick labels outside their axis' view (matplotlib keeps those but never draws them). Each
label is the rectangle its glyphs fill, rotated with the text (not the axis-aligned box around a rotated
label, which would make two parallel rotated tick labels "overlap" although their letters never meet).

The checks, on the figure as :func:`saliency_sanity.book.figure_style.save_figure` writes it (150 dpi,
``bbox_inches="tight"``):

- no two text labels overlap (by more than a pixel in both directions: touching edges are fine);
- every x tick label has at most ``x_tick_limit`` characters (default :data:`MAX_TICK_CHARS`);
- every text is at least :data:`MIN_FONT_PT` points *at the size the book shows it*: a figure wider than
  :data:`BOOK_TEXT_WIDTH_IN` is shrunk to that width, and its fonts with it;
- at most :data:`MAX_PANEL_ROWS` rows of panels. A panel is an axes that draws data on visible axes;
  the cells of an image grid (an image, no ticks: :func:`~saliency_sanity.book.plotting.map_grid`,
  :func:`~saliency_sanity.book.plotting.methods_by_column`) are thumbnails of one panel, not panels.
"""
import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

MAX_TICK_CHARS = 16
MIN_FONT_PT = 9  # issue #17: ">= 9 pt at the book's text width"
MAX_PANEL_ROWS = 2
# The book's text width: the HTML book (sphinx-book-theme 1.3) at its widest page, 88rem = 1408 CSS px,
# less the primary sidebar (20 %), the secondary sidebar (17rem) and the article's padding (2 x 2rem),
# leaves a column of about 790 CSS px = 8.2 in at 96 CSS px per inch. save_figure writes PNGs at
# 150 dpi, which a browser shows at one image pixel per CSS px: a figure wider than 790 px is shrunk
# to the column, so its f-pt text is shown at f * 8.2 / (width in inches) pt; a narrower one is shown
# at least at its own size. Taking min(1, 8.2 / width) never overstates what the reader sees.
BOOK_TEXT_WIDTH_IN = 8.2
SAVE_DPI = 150  # save_figure's: the figure is drawn at the resolution the book gets


def _undrawn_ticks(fig):
    """Tick labels outside their axis' view: matplotlib keeps them as texts but never draws them."""
    ids = set()
    for ax in fig.axes:
        for axis, (lo, hi) in ((ax.xaxis, sorted(ax.get_xlim())), (ax.yaxis, sorted(ax.get_ylim()))):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - 1e-9 <= tick.get_loc() <= hi + 1e-9:
                    ids |= {id(tick.label1), id(tick.label2)}
    return ids


def _rectangle(text, renderer):
    """The four corners (pixels) of the rectangle that ``text``'s glyphs fill, rotated with it."""
    box = matplotlib.text.Text.get_window_extent(text, renderer)  # an annotation's arrow is not its text
    angle = text.get_rotation()
    text.set_rotation(0)
    try:
        flat = matplotlib.text.Text.get_window_extent(text, renderer)
    finally:
        text.set_rotation(angle)
    # the axis-aligned box of a rotated rectangle has the rectangle's centre
    half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [flat.width / 2, flat.height / 2]
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    return half @ np.array([[c, s], [-s, c]]) + [(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2]


def texts(fig):
    """The figure's text labels (see the module's docstring) with their rotated rectangles, after a draw."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    undrawn = _undrawn_ticks(fig)
    return [(text, _rectangle(text, renderer)) for text in fig.findobj(matplotlib.text.Text)
            if text.get_visible() and text.get_text().strip() and id(text) not in undrawn]


def _penetration(a, b):
    """How deep two convex polygons overlap (pixels; <= 0: apart), by the separating axis theorem."""
    depth = np.inf
    for poly in (a, b):
        for p, q in zip(poly, np.roll(poly, -1, axis=0)):
            normal = np.array([q[1] - p[1], p[0] - q[0]])
            length = np.hypot(*normal)
            if length == 0:
                continue
            pa, pb = a @ normal / length, b @ normal / length
            depth = min(depth, min(pa.max(), pb.max()) - max(pa.min(), pb.min()))
    return depth


def overlapping(labelled):
    """Pairs of text labels whose rectangles overlap by more than a pixel: (text, text, depth in pixels)."""
    pairs = []
    for (a, ra), (b, rb) in itertools.combinations(labelled, 2):
        lo, hi = np.maximum(ra.min(0), rb.min(0)), np.minimum(ra.max(0), rb.max(0))
        if (hi - lo > 1).all():  # their axis-aligned boxes overlap: do the rotated rectangles?
            depth = _penetration(ra, rb)
            if depth > 1:
                pairs.append((a.get_text(), b.get_text(), round(float(depth), 1)))
    return pairs


def saved_width_in(fig, *, drawn=False):
    """The width of the image save_figure writes (``bbox_inches="tight"`` with its padding), in inches."""
    if not drawn:
        fig.canvas.draw()
    return fig.get_tightbbox(fig.canvas.get_renderer()).width + 2 * plt.rcParams["savefig.pad_inches"]


def shown_scale(fig):
    """How much the book shrinks the figure: 1, or the text width over the saved width."""
    return min(1.0, BOOK_TEXT_WIDTH_IN / saved_width_in(fig))


def panel_rows(fig):
    """The rows of panels: distinct heights of the axes that draw data on visible axes (not image cells)."""
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.axison and ax.has_data()
              and not (ax.images and not ax.get_xticks().size and not ax.get_yticks().size)]
    return len({round(ax.get_position().y0, 3) for ax in panels})


def problems(fig, *, x_tick_limit=MAX_TICK_CHARS, max_rows=MAX_PANEL_ROWS):
    """Everything unreadable in ``fig``, in words (empty: readable), drawn at the book's resolution."""
    fig.set_dpi(SAVE_DPI)
    labelled = texts(fig)
    found = [f"overlapping labels (text, text, pixels): {pair}" for pair in overlapping(labelled)]
    drawn = {id(t) for t, _ in labelled}
    found += [f"x tick label over {x_tick_limit} characters: {t.get_text()!r}"
              for ax in fig.axes for t in ax.get_xticklabels() if id(t) in drawn and len(t.get_text()) > x_tick_limit]
    width = saved_width_in(fig, drawn=True)
    scale = min(1.0, BOOK_TEXT_WIDTH_IN / width)
    found += [f"{t.get_text()!r}: {t.get_fontsize():.1f} pt shown at {t.get_fontsize() * scale:.1f} pt "
              f"(figure {width:.1f} in wide, the book's text width {BOOK_TEXT_WIDTH_IN} in)"
              for t, _ in labelled if t.get_fontsize() * scale < MIN_FONT_PT - 1e-6]
    rows = panel_rows(fig)
    if rows > max_rows:
        found.append(f"{rows} rows of panels (at most {max_rows})")
    return found


def check_figure(fig, *, x_tick_limit=MAX_TICK_CHARS, max_rows=MAX_PANEL_ROWS):
    """Fail when ``fig`` (a matplotlib figure or a seaborn grid) is unreadable (:func:`problems`); close it."""
    fig = getattr(fig, "figure", fig)
    try:
        found = problems(fig, x_tick_limit=x_tick_limit, max_rows=max_rows)
        assert not found, "\n".join(found[:12]) + (f"\n... and {len(found) - 12} more" if len(found) > 12 else "")
    finally:
        plt.close(fig)
