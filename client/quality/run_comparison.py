"""Two prediction files of the same images, compared: accuracy of each with 95% intervals, McNemar's test of
whether the difference is real, per-class recall, and the images one gets right and the other wrong.

Images are matched by ``source`` (the same input scored twice has the same sources); only images labelled and
scored in both count. ``Comparison.to_dict`` is the JSON schema ``tfclassify-comparison/1``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path

import numpy as np

from tfclassify.client.atomic import write_atomic
from tfclassify.client.quality.html import STYLE, example_grid, label_html, table_html
from tfclassify.client.quality.report import Example
from tfclassify.client.quality.stats import McNemarResult, mcnemar, wilson_interval

SCHEMA = "tfclassify-comparison/1"
#: Significance level of "the difference is real".
ALPHA = 0.05


class ComparisonError(ValueError):
    """The two files cannot be compared (different classes, no image in common)."""


@dataclass(frozen=True)
class Side:
    """One of the two runs: which model and versions, and its accuracy on the common images."""

    name: str  # the file, as given
    model: str
    versions: list[str]
    correct: int
    accuracy: float
    ci95: tuple[float, float]


@dataclass(frozen=True)
class ClassDifference:
    """Recall of one class in each run, on the common images."""

    label: str
    support: int
    recall_a: float
    recall_b: float

    @property
    def difference(self) -> float:
        return self.recall_b - self.recall_a


@dataclass
class Comparison:
    """A against B on the images both scored with a true label."""

    labels: list[str]
    num_images: int
    a: Side
    b: Side
    mcnemar: McNemarResult
    per_class: list[ClassDifference]
    only_a_right: list[Example]  # A right, B wrong: B's most confident mistakes first
    only_b_right: list[Example]  # B right, A wrong: A's most confident mistakes first
    only_in_a: int = 0  # labelled images of A missing from B (not compared)
    only_in_b: int = 0

    @property
    def difference(self) -> float:
        """Accuracy of B minus accuracy of A."""
        return self.b.accuracy - self.a.accuracy

    @property
    def significant(self) -> bool:
        return self.mcnemar.significant(ALPHA)

    def verdict(self) -> str:
        """One line: which is better, and whether it could be chance."""
        if not self.significant:
            return (f"no significant difference (McNemar p = {self.mcnemar.p_value:.3g} >= {ALPHA}): "
                    f"{self.mcnemar.only_a} images only A gets right, {self.mcnemar.only_b} only B")
        better = "B" if self.difference > 0 else "A"
        return (f"{better} is better (McNemar p = {self.mcnemar.p_value:.3g} < {ALPHA}): "
                f"{self.mcnemar.only_a} images only A gets right, {self.mcnemar.only_b} only B")

    def to_dict(self) -> dict:
        d = {"schema": SCHEMA, **asdict(self)}
        d["difference"] = self.difference
        d["significant"] = self.significant
        d["mcnemar"]["alpha"] = ALPHA
        for entry, source in zip(d["per_class"], self.per_class):
            entry["difference"] = source.difference
        return d

    def format_text(self) -> str:
        width = max(8, *(len(c.label) for c in self.per_class))
        lines = [f"{self.num_images:,} images labelled and scored in both"]
        for tag, side in (("A", self.a), ("B", self.b)):
            lines.append(f"  {tag} {side.name}: {side.model} version {', '.join(side.versions)}  accuracy "
                         f"{side.accuracy:.4f} (95% CI {side.ci95[0]:.4f}..{side.ci95[1]:.4f})")
        lines += [f"  B - A: {self.difference:+.4f}; {self.verdict()}", "",
                  f"{'class':<{width}}  support  recall A  recall B   B - A"]
        lines += [f"{c.label:<{width}}  {c.support:7d}  {c.recall_a:8.4f}  {c.recall_b:8.4f}  {c.difference:+.4f}"
                  for c in self.per_class]
        if self.only_in_a or self.only_in_b:
            lines += ["", f"not compared: {self.only_in_a} labelled images only in A, {self.only_in_b} only in B"]
        return "\n".join(lines)


@dataclass
class _Rows:
    true: dict[str, int] = field(default_factory=dict)
    predicted: dict[str, int] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    indices: dict[str, int] = field(default_factory=dict)
    versions: set[str] = field(default_factory=set)


def _collect(rows: Iterable[dict]) -> _Rows:
    collected = _Rows()
    for row in rows:
        if row.get("skipped") is not None or row.get("true_class") is None:
            continue
        source = row["source"]
        collected.true[source] = row["true_class"]
        collected.predicted[source] = row["class"]
        collected.scores[source] = row["score"]
        collected.indices[source] = row["index"]
        collected.versions.add(str(row.get("version")))
    return collected


def compare(rows_a: Iterable[dict], rows_b: Iterable[dict], labels: list[str], *, names: tuple[str, str] = ("A", "B"),
            models: tuple[str, str] = ("", ""), max_examples: int = 40) -> Comparison:
    """Compare two runs' rows (as ``read_rows`` gives them) over the images both labelled and scored."""
    a, b = _collect(rows_a), _collect(rows_b)
    common = [s for s in a.true if s in b.true]
    if not common:
        raise ComparisonError("the two files have no labelled, scored image in common (compare runs over the "
                              "same inputs)")
    disagree = [s for s in common if a.true[s] != b.true[s]]
    if disagree:
        raise ComparisonError(f"{len(disagree)} images have different true labels in the two files, e.g. "
                              f"{disagree[0]}: they were not scored with the same labels")
    true = np.array([a.true[s] for s in common])
    pred_a = np.array([a.predicted[s] for s in common])
    pred_b = np.array([b.predicted[s] for s in common])
    right_a, right_b = pred_a == true, pred_b == true
    n = len(common)
    sides = []
    for name, model, rows, right in ((names[0], models[0], a, right_a), (names[1], models[1], b, right_b)):
        k = int(right.sum())
        sides.append(Side(name, model, sorted(rows.versions), k, k / n, wilson_interval(k, n)))
    support = np.bincount(true, minlength=len(labels))
    hits_a = np.bincount(true[right_a], minlength=len(labels))
    hits_b = np.bincount(true[right_b], minlength=len(labels))
    per_class = [
        ClassDifference(labels[c], int(support[c]), float(hits_a[c] / support[c]), float(hits_b[c] / support[c]))
        for c in range(len(labels)) if support[c]
    ]
    return Comparison(
        labels=list(labels), num_images=n, a=sides[0], b=sides[1], mcnemar=mcnemar(right_a, right_b),
        per_class=per_class,
        only_a_right=_examples([common[i] for i in np.flatnonzero(right_a & ~right_b)], b, labels, max_examples),
        only_b_right=_examples([common[i] for i in np.flatnonzero(right_b & ~right_a)], a, labels, max_examples),
        only_in_a=len(a.true) - n, only_in_b=len(b.true) - n,
    )


def _examples(sources: list[str], wrong: _Rows, labels: list[str], limit: int) -> list[Example]:
    """The images the ``wrong`` run got wrong, its most confident mistakes first."""
    sources = sorted(sources, key=lambda s: -wrong.scores[s])[:limit]
    return [Example(wrong.indices[s], labels[wrong.true[s]], labels[wrong.predicted[s]], wrong.scores[s], s)
            for s in sources]


def render_markdown(c: Comparison) -> str:
    lines = ["# Comparison", "", "| run | model | versions | accuracy | 95% CI |", "|---|---|---|---:|---|"]
    for tag, side in (("A", c.a), ("B", c.b)):
        lines.append(f"| {tag} `{side.name}` | {side.model} | {', '.join(side.versions)} | {side.accuracy:.4f} | "
                     f"{side.ci95[0]:.4f}–{side.ci95[1]:.4f} |")
    lines += ["", f"{c.num_images:,} images. B − A = {c.difference:+.4f}; {c.verdict()}.", "",
              "| class | support | recall A | recall B | B − A |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {d.label} | {d.support:,} | {d.recall_a:.4f} | {d.recall_b:.4f} | {d.difference:+.4f} |"
              for d in c.per_class]
    return "\n".join(lines) + "\n"


def render_html(c: Comparison, thumbnails: dict[str, np.ndarray], notes: Sequence[str] = ()) -> str:
    def caption(e: Example) -> str:
        return (f'{label_html(e.true_label)}, wrongly {label_html(e.predicted_label, wrong=True)} '
                f'<span class="score">({e.score:.3f})</span>')

    runs = [(f"{tag} {escape(s.name)}", escape(s.model), escape(", ".join(s.versions)), f"{s.accuracy:.4f}",
             f"{s.ci95[0]:.4f}–{s.ci95[1]:.4f}") for tag, s in (("A", c.a), ("B", c.b))]
    classes = [(label_html(d.label), f"{d.support:,}", f"{d.recall_a:.4f}", f"{d.recall_b:.4f}",
                f"{d.difference:+.4f}") for d in c.per_class]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>Comparison</title>',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{STYLE}</style></head><body><h1>Comparison</h1>",
        *(f'<p class="note">{escape(n)}</p>' for n in notes),
        f"<p>{c.num_images:,} images. B − A = {c.difference:+.4f}; {escape(c.verdict())}.</p>",
        '<div class="scroll">' + table_html(("run", "model", "versions", "accuracy", "95% CI"), runs, numeric=(3,))
        + "</div>",
        f"<h2>Right only in A ({c.mcnemar.only_a:,}): B's mistakes</h2>",
        example_grid(c.only_a_right, thumbnails, "only-a-right", caption),
        f"<h2>Right only in B ({c.mcnemar.only_b:,}): A's mistakes</h2>",
        example_grid(c.only_b_right, thumbnails, "only-b-right", caption),
        '<h2>Recall by class</h2><div class="scroll">'
        + table_html(("class", "support", "recall A", "recall B", "B − A"), classes, numeric=(1, 2, 3, 4)) + "</div>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_comparison(c: Comparison, path: Path, thumbnails: dict[str, np.ndarray], notes: list[str]) -> None:
    """Write ``c`` as JSON, Markdown or HTML, by ``path``'s suffix (whole or not at all)."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        write_atomic(path, json.dumps(c.to_dict(), indent=2, ensure_ascii=False) + "\n")
    elif suffix == ".md":
        write_atomic(path, render_markdown(c))
    else:
        write_atomic(path, render_html(c, thumbnails, notes))
