"""``tfclassify score``: score a whole dataset against a server and report accuracy."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tfclassify.client.cli.common import CliError, add_server_arguments
from tfclassify.client.client import ClassifierClient
from tfclassify.client.datasets import SPLITS, Dataset, dataset_names, load_dataset, read_array
from tfclassify.client.report import build_report
from tfclassify.client.scoring import ScoringResult, score_images


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "score",
        help="score a dataset against a server and report accuracy",
        description="Classify every image of a dataset (or of IDX/.npz files) on a tfclassify server and "
        "report accuracy, per-class precision/recall/F1, the confusion matrix and the most-confused pairs.",
    )
    add_server_arguments(parser, timeout=60.0)
    parser.add_argument("--model", required=True, help="model name on the server")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="model version (default: latest)")
    which.add_argument("--version-label", help="model version label, e.g. stable")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=dataset_names(), help="a dataset known by name")
    source.add_argument("--images", type=Path, help="images file: IDX (*-ubyte[.gz]) or .npz")
    parser.add_argument("--split", default="test", choices=SPLITS, help="with --dataset [default: %(default)s]")
    parser.add_argument("--data-dir", type=Path, help="with --dataset: folder holding its files")
    parser.add_argument("--labels", type=Path, help="with --images: true labels file (IDX or .npz)")
    parser.add_argument("--limit", type=int, help="score only the first N images")
    parser.add_argument(
        "--batch-size", type=int, default=0,
        help="images per RPC [default: the largest power of two up to 4096 that makes 8 or more batches]",
    )
    parser.add_argument("--in-flight", type=int, default=4, help="RPCs in flight at once [default: %(default)s]")
    parser.add_argument("--report", type=Path, help="write the report as JSON here")
    parser.add_argument("--predictions", type=Path, help="write one JSON line per image here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    data = _load(args)
    with ClassifierClient(args.server, timeout=args.timeout) as client:
        info = client.get_model_metadata(args.model, version=args.version)
        if data.labels is not None and data.labels.max() >= info.num_classes:
            raise CliError(
                f"model {info.name!r} has {info.num_classes} classes but the true labels go up to {data.labels.max()}"
            )
        with tqdm(
            total=len(data), unit="img", unit_scale=True, desc=f"scoring {data.name}", file=sys.stderr,
            disable=True if args.no_progress else None, dynamic_ncols=True,
        ) as bar:
            result = score_images(
                client, data.images, args.model, version=args.version, version_label=args.version_label,
                batch_size=args.batch_size, max_in_flight=args.in_flight, timeout=args.timeout,
                on_progress=bar.update,
            )
    versions = ", ".join(f"{v} ({n} images)" for v, n in sorted(result.versions.items()))
    print(
        f"scored {len(data)} images of {data.name} with {args.model} version {versions} in "
        f"{result.elapsed_s:.2f} s: {result.images_per_second:,.0f} images/s"
    )
    if args.predictions:
        _write_predictions(args.predictions, result, list(info.labels), data.labels)
    if data.labels is None:
        print("no true labels: accuracy not computed")
        return 0
    run_info = {
        "server": args.server, "model": args.model, "versions": {str(k): v for k, v in result.versions.items()},
        "data": data.name, "split": data.split, "seconds": round(result.elapsed_s, 3),
        "images_per_second": round(result.images_per_second, 1), "retries": result.retries,
    }
    report = build_report(data.labels, result.classes, result.scores, list(info.labels), run=run_info)
    print()
    print(report.format_text())
    if args.report:
        report.write_json(args.report)
        print(f"\nreport written to {args.report}")
    return 0


def _load(args: argparse.Namespace) -> Dataset:
    if args.dataset:
        data = load_dataset(args.dataset, args.split, args.data_dir)
    else:
        images = read_array(args.images)
        labels = read_array(args.labels).astype(np.int64) if args.labels else None
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise CliError(f"{args.images}: expected uint8 images [N, H, W], got {images.dtype} {list(images.shape)}")
        if labels is not None and labels.shape != (len(images),):
            raise CliError(f"{args.labels}: {len(labels)} labels for {len(images)} images")
        data = Dataset(args.images.name, "", images, labels, ())
    if args.limit:
        data = Dataset(data.name, data.split, data.images[: args.limit],
                       None if data.labels is None else data.labels[: args.limit], data.label_names)
    if len(data) == 0:
        raise CliError("no images to score")
    return data


def _write_predictions(path: Path, result: ScoringResult, names: list[str], true: np.ndarray | None) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for i, (c, score) in enumerate(zip(result.classes.tolist(), result.scores.tolist())):
            row = {"index": i, "class": c, "label": names[c], "score": round(score, 6)}
            if true is not None:
                row["true_class"] = int(true[i])
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
