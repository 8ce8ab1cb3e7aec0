"""Accuracy report: accuracy, per-class precision/recall/F1, confusion matrix,
most-confused class pairs and the most confident mistakes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


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
) -> AccuracyReport:
    """Compare predictions with the truth.

    ``true`` and ``predicted`` are class indices ``[N]``, ``scores`` the
    probability of each prediction. ``misclassified`` lists the most
    confident mistakes first.
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
        misclassified=_misclassified(true, predicted, np.asarray(scores), labels, max_misclassified),
        run=dict(run or {}),
    )


def _most_confused(confusion: np.ndarray, labels, top: int) -> list[ConfusedPair]:
    pairs = []
    n = len(labels)
    for a in range(n):
        for b in range(a + 1, n):
            if confusion[a, b] + confusion[b, a]:
                pairs.append(ConfusedPair(labels[a], labels[b], int(confusion[a, b]), int(confusion[b, a])))
    pairs.sort(key=lambda p: (-p.total, p.a, p.b))
    return pairs[:top]


def _misclassified(true, predicted, scores, labels, limit: int) -> list[Misclassified]:
    wrong = np.flatnonzero(true != predicted)
    worst = wrong[np.argsort(-scores[wrong], kind="stable")][:limit]
    return [Misclassified(int(i), labels[true[i]], labels[predicted[i]], float(scores[i])) for i in worst]
