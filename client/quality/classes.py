"""What a report shows of many classes: the top confusions, the classes of the heatmap, the per-class order.

A report of 10 classes shows everything; one of 1,000 cannot (a 1000×1000 heatmap is a blue square, a
1,000-row table is not read). The rules here pick what is shown, the same for every rendering, and each
rendering says which rule picked it. Pure numpy: the light client uses them without matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The heatmap shows every class up to this many; beyond, the HEATMAP_CLASSES most confused.
FULL_HEATMAP_MAX_CLASSES = 30
#: Classes in the heatmap of a report with more than FULL_HEATMAP_MAX_CLASSES.
HEATMAP_CLASSES = 25
#: Per-class tables show every class, in class order, up to this many; beyond, the worst and best few.
FULL_TABLE_MAX_CLASSES = 30
#: Rows of the lowest-F1 and highest-F1 tables of a report with more than FULL_TABLE_MAX_CLASSES.
WORST_CLASSES = 15
BEST_CLASSES = 5
#: Rows of the top-confusions table (true → predicted).
TOP_CONFUSIONS = 20
#: Class names drawn on the heatmap's axes are cut to this many characters (the caption has them whole).
TICK_LABEL_CHARS = 20


@dataclass(frozen=True)
class Confusion:
    """Images of class ``true`` predicted as ``predicted``; ``share``: their part of the true class's images."""

    true_index: int
    predicted_index: int
    true: str
    predicted: str
    count: int
    share: float


@dataclass(frozen=True)
class HeatmapClasses:
    """The classes a confusion heatmap shows (ascending indices), of ``total``, and the rule that chose them."""

    indices: list[int]
    total: int

    @property
    def complete(self) -> bool:
        return len(self.indices) == self.total

    def rule(self) -> str:
        """A sentence for the caption: what is shown and why."""
        if self.complete:
            return f"all {self.total} classes; colour: the share of the true class's images."
        return (f"{len(self.indices)} of {self.total} classes: the {len(self.indices)} involved in the most "
                f"mistakes (images of the class predicted as another, plus images of other classes predicted as it); "
                f"the others are left out. Colour is the share of all the true class's images, so a row need not "
                f"sum to 1. The whole matrix is in the JSON report (confusion_matrix).")


def top_confusions(confusion: np.ndarray, labels, limit: int = TOP_CONFUSIONS) -> list[Confusion]:
    """The ``limit`` largest off-diagonal cells, largest first (ties: by true class, then predicted class index)."""
    counts = np.asarray(confusion, dtype=np.int64).copy()
    np.fill_diagonal(counts, 0)
    true, predicted = np.nonzero(counts)
    values = counts[true, predicted]
    order = np.lexsort((predicted, true, -values))[:limit]
    support = np.asarray(confusion).sum(axis=1)
    return [Confusion(int(true[i]), int(predicted[i]), labels[true[i]], labels[predicted[i]], int(values[i]),
                      float(values[i] / support[true[i]])) for i in order]


def mistakes_per_class(confusion: np.ndarray) -> np.ndarray:
    """For each class, the mistakes it is in: as the true class (row off the diagonal) and as the prediction
    (column off the diagonal)."""
    confusion = np.asarray(confusion, dtype=np.int64)
    diagonal = np.diag(confusion)
    return (confusion.sum(axis=1) - diagonal) + (confusion.sum(axis=0) - diagonal)


def heatmap_classes(confusion: np.ndarray, full_max: int = FULL_HEATMAP_MAX_CLASSES,
                    k: int = HEATMAP_CLASSES) -> HeatmapClasses:
    """All classes up to ``full_max``; beyond, the ``k`` in the most mistakes (ties: lower index), shown in
    class order."""
    n = len(confusion)
    if n <= full_max:
        return HeatmapClasses(list(range(n)), n)
    mistakes = mistakes_per_class(confusion)
    chosen = np.lexsort((np.arange(n), -mistakes))[:k]
    return HeatmapClasses(sorted(int(i) for i in chosen), n)


def worst_first(per_class: list) -> list:
    """Classes by F1, lowest first (ties: more images first, then class order); classes without a true image
    last, in class order (their F1 of 0 says nothing)."""
    present = sorted((m for m in per_class if m.support), key=lambda m: (m.f1, -m.support, m.index))
    return present + [m for m in per_class if not m.support]


@dataclass(frozen=True)
class ClassTables:
    """The per-class rows a report shows: ``full`` (every class) and, for many classes, ``worst`` and ``best``."""

    full: list
    worst: list
    best: list

    @property
    def condensed(self) -> bool:
        """Whether the full table is too long to show open (it is collapsed, or written to a CSV file)."""
        return bool(self.worst)


def class_tables(per_class: list, full_max: int = FULL_TABLE_MAX_CLASSES, worst: int = WORST_CLASSES,
                 best: int = BEST_CLASSES) -> ClassTables:
    """Every class in class order up to ``full_max``; beyond, every class lowest F1 first, with the ``worst``
    lowest and the ``best`` highest F1 of the classes with images (best first)."""
    if len(per_class) <= full_max:
        return ClassTables(list(per_class), [], [])
    ranked = worst_first(per_class)
    present = [m for m in ranked if m.support]
    return ClassTables(ranked, present[:worst], present[::-1][:best])


def class_csv(per_class: list) -> str:
    """Every class lowest F1 first, as CSV (rank, index, class, precision, recall, f1, support)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "index", "class", "precision", "recall", "f1", "support"])
    for rank, m in enumerate(worst_first(per_class), 1):
        writer.writerow([rank, m.index, m.label, f"{m.precision:.6f}", f"{m.recall:.6f}", f"{m.f1:.6f}", m.support])
    return buffer.getvalue()


def short_label(label: str, limit: int = TICK_LABEL_CHARS) -> str:
    """``label`` cut to ``limit`` characters, the cut marked by an ellipsis."""
    return label if len(label) <= limit else label[: limit - 1] + "…"
