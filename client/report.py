"""Accuracy report: accuracy, per-class precision/recall/F1, confusion matrix,
most-confused class pairs, the most confident mistakes and the skipped files."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

#: Skipped files listed by name in a report (all are counted).
MAX_SKIPPED_LISTED = 100


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
class Misclassified:
    """One wrongly classified example."""

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


@dataclass
class AccuracyReport:
    """Everything ``tfclassify score`` reports about one scoring run."""

    num_images: int
    accuracy: float
    macro_f1: float
    labels: list[str]
    per_class: list[ClassMetrics]
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted class
    most_confused: list[ConfusedPair]
    misclassified: list[Misclassified]
    run: dict = field(default_factory=dict)  # model, version, dataset, timing
    skipped: int = 0  # files not scored (corrupt, not an image, refused)
    skipped_files: list[SkippedFile] = field(default_factory=list)  # the first MAX_SKIPPED_LISTED
    unlabelled: int = 0  # scored images without a true label (not in the accuracy)

    def to_dict(self) -> dict:
        d = asdict(self)
        for pair, src in zip(d["most_confused"], self.most_confused):
            pair["total"] = src.total
        return d

    def write_json(self, path: str | Path) -> None:
        """Write the report as JSON (written to a temporary name, then renamed)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(path)

    def format_text(self) -> str:
        """A human-readable summary for the terminal."""
        width = max(len(m.label) for m in self.per_class)
        lines = [
            f"accuracy {self.accuracy:.4f} on {self.num_images} images  (macro F1 {self.macro_f1:.4f})",
            "",
            f"{'class':<{width}}  precision  recall     f1  support",
        ]
        for m in self.per_class:
            lines.append(f"{m.label:<{width}}  {m.precision:9.4f}  {m.recall:6.4f}  {m.f1:5.4f}  {m.support:7d}")
        lines += ["", "confusion matrix (rows: true, columns: predicted)"]
        cell = max(5, len(str(max(max(r) for r in self.confusion_matrix))) + 1)
        lines.append(" " * width + "".join(f"{i:>{cell}}" for i in range(len(self.labels))))
        for label, row in zip(self.labels, self.confusion_matrix):
            lines.append(f"{label:<{width}}" + "".join(f"{v:>{cell}}" for v in row))
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
) -> AccuracyReport:
    """Compare predictions with the truth.

    ``true`` and ``predicted`` are class indices ``[N]``, ``scores`` the
    probability of each prediction; ``sources`` and ``indices`` (optional)
    name each image and give its position in the run's input.
    ``misclassified`` lists the most confident mistakes first.
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
    return AccuracyReport(
        num_images=len(true),
        accuracy=float(correct.sum() / len(true)),
        macro_f1=float(f1[present].mean()) if present.any() else 0.0,
        labels=list(labels),
        per_class=per_class,
        confusion_matrix=confusion.tolist(),
        most_confused=_most_confused(confusion, labels, top_pairs),
        misclassified=_misclassified(true, predicted, np.asarray(scores), labels, max_misclassified, sources, indices),
        run=dict(run or {}),
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
    return s


def report_from_rows(summary: RowSummary, labels: list[str], run: dict | None = None) -> AccuracyReport | None:
    """The accuracy report of a predictions file's rows; None when no scored row has a true label."""
    if not summary.true:
        return None
    report = build_report(
        np.asarray(summary.true), np.asarray(summary.predicted), np.asarray(summary.scores), labels, run=run,
        sources=summary.sources, indices=summary.indices,
    )
    report.skipped, report.skipped_files, report.unlabelled = summary.skipped, summary.skipped_files, summary.unlabelled
    return report


def _most_confused(confusion: np.ndarray, labels, top: int) -> list[ConfusedPair]:
    pairs = []
    n = len(labels)
    for a in range(n):
        for b in range(a + 1, n):
            if confusion[a, b] + confusion[b, a]:
                pairs.append(ConfusedPair(labels[a], labels[b], int(confusion[a, b]), int(confusion[b, a])))
    pairs.sort(key=lambda p: (-p.total, p.a, p.b))
    return pairs[:top]


def _misclassified(true, predicted, scores, labels, limit: int, sources, indices) -> list[Misclassified]:
    wrong = np.flatnonzero(true != predicted)
    worst = wrong[np.argsort(-scores[wrong], kind="stable")][:limit]
    return [
        Misclassified(
            int(indices[i]) if indices else int(i), labels[true[i]], labels[predicted[i]], float(scores[i]),
            sources[i] if sources else "",
        )
        for i in worst
    ]
