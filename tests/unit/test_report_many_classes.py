"""Reports of 120 and 1,000 classes: the top confusions, the heatmap's classes, the per-class tables and the
CSV beside the Markdown, checked against independent counting and planted numbers; bounded pictures; speed."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import time
from collections import Counter
from html import unescape

import numpy as np
import pytest
from many_classes import LONG, labels_of, predictions
from PIL import Image

from tfclassify.client.quality.outputs import write_reports
from tfclassify.client.quality.report import build_report


def by_counting(true, predicted, n):
    """Per-class precision/recall/F1/support, off-diagonal cells and mistakes per class, in plain Python."""
    cells = Counter(zip(true.tolist(), predicted.tolist()))
    support = Counter(true.tolist())
    predicted_count = Counter(predicted.tolist())
    metrics = []
    for c in range(n):
        tp = cells[(c, c)]
        precision = tp / predicted_count[c] if predicted_count[c] else 0.0
        recall = tp / support[c] if support[c] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        metrics.append((c, f1, support[c], precision, recall))
    off = {(t, p): k for (t, p), k in cells.items() if t != p}
    mistakes = Counter()
    for (t, p), k in off.items():
        mistakes[t] += k
        mistakes[p] += k
    return metrics, off, support, mistakes


def strip(html: str) -> str:
    return unescape(re.sub("<[^>]+>", "", html))


def table_rows(html: str, css_id: str) -> list[list[str]]:
    """The body rows of the table inside the element with id ``css_id``, as text cells."""
    section = html.split(f'id="{css_id}"', 1)[1].split("</table>", 1)[0]
    body = section.split("<tbody>", 1)[1]
    return [[strip(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)] for row in re.findall(r"<tr>(.*?)</tr>", body)]


def pngs(html: str) -> dict[str, Image.Image]:
    return {key: Image.open(io.BytesIO(base64.b64decode(data)))
            for key, data in re.findall(r'<img id="plot-(\w+)" src="data:image/png;base64,([^"]+)"', html)}


def test_top_confusions_are_the_largest_cells_true_to_predicted(many):
    n, true, predicted, report, out, _, _ = many
    _, off, support, _ = by_counting(true, predicted, n)
    expected = sorted(off.items(), key=lambda item: (-item[1], item[0][0], item[0][1]))[:20]
    got = [((c.true_index, c.predicted_index), c.count) for c in report.top_confusions]
    assert got == expected
    # The planted mistakes lead, with their exact counts and shares of the true class.
    first = [(c.true, c.predicted, c.count, round(c.share, 6)) for c in report.top_confusions[:4]]
    assert first == [(LONG, "class 0017", 30, round(30 / support[5], 6)),
                     ("class 0040", "class 0041", 25, round(25 / support[40], 6)),
                     ("class 0099", "class 0003", 20, round(20 / support[99], 6)),
                     ("class 0017", LONG, 12, round(12 / support[17], 6))]
    assert support[5] == 44 and support[40] == 41 and support[99] == 51 and support[17] == 66
    # The same rows in the HTML and the Markdown, and in the JSON.
    html, markdown = (out / "r.html").read_text(), (out / "r.md").read_text()
    assert table_rows(html, "top-confusions")[:2] == [[f"{LONG} → class 0017", "30", "68.2%"],
                                                       ["class 0040 → class 0041", "25", "61.0%"]]
    assert len(table_rows(html, "top-confusions")) == 20
    assert f"| {LONG} → class 0017 | 30 | 68.2% |" in markdown
    assert "| class 0099 → class 0003 | 20 | 39.2% |" in markdown
    saved = json.loads((out / "r.json").read_text())
    assert [(c["true_index"], c["predicted_index"], c["count"]) for c in saved["top_confusions"]] == [
        (t, p, k) for (t, p), k in expected]
    # The pairs (both directions) agree with counting too: 5 <-> 17 is 30 + 12.
    pairs = Counter()
    for (t, p), k in off.items():
        pairs[(min(t, p), max(t, p))] += k
    assert report.most_confused[0].total == 42 and (report.most_confused[0].a_as_b, report.most_confused[0].b_as_a) == (30, 12)
    assert sorted(p.total for p in report.most_confused) == sorted(pairs.values())[-5:]


def test_heatmap_shows_the_25_classes_in_the_most_mistakes(many):
    pytest.importorskip("matplotlib")
    from tfclassify.client.quality.classes import heatmap_classes
    from tfclassify.client.quality.plots import confusion_figure

    n, true, predicted, report, out, _, _ = many
    _, _, _, mistakes = by_counting(true, predicted, n)
    expected = sorted(sorted(range(n), key=lambda c: (-mistakes[c], c))[:25])
    shown = heatmap_classes(np.asarray(report.confusion_matrix))
    assert shown.indices == expected and shown.total == n and len(expected) == 25
    assert {5, 17, 40, 41, 99, 3} <= set(expected), "the planted confusions are in it"
    html = (out / "r.html").read_text()
    caption = strip(html.split('id="confusion-caption">', 1)[1].split("</p>", 1)[0])
    assert caption.startswith(f"Heatmap: 25 of {n} classes: the 25 involved in the most mistakes (images of the "
                              "class predicted as another, plus images of other classes predicted as it)")
    assert caption.endswith("Shown: " + ", ".join(labels_of(n)[i] for i in expected) + ".")
    figure = confusion_figure(report)
    ax = figure.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == [("a class name long e…" if i == 5 else f"class {i:04d}") for i in expected]
    assert [t.get_text() for t in ax.get_yticklabels()] == ticks
    assert ax.get_title() == f"Confusion matrix ({len(true):,} images, the 25 most confused of {n} classes)"
    # The cells are the chosen rows and columns of the full matrix, with counts written in them.
    assert np.array_equal(ax.images[0].get_array(), np.asarray(report.confusion_matrix_normalized)[np.ix_(expected, expected)])
    row, col = expected.index(5), expected.index(17)
    assert any(t.get_text() == "30" and t.get_position() == (col, row) for t in ax.texts)
    # Bounded pictures whatever the number of classes.
    sizes = {key: image.size for key, image in pngs(html).items()}
    assert set(sizes) == {"confusion", "reliability", "classes"}
    assert sizes["confusion"][0] <= 1500 and sizes["confusion"][1] <= 1400, sizes
    assert sizes["classes"][0] <= 700 and sizes["classes"][1] <= 450, sizes


def test_per_class_tables_lowest_f1_first_with_the_rest_collapsed_or_in_a_csv(many):
    n, true, predicted, _report, out, notes, _ = many
    metrics, _, _, _ = by_counting(true, predicted, n)
    present = sorted((m for m in metrics if m[2]), key=lambda m: (m[1], -m[2], m[0]))
    order = [m[0] for m in present] + [n - 1]  # the class without images last
    name = labels_of(n)
    html = (out / "r.html").read_text()
    worst, best = table_rows(html, "per-class-worst"), table_rows(html, "per-class-best")
    assert [r[0] for r in worst] == [name[c] for c in order[:15]]
    assert [r[0] for r in best] == [name[c] for c in order[:-1][::-1][:5]]
    assert [float(r[3]) for r in worst] == pytest.approx([m[1] for m in present[:15]], abs=5e-5)
    assert worst[0][4] == f"{present[0][2]:,}"
    # Every class in the collapsed table, lowest F1 first, the class without images at the end.
    details = html.split('<details id="per-class-all">', 1)[1].split("</details>", 1)[0]
    assert strip(details.split("</summary>", 1)[0]) == f"All {n:,} classes, lowest F1 first"
    assert [r[0] for r in table_rows(details, "per-class")] == [name[c] for c in order]
    key = strip(html.split("Precision, recall and F1 by class</h2>", 1)[1].split("</p>", 1)[0]).strip()
    assert key.startswith(f"{n:,} classes, too many for one open table: the 15 with the lowest F1 and the 5 with "
                          "the highest") and "Classes without images in the truth (1) come last." in key
    # The Markdown has the worst and best, and names the CSV beside it, which has them all.
    markdown = (out / "r.md").read_text()
    assert "All of them, lowest F1 first, are in the CSV file `r.classes.csv` beside this one" in markdown
    section = markdown.split("### Lowest F1 (15)", 1)[1].split("### Highest F1 (5)", 1)[0]
    assert re.findall(r"^\| (class \d+|a class[^|]*) \|", section, re.M) == [name[c] for c in order[:15]]
    assert markdown.count("\n| class 0") < 60 and len(markdown) < 20_000, "the page stays short"
    rows = list(csv.reader(io.StringIO((out / "r.classes.csv").read_text())))
    assert rows[0] == ["rank", "index", "class", "precision", "recall", "f1", "support"]
    assert [int(r[1]) for r in rows[1:]] == order and [int(r[0]) for r in rows[1:]] == list(range(1, n + 1))
    c, f1, support, precision, recall = present[0]
    assert rows[1] == ["1", str(c), name[c], f"{precision:.6f}", f"{recall:.6f}", f"{f1:.6f}", str(support)]
    assert rows[-1] == [str(n), str(n - 1), name[n - 1], "0.000000", "0.000000", "0.000000", "0"]
    assert notes[0] == f"{out / 'r.classes.csv'}: all {n:,} classes, lowest F1 first (r.md shows the lowest and highest)"


def test_many_classes_stay_fast_and_the_json_and_terminal_stay_whole_and_short(many):
    n, _, _, report, out, _, seconds = many
    assert seconds < 5.0, f"{n} classes reported in {seconds:.2f} s"
    saved = json.loads((out / "r.json").read_text())
    assert saved == json.loads(json.dumps(report.to_dict())), "the hand-indented JSON says what to_dict says"
    assert saved["confusion_matrix"] == report.confusion_matrix and len(saved["per_class"]) == n
    assert (out / "r.json").read_text().count("\n") < 12 * n + 2 * n + 2000, "a matrix row to a line"
    assert (out / "r.html").stat().st_size < 1_500_000
    text = report.format_text()
    assert len(text.splitlines()) < 60 and "confusion matrix" not in text
    assert f"{n} classes; the 15 with the lowest F1" in text
    assert f"  {LONG} -> class 0017: 30  (68.2%)" in text


def test_ten_classes_keep_the_full_tables_in_class_order_and_no_csv(tmp_path):
    true, predicted = predictions(10)
    report = build_report(true, predicted, np.full(len(true), 0.5), labels_of(10))
    write_reports(report, [tmp_path / "r.md", tmp_path / "r.html"], None)
    html, markdown = (tmp_path / "r.html").read_text(), (tmp_path / "r.md").read_text()
    assert [r[0] for r in table_rows(html, "per-class")] == labels_of(10)
    assert "<details" not in html and "per-class-worst" not in html and 'id="plot-classes"' not in html
    assert "Heatmap: all 10 classes; colour: the share of the true class's images." in strip(html)
    assert not (tmp_path / "r.classes.csv").exists() and "### Lowest F1" not in markdown
    assert re.findall(r"^\| (class \d+|a class[^|]*) \| 0\.", markdown, re.M)[:10] == labels_of(10)
    assert "## Top confusions" in markdown and "confusion matrix (rows: true, columns: predicted)" in report.format_text()


def test_a_report_renders_1000_classes_in_a_few_seconds_including_plots(tmp_path):
    """Rendering alone, after matplotlib is imported (the fixture's timing includes the import)."""
    pytest.importorskip("matplotlib")
    true, predicted = predictions(1000, seed=3)
    started = time.perf_counter()
    report = build_report(true, predicted, np.full(len(true), 0.9), labels_of(1000))
    write_reports(report, [tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.html"], None)
    assert time.perf_counter() - started < 4.0
