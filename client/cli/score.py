"""``tfclassify score``: score folders, archives and datasets against servers; write predictions and a report."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import TypeGuard

import numpy as np

from tfclassify.client.cli.arguments import (
    EXIT_INTERRUPTED,
    CliError,
    add_report_argument,
    add_server_arguments,
    add_skipped_ok_argument,
    credentials_from,
    print_report,
    ssl_context_from,
    token_from,
)
from tfclassify.client.errors import TfclassifyError
from tfclassify.client.inputs.plan import ScoringPlan, parse_shard
from tfclassify.client.quality.outputs import check_report_paths
from tfclassify.client.requests import DEFAULT_MAX_REQUEST_BYTES
from tfclassify.client.scoring.engine import DECODE_CHOICES, ScoringOptions
from tfclassify.client.scoring.job import Interrupted, JobResult, resume_hint, run_job
from tfclassify.client.scoring.object_output import COMMIT_SECONDS
from tfclassify.client.scoring.output import is_url, output_started
from tfclassify.client.scoring.servers import RetryPolicy
from tfclassify.common.datasets import SPLITS, dataset_names, load_dataset, npz_arrays, npz_labels, read_array
from tfclassify.common.image_files import INVERT_CHOICES, RESIZE_CHOICES
from tfclassify.common.inputs.labels import AUTO, FOLDER, NONE
from tfclassify.common.inputs.sources import ArrayInput, Input, InputError, is_array_file, open_input
from tfclassify.common.storage.urls import is_object_url
from tfclassify.common.text import counted


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "score",
        help="score folders, archives or a dataset against servers and report accuracy",
        description="Classify every image of folders, archives (.zip, .tar[.gz|.bz2|.xz]), IDX/.npz files or a "
        "named dataset on tfclassify servers; write the predictions as they come (JSONL or Parquet), and "
        "report accuracy, per-class precision/recall/F1, the confusion matrix and the skipped files. "
        "Exit status: 0 all scored, 1 failure, 2 usage error, 3 done but some files were skipped (not images, "
        "corrupt, outside a class folder with --labels folder, refused; 0 with --skipped-ok), 5 object storage "
        "refused or missing (no such bucket or object, access denied, no credentials, unreachable), 130 "
        "interrupted (continue with --resume).",
    )
    add_server_arguments(parser, timeout=60.0, several=True)
    parser.add_argument("--model", required=True, help="model name on the server")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="model version (default: latest)")
    which.add_argument("--version-label", help="model version label, e.g. stable")
    add_input_arguments(parser)
    parser.add_argument("--top-k", type=int, default=0, help="ranked classes per image in the output [default: 0]")
    parser.add_argument("--send-labels", action="store_true",
                        help="send the true labels with the images, so the server counts them in its live-accuracy "
                        "metrics (tfclassify_labelled_images_total, tfclassify_correct_images_total)")
    parser.add_argument("--output", type=_path_or_url, metavar="PATH|URL",
                        help="write predictions here as they come: .jsonl, or .parquet (needs pyarrow); or an object "
                        "URL (s3://BUCKET/results/pred.jsonl, gs://, az://): rows are committed as parts under a "
                        "hidden prefix beside it (.pred.jsonl.parts/) and the object is written whole when the run "
                        "completes")
    parser.add_argument("--predictions", type=_path_or_url, dest="output", help=argparse.SUPPRESS)  # the old name
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run that wrote --output "
                        "(start it when nothing is written yet; a finished run is reported again, unchanged)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--commit-interval", type=float, default=COMMIT_SECONDS, metavar="SECONDS",
                        help="with an object URL as --output: commit the rows scored as a part at least this often "
                        "(what a SIGKILL or a lost pod can lose, to be scored again by --resume) "
                        "[default: %(default)s]")
    parser.add_argument("--shard", metavar="I/N", help="score only shard I of N (0-based); `tfclassify merge` "
                        "combines the shards' outputs")
    add_report_argument(parser, urls=True)
    add_skipped_ok_argument(parser)
    parser.add_argument("--batch-size", type=int, default=0,
                        help="images per batch [default: the largest power of two up to 4096 that makes 8 or more "
                        "batches and whose pixels fit --max-request-bytes: 4096 images of 28x28, 64 of 224x224x3]")
    parser.add_argument("--max-request-bytes", type=_byte_size, default=DEFAULT_MAX_REQUEST_BYTES, metavar="BYTES",
                        help="most bytes of images (pixels, or files with --decode server) in one request: a larger "
                        "batch is sent as several requests, an image larger than this alone; keep it under the "
                        "server's --max-message-bytes (64 MiB); K, M and G suffixes (MiB...) [default: 16M]")
    parser.add_argument("--decode", choices=DECODE_CHOICES, default="auto",
                        help="where image files are decoded: client (this machine's decoding workers send pixels), "
                        "server (PNG and JPEG files are sent as they are and the server decodes and resizes them "
                        "the same way; GIF, BMP, TIFF, WebP and other formats are still decoded here), or auto. "
                        "Files are decoded here, whatever is asked, for one-channel models with --invert auto or "
                        "yes (inverting needs the pixels: --invert no lets the server decode), with a --resize "
                        "other than the model's declared one, and for servers that do not resize files; "
                        "--decode server then says so in one line. auto sends the smaller: files to the server for "
                        "models whose images are 64 KiB or more as pixels (224x224x3), pixels for smaller ones "
                        "(32x32x3); a server older than --decode server takes files only at the model's size: "
                        "use --decode client with it [default: %(default)s]")
    parser.add_argument("--in-flight", type=int, default=4, help="RPCs in flight at once [default: %(default)s]")
    parser.add_argument("--decode-workers", type=int, help="processes decoding image files (0: threads) "
                        "[default: one per CPU for 4096 or more files, else threads]")
    parser.add_argument("--max-retries", type=int, default=6, help="retries of a batch on UNAVAILABLE, "
                        "RESOURCE_EXHAUSTED or CANCELLED, with exponential backoff [default: %(default)s]")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    parser.add_argument("--progress-interval", type=float, default=5.0, metavar="SECONDS",
                        help="when not on a terminal: seconds between progress lines [default: %(default)s]")
    parser.set_defaults(run=run)


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """What to score: ``--dataset`` or ``--images``, with the split, labels, .npz keys, inversion and limit
    (``build_plan`` reads them)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=dataset_names(), help="a dataset known by name")
    source.add_argument(
        "--images", type=_path_or_url, action="append", metavar="PATH|URL",
        help="a folder, .zip, .tar[.gz|.bz2|.xz] of images, an image file, a .csv/.jsonl manifest of images "
        "(path column, label optional), or IDX/.npz arrays; or the same in object storage: s3://BUCKET/PREFIX/ "
        "(a prefix of image objects), s3://BUCKET/export.zip, gs://, az://, abfs://, https:// (needs the storage "
        "extra; S3-compatible stores: AWS_ENDPOINT_URL); repeatable",
    )
    parser.add_argument("--split", default="test", choices=SPLITS, help="with --dataset or a Keras-style .npz "
                        "[default: %(default)s]")
    parser.add_argument("--data-dir", type=Path, help="with --dataset: folder holding its files")
    parser.add_argument(
        "--labels", metavar="auto|folder|none|FILE", default=AUTO,
        help="true labels: 'folder' (each image's folder is named after its class, e.g. Shirt/0001.png or "
        "7/0001.png; files outside a class folder are skipped), a manifest FILE or object URL (CSV with "
        "path,label columns, or JSONL), an IDX/.npz labels file for IDX images, or 'none'. 'auto' takes the folders as labels when "
        "every image file sits in a folder named after one of the model's classes (as Keras' "
        "image_dataset_from_directory labels images by their folder, but only names of the model's classes "
        "count, never a folder '3' for the model's fourth class), says so in one line, and otherwise scores "
        "without labels, with a hint when some folders name classes [default: auto; IDX/.npz files and "
        "datasets carry their own]",
    )
    parser.add_argument("--npz-images", metavar="KEY", help="array of images in a .npz [default: images, x_SPLIT or x]")
    parser.add_argument("--npz-labels", metavar="KEY", help="array of labels in a .npz [default: labels, y_SPLIT or y]")
    parser.add_argument("--invert", choices=INVERT_CHOICES, default="auto",
                        help="one-channel (MNIST-style) models only: make image files light-on-dark as they "
                        "expect; auto decides per image from its border; colour models are never inverted "
                        "[default: %(default)s]")
    add_resize_argument(parser)
    parser.add_argument("--limit", type=int, help="score only the first N images")


def add_resize_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resize", choices=RESIZE_CHOICES, default=None,
                        help="how image files meet the model's input size: stretch (each side scaled, the aspect "
                        "ratio not kept, as Keras' image_dataset_from_directory does), crop (the largest centred "
                        "region with the model's aspect ratio, then scaled) or pad (black borders up to that "
                        "aspect ratio, then scaled) [default: the model's declared resize (tfclassify.json), else stretch]")


def run(args: argparse.Namespace) -> int:
    if args.resume and not args.output:
        raise CliError("--resume needs --output (the file of the run to continue)")
    check_report_paths(args.report)
    plan = build_plan(args)
    servers = args.server or [args.default_server]
    options = ScoringOptions(
        model=args.model, version=args.version, version_label=args.version_label, top_k=args.top_k,
        batch_size=args.batch_size, in_flight=args.in_flight, decode_workers=args.decode_workers,
        invert=args.invert, resize=args.resize, decode=args.decode, max_request_bytes=args.max_request_bytes,
        timeout=args.timeout,
        retry=RetryPolicy(max_retries=args.max_retries),
        credentials=credentials_from(args), ssl_context=ssl_context_from(args, servers), token=token_from(args),
        send_labels=args.send_labels,
    )
    try:
        result = asyncio.run(_run_cancellable(plan, servers, options, args))
    except Interrupted as exc:
        where = (f"the output holds them; continue with:\n  {resume_hint(sys.argv[1:])}" if args.output
                 else "nothing was saved (use --output to be able to resume)")
        print(f"tfclassify: {exc}; {where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TfclassifyError as exc:
        if args.output and (output_started(args.output) if is_url(args.output) else args.output.exists()):
            raise TfclassifyError(exc.code, f"{exc.details}\nthe output {args.output} holds the images scored "
                                  f"before the failure; continue with --resume") from exc
        raise
    return _print_outcome(result, plan, args)


def build_plan(args: argparse.Namespace) -> ScoringPlan:
    """The inputs, label source, shard and limit of the command line."""
    shard = parse_shard(args.shard) if getattr(args, "shard", None) else (0, 1)
    labels = None if args.labels == NONE else args.labels
    if args.dataset:
        data = load_dataset(args.dataset, args.split, args.data_dir)
        reopen = {"dataset": data.name, "split": data.split,
                  "data_dir": str(args.data_dir.absolute()) if args.data_dir else None}
        inputs: list[Input] = [ArrayInput(Path(f"{data.name}-{data.split}"), f"{data.name}-{data.split}",
                                          data.images, data.labels, reopen)]
        if labels not in (None, AUTO):
            raise CliError("--labels is for --images: a named dataset carries its own labels")
    else:
        # An IDX/.npz --labels file holds the labels of one IDX/.npz --images file; any other is a manifest.
        array_labels = None
        if labels not in (None, FOLDER, AUTO) and is_array_file(Path(labels)):
            if len(args.images) != 1 or not _is_array_path(args.images[0]):
                raise CliError("an IDX/.npz --labels file goes with exactly one IDX/.npz --images file")
            array_labels, labels = _array_labels(Path(labels), args), None
        inputs = [_array_input(p, args, array_labels) if _is_array_path(p) else open_input(p) for p in args.images]
    return ScoringPlan(inputs, labels, shard, limit=args.limit)


def _path_or_url(text: str) -> Path | str:
    """An ``--images`` value: an object URL as it is (a ``Path`` would fold its ``//``), else a path."""
    return text if is_object_url(text) else Path(text)


def _is_array_path(path: Path | str) -> TypeGuard[Path]:
    return isinstance(path, Path) and is_array_file(path)


def _byte_size(text: str) -> int:
    """``16777216``, ``16M``, ``16MiB``, ``512K`` ... as bytes (K, M, G: powers of 1024)."""
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    factor = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(value[-1:], 1)
    try:
        size = int(float(value[:-1] if factor > 1 else value) * factor)
    except (ValueError, OverflowError):  # "x", or "inf"
        raise argparse.ArgumentTypeError(f"not a number of bytes: {text!r} (e.g. 16M)") from None
    if size < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte, got {text!r}")
    return size


def _array_input(path: Path, args: argparse.Namespace, labels: np.ndarray | None) -> ArrayInput:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix == ".npz":
        images, npz_labels = npz_arrays(path, args.npz_images, args.npz_labels, args.split)
        labels = labels if labels is not None else npz_labels
        return ArrayInput(path, path.name, images, labels, {"npz_images": args.npz_images, "split": args.split})
    return ArrayInput(path, path.name, read_array(path), labels)


def _array_labels(path: Path, args: argparse.Namespace) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"--labels {path}: no such file")
    if path.suffix == ".npz":
        return npz_labels(path, args.npz_labels, args.split).astype(np.int64)
    return read_array(path).astype(np.int64)


async def _run_cancellable(plan, servers, options, args) -> JobResult:
    """``run_job``, cancelled cleanly by SIGTERM (a Kubernetes Job's pod gets it) and by SIGINT (Ctrl-C). SIGINT is
    handled here too, not left to Python's KeyboardInterrupt: a process started in the background by a script
    inherits SIGINT ignored, and then Python installs no handler for it at all."""
    task = asyncio.current_task()
    assert task is not None  # a coroutine runs in a task
    loop = asyncio.get_running_loop()
    for stop in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(stop, task.cancel)
    try:
        return await run_job(plan, servers, options, args.output, resume=args.resume, overwrite=args.overwrite,
                             progress=not args.no_progress, progress_interval=args.progress_interval,
                             on_note=lambda note: print(f"tfclassify: {note}", file=sys.stderr, flush=True),
                             commit_seconds=args.commit_interval)
    finally:
        for stop in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(stop)


def _print_outcome(result: JobResult, plan: ScoringPlan, args: argparse.Namespace) -> int:
    summary, record = result.summary, result.record
    if result.already_complete:
        print(f"{args.output} is already complete: nothing to resume, nothing changed")
    print(_scored_line(result, plan, args.model))
    if args.output:
        print(f"predictions: {args.output} ({counted(summary.rows, 'row')})")
    storage_retries = {kind: n for kind, n in record.get("storage_retries", {}).items() if n}
    if storage_retries and not result.already_complete:
        kinds = ", ".join(f"{n:,} {kind.replace('_', ' ')}" for kind, n in storage_retries.items())
        print(f"object storage: {counted(sum(storage_retries.values()), 'request')} tried again ({kinds})")
    run_info = {
        "servers": record.get("servers"), "model": args.model, "versions": summary.versions,
        "inputs": [i.name for i in plan.inputs], "shard": record.get("shard"), "split": args.split if args.dataset else "",
        "retries": record.get("retries", 0), "storage_retries": record.get("storage_retries", {}),
        "decoding": record.get("decoding"),
    }
    if not result.already_complete:  # this run's timing; a finished run resumed took none
        run_info.update(seconds=round(result.seconds, 3), images_per_second=round(result.images_per_second, 1),
                        prepare_seconds=round(result.prepare_seconds, 3))
    return print_report(summary, record["model"]["labels"], run_info, args.report, args.skipped_ok, record,
                        args.data_dir)


def _scored_line(result: JobResult, plan: ScoringPlan, model: str) -> str:
    """What the run did, each number once: ``scored 2,000 of the 2,004 files of photos with fashion version 1 in
    1.23 s (1,626 images/s, +0.12 s listing and checking the inputs); 4 skipped``. No version or rate when nothing
    was scored, no timing when a finished run was resumed."""
    s = result.summary
    what = ", ".join(i.name for i in plan.inputs)
    if plan.num_shards > 1:
        what += f" (shard {plan.shard}/{plan.num_shards})"
    if not s.rows:  # only a shard can be empty: an input without files is an error
        return f"scored no images of {what}: none of its files falls in this shard"
    if not s.skipped:
        line = f"scored {counted(s.scored, 'image')} of {what}"
    else:
        line = f"scored {f'{s.scored:,}' if s.scored else 'none'} of the {counted(s.rows, 'file')} of {what}"
    if s.scored:
        line += f" with {model} {_versions(s.versions)}"
    if result.already_complete:
        return line + (f"; {s.skipped:,} skipped" if s.skipped else "")
    timing = [f"{result.images_per_second:,.0f} images/s"] if s.scored and result.images_this_run else []
    timing.append(f"+{result.prepare_seconds:.2f} s listing and checking the inputs")
    if result.images_this_run != s.rows:  # a resumed run
        line += f", {f'{result.images_this_run:,}' if result.images_this_run else 'none'} of them in this run,"
    line += f" in {result.seconds:.2f} s ({', '.join(timing)})"
    return line + (f"; {s.skipped:,} skipped" if s.skipped else "")


def _versions(versions: dict[str, int]) -> str:
    """``version 3``, or ``versions 2 (1,000 images), 3 (9,000 images)`` when a label moved during the run."""
    if len(versions) == 1:
        return f"version {next(iter(versions))}"
    ordered = sorted(versions.items(), key=lambda kv: (not kv[0].isdigit(), int(kv[0]) if kv[0].isdigit() else 0, kv[0]))
    return "versions " + ", ".join(f"{v} ({counted(n, 'image')})" for v, n in ordered)
