"""An accuracy report as Markdown: for a pull request, a wiki page or a CI summary.

With more classes than one table shows (``FULL_TABLE_MAX_CLASSES``), the page has the classes with the lowest
and highest F1, and the whole per-class table goes to a CSV file beside it, which the page names: a
1,000-row table would overrun a pull-request comment (GitHub cuts them at 65,536 characters).
"""

from __future__ import annotations

import numpy as np

from tfclassify.client.quality.classes import class_tables, heatmap_classes
from tfclassify.client.quality.report import AccuracyReport, Example

#: Show the confusion matrix as a table up to this many classes (49 columns do not read as Markdown).
MAX_TABLE_CLASSES = 20


def render_markdown(report: AccuracyReport, title: str = "Accuracy report", class_csv: str | None = None) -> str:
    """The whole report as GitHub-flavoured Markdown; ``class_csv``: the name of the CSV file beside it that
    holds every class (written by ``outputs.write_reports`` when there are too many for the page)."""
    lo, hi = report.accuracy_ci95
    lines = [f"# {_cell(title)}", ""]
    summary = report.run_summary()
    lines += [_cell(summary), ""] if summary else []
    lines += [
        "## Summary", "",
        "| metric | value |", "|---|---|",
        f"| images (labelled, scored) | {report.num_images:,} |",
        f"| accuracy | {report.accuracy:.4f} (95% CI {lo:.4f}–{hi:.4f}) |",
    ]
    lines += [f"| top-{t.k} accuracy | {t.accuracy:.4f} (95% CI {t.ci95[0]:.4f}–{t.ci95[1]:.4f}) |"
              for t in report.top_k_accuracy]
    lines += [
        f"| macro F1 | {report.macro_f1:.4f} |",
        f"| weighted F1 | {report.weighted_f1:.4f} |",
        f"| expected calibration error | {report.calibration.ece:.4f} |",
    ]
    if report.unlabelled:
        lines.append(f"| scored without a true label | {report.unlabelled:,} |")
    lines.append(f"| skipped files | {report.skipped:,} |")
    lines += _per_class_lines(report, class_csv)
    lines += _top_confusion_lines(report)
    lines += ["", "## Most confused pairs", ""]
    if report.most_confused:
        lines += ["| classes | total | a as b | b as a |", "|---|---:|---:|---:|"]
        lines += [f"| {_cell(p.a)} ↔ {_cell(p.b)} | {p.total} | {p.a_as_b} | {p.b_as_a} |" for p in report.most_confused]
    else:
        lines.append("No class was mistaken for another.")
    lines += _confusion_lines(report)
    lines += ["", "## Calibration", "",
              f"Expected calibration error {report.calibration.ece:.4f} over {len(report.calibration.bins)} "
              "confidence bins (confidence: the score of the predicted class).", "",
              "| confidence | images | mean confidence | accuracy |", "|---|---:|---:|---:|"]
    lines += [f"| {b.lower:.1f}–{b.upper:.1f} | {b.count:,} | {b.confidence:.4f} | {b.accuracy:.4f} |"
              for b in report.calibration.bins if b.count]
    lines += _example_lines("Most confident mistakes", report.misclassified)
    lines += _example_lines("Least confident correct answers", report.unsure_correct)
    if report.skipped:
        lines += ["", "## Skipped files", "", f"{report.skipped:,} files were not scored.", "",
                  "| file | reason |", "|---|---|"]
        lines += [f"| {_cell(f.source)} | {_cell(f.reason)} |" for f in report.skipped_files]
        if report.skipped > len(report.skipped_files):
            lines.append(f"| … | {report.skipped - len(report.skipped_files):,} more in the predictions file |")
    return "\n".join(lines) + "\n"


CLASS_HEADER = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]


def _class_rows(metrics: list) -> list[str]:
    return [f"| {_cell(m.label)} | {m.precision:.4f} | {m.recall:.4f} | {m.f1:.4f} | {m.support:,} |" for m in metrics]


def _per_class_lines(report: AccuracyReport, class_csv: str | None) -> list[str]:
    tables = class_tables(report.per_class)
    lines = ["", "## Per class", ""]
    if not tables.condensed:
        return lines + CLASS_HEADER + _class_rows(tables.full)
    where = f"the CSV file `{class_csv}` beside this one and " if class_csv else ""
    lines += [f"{len(tables.full):,} classes, too many for one table: the {len(tables.worst)} with the lowest F1 "
              f"and the {len(tables.best)} with the highest (ties: more images first). All of them, lowest F1 "
              f"first, are in {where}the JSON report (`per_class`)."]
    lines += ["", f"### Lowest F1 ({len(tables.worst)})", ""] + CLASS_HEADER + _class_rows(tables.worst)
    return lines + ["", f"### Highest F1 ({len(tables.best)})", ""] + CLASS_HEADER + _class_rows(tables.best)


def _top_confusion_lines(report: AccuracyReport) -> list[str]:
    if not report.top_confusions:
        return []
    lines = ["", "## Top confusions", "",
             f"The {len(report.top_confusions)} most frequent mistakes; share: their part of the true class's images.",
             "", "| true → predicted | images | share of the true class |", "|---|---:|---:|"]
    return lines + [f"| {_cell(c.true)} → {_cell(c.predicted)} | {c.count:,} | {c.share:.1%} |"
                    for c in report.top_confusions]


def _confusion_lines(report: AccuracyReport) -> list[str]:
    n = len(report.labels)
    lines = ["", "## Confusion matrix", ""]
    if n > MAX_TABLE_CLASSES:
        shown = heatmap_classes(np.asarray(report.confusion_matrix))
        most = ("" if shown.complete else f" (the {len(shown.indices)} most confused classes, "
                + ", ".join(_cell(report.labels[i]) for i in shown.indices) + ")")
        return lines + [f"{n} classes, too many for a table: see the top confusions above, the HTML report's "
                        f"heatmap{most} or the JSON report (`confusion_matrix`)."]
    lines.append("Rows: true class; columns: predicted class (indices as in the first column).")
    lines += ["", "| true \\ predicted | " + " | ".join(str(i) for i in range(n)) + " |",
              "|---|" + "---:|" * n]
    for i, (label, row) in enumerate(zip(report.labels, report.confusion_matrix)):
        lines.append(f"| {i} {_cell(label)} | " + " | ".join(f"**{v}**" if j == i else str(v) for j, v in enumerate(row)) + " |")
    return lines


def _example_lines(title: str, examples: list[Example]) -> list[str]:
    if not examples:
        return []
    lines = ["", f"## {title}", "", "| image | true | predicted | score |", "|---|---|---|---:|"]
    lines += [f"| {_cell(e.source or str(e.index))} | {_cell(e.true_label)} | {_cell(e.predicted_label)} | {e.score:.4f} |"
              for e in examples]
    return lines


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
