"""``tfclassify compare``: two prediction files of the same images, and whether their difference is real."""

from __future__ import annotations

import argparse
from pathlib import Path

from tfclassify.client.cli.arguments import EXIT_OK, add_report_argument
from tfclassify.client.quality.outputs import check_report_paths, print_notes
from tfclassify.client.quality.run_comparison import ComparisonError, compare, write_comparison
from tfclassify.client.quality.thumbnails import read_back
from tfclassify.client.scoring.output import read_record, read_rows


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "compare",
        help="compare two prediction files of the same images (McNemar's test)",
        description="Compare the predictions of two runs over the same images (two versions, or two models with "
        "the same classes): the accuracy of each with 95% intervals, McNemar's exact test of whether the "
        "difference is real, per-class recall, and the images one gets right and the other wrong (HTML with "
        "thumbnails). Exit status: 0, 1 failure (e.g. nothing in common), 2 usage error.",
    )
    parser.add_argument("a", type=Path, metavar="A", help="predictions of the first run (.jsonl or .parquet)")
    parser.add_argument("b", type=Path, metavar="B", help="predictions of the second run")
    add_report_argument(parser)
    parser.add_argument("--data-dir", type=Path, help="for thumbnails of a named dataset: folder holding its files")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_report_paths(args.report)
    record_a, record_b = read_record(args.a), read_record(args.b)
    labels = record_a["model"]["labels"]
    if record_b["model"]["labels"] != labels:
        raise ComparisonError(f"{args.a} and {args.b} come from models with different classes: nothing to compare "
                              "class by class")
    comparison = compare(read_rows(args.a), read_rows(args.b), labels, names=(str(args.a), str(args.b)),
                         models=(record_a["model"]["name"], record_b["model"]["name"]))
    print(comparison.format_text())
    notes: list[str] = []
    thumbnails: dict = {}
    if any(p.suffix.lower() == ".html" for p in args.report):
        wanted = [e.source for e in comparison.only_a_right + comparison.only_b_right]
        found = read_back(record_a, wanted, args.data_dir)
        thumbnails, notes = found.pixels, found.problems
    for path in args.report:
        write_comparison(comparison, path, thumbnails, notes)
    print_notes(notes)
    if args.report:
        print(f"comparison written to {', '.join(map(str, args.report))}")
    return EXIT_OK
