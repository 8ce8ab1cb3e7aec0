"""``tfclassify report``: the accuracy report of prediction files, as text, JSON, Markdown or HTML."""

from __future__ import annotations

import argparse
from pathlib import Path

from tfclassify.client.cli.arguments import EXIT_OK, CliError, add_report_argument
from tfclassify.client.quality.outputs import check_report_paths, print_notes, write_reports
from tfclassify.client.quality.report import report_from_rows, summarize_rows
from tfclassify.client.scoring.output import OutputError, read_record, read_rows


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "report",
        help="report the accuracy of prediction files (text, JSON, Markdown, HTML)",
        description="Read the predictions that `tfclassify score` (or `merge`) wrote and report accuracy and top-k "
        "accuracy with 95% intervals, F1, per-class metrics, the confusion matrix, calibration, the most confident "
        "mistakes and the skipped files. Several files are reported together (they must come from the same model "
        "and hold each image once). Exit status: 0, 1 failure (e.g. no true labels), 2 usage error.",
    )
    parser.add_argument("predictions", nargs="+", type=Path, metavar="PREDICTIONS",
                        help="prediction files (.jsonl or .parquet) with their run records beside them")
    add_report_argument(parser)
    parser.add_argument("--data-dir", type=Path, help="for thumbnails of a named dataset: folder holding its files")
    parser.add_argument("--title", default="Accuracy report", help="the Markdown/HTML title [default: %(default)s]")
    parser.add_argument("--quiet", action="store_true", help="do not print the report (only write --report files)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_report_paths(args.report)
    records = [read_record(path) for path in args.predictions]
    labels = records[0]["model"]["labels"]
    for path, record in zip(args.predictions[1:], records[1:]):
        if record["model"]["labels"] != labels:
            raise OutputError(f"{path} was scored by a model with other classes than {args.predictions[0]}: "
                              "report them separately (or compare them with `tfclassify compare`)")
    summary = summarize_rows(_rows_once(args.predictions))
    run_info = {"model": records[0]["model"]["name"], "versions": summary.versions,
                "inputs": [i["name"] for r in records for i in r.get("inputs", [])],
                "predictions": [str(p) for p in args.predictions]}
    report = report_from_rows(summary, labels, run=run_info)
    if report is None:
        raise CliError(f"no scored image in {', '.join(map(str, args.predictions))} has a true label: no accuracy "
                       "to report (score with --labels, or a dataset)")
    if not args.quiet:
        print(report.format_text())
    record = {**records[0], "inputs": [i for r in records for i in r.get("inputs", [])]}
    if args.report:
        print_notes(write_reports(report, args.report, record, data_dir=args.data_dir, title=args.title))
        print(f"report written to {', '.join(map(str, args.report))}")
    return EXIT_OK


def _rows_once(paths: list[Path]):
    """The rows of every file; an image (by source) in two files is an error, not counted twice."""
    seen: dict[str, Path] = {}
    for path in paths:
        for row in read_rows(path):
            source = row["source"]
            if source in seen:
                raise OutputError(f"{source} is in both {seen[source]} and {path}: each image must be reported once")
            seen[source] = path
            yield row
