"""An accuracy report as Markdown: for a pull request, a wiki page or a CI summary."""

from __future__ import annotations

from tfclassify.client.quality.report import AccuracyReport, Example

#: Show the confusion matrix as a table up to this many classes (49 columns do not read as Markdown).
MAX_TABLE_CLASSES = 20


def render_markdown(report: AccuracyReport, title: str = "Accuracy report") -> str:
    """The whole report as GitHub-flavoured Markdown."""
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
    lines += ["", "## Per class", "", "| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {_cell(m.label)} | {m.precision:.4f} | {m.recall:.4f} | {m.f1:.4f} | {m.support:,} |"
              for m in report.per_class]
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


def _confusion_lines(report: AccuracyReport) -> list[str]:
    n = len(report.labels)
    lines = ["", "## Confusion matrix", ""]
    if n > MAX_TABLE_CLASSES:
        return lines + [f"{n} classes: see the JSON report (`confusion_matrix`) or the HTML heatmap."]
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
