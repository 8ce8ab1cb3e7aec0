"""``tfclassify report``: numbers checked against an independent computation, the HTML rendered by a real
headless Chromium, thumbnails read back from a dataset and from an archive, and the install without matplotlib."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import shutil
import subprocess
import zipfile
from datetime import datetime, timezone
from html import escape, unescape

import numpy as np
import pytest
from archives import encode
from conftest import FASHION_DIR, FASHION_LABELS, tfclassify_cmd
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
N = 2000


def run(*args: str, expect: int = 0, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(tfclassify_cmd(*args), capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == expect, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def scored(server, tmp_path_factory):
    """2,000 Fashion-MNIST test images scored with --top-k 3, and their report in all three formats."""
    out = tmp_path_factory.mktemp("report")
    run("score", "--server", server.address, "--model", "fashion", "--dataset", "fashion_mnist",
        "--data-dir", str(FASHION_DIR), "--limit", str(N), "--top-k", "3", "--output", str(out / "p.jsonl"),
        "--no-progress")
    result = run("report", str(out / "p.jsonl"), "--report", str(out / "r.json"), "--report", str(out / "r.md"),
                 "--report", str(out / "r.html"), "--title", "Fashion check")
    return out, result


def wilson_by_quadratic(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson interval as the roots of (p_hat - p)^2 = z^2 p (1 - p) / n."""
    p_hat = k / n
    a = 1 + z * z / n
    b = -(2 * p_hat + z * z / n)
    c = p_hat * p_hat
    root = math.sqrt(b * b - 4 * a * c)
    return ((-b - root) / (2 * a), (-b + root) / (2 * a))


def test_report_numbers_match_an_independent_computation(scored, fashion_test):
    out, result = scored
    rows = [json.loads(line) for line in (out / "p.jsonl").read_text().splitlines()]
    report = json.loads((out / "r.json").read_text())
    assert report["schema"] == "tfclassify-report/1"
    assert len(rows) == N and [r["true_class"] for r in rows] == fashion_test.labels[:N].tolist()
    right = [r["class"] == r["true_class"] for r in rows]
    k = sum(right)
    assert report["num_images"] == N and report["correct"] == k and report["accuracy"] == k / N
    assert report["accuracy_ci95"] == pytest.approx(wilson_by_quadratic(k, N), abs=1e-12)
    for entry in report["top_k_accuracy"]:
        hits = sum(r["true_class"] in [t["class"] for t in r["top_k"][: entry["k"]]] for r in rows)
        assert entry["accuracy"] == hits / N
    assert [e["k"] for e in report["top_k_accuracy"]] == [2, 3]
    # Per-class metrics and F1, by counting.
    f1s, supports = [], []
    for c, metrics in enumerate(report["per_class"]):
        tp = sum(1 for r in rows if r["class"] == c and r["true_class"] == c)
        predicted = sum(1 for r in rows if r["class"] == c)
        support = sum(1 for r in rows if r["true_class"] == c)
        precision, recall = tp / predicted if predicted else 0.0, tp / support
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert (metrics["precision"], metrics["recall"], metrics["support"]) == (
            pytest.approx(precision), pytest.approx(recall), support)
        assert metrics["f1"] == pytest.approx(f1)
        f1s.append(f1)
        supports.append(support)
    assert report["macro_f1"] == pytest.approx(sum(f1s) / len(f1s))
    assert report["weighted_f1"] == pytest.approx(sum(f * s for f, s in zip(f1s, supports)) / N)
    counts = [[0] * 10 for _ in range(10)]
    for r in rows:
        counts[r["true_class"]][r["class"]] += 1
    assert report["confusion_matrix"] == counts
    assert report["confusion_matrix_normalized"][6] == pytest.approx([v / supports[6] for v in counts[6]], abs=1e-6)
    # Calibration: ten equal-width bins of the predicted class's score.
    bins = [[] for _ in range(10)]
    for r, ok in zip(rows, right):
        bins[min(int(r["score"] * 10), 9)].append((r["score"], ok))
    ece = sum(len(b) / N * abs(sum(ok for _, ok in b) / len(b) - sum(s for s, _ in b) / len(b)) for b in bins if b)
    assert report["calibration"]["ece"] == pytest.approx(ece, abs=1e-9)
    assert [b["count"] for b in report["calibration"]["bins"]] == [len(b) for b in bins]
    # The extremes: the most confident mistakes and the least confident correct answers.
    mistakes = sorted((r for r in rows if r["class"] != r["true_class"]), key=lambda r: -r["score"])
    assert [m["score"] for m in report["misclassified"]] == [r["score"] for r in mistakes[: len(report["misclassified"])]]
    unsure = sorted((r for r in rows if r["class"] == r["true_class"]), key=lambda r: r["score"])
    assert report["unsure_correct"][0]["score"] == unsure[0]["score"]
    assert report["run"]["model"] == "fashion" and report["run"]["versions"] == {"1": N}
    # The text and the Markdown say the same.
    assert f"accuracy {k / N:.4f} on {N} images" in result.stdout
    markdown = (out / "r.md").read_text()
    assert markdown.startswith("# Fashion check\n")
    assert f"| accuracy | {k / N:.4f} (95% CI {report['accuracy_ci95'][0]:.4f}–" in markdown
    assert "| T-shirt/top ↔ Shirt |" in markdown or "| Pullover ↔ Coat |" in markdown


def chromium(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def thumbnails_of(html: str, grid: str) -> list[tuple[str, np.ndarray]]:
    """(caption as text, pixels) of each thumbnail of the grid with id ``grid``, decoded from its data URI."""
    section = html.split(f'id="{grid}"', 1)[1].split("</div>", 1)[0]
    found = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="[^"]*"><figcaption>(.*?)</figcaption>', section)
    return [(unescape(re.sub("<[^>]+>", "", caption)), np.asarray(Image.open(io.BytesIO(base64.b64decode(data)))))
            for data, caption in found]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by scripts/setup.sh (Debian package chromium)")
def test_html_report_renders_in_chromium_with_heatmap_and_mistakes(scored, fashion_test, tmp_path):
    out, _ = scored
    # The check can fail: a page with a console error is caught.
    (tmp_path / "bad.html").write_text('<html><body><script>console.error("broken")</script></body></html>')
    assert console_messages(chromium("--dump-dom", (tmp_path / "bad.html").as_uri(), cwd=tmp_path).stderr)

    page = chromium("--dump-dom", (out / "r.html").as_uri(), cwd=tmp_path)
    assert page.returncode == 0 and console_messages(page.stderr) == []
    assert "<title>Fashion check</title>" in page.stdout
    for plot in ("plot-confusion", "plot-reliability"):
        assert f'id="{plot}"' in page.stdout
    html = (out / "r.html").read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html, "self-contained, no scripts"
    report = json.loads((out / "r.json").read_text())
    grid = thumbnails_of(html, "misclassified")
    assert len(grid) == len(report["misclassified"]) == 20
    for (caption, pixels), mistake in zip(grid, report["misclassified"]):
        assert caption == f"{mistake['true_label']} → {mistake['predicted_label']} ({mistake['score']:.3f})"
        original = fashion_test.images[mistake["index"]]
        assert pixels.shape == (84, 84) and np.array_equal(pixels[::3, ::3], original), "the image that was scored"

    shot = tmp_path / "shot.png"
    chromium("--window-size=1200,2600", f"--screenshot={shot}", (out / "r.html").as_uri(), cwd=tmp_path)
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert image.shape == (2600, 1200, 3)
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    dark_blue = (b > 100) & (r < 60) & (g < 100)  # the heatmap's diagonal (matplotlib "Blues")
    assert dark_blue.sum() > 5000, "the confusion heatmap is visible"
    thumbnail_area = (r < 20) & (g < 20) & (b < 20)  # black backgrounds of the Fashion-MNIST thumbnails
    assert thumbnail_area.sum() > 20 * 2000, "the grid of mistakes is visible"
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 500, "not a blank page"


def test_archive_thumbnails_and_report_errors(server, fashion_test, tmp_path):
    """An HTML report of a zip archive shows the archive's images; errors are one line with status 1."""
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as zf:
        for i in range(60):
            label = FASHION_LABELS[int(fashion_test.labels[i])].replace("/", "-")
            zf.writestr(f"{label}/{i:03d}.png", encode(fashion_test.images[i]))
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n" + "".join(
        f"{FASHION_LABELS[int(fashion_test.labels[i])].replace('/', '-')}/{i:03d}.png,"
        f"{FASHION_LABELS[int(fashion_test.labels[i])]}\n" for i in range(60)))
    run("score", "--server", server.address, "--model", "fashion", "--images", str(tmp_path / "photos.zip"),
        "--labels", str(labels), "--invert", "no", "--output", str(tmp_path / "a.jsonl"),
        "--report", str(tmp_path / "a.html"), "--no-progress")
    html = (tmp_path / "a.html").read_text()
    rows = {r["source"]: r for r in map(json.loads, (tmp_path / "a.jsonl").read_text().splitlines())}
    unsure = thumbnails_of(html, "unsure-correct")
    assert unsure, "correct answers are shown too"
    report_examples = re.findall(r'<figure title="([^"]+)">', html.split('id="unsure-correct"', 1)[1])
    for (_caption, pixels), source in zip(unsure, report_examples):
        index = int(source.rsplit("/", 1)[1][:3])
        assert np.array_equal(pixels[::3, ::3], fashion_test.images[index]) and source in rows

    # Each image once: the same predictions twice are refused, not counted twice.
    twice = run("report", str(tmp_path / "a.jsonl"), str(tmp_path / "a.jsonl"), expect=1)
    assert twice.stderr.startswith("tfclassify: error: photos.zip/") and "each image must be reported once" in twice.stderr
    unknown = run("score", "--server", server.address, "--model", "fashion", "--images", str(tmp_path / "photos.zip"),
                  "--report", str(tmp_path / "r.pdf"), expect=1)
    assert unknown.stderr.strip() == (f"tfclassify: error: --report {tmp_path / 'r.pdf'}: the name must end in "
                                      ".json, .md, .html (the format to write)")
    run("score", "--server", server.address, "--model", "fashion", "--images", str(tmp_path / "photos.zip"),
        "--output", str(tmp_path / "u.jsonl"), "--no-progress")
    unlabelled = run("report", str(tmp_path / "u.jsonl"), expect=1)
    assert "has a true label: no accuracy to report" in unlabelled.stderr and "Traceback" not in unlabelled.stderr


def test_report_without_matplotlib_still_writes_json_markdown_and_html(scored, tmp_path):
    """The light client install: no matplotlib means no plots, a note saying how to get them, and every file."""
    out, _ = scored
    hidden = tmp_path / "hide"
    (hidden / "matplotlib").mkdir(parents=True)
    (hidden / "matplotlib" / "__init__.py").write_text('raise ImportError("matplotlib is not installed")\n')
    env = {"PYTHONPATH": str(hidden), "PATH": "/usr/bin:/bin"}
    result = run("report", str(out / "p.jsonl"), "--report", str(tmp_path / "r.html"), "--report",
                 str(tmp_path / "r.json"), "--report", str(tmp_path / "r.md"), "--quiet", env=env)
    assert "tfclassify: note: No plots: they need matplotlib (pip install 'tfclassify[report]' (matplotlib))." \
        in result.stderr
    html = (tmp_path / "r.html").read_text()
    assert 'id="plot-' not in html and "Plots need matplotlib" in html and 'id="misclassified"' in html
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads((out / "r.json").read_text()) | {
        "run": json.loads((tmp_path / "r.json").read_text())["run"]}
    assert (tmp_path / "r.md").read_text().startswith("# Accuracy report\n")


# The page as a person sees it: measured in Chromium at a desktop and a phone width. The page has no script of
# its own; a copy of it gets MEASURE, which writes what the browser laid out into the DOM that --dump-dom prints.
MEASURE = r"""<script>(() => {
  const range = (el, start, end) => {  // a Range over characters start..end of el's text, across its text nodes
    const walk = document.createTreeWalker(el, NodeFilter.SHOW_TEXT), r = document.createRange();
    let pos = 0, started = false, node;
    while ((node = walk.nextNode())) {
      const len = node.data.length;
      if (!started && start < pos + len) { r.setStart(node, start - pos); started = true; }
      if (started && end <= pos + len) { r.setEnd(node, end - pos); return r; }
      pos += len;
    }
  };
  const lines = r => new Set([...r.getClientRects()].filter(b => b.width > 0).map(b => Math.round(b.bottom))).size;
  const h2 = prefix => [...document.querySelectorAll("h2")].find(h => h.textContent.startsWith(prefix));
  const top = el => el ? Math.round(el.getBoundingClientRect().top + scrollY) : null;
  const skipped = h2("Skipped files");
  const skippedTable = skipped && skipped.parentElement.querySelector("table") || [...document.querySelectorAll("table")]
    .find(t => t.querySelector("th") && t.querySelector("th").textContent === "file");
  const out = {
    viewport: document.documentElement.clientWidth, page: document.documentElement.scrollWidth,
    tables_past_edge: [...document.querySelectorAll("table")].filter(t => t.getBoundingClientRect().right > innerWidth + 1)
      .map(t => t.querySelector("th").textContent),
    // every class name in a thumbnail's caption "A → B (score)" or "A (score)", and on how many lines it is drawn
    caption_labels: [...document.querySelectorAll("figcaption")].flatMap(fc => {
      const text = fc.textContent, m = text.match(/^(.*?) → (.*?) \(/) || text.match(/^(.*?) \(/);
      let from = 0;
      return m.slice(1).map(label => {
        const at = text.indexOf(label, from);
        from = at + label.length;
        return [label, lines(range(fc, at, at + label.length))];
      });
    }),
    skipped_top: top(skipped), plots_top: top(h2("Confusion and calibration")),
    skipped_align: skippedTable ? [...skippedTable.querySelectorAll("td")].map(c => getComputedStyle(c).textAlign) : [],
    skipped_links: [...document.querySelectorAll('a[href^="#"]')].filter(a => skipped &&
      document.getElementById(a.getAttribute("href").slice(1)) && document.getElementById(a.getAttribute("href").slice(1))
      .contains(skipped)).length,
  };
  parent.document.getElementById("measured").textContent = JSON.stringify(out);
})();</script>"""


def measure(page, width: int, tmp_path) -> dict:
    """What Chromium lays out for the HTML file ``page`` in a window ``width`` pixels wide.

    Headless Chromium's windows are at least 500 pixels wide, so the page is measured in a frame of the
    wanted width, where its media queries see that width."""
    probe = page.read_text().replace("</body>", MEASURE + "</body>")
    wrapper = tmp_path / f"measure-{width}-{page.name}"
    wrapper.write_text(f'<!DOCTYPE html><html><body style="margin:0"><pre id="measured"></pre><iframe style="border:0; '
                       f'width:{width}px; height:1000px" srcdoc="{escape(probe, quote=True)}"></iframe></body></html>')
    result = chromium("--hide-scrollbars", f"--window-size={width + 100},1100", "--dump-dom", wrapper.as_uri(),
                      cwd=tmp_path)
    assert result.returncode == 0 and console_messages(result.stderr) == [], result.stderr
    return json.loads(unescape(re.search(r'<pre id="measured">(.*?)</pre>', result.stdout, re.S).group(1)))


@pytest.fixture(scope="module")
def with_skipped(server, fashion_test, tmp_path_factory):
    """60 Fashion-MNIST images in a zip archive with three files that are not images, scored into an HTML report."""
    out = tmp_path_factory.mktemp("skipped")
    lines = ["path,label"]
    with zipfile.ZipFile(out / "photos.zip", "w") as zf:
        for i in range(60):
            label = FASHION_LABELS[int(fashion_test.labels[i])]
            zf.writestr(f"{label.replace('/', '-')}/{i:03d}.png", encode(fashion_test.images[i]))
            lines.append(f"{label.replace('/', '-')}/{i:03d}.png,{label}")
        for name in ("Shirt/broken.png", "Coat/notes.txt", "README.md"):
            zf.writestr(name, b"not an image")
    (out / "labels.csv").write_text("\n".join(lines) + "\n")
    run("score", "--server", server.address, "--model", "fashion", "--images", str(out / "photos.zip"),
        "--labels", str(out / "labels.csv"), "--invert", "no", "--output", str(out / "p.jsonl"),
        "--report", str(out / "r.html"), "--skipped-ok", "--no-progress")
    return out


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by scripts/setup.sh (Debian package chromium)")
@pytest.mark.parametrize("width", [1280, 390])
def test_page_fits_the_window_and_class_names_do_not_break(scored, with_skipped, width, tmp_path):
    """At desktop and phone widths: nothing wider than the window, and no class name under a thumbnail broken
    across lines (``T-shirt/top`` used to break after its hyphen)."""
    for page in (scored[0] / "r.html", with_skipped / "r.html"):
        seen = measure(page, width, tmp_path)
        assert seen["viewport"] == width and seen["page"] <= width, f"{page}: the page scrolls sideways"
        assert seen["tables_past_edge"] == [], f"{page}: tables past the window's edge"
        labels = seen["caption_labels"]
        assert len(labels) >= 20 and {label for label, _ in labels} <= set(FASHION_LABELS), labels
        assert [(label, n) for label, n in labels if n != 1] == [], f"{page}: class names broken across lines"
    assert "T-shirt/top" in {label for label, _ in labels}


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by scripts/setup.sh (Debian package chromium)")
@pytest.mark.parametrize("width", [1280, 390])
def test_skipped_files_come_first_left_aligned_and_linked(with_skipped, width, tmp_path):
    """Files that were not scored are in none of the numbers: their list comes before the plots, its text
    left-aligned, and the header card links to it."""
    seen = measure(with_skipped / "r.html", width, tmp_path)
    assert seen["skipped_top"] is not None and seen["skipped_top"] < seen["plots_top"]
    assert seen["skipped_top"] < (900 if width > 600 else 1400), "near the top of the page"
    assert seen["skipped_align"] and set(seen["skipped_align"]) == {"left"}
    assert seen["skipped_links"] >= 1
    html = (with_skipped / "r.html").read_text()
    for name in ("Shirt/broken.png", "Coat/notes.txt", "README.md"):
        assert f"photos.zip/<wbr>{name.replace('/', '/<wbr>')}" in html


def test_page_says_what_was_scored_from_where_and_when(scored, with_skipped):
    """The input's path (a dataset by name, split and folder), the predictions file and when the page was made."""
    for page, where in ((scored[0] / "r.html", f"fashion_mnist (test split) in {FASHION_DIR}"),
                        (with_skipped / "r.html", str(with_skipped / "photos.zip"))):
        html = page.read_text()
        facts = html.split('<dl class="facts">', 1)[1].split("</dl>", 1)[0]
        assert f"<dt>images from</dt><dd><code>{where}</code></dd>" in facts
        stamp = datetime.fromisoformat(re.search(r'<dt>generated</dt><dd><time datetime="([^"]+)">', facts).group(1))
        assert abs((datetime.now(timezone.utc) - stamp).total_seconds()) < 3600
        assert "<dt>model</dt><dd>fashion, version 1</dd>" in facts
    assert f"<dt>predictions</dt><dd><code>{scored[0] / 'p.jsonl'}</code></dd>" in (scored[0] / "r.html").read_text()


def test_page_explains_true_to_predicted_and_draws_per_class_bars_in_the_table(scored):
    """``A → B`` is explained where it is used; per-class precision/recall/F1 are bars in their table, not a
    second, half-width chart that repeats it."""
    out, _ = scored
    html = (out / "r.html").read_text()
    text = unescape(re.sub("<[^>]+>", "", html))
    mistakes = text.split("Most confident mistakes", 1)[1]
    assert mistakes.lstrip().startswith("Under each image: true class → predicted class (score of the prediction)")
    assert "A → B: images of class A predicted as B (true → predicted)" in text
    assert "plot-per_class" not in html
    report = json.loads((out / "r.json").read_text())
    bars = re.findall(r'<td class="n bar" style="--v:([\d.]+)%">([\d.]+)</td>', html.split('id="per-class"', 1)[1])
    expected = [(m[name]) for m in report["per_class"] for name in ("precision", "recall", "f1")]
    assert [float(v) for _, v in bars] == pytest.approx(expected, abs=5e-5)
    assert [float(w) for w, _ in bars] == pytest.approx([100 * v for v in expected], abs=0.05)


def test_plot_legends_sit_outside_what_they_explain(scored):
    """A legend inside the axes covers bars (the reliability diagram's used to hide a full bin at the top left)."""
    from tfclassify.client.quality.plots import confusion_figure, reliability_figure
    from tfclassify.client.quality.report import report_from_rows, summarize_rows

    out, _ = scored
    rows = [json.loads(line) for line in (out / "p.jsonl").read_text().splitlines()]
    report = report_from_rows(summarize_rows(rows), FASHION_LABELS)
    for figure in (reliability_figure(report), confusion_figure(report)):
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        for ax in figure.axes:
            if ax.get_legend() is None:
                continue
            legend, area = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
            assert not legend.overlaps(area), (legend, area)
            assert figure.bbox.contains(legend.x0, legend.y0) and figure.bbox.contains(legend.x1, legend.y1)
