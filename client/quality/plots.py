"""The report's pictures as PNG bytes: the confusion heatmap, the reliability diagram and, for many classes,
the distribution of per-class recall and F1.

(Per-class precision, recall and F1 are drawn as bars inside the HTML page's table, not as a picture
that repeats it; with more classes than a table shows open, a histogram says how they spread.) The heatmap
shows every class up to ``FULL_HEATMAP_MAX_CLASSES`` and the most confused beyond (``classes.heatmap_classes``),
so its size is bounded whatever the number of classes. Each picture's figure is built by a ``*_figure``
function, which the tests measure.

matplotlib is an optional extra (``tfclassify[report]``); ``plots_available``
says whether it is installed, and nothing here imports it before a plot is drawn.
"""

from __future__ import annotations

import io

import numpy as np

from tfclassify.client.quality.classes import FULL_TABLE_MAX_CLASSES, HeatmapClasses, heatmap_classes, short_label
from tfclassify.client.quality.report import AccuracyReport

#: Annotate the heatmap's cells with counts up to this many classes shown (49 would be unreadable).
ANNOTATE_MAX_CLASSES = 30
#: Bins of the per-class histogram over [0, 1].
CLASS_HISTOGRAM_BINS = 20
#: Fonts with Japanese glyphs (KMNIST's and Kuzushiji-49's labels), used after DejaVu Sans when installed.
CJK_FONTS = ("Noto Sans CJK JP", "Noto Sans JP", "IPAexGothic", "IPAGothic", "TakaoGothic", "VL Gothic",
             "Droid Sans Fallback", "Source Han Sans JP")
INSTALL_HINT = "pip install 'tfclassify[report]' (matplotlib)"


def plots_available() -> bool:
    """Whether matplotlib can be imported (it is only needed, and imported, for an HTML report)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def report_plots(report: AccuracyReport) -> dict[str, bytes]:
    """The plots of ``report``, by name: ``confusion``, ``reliability``, and ``classes`` (the per-class
    histogram) when there are more than ``FULL_TABLE_MAX_CLASSES`` classes."""
    plt = _pyplot()
    fonts, glyphs = _fonts()
    names = [_drawable(label, glyphs, i) for i, label in enumerate(report.labels)]
    with plt.rc_context({"font.family": fonts}):
        plots = {
            "confusion": _png(confusion_figure(report, names)),
            "reliability": _png(reliability_figure(report)),
        }
        if len(report.labels) > FULL_TABLE_MAX_CLASSES:
            plots["classes"] = _png(class_histogram_figure(report))
        return plots


def _fonts() -> tuple[list[str], set[int]]:
    """The font families to draw with (DejaVu Sans, then any installed CJK font) and the characters they have."""
    from matplotlib import font_manager, ft2font

    installed = {f.name: f.fname for f in font_manager.fontManager.ttflist}
    families = ["DejaVu Sans", *(name for name in CJK_FONTS if name in installed)]
    glyphs: set[int] = set()
    for family in families:
        path = installed.get(family) or font_manager.findfont(family)
        glyphs.update(ft2font.FT2Font(path).get_charmap())
    return families, glyphs


def _drawable(label: str, glyphs: set[int], index: int) -> str:
    """``label`` if the fonts can draw it; else its part in parentheses ("あ (a)" -> "a"), else the index."""
    if all(ord(ch) in glyphs for ch in label):
        return label
    if "(" in label and label.endswith(")"):
        inner = label[label.index("(") + 1 : -1]
        if inner and all(ord(ch) in glyphs for ch in inner):
            return inner
    return str(index)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot's import
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def confusion_figure(report: AccuracyReport, names: list[str] | None = None, shown: HeatmapClasses | None = None):
    """Row-normalised confusion matrix (colour: share of the true class), counts in the cells; ``names``:
    the class names as drawn (default: the labels), cut to ``TICK_LABEL_CHARS``; ``shown``: the classes
    drawn (default: ``heatmap_classes``, all of them up to ``FULL_HEATMAP_MAX_CLASSES``)."""
    plt = _pyplot()
    names = names or report.labels
    shown = shown or heatmap_classes(np.asarray(report.confusion_matrix))
    index = np.asarray(shown.indices)
    n = len(index)
    normalized = np.asarray(report.confusion_matrix_normalized)[np.ix_(index, index)]
    counts = np.asarray(report.confusion_matrix)[np.ix_(index, index)]
    ticks_names = [short_label(names[i]) for i in index]
    size = min(16.0, 3.0 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(normalized, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ticks = np.arange(n)
    ax.set_xticks(ticks, labels=ticks_names, rotation=60, ha="right", fontsize=8 if n > 16 else 9)
    ax.set_yticks(ticks, labels=ticks_names, fontsize=8 if n > 16 else 9)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    what = "" if shown.complete else f", the {n} most confused of {shown.total} classes"
    ax.set_title(f"Confusion matrix ({report.num_images:,} images{what})")
    if n <= ANNOTATE_MAX_CLASSES:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7 if n <= 16 else 6,
                            color="white" if normalized[i, j] > 0.5 else "black")
    return fig


def class_histogram_figure(report: AccuracyReport):
    """How per-class recall and F1 spread over [0, 1] (classes with images only): for more classes than
    a bar each could show."""
    plt = _pyplot()
    present = [m for m in report.per_class if m.support]
    edges = np.linspace(0.0, 1.0, CLASS_HISTOGRAM_BINS + 1)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.hist([m.recall for m in present], bins=edges, color="#4c72b0", alpha=0.75, label="recall")
    ax.hist([m.f1 for m in present], bins=edges, histtype="step", linewidth=2, color="#dd8452", label="F1")
    ax.set_xlim(0, 1)
    ax.set_xlabel("per-class value")
    ax.set_ylabel("classes")
    ax.set_title(f"Per-class recall and F1 ({len(present):,} classes)", pad=24)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    return fig


def reliability_figure(report: AccuracyReport):
    """Accuracy against confidence per bin, with the diagonal of perfect calibration and the bins' counts.

    The legend sits above the plot, between it and the title: inside, it would cover a bin (a full
    low-confidence bin reaches the top-left corner, a full high one the top-right)."""
    plt = _pyplot()
    bins = report.calibration.bins
    fig, (ax, counts_ax) = plt.subplots(2, 1, figsize=(5.5, 6.0), height_ratios=[3, 1], sharex=True)
    width = bins[0].upper - bins[0].lower
    centres = [b.lower + width / 2 for b in bins]
    filled = [b for b in bins if b.count]
    ax.bar([b.lower + width / 2 for b in filled], [b.accuracy for b in filled], width * 0.95,
           color="#4c72b0", label="accuracy")
    ax.plot([b.confidence for b in filled], [b.confidence for b in filled], "o", color="#dd8452",
            label="mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram (ECE {report.calibration.ece:.4f})", pad=24)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False,
              handlelength=1.5, columnspacing=1.2)
    counts_ax.bar(centres, [b.count for b in bins], width * 0.95, color="#8c8c8c")
    counts_ax.set_yscale("symlog")
    # Decades only: symlog's own "0" tick sits on top of "10^0" in a panel this short.
    decades = len(str(max(b.count for b in bins)))
    counts_ax.set_yticks([10 ** k for k in range(0, decades, 1 if decades <= 4 else 2)])
    counts_ax.set_ylim(0, 10 ** decades)
    counts_ax.set_xlabel("confidence (score of the predicted class)")
    counts_ax.set_ylabel("images")
    return fig
