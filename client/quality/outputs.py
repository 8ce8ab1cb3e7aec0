"""Writing a report in the formats its file names ask for: ``.json``, ``.md``, ``.html``.

A Markdown report of more classes than its page shows gets the whole per-class table beside it as
``NAME.classes.csv`` (lowest F1 first); the HTML page keeps it, collapsed, in itself.

A report path may be an object URL (``s3://bucket/reports/run.html``, a ``str``): the report is written to a local
temporary folder, then each file of it (the CSV beside a Markdown report too) is uploaded beside the URL, each in
one atomic PUT.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from tfclassify.client.atomic import write_atomic
from tfclassify.client.quality.classes import class_csv, class_tables
from tfclassify.client.quality.html import render_html
from tfclassify.client.quality.markdown import render_markdown
from tfclassify.client.quality.plots import INSTALL_HINT, plots_available, report_plots
from tfclassify.client.quality.report import AccuracyReport
from tfclassify.client.quality.thumbnails import read_back
from tfclassify.common.storage.urls import is_object_url

FORMATS = {".json": "JSON", ".md": "Markdown", ".html": "HTML"}


class ReportPathError(ValueError):
    """A report file name whose format is unknown."""


def check_report_paths(paths: Sequence[Path | str]) -> None:
    """Refuse unknown formats before any work is done (a scoring run must not fail at its end)."""
    for path in paths:
        if _suffix(path) not in FORMATS:
            raise ReportPathError(f"--report {path}: the name must end in {', '.join(FORMATS)} (the format to write)")


def _suffix(path: Path | str) -> str:
    return (PurePosixPath(path) if isinstance(path, str) else path).suffix.lower()


def write_reports(
    report: AccuracyReport, paths: Sequence[Path | str], record: dict | None, *, data_dir: Path | None = None,
    title: str = "Accuracy report",
) -> list[str]:
    """Write ``report`` to every path (a local file, or an object URL), each whole or not at all; returns notes for
    the user (thumbnails that could not be read back, plots missing without matplotlib)."""
    notes: list[str] = []
    for path in paths:
        if isinstance(path, str) and is_object_url(path):
            notes += _write_to_object(report, path, record, data_dir=data_dir, title=title)
        else:
            notes += _write_report(report, Path(path), record, data_dir=data_dir, title=title)
    return notes


def _write_to_object(report: AccuracyReport, url: str, record: dict | None, *, data_dir: Path | None,
                     title: str) -> list[str]:
    """Write the report into a temporary folder, then upload its files beside ``url``."""
    from tfclassify.common.storage import writes
    from tfclassify.common.storage.urls import parse

    target = parse(url)
    name = target.key.rsplit("/", 1)[-1]
    folder = target.key[: len(target.key) - len(name)]
    with tempfile.TemporaryDirectory(prefix="tfclassify-report-") as temporary:
        notes = _write_report(report, Path(temporary) / name, record, data_dir=data_dir, title=title)
        written = sorted(p for p in Path(temporary).iterdir() if not p.name.startswith("."))
        for local in written:  # the CSV of a Markdown report first, so the page never points at a missing file
            if local.name != name:
                writes.put(target.with_key(folder + local.name), local.read_bytes())
        writes.put(target, (Path(temporary) / name).read_bytes())
    return [note.replace(temporary + "/", f"{target.root}/{folder}") for note in notes]


def _write_report(report: AccuracyReport, path: Path, record: dict | None, *, data_dir: Path | None,
                  title: str) -> list[str]:
    notes: list[str] = []
    suffix = path.suffix.lower()
    if suffix == ".json":
        report.write_json(path)
    elif suffix == ".md":
        csv_path = None
        if class_tables(report.per_class).condensed:
            csv_path = class_csv_path(path)
            write_atomic(csv_path, class_csv(report.per_class))
            notes.append(f"{csv_path}: all {len(report.per_class):,} classes, lowest F1 first "
                         f"({path.name} shows the lowest and highest)")
        write_atomic(path, render_markdown(report, title, csv_path.name if csv_path else None))
    else:
        page_notes = []
        plots = report_plots(report) if plots_available() else None
        if plots is None:
            page_notes.append(f"No plots: they need matplotlib ({INSTALL_HINT}).")
        wanted = [e.source for e in report.misclassified + report.unsure_correct if e.source]
        thumbnails = read_back(record or {}, wanted, data_dir)
        page_notes += thumbnails.problems
        write_atomic(path, render_html(report, plots=plots, thumbnails=thumbnails.pixels, notes=page_notes,
                                       title=title, inputs=input_locations(record or {})))
        notes += page_notes
    return notes


def class_csv_path(markdown: Path) -> Path:
    """Where the per-class CSV of the Markdown report ``markdown`` goes: ``r.md`` -> ``r.classes.csv``."""
    return markdown.with_suffix(".classes.csv")


def input_locations(record: dict) -> list[str]:
    """Where a run's images came from, as a reader would look for them: the path of each folder, archive
    or array file; a dataset by its name, split and folder."""
    where = []
    for described in record.get("inputs") or []:
        if described.get("dataset"):
            folder = f" in {described['data_dir']}" if described.get("data_dir") else ""
            where.append(f"{described['dataset']} ({described.get('split', 'test')} split){folder}")
        else:
            where.append(described.get("path") or described.get("name", "?"))
    return where


def print_notes(notes: list[str]) -> None:
    for note in dict.fromkeys(notes):
        print(f"tfclassify: note: {note}", file=sys.stderr)
