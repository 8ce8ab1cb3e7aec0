"""An accuracy report as one self-contained HTML file: plots and thumbnails embedded, no scripts.

Opens offline in any browser and can be mailed or attached to a CI run as
is. Plots need matplotlib (``tfclassify[report]``); without it the page
says so and keeps its tables and thumbnails (Pillow only).

The page reads top to bottom: what was scored, where from and when; the
headline numbers; the files that were skipped (they are in none of the
numbers, so they come first); then the pictures and the tables. It is laid
out for a desktop window and a phone alike (no horizontal scrolling of the
page, tables scroll inside their own box when they must).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from html import escape

import numpy as np
from PIL import Image

from tfclassify.client.quality.classes import ClassTables, class_tables, heatmap_classes
from tfclassify.client.quality.plots import INSTALL_HINT
from tfclassify.client.quality.report import AccuracyReport, Example

#: Thumbnails are drawn at this many screen pixels per image pixel (28 -> 84).
THUMBNAIL_SCALE = 3

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; padding: 0 1em; line-height: 1.4; }
h1 { margin-bottom: 0.3em; } h2 { margin: 1.4em 0 0.4em; }
.facts { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 0.15em 1em; margin: 0;
         color: #444; font-size: 0.9em; }
.facts dt { color: #777; } .facts dd { margin: 0; overflow-wrap: anywhere; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.92em; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(11em, 1fr)); gap: 0.8em; margin: 1.2em 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1em; color: inherit; text-decoration: none; }
.card .value { font-size: 1.5em; font-weight: 600; } .card .label { color: #555; font-size: 0.85em; }
a.card.warn { border-color: #f0b400; background: #fff8e1; } a.card.warn:hover { border-color: #b88a00; }
a.card.warn .more { color: #7a5c00; text-decoration: underline; }
.key { color: #555; font-size: 0.9em; margin: 0 0 0.8em; }
.scroll { overflow-x: auto; margin: 0.5em 0 1.5em; } .scroll.tall { max-height: 22em; overflow-y: auto; }
.scroll.tall thead th { position: sticky; top: 0; background: #fff; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 0.25em 0.7em; text-align: left; vertical-align: top; }
th { vertical-align: bottom; }
th.n, td.n { text-align: right; font-variant-numeric: tabular-nums; } td.n { white-space: nowrap; }
td.bar { min-width: 7em; padding-bottom: 0.7em; background-repeat: no-repeat; background-origin: content-box;
         background-image: linear-gradient(#5b8cc9, #5b8cc9), linear-gradient(#e8e8e8, #e8e8e8);
         background-size: var(--v) 5px, 100% 5px; background-position: left bottom -7px;
         -webkit-print-color-adjust: exact; print-color-adjust: exact; }
.skipped { border-left: 4px solid #f0b400; padding-left: 1em; }
.skipped h2 { margin-top: 0.5em; }
.plots { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 1em 2em; }
.plots img { display: block; min-width: 0; height: auto; }
#plot-confusion { flex: 3 1 420px; max-width: min(100%, 900px); }
#plot-reliability { flex: 2 1 300px; max-width: min(100%, 560px); }
#plot-classes { max-width: min(100%, 650px); }
h3 { margin: 1em 0 0.3em; font-size: 1.05em; }
details > summary { cursor: pointer; margin: 0.5em 0; }
.grid { display: flex; flex-wrap: wrap; gap: 0.8em; }
.grid figure { margin: 0; width: 110px; text-align: center; font-size: 0.75em; line-height: 1.3; }
.grid img { width: 84px; height: 84px; image-rendering: pixelated; border: 1px solid #ccc; background: #000; }
.grid .missing { display: inline-block; width: 84px; height: 84px; line-height: 84px; background: #eee; color: #888; }
.cls { white-space: nowrap; }
.grid .cls { display: inline-block; max-width: 100%; overflow: hidden; text-overflow: ellipsis; vertical-align: bottom; }
.wrong { color: #b3261e; } .score { color: #666; white-space: nowrap; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5em 1em; }
@media (max-width: 600px) {
  body { margin: 1em auto; padding: 0 0.75em; } h1 { font-size: 1.6em; }
  table { font-size: 0.85em; } th, td { padding: 0.25em 0.4em; } td.bar { min-width: 0; }
  table.stack thead { display: none; }
  table.stack tr, table.stack td { display: block; } table.stack td { border: 0; padding: 0; }
  table.stack tr { border-bottom: 1px solid #e4e4e4; padding: 0.3em 0; } table.stack td + td { color: #555; }
}
"""


def render_html(
    report: AccuracyReport,
    *,
    plots: dict[str, bytes] | None,
    thumbnails: dict[str, np.ndarray],
    notes: Sequence[str] = (),
    title: str = "Accuracy report",
    inputs: Sequence[str] = (),
    generated: datetime | None = None,
) -> str:
    """The report page. ``plots``: PNGs by name (None: matplotlib missing); ``thumbnails``: pixels by source;
    ``inputs``: where the images came from (paths, datasets); ``generated``: when (default: now)."""
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>", _facts(report, inputs, generated or datetime.now(timezone.utc)),
    ]
    parts += [f'<p class="note">{escape(note)}</p>' for note in notes]
    parts.append(_cards(report))
    parts += _skipped_section(report)
    parts += _plots_section(plots, ("confusion", "reliability"), "Confusion and calibration",
                            _heatmap_caption(report))
    parts += _example_section(
        "Most confident mistakes", "misclassified", report.misclassified, thumbnails,
        f'Under each image: {label_html("true class")} → {label_html("predicted class", wrong=True)} '
        '<span class="score">(score of the prediction)</span>, most confident first.', mistake_caption)
    parts += _per_class_section(report, plots)
    parts += _top_confusions_table(report)
    parts += _confused_table(report)
    parts += _example_section(
        "Least confident correct answers", "unsure-correct", report.unsure_correct, thumbnails,
        'Under each image: its class, predicted rightly <span class="score">(score of the prediction)</span>, '
        "least confident first.", correct_caption)
    parts += _calibration_table(report)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def thumbnail_png(pixels: np.ndarray) -> bytes:
    """One image (``[H, W]`` grayscale, ``[H, W, 3]`` RGB or ``[H, W, 4]`` RGBA) as a PNG, enlarged THUMBNAIL_SCALE
    times without smoothing (fewer for large inputs)."""
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))
    scale = max(1, min(THUMBNAIL_SCALE, 96 // max(image.size)))  # a 96-pixel model input is shown as it is
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def label_html(label: str, wrong: bool = False) -> str:
    """A class name that never breaks across lines (``T-shirt/top`` would break after its hyphen)."""
    return f'<span class="cls{" wrong" if wrong else ""}" title="{escape(label)}">{escape(label)}</span>'


def mistake_caption(e: Example) -> str:
    return f'{label_html(e.true_label)} → {label_html(e.predicted_label, wrong=True)} {_score(e)}'


def correct_caption(e: Example) -> str:
    return f"{label_html(e.true_label)} {_score(e)}"


def example_grid(examples: list[Example], thumbnails: dict[str, np.ndarray], css_id: str,
                 caption: Callable[[Example], str]) -> str:
    """A grid of thumbnails, each captioned by ``caption(example)`` (HTML: names through ``label_html``)."""
    figures = []
    for e in examples:
        pixels = thumbnails.get(e.source)
        picture = (f'<img src="{png_data_uri(thumbnail_png(pixels))}" alt="{escape(e.source)}">' if pixels is not None
                   else '<span class="missing">not found</span>')
        figures.append(f'<figure title="{escape(e.source)}">{picture}<figcaption>{caption(e)}</figcaption></figure>')
    return f'<div class="grid" id="{css_id}">' + "".join(figures) + "</div>"


def table_html(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = (),
               css_class: str = "") -> str:
    """A table of already-escaped cells; the ``numeric`` columns are right-aligned, the others left."""
    def cell(tag: str, i: int, text: str) -> str:
        if text.startswith("<td"):  # a cell that brings its own attributes
            return text
        return f'<{tag} class="n">{text}</{tag}>' if i in numeric else f"<{tag}>{text}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    attr = f' class="{css_class}"' if css_class else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _score(e: Example) -> str:
    return f'<span class="score">({e.score:.3f})</span>'


def _facts(report: AccuracyReport, inputs: Sequence[str], generated: datetime) -> str:
    """What was scored, from where, how fast and when, as a list of facts under the title."""
    run, facts = report.run, []
    if run.get("model"):
        versions = sorted(run.get("versions") or {}, key=lambda v: (len(v), v))
        facts.append(("model", f"{escape(run['model'])}, version{'s' if len(versions) > 1 else ''} "
                               f"{escape(', '.join(versions) or '?')}"))
    where = list(inputs) or list(run.get("inputs") or [])
    if where:
        facts.append(("images from", "<br>".join(f"<code>{escape(w)}</code>" for w in where)))
    if run.get("predictions"):
        facts.append(("predictions", "<br>".join(f"<code>{escape(p)}</code>" for p in run["predictions"])))
    if run.get("images_per_second"):
        facts.append(("scored in", f"{run.get('seconds', 0):.2f} s ({run['images_per_second']:,.0f} images/s)"))
    stamp = generated.astimezone(timezone.utc)
    facts.append(("generated", f'<time datetime="{stamp.isoformat(timespec="seconds")}">'
                               f'{stamp.strftime("%Y-%m-%d %H:%M:%S")} UTC</time>'))
    return '<dl class="facts">' + "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts) + "</dl>"


def _cards(report: AccuracyReport) -> str:
    lo, hi = report.accuracy_ci95
    cards = [("accuracy", f"{report.accuracy:.4f}", f"95% CI {lo:.4f}–{hi:.4f}")]
    cards += [(f"top-{t.k} accuracy", f"{t.accuracy:.4f}", f"95% CI {t.ci95[0]:.4f}–{t.ci95[1]:.4f}")
              for t in report.top_k_accuracy]
    images = "; ".join([f"{report.unlabelled:,} more without a label"] * bool(report.unlabelled)
                       + ["none skipped"] * (not report.skipped)) or "labelled, scored"
    cards += [
        ("macro F1", f"{report.macro_f1:.4f}", f"weighted {report.weighted_f1:.4f}"),
        ("calibration error", f"{report.calibration.ece:.4f}", "ECE, 10 bins"),
        ("images", f"{report.num_images:,}", images),
    ]
    html = [f'<div class="card"><div class="label">{escape(name)}</div><div class="value">{escape(value)}</div>'
            f'<div class="label">{escape(detail)}</div></div>' for name, value, detail in cards]
    if report.skipped:
        html.append(f'<a class="card warn" href="#skipped"><div class="label">skipped files</div>'
                    f'<div class="value">{report.skipped:,}</div><div class="label more">not scored: the list</div></a>')
    return '<div class="cards">' + "".join(html) + "</div>"


def _skipped_section(report: AccuracyReport) -> list[str]:
    """The files that were not scored, up front: every number below leaves them out."""
    if not report.skipped:
        return []
    rows = [(escape(f.source).replace("/", "/<wbr>"), escape(f.reason)) for f in report.skipped_files]
    more = report.skipped - len(report.skipped_files)
    listed = f" The first {len(rows):,} are listed; the predictions file has all of them." if more > 0 else ""
    return ['<section class="skipped" id="skipped">',
            f"<h2>Skipped files ({report.skipped:,})</h2>",
            f'<p class="key">Not scored, so in none of the numbers on this page.{listed}</p>',
            '<div class="scroll tall">' + table_html(("file", "reason"), rows, css_class="stack") + "</div>",
            "</section>"]


def _plots_section(plots: dict[str, bytes] | None, keys: tuple[str, ...], title: str, key: str) -> list[str]:
    if plots is None:
        return [f'<p class="note">Plots need matplotlib: {escape(INSTALL_HINT)}.</p>']
    images = "".join(_plot_img(plots, name) for name in keys)
    return [f"<h2>{escape(title)}</h2>", f'<p class="key" id="confusion-caption">{key}</p>',
            f'<div class="plots">{images}</div>']


PLOT_NAMES = {"confusion": "Confusion matrix", "reliability": "Reliability diagram",
              "classes": "Histogram of per-class recall and F1"}


def _plot_img(plots: dict[str, bytes], key: str) -> str:
    width, height = _png_size(plots[key])
    return (f'<img id="plot-{key}" src="{png_data_uri(plots[key])}" alt="{escape(PLOT_NAMES[key])}" '
            f'width="{width}" height="{height}">')


def _heatmap_caption(report: AccuracyReport) -> str:
    """What the heatmap shows; for a part of the classes, which rule chose them and their whole names."""
    shown = heatmap_classes(np.asarray(report.confusion_matrix))
    text = f"Heatmap: {escape(shown.rule())}"
    if not shown.complete:
        # Plain text, not label_html: a long name may wrap here rather than widen a phone's page.
        text += " Shown: " + ", ".join(escape(report.labels[i]) for i in shown.indices) + "."
    return text


def _png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (so the page keeps its place while images load)."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _example_section(title: str, css_id: str, examples: list[Example], thumbnails, key: str,
                     caption: Callable[[Example], str]) -> list[str]:
    if not examples:
        return []
    return [f"<h2>{escape(title)}</h2>", f'<p class="key">{key}</p>', example_grid(examples, thumbnails, css_id, caption)]


def _bar(value: float) -> str:
    """A cell with its value drawn as a bar on a 0–1 scale behind the number."""
    return f'<td class="n bar" style="--v:{100 * value:.1f}%">{value:.4f}</td>'


def _class_rows(metrics: list) -> list[tuple[str, ...]]:
    return [(label_html(m.label), _bar(m.precision), _bar(m.recall), _bar(m.f1), f"{m.support:,}") for m in metrics]


def _class_table(metrics: list, css_id: str, css_class: str = "scroll") -> str:
    return (f'<div class="{css_class}" id="{css_id}">' + table_html(
        ("class", "precision", "recall", "F1", "support"), _class_rows(metrics), numeric=(1, 2, 3, 4)) + "</div>")


def _per_class_section(report: AccuracyReport, plots: dict[str, bytes] | None) -> list[str]:
    """Every class in class order; for many, the lowest and highest F1, a histogram, and every class in a
    collapsed table, lowest F1 first (one self-contained page: no file beside it)."""
    tables = class_tables(report.per_class)
    parts = ["<h2>Precision, recall and F1 by class</h2>"]
    bars = "The bar under each value draws it on a scale from 0 to 1. Support: the images of the class."
    if not tables.condensed:
        return parts + [f'<p class="key">{bars}</p>', _class_table(tables.full, "per-class")]
    parts.append(f'<p class="key">{_condensed_key(report, tables)} {bars}</p>')
    if plots and "classes" in plots:
        parts.append(f'<div class="plots">{_plot_img(plots, "classes")}</div>')
    return parts + [
        f"<h3>Lowest F1 ({len(tables.worst)})</h3>", _class_table(tables.worst, "per-class-worst"),
        f"<h3>Highest F1 ({len(tables.best)})</h3>", _class_table(tables.best, "per-class-best"),
        f'<details id="per-class-all"><summary>All {len(tables.full):,} classes, lowest F1 first</summary>',
        _class_table(tables.full, "per-class", "scroll tall"), "</details>",
    ]


def _condensed_key(report: AccuracyReport, tables: ClassTables) -> str:
    absent = sum(1 for m in report.per_class if not m.support)
    text = (f"{len(tables.full):,} classes, too many for one open table: the {len(tables.worst)} with the lowest "
            f"F1 and the {len(tables.best)} with the highest (ties: more images first), then all of them in the "
            "collapsed table below (click to open), lowest F1 first; the JSON report has them too.")
    if absent:
        text += f" Classes without images in the truth ({absent:,}) come last."
    return text


def _top_confusions_table(report: AccuracyReport) -> list[str]:
    if not report.top_confusions:
        return []
    rows = [(f"{label_html(c.true)} → {label_html(c.predicted, wrong=True)}", f"{c.count:,}", f"{c.share:.1%}")
            for c in report.top_confusions]
    return ["<h2>Top confusions</h2>",
            f'<p class="key">The {len(rows)} most frequent mistakes, true class → predicted class; share: their '
            "part of the true class's images.</p>",
            '<div class="scroll" id="top-confusions">'
            + table_html(("true → predicted", "images", "share of the true class"), rows, numeric=(1, 2)) + "</div>"]


def _confused_table(report: AccuracyReport) -> list[str]:
    if not report.most_confused:
        return []
    rows = [(f"{label_html(p.a)} ↔ {label_html(p.b)}", str(p.total), str(p.a_as_b), str(p.b_as_a))
            for p in report.most_confused]
    return ["<h2>Most confused pairs</h2>",
            '<p class="key">A → B: images of class A predicted as B (true → predicted).</p>',
            '<div class="scroll">' + table_html(("classes A ↔ B", "total", "A → B", "B → A"), rows,
                                                numeric=(1, 2, 3)) + "</div>"]


def _calibration_table(report: AccuracyReport) -> list[str]:
    rows = [(f"{b.lower:.1f}–{b.upper:.1f}", f"{b.count:,}", f"{b.confidence:.4f}", f"{b.accuracy:.4f}")
            for b in report.calibration.bins if b.count]
    return ["<h2>Calibration</h2>",
            '<p class="key">Confidence: the score of the predicted class, in ten equal bins.</p>',
            '<div class="scroll">' + table_html(("confidence", "images", "mean confidence", "accuracy"), rows,
                                                numeric=(1, 2, 3)) + "</div>"]
