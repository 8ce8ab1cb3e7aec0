"""The accuracy report of a scoring run: accuracy and top-k accuracy with 95% intervals,
macro/weighted F1, per-class precision/recall/F1, the confusion matrix, the most-confused
pairs, calibration, the most confident mistakes, the least confident correct answers and
the skipped files.

``AccuracyReport.to_dict`` is the JSON schema ``tfclassify-report/1`` (see
the README); the Markdown and HTML renderings are in ``markdown`` and ``html``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from tfclassify.client.atomic import write_atomic
from tfclassify.client.quality.classes import Confusion, class_tables, top_confusions
from tfclassify.client.quality.stats import (
    CalibrationBin,
    calibration_bins,
    expected_calibration_error,
    wilson_interval,
)

#: The JSON schema of a report; its major number changes only when a field changes meaning or goes away.
SCHEMA = "tfclassify-report/1"
#: Skipped files listed by name in a report (all are counted).
MAX_SKIPPED_LISTED = 100
#: Confidence bins of the calibration (reliability diagram).
CALIBRATION_BINS = 10
#: The fields written a row to a line in the JSON file (a 1,000-class matrix is a million numbers).
MATRICES = ("confusion_matrix", "confusion_matrix_normalized")
#: The terminal summary prints the confusion matrix up to this many classes (beyond, the top confusions).
TEXT_MATRIX_MAX_CLASSES = 20


@dataclass(frozen=True)
class ClassMetrics:
    """Precision, recall and F1 of one class; ``support`` is its number of true examples."""

    index: int
    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ConfusedPair:
    """Two classes mistaken for each other: ``a_as_b`` true-a-predicted-b, and back."""

    a: str
    b: str
    a_as_b: int
    b_as_a: int

    @property
    def total(self) -> int:
        return self.a_as_b + self.b_as_a


@dataclass(frozen=True)
class Example:
    """One classified example: the most confident mistakes, the least confident correct answers."""

    index: int
    true_label: str
    predicted_label: str
    score: float
    source: str = ""


@dataclass(frozen=True)
class SkippedFile:
    """A file that was not scored, and why."""

    source: str
    reason: str


@dataclass(frozen=True)
class TopKAccuracy:
    """How often the true class was among the ``k`` best ranked classes."""

    k: int
    accuracy: float
    ci95: tuple[float, float]


@dataclass(frozen=True)
class Calibration:
    """Whether confidence means what it says: the reliability diagram's bins and their ECE."""

    ece: float
    bins: list[CalibrationBin]


@dataclass
class AccuracyReport:
    """Everything ``tfclassify score`` reports about one scoring run (JSON: ``to_dict``, schema ``SCHEMA``)."""

    num_images: int  # labelled scored images: what the accuracy is computed on
    correct: int
    accuracy: float
    accuracy_ci95: tuple[float, float]  # Wilson score interval
    macro_f1: float  # mean F1 of the classes present in the truth
    weighted_f1: float  # F1 weighted by support
    labels: list[str]
    per_class: list[ClassMetrics]
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted class
    confusion_matrix_normalized: list[list[float]]  # each row divided by its support (0 for absent classes)
    most_confused: list[ConfusedPair]
    misclassified: list[Example]  # the most confident mistakes first
    unsure_correct: list[Example]  # the least confident correct answers first
    calibration: Calibration
    top_k_accuracy: list[TopKAccuracy] = field(default_factory=list)  # k = 2.. the run's --top-k
    run: dict = field(default_factory=dict)  # model, version, dataset, timing
    skipped: int = 0  # files not scored (corrupt, not an image, refused)
    skipped_files: list[SkippedFile] = field(default_factory=list)  # the first MAX_SKIPPED_LISTED
    unlabelled: int = 0  # scored images without a true label (not in the accuracy)
    top_confusions: list[Confusion] = field(default_factory=list)  # true -> predicted, the largest first

    def to_dict(self) -> dict:
        # The matrices are copied by hand: asdict's deep copy of 1,000 x 1,000 cells takes seconds.
        d = {"schema": SCHEMA, **asdict(replace(self, confusion_matrix=[], confusion_matrix_normalized=[]))}
        for key in MATRICES:
            d[key] = [list(row) for row in getattr(self, key)]
        for pair, src in zip(d["most_confused"], self.most_confused):
            pair["total"] = src.total
        return d

    def write_json(self, path: str | Path) -> None:
        """Write the report as JSON (written whole or not at all): indented, a matrix row to a line."""
        fields = []
        for key, value in self.to_dict().items():
            if key in MATRICES:
                text = "[\n" + ",\n".join(f"    {json.dumps(row)}" for row in value) + "\n  ]"
            else:  # a newline in json.dumps's output is never inside a string: re-indenting is safe
                text = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
            fields.append(f"  {json.dumps(key)}: {text}")
        write_atomic(path, "{\n" + ",\n".join(fields) + "\n}\n")

    def run_summary(self) -> str:
        """One line on the run: model and versions, data, throughput (what it has of them)."""
        run, facts = self.run, []
        if run.get("model"):
            facts.append(f"model {run['model']} version {', '.join(sorted(run.get('versions') or {})) or '?'}")
        if run.get("inputs"):
            facts.append("data " + ", ".join(run["inputs"]))
        if run.get("images_per_second"):
            facts.append(f"{run['images_per_second']:,.0f} images/s over {run.get('seconds', 0):.2f} s")
        return " · ".join(facts)

    def format_text(self) -> str:
        """A human-readable summary for the terminal."""
        tables = class_tables(self.per_class)
        width = max(len(m.label) for m in tables.worst or tables.full)
        lo, hi = self.accuracy_ci95
        lines = [
            f"accuracy {self.accuracy:.4f} on {self.num_images} images  (macro F1 {self.macro_f1:.4f})",
            f"  95% interval {lo:.4f}..{hi:.4f}; weighted F1 {self.weighted_f1:.4f}; "
            f"expected calibration error {self.calibration.ece:.4f}",
        ]
        lines += [f"  top-{t.k} accuracy {t.accuracy:.4f} ({t.ci95[0]:.4f}..{t.ci95[1]:.4f})" for t in self.top_k_accuracy]
        lines += [""]
        if tables.condensed:
            lines.append(f"{len(self.per_class)} classes; the {len(tables.worst)} with the lowest F1 "
                         "(all of them: the JSON or Markdown report)")
        lines.append(f"{'class':<{width}}  precision  recall     f1  support")
        for m in tables.worst or tables.full:
            lines.append(f"{m.label:<{width}}  {m.precision:9.4f}  {m.recall:6.4f}  {m.f1:5.4f}  {m.support:7d}")
        if len(self.labels) <= TEXT_MATRIX_MAX_CLASSES:
            lines += ["", "confusion matrix (rows: true, columns: predicted)"]
            cell = max(5, len(str(max(max(r) for r in self.confusion_matrix))) + 1)
            lines.append(" " * width + "".join(f"{i:>{cell}}" for i in range(len(self.labels))))
            for label, row in zip(self.labels, self.confusion_matrix):
                lines.append(f"{label:<{width}}" + "".join(f"{v:>{cell}}" for v in row))
        elif self.top_confusions:
            lines += ["", "top confusions (true -> predicted: images, share of the true class)"]
            lines += [f"  {c.true} -> {c.predicted}: {c.count}  ({c.share:.1%})" for c in self.top_confusions[:10]]
        if self.most_confused:
            lines += ["", "most confused pairs"]
            for p in self.most_confused:
                lines.append(f"  {p.a} <-> {p.b}: {p.total}  ({p.a} as {p.b}: {p.a_as_b}, {p.b} as {p.a}: {p.b_as_a})")
        if self.unlabelled:
            lines += ["", f"{self.unlabelled} scored images had no true label (not in the accuracy)"]
        lines += format_skipped(self.skipped, self.skipped_files)
        return "\n".join(lines)


def build_report(
    true: np.ndarray,
    predicted: np.ndarray,
    scores: np.ndarray,
    labels: list[str] | tuple[str, ...],
    *,
    top_pairs: int = 5,
    max_misclassified: int = 20,
    run: dict | None = None,
    sources: list[str] | None = None,
    indices: list[int] | None = None,
    ranked: np.ndarray | None = None,
) -> AccuracyReport:
    """Compare predictions with the truth.

    ``true`` and ``predicted`` are class indices ``[N]``, ``scores`` the
    probability of each prediction; ``sources`` and ``indices`` (optional)
    name each image and give its position in the run's input; ``ranked``
    (optional, ``[N, k]``) the k best classes of each image, best first, for
    top-2..k accuracy. ``misclassified`` lists the most confident mistakes
    first, ``unsure_correct`` the least confident correct answers.
    """
    true = np.asarray(true, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    if true.shape != predicted.shape or true.ndim != 1 or len(true) == 0:
        raise ValueError(f"need equally long, non-empty label arrays, got {true.shape} and {predicted.shape}")
    n_classes = len(labels)
    confusion = np.bincount(true * n_classes + predicted, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    correct = np.diag(confusion).astype(np.float64)
    predicted_count = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = np.divide(correct, predicted_count, out=np.zeros(n_classes), where=predicted_count > 0)
    recall = np.divide(correct, support, out=np.zeros(n_classes), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(n_classes), where=denom > 0)
    per_class = [
        ClassMetrics(i, labels[i], float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
        for i in range(n_classes)
    ]
    present = support > 0
    scores = np.asarray(scores, dtype=np.float64)
    right = true == predicted
    n_right = int(right.sum())
    bins = calibration_bins(scores, right, CALIBRATION_BINS)
    normalized = np.divide(confusion, support[:, None], out=np.zeros((n_classes, n_classes)), where=present[:, None])
    examples = _Examples(true, predicted, scores, labels, sources, indices)
    return AccuracyReport(
        num_images=len(true),
        correct=n_right,
        accuracy=n_right / len(true),
        accuracy_ci95=wilson_interval(n_right, len(true)),
        macro_f1=float(f1[present].mean()) if present.any() else 0.0,
        weighted_f1=float((f1 * support).sum() / support.sum()),
        labels=list(labels),
        per_class=per_class,
        confusion_matrix=confusion.tolist(),
        confusion_matrix_normalized=np.round(normalized, 6).tolist(),
        most_confused=_most_confused(confusion, labels, top_pairs),
        misclassified=examples.pick(np.flatnonzero(~right), most_confident=True, limit=max_misclassified),
        unsure_correct=examples.pick(np.flatnonzero(right), most_confident=False, limit=max_misclassified),
        calibration=Calibration(expected_calibration_error(bins), bins),
        top_k_accuracy=_top_k_accuracy(true, ranked),
        run=dict(run or {}),
        top_confusions=top_confusions(confusion, labels),
    )


def format_skipped(count: int, listed: list[SkippedFile], show: int = 10) -> list[str]:
    """Terminal lines about skipped files (none when nothing was skipped)."""
    if not count:
        return []
    lines = ["", f"{count} file{'s' if count != 1 else ''} skipped (not scored):"]
    lines += [f"  {f.source}: {f.reason}" for f in listed[:show]]
    if count > show:
        lines.append(f"  ... and {count - show} more (see the output file)")
    return lines


@dataclass
class RowSummary:
    """What the rows of a predictions file hold, as arrays for ``build_report``."""

    rows: int = 0
    # One entry per labelled image: kept out of repr (asyncio formats a finished task's result).
    true: list[int] = field(default_factory=list, repr=False)
    predicted: list[int] = field(default_factory=list, repr=False)
    scores: list[float] = field(default_factory=list, repr=False)
    sources: list[str] = field(default_factory=list, repr=False)
    indices: list[int] = field(default_factory=list, repr=False)
    #: The top-k classes of each labelled image, when the run asked for --top-k (else empty).
    ranked: list[list[int]] = field(default_factory=list, repr=False)
    unlabelled: int = 0
    skipped: int = 0
    skipped_files: list[SkippedFile] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)

    @property
    def scored(self) -> int:
        return self.rows - self.skipped


def summarize_rows(rows: Iterable[dict]) -> RowSummary:
    """Count and collect the rows of a predictions file (JSONL or Parquet rows as dicts)."""
    s = RowSummary()
    for row in rows:
        s.rows += 1
        reason = row.get("skipped")
        if reason is not None:
            s.skipped += 1
            if len(s.skipped_files) < MAX_SKIPPED_LISTED:
                s.skipped_files.append(SkippedFile(row["source"], reason))
            continue
        version = str(row.get("version"))
        s.versions[version] = s.versions.get(version, 0) + 1
        true = row.get("true_class")
        if true is None:
            s.unlabelled += 1
            continue
        s.true.append(true)
        s.predicted.append(row["class"])
        s.scores.append(row["score"])
        s.sources.append(row["source"])
        s.indices.append(row["index"])
        top_k = row.get("top_k")
        if top_k:
            s.ranked.append([entry["class"] for entry in top_k])
    return s


def report_from_rows(summary: RowSummary, labels: list[str], run: dict | None = None) -> AccuracyReport | None:
    """The accuracy report of a predictions file's rows; None when no scored row has a true label."""
    if not summary.true:
        return None
    # Top-k accuracy only when every labelled row has the same k (rows of one run do).
    same_k = len(summary.ranked) == len(summary.true) and len({len(r) for r in summary.ranked}) == 1
    ranked = np.asarray(summary.ranked) if same_k else None
    report = build_report(
        np.asarray(summary.true), np.asarray(summary.predicted), np.asarray(summary.scores), labels, run=run,
        sources=summary.sources, indices=summary.indices, ranked=ranked,
    )
    report.skipped, report.skipped_files, report.unlabelled = summary.skipped, summary.skipped_files, summary.unlabelled
    return report


def _most_confused(confusion: np.ndarray, labels, top: int) -> list[ConfusedPair]:
    """The ``top`` pairs most often mistaken for each other (both directions), ties by label."""
    both = np.triu(confusion + confusion.T, k=1)  # vectorised: 1,000 classes are half a million pairs
    a, b = np.nonzero(both)
    if len(a) > top > 0:  # only the pairs that can make the list are named and sorted
        keep = both[a, b] >= np.partition(both[a, b], -top)[-top]
        a, b = a[keep], b[keep]
    pairs = [ConfusedPair(labels[i], labels[j], int(confusion[i, j]), int(confusion[j, i])) for i, j in zip(a, b)]
    pairs.sort(key=lambda p: (-p.total, p.a, p.b))
    return pairs[:top]


def _top_k_accuracy(true: np.ndarray, ranked: np.ndarray | None) -> list[TopKAccuracy]:
    if ranked is None or ranked.ndim != 2 or ranked.shape[1] < 2:
        return []
    hits = np.cumsum(ranked == true[:, None], axis=1) > 0  # hits[:, j]: the truth is among the best j+1
    result = []
    for j in range(1, ranked.shape[1]):
        n = int(hits[:, j].sum())
        result.append(TopKAccuracy(j + 1, n / len(true), wilson_interval(n, len(true))))
    return result


class _Examples:
    """Picks examples by confidence and names them."""

    def __init__(self, true, predicted, scores, labels, sources, indices) -> None:
        self.true, self.predicted, self.scores, self.labels = true, predicted, scores, labels
        self.sources, self.indices = sources, indices

    def pick(self, positions: np.ndarray, most_confident: bool, limit: int) -> list[Example]:
        keys = -self.scores[positions] if most_confident else self.scores[positions]
        chosen = positions[np.argsort(keys, kind="stable")][:limit]
        return [
            Example(
                int(self.indices[i]) if self.indices else int(i), self.labels[self.true[i]],
                self.labels[self.predicted[i]], float(self.scores[i]), self.sources[i] if self.sources else "",
            )
            for i in chosen
        ]
