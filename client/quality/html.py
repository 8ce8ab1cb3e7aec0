"""An accuracy report as one self-contained HTML file: plots and thumbnails embedded, no scripts.

Opens offline in any browser and can be mailed or attached to a CI run as
is. Plots need matplotlib (``tfclassify[report]``); without it the page
says so and keeps its tables and thumbnails (Pillow only).
"""

from __future__ import annotations

import base64
import io
from html import escape

import numpy as np
from PIL import Image

from tfclassify.client.quality.plots import INSTALL_HINT
from tfclassify.client.quality.report import AccuracyReport, Example

#: Thumbnails are drawn at this many screen pixels per image pixel (28 -> 84).
THUMBNAIL_SCALE = 3

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } .run { color: #555; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; margin: 1em 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1em; min-width: 9em; }
.card .value { font-size: 1.5em; font-weight: 600; } .card .label { color: #555; font-size: 0.85em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 0.25em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.plots { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 1em; }
.plots img { max-width: calc(50% - 0.5em); height: auto; }
.plots #plot-confusion { max-width: 60%; } .plots #plot-reliability { max-width: calc(40% - 1em); }
.plots #plot-per_class { max-width: 100%; }
.grid { display: flex; flex-wrap: wrap; gap: 0.8em; }
.grid figure { margin: 0; width: 110px; text-align: center; font-size: 0.75em; }
.grid img { width: 84px; height: 84px; image-rendering: pixelated; border: 1px solid #ccc; background: #000; }
.grid .missing { display: inline-block; width: 84px; height: 84px; line-height: 84px; background: #eee; color: #888; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5em 1em; }
"""


def render_html(
    report: AccuracyReport,
    *,
    plots: dict[str, bytes] | None,
    thumbnails: dict[str, np.ndarray],
    notes: list[str] = (),
    title: str = "Accuracy report",
) -> str:
    """The report page. ``plots``: PNGs by name (None: matplotlib missing); ``thumbnails``: pixels by source."""
    lo, hi = report.accuracy_ci95
    cards = [("accuracy", f"{report.accuracy:.4f}", f"95% CI {lo:.4f}–{hi:.4f}")]
    cards += [(f"top-{t.k} accuracy", f"{t.accuracy:.4f}", f"95% CI {t.ci95[0]:.4f}–{t.ci95[1]:.4f}")
              for t in report.top_k_accuracy]
    cards += [
        ("macro F1", f"{report.macro_f1:.4f}", f"weighted {report.weighted_f1:.4f}"),
        ("calibration error", f"{report.calibration.ece:.4f}", "ECE, 10 bins"),
        ("images", f"{report.num_images:,}", f"{report.skipped:,} skipped, {report.unlabelled:,} unlabelled"),
    ]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>", f'<p class="run">{escape(report.run_summary())}</p>',
    ]
    parts += [f'<p class="note">{escape(note)}</p>' for note in notes]
    parts.append('<div class="cards">' + "".join(
        f'<div class="card"><div class="label">{escape(name)}</div><div class="value">{escape(value)}</div>'
        f'<div class="label">{escape(detail)}</div></div>' for name, value, detail in cards) + "</div>")
    parts += _plots_section(plots, ("confusion", "reliability"), "Confusion and calibration")
    parts += _example_section("Most confident mistakes", "misclassified", report.misclassified, thumbnails)
    parts += _plots_section(plots, ("per_class",), "Precision, recall and F1 by class") if plots else []
    parts += _per_class_table(report)
    parts += _confused_table(report)
    parts += _example_section("Least confident correct answers", "unsure-correct", report.unsure_correct, thumbnails)
    parts += _calibration_table(report)
    parts += _skipped_table(report)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def thumbnail_png(pixels: np.ndarray) -> bytes:
    """One image as a PNG, enlarged THUMBNAIL_SCALE times without smoothing."""
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), mode="L")
    image = image.resize((image.width * THUMBNAIL_SCALE, image.height * THUMBNAIL_SCALE), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def example_grid(examples: list[Example], thumbnails: dict[str, np.ndarray], css_id: str, caption) -> str:
    """A grid of thumbnails, each captioned by ``caption(example)`` (plain text)."""
    figures = []
    for e in examples:
        pixels = thumbnails.get(e.source)
        picture = (f'<img src="{png_data_uri(thumbnail_png(pixels))}" alt="{escape(e.source)}">' if pixels is not None
                   else '<span class="missing">not found</span>')
        figures.append(f'<figure title="{escape(e.source)}">{picture}<figcaption>{escape(caption(e))}</figcaption></figure>')
    return f'<div class="grid" id="{css_id}">' + "".join(figures) + "</div>"


def _plots_section(plots: dict[str, bytes] | None, keys: tuple[str, ...], title: str) -> list[str]:
    if plots is None:
        return [f'<p class="note">Plots need matplotlib: {escape(INSTALL_HINT)}.</p>']
    names = {"confusion": "Confusion matrix", "per_class": "Per-class precision, recall and F1",
             "reliability": "Reliability diagram"}
    images = "".join(f'<img id="plot-{key}" src="{png_data_uri(plots[key])}" alt="{escape(names[key])}">'
                     for key in keys)
    return [f"<h2>{escape(title)}</h2>", f'<div class="plots">{images}</div>']


def _example_section(title: str, css_id: str, examples: list[Example], thumbnails) -> list[str]:
    if not examples:
        return []
    return [f"<h2>{escape(title)}</h2>",
            example_grid(examples, thumbnails, css_id, lambda e: f"{e.true_label} → {e.predicted_label} ({e.score:.3f})")]


def _per_class_table(report: AccuracyReport) -> list[str]:
    rows = "".join(f"<tr><td>{escape(m.label)}</td><td>{m.precision:.4f}</td><td>{m.recall:.4f}</td>"
                   f"<td>{m.f1:.4f}</td><td>{m.support:,}</td></tr>" for m in report.per_class)
    return ["<h2>Per class</h2>", "<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>"
            f"<th>support</th></tr>{rows}</table>"]


def _confused_table(report: AccuracyReport) -> list[str]:
    if not report.most_confused:
        return []
    rows = "".join(f"<tr><td>{escape(p.a)} ↔ {escape(p.b)}</td><td>{p.total}</td><td>{p.a_as_b}</td>"
                   f"<td>{p.b_as_a}</td></tr>" for p in report.most_confused)
    return ["<h2>Most confused pairs</h2>",
            f"<table><tr><th>classes</th><th>total</th><th>a as b</th><th>b as a</th></tr>{rows}</table>"]


def _calibration_table(report: AccuracyReport) -> list[str]:
    rows = "".join(f"<tr><td>{b.lower:.1f}–{b.upper:.1f}</td><td>{b.count:,}</td><td>{b.confidence:.4f}</td>"
                   f"<td>{b.accuracy:.4f}</td></tr>" for b in report.calibration.bins if b.count)
    return ["<h2>Calibration</h2>", "<table><tr><th>confidence</th><th>images</th><th>mean confidence</th>"
            f"<th>accuracy</th></tr>{rows}</table>"]


def _skipped_table(report: AccuracyReport) -> list[str]:
    if not report.skipped:
        return []
    rows = "".join(f"<tr><td>{escape(f.source)}</td><td>{escape(f.reason)}</td></tr>" for f in report.skipped_files)
    more = report.skipped - len(report.skipped_files)
    tail = f"<p>… and {more:,} more in the predictions file.</p>" if more > 0 else ""
    return [f"<h2>Skipped files ({report.skipped:,})</h2>",
            f"<table><tr><th>file</th><th>reason</th></tr>{rows}</table>{tail}"]
