"""``tfclassify merge``: combine the outputs of ``score --shard I/N`` runs into one, with its report."""

from __future__ import annotations

import argparse
from pathlib import Path

from tfclassify.client.cli.arguments import add_report_argument, add_skipped_ok_argument, path_or_url, print_report
from tfclassify.client.quality.outputs import check_report_paths
from tfclassify.client.quality.report import summarize_rows
from tfclassify.client.scoring.merge import merge_outputs
from tfclassify.client.scoring.output import read_rows
from tfclassify.common.text import counted


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "merge",
        help="combine the outputs of sharded score runs",
        description="Combine the outputs of `tfclassify score --shard I/N` runs into the output one unsharded run "
        "would have written: checks that every shard is there and complete and every image appears exactly "
        "once, then prints (and writes) the report. Exit status: 0, 1 failure, 3 when files were skipped (0 with --skipped-ok).",
    )
    parser.add_argument("outputs", nargs="+", type=path_or_url, help="the shards' --output files (.jsonl or "
                        ".parquet), or their object URLs (s3://BUCKET/results/pred-0.jsonl ...)")
    parser.add_argument("--output", type=path_or_url, required=True, help="the merged output (.jsonl or .parquet), "
                        "or an object URL")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    add_report_argument(parser, urls=True)
    parser.add_argument("--data-dir", type=Path, help="for an HTML report of a named dataset: folder holding its files")
    add_skipped_ok_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_report_paths(args.report)
    record = merge_outputs(args.outputs, args.output, overwrite=args.overwrite)
    summary = summarize_rows(read_rows(args.output))
    skipped = f", {summary.skipped:,} skipped" if summary.skipped else ""
    print(f"merged {counted(len(args.outputs), 'shard')} into {args.output}: {counted(summary.rows, 'row')}{skipped}")
    run_info = {"merged_from": record["merged_from"], "model": record["model"]["name"], "versions": summary.versions}
    return print_report(summary, record["model"]["labels"], run_info, args.report, args.skipped_ok, record,
                        args.data_dir)
