"""``tfclassify promote``: move a version label only when the version proves itself on a hold-out set.

The version is scored on the running server (that exact version), its report
printed; the label moves only if the accuracy reaches ``--min-accuracy`` and,
with ``--against-label``, the version is not significantly worse than the
label's current holder on the same images (McNemar's exact test). The label
moves in the server's model config file (rewritten whole, atomically), which
the server re-reads at each poll: no restart, and a restart keeps it.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import grpc

from tfclassify.client import ClassifierClient
from tfclassify.client.cli.arguments import (
    EXIT_OK,
    CliError,
    add_report_argument,
    add_server_arguments,
    client_from,
    credentials_from,
    ssl_context_from,
    token_from,
)
from tfclassify.client.cli.score import add_input_arguments, build_plan
from tfclassify.client.errors import TfclassifyError
from tfclassify.client.quality.outputs import check_report_paths, print_notes, write_reports
from tfclassify.client.quality.report import AccuracyReport, report_from_rows
from tfclassify.client.quality.run_comparison import ALPHA, compare
from tfclassify.client.scoring.engine import ScoringOptions
from tfclassify.client.scoring.job import JobResult, run_job
from tfclassify.client.scoring.output import read_rows
from tfclassify.client.version_labels import set_label
from tfclassify.common.model_config import read_model_config

#: The label was not moved: the version did not meet the bar.
EXIT_NOT_PROMOTED = 4


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "promote",
        help="move a version label if the version passes an accuracy gate on a hold-out set",
        description="Score a hold-out set against one version on the running server, print its report, and point "
        "a version label at it in the server's model config file only if its accuracy is at least --min-accuracy "
        "(and, with --against-label, it is not significantly worse than the label's current version on the same "
        "images). The file is replaced atomically; the server applies it at its next poll, without a restart. "
        "Exit status: 0 promoted (or already), 1 failure, 2 usage error, 4 not promoted.",
    )
    parser.add_argument("model", help="model name on the server (listed in --model-config)")
    parser.add_argument("--version", type=int, required=True, help="the version to promote")
    parser.add_argument("--label", required=True, help="the version label to move, e.g. stable")
    parser.add_argument("--min-accuracy", type=float, required=True, metavar="X",
                        help="accuracy (0..1) the version must reach on the hold-out set")
    parser.add_argument("--against-label", metavar="LABEL",
                        help="also score the version this label names now, and refuse if the candidate is "
                        f"significantly worse (McNemar's exact test, p < {ALPHA})")
    parser.add_argument("--model-config", type=Path, required=True, metavar="FILE",
                        help="the server's --model-config file, where the label is written")
    parser.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                        help="wait this long for the server to answer the label with the version (its next poll of "
                        "the config; 0: do not wait, e.g. when the file is a copy for a ConfigMap) [default: %(default)s]")
    parser.add_argument("--keep-predictions", type=Path, metavar="DIR",
                        help="keep the runs' predictions here (candidate.jsonl, incumbent.jsonl), e.g. for "
                        "`tfclassify compare` [default: a temporary folder]")
    parser.add_argument("--batch-size", type=int, default=0, help="images per RPC [default: automatic]")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    add_server_arguments(parser, timeout=60.0)
    add_input_arguments(parser)
    add_report_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not 0.0 <= args.min_accuracy <= 1.0:
        raise CliError(f"--min-accuracy is an accuracy from 0 to 1, not {args.min_accuracy}")
    check_report_paths(args.report)
    config = read_model_config(args.model_config)  # readable, and lists the model, before any scoring
    if not any(m.name == args.model for m in config.models):
        raise CliError(f"{args.model_config} does not list model {args.model!r}: the server would not serve it")
    plan = build_plan(args)
    with client_from(args) as client:
        incumbent = _holder(client, args.model, args.against_label) if args.against_label else None
    with tempfile.TemporaryDirectory(prefix="tfclassify-promote-") as scratch:
        folder = args.keep_predictions or Path(scratch)
        candidate = _score(plan, args, args.version, folder / "candidate.jsonl")
        labels = candidate.record["model"]["labels"]
        report = report_from_rows(candidate.summary, labels, run={
            "model": args.model, "versions": candidate.summary.versions, "inputs": [i.name for i in plan.inputs]})
        if report is None:
            raise CliError("the hold-out set has no true labels: nothing to judge the version by (use a dataset, "
                           "or --labels)")
        print(report.format_text())
        if args.report:
            print_notes(write_reports(report, args.report, candidate.record, data_dir=args.data_dir,
                                      title=f"{args.model} version {args.version}"))
        print()
        refusal = _refusal(report, args)
        if refusal is None and incumbent is not None and incumbent != args.version:
            _score(plan, args, incumbent, folder / "incumbent.jsonl")
            comparison = compare(read_rows(folder / "incumbent.jsonl"), read_rows(folder / "candidate.jsonl"), labels,
                                 names=(f"version {incumbent}", f"version {args.version}"))
            print(comparison.format_text())
            print()
            if comparison.significant and comparison.difference < 0:
                refusal = (f"version {args.version} is significantly worse than version {incumbent}, which "
                           f"{args.against_label!r} names now ({comparison.b.accuracy:.4f} against "
                           f"{comparison.a.accuracy:.4f}, McNemar p = {comparison.mcnemar.p_value:.3g})")
    if refusal is not None:
        print(f"not promoted: {refusal}; {args.model_config} is unchanged")
        return EXIT_NOT_PROMOTED
    before = set_label(args.model_config, args.model, args.label, args.version)
    was = f"was version {before}" if before is not None else "a new label"
    print(f"promoted: {args.model} {args.label!r} -> version {args.version} ({was}) in {args.model_config}")
    if args.wait > 0:
        with client_from(args) as client:
            seconds = _wait_for_label(client, args)
        print(f"the server answers {args.label!r} with version {args.version} (after {seconds:.1f} s)")
    return EXIT_OK


def _score(plan, args: argparse.Namespace, version: int, output: Path) -> JobResult:
    options = ScoringOptions(model=args.model, version=version, batch_size=args.batch_size, invert=args.invert,
                             resize=args.resize,
                             timeout=args.timeout, credentials=credentials_from(args),
                             ssl_context=ssl_context_from(args, [args.server]), token=token_from(args))
    print(f"scoring {args.model} version {version} ...")
    return asyncio.run(run_job(plan, [args.server], options, output, overwrite=True, progress=not args.no_progress))


def _refusal(report: AccuracyReport, args: argparse.Namespace) -> str | None:
    if report.accuracy >= args.min_accuracy:
        return None
    lo, hi = report.accuracy_ci95
    return (f"accuracy {report.accuracy:.4f} (95% CI {lo:.4f}..{hi:.4f}) on {report.num_images:,} images is below "
            f"--min-accuracy {args.min_accuracy}")


def _holder(client: ClassifierClient, model: str, label: str) -> int | None:
    """The version ``label`` names on the server now (None: the label is not set)."""
    try:
        return client.get_model_metadata(model, version_label=label).version
    except TfclassifyError as exc:
        if exc.code in (grpc.StatusCode.NOT_FOUND,) and "label" in exc.details:
            print(f"{model} has no version label {label!r} yet: nothing to compare against")
            return None
        raise


def _wait_for_label(client: ClassifierClient, args: argparse.Namespace) -> float:
    started = time.monotonic()
    deadline = started + args.wait
    answered = None
    while time.monotonic() < deadline:
        try:
            answered = client.get_model_metadata(args.model, version_label=args.label).version
        except TfclassifyError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
        if answered == args.version:
            return time.monotonic() - started
        time.sleep(0.25)
    still = f"version {answered}" if answered is not None else "no version"
    raise CliError(f"{args.model_config} names version {args.version} for {args.label!r}, but after {args.wait:g} s "
                   f"the server still answers it with {still}: is that file the one the server reads "
                   "(--model-config), and does it poll (--poll-interval-s)? The server log says why it did not "
                   "apply it, if it could not")

