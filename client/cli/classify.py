"""``tfclassify classify``: classify a few image files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tfclassify.client.cli.common import add_server_arguments
from tfclassify.client.client import ClassifierClient


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "classify",
        help="classify image files (PNG/JPEG)",
        description="Send image files (PNG/JPEG, 28x28 grayscale) to the server and print each prediction.",
    )
    add_server_arguments(parser)
    parser.add_argument("--model", required=True, help="model name on the server")
    parser.add_argument("--version", type=int, help="model version (default: latest)")
    parser.add_argument("--top-k", type=int, default=3, help="ranked classes to show [default: %(default)s]")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    parser.add_argument("files", nargs="+", type=Path, help="image files")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    encoded = [path.read_bytes() for path in args.files]
    with ClassifierClient(args.server, timeout=args.timeout) as client:
        result = client.classify_encoded(encoded, args.model, version=args.version, top_k=args.top_k)
    for path, prediction in zip(args.files, result):
        if args.json:
            row = {
                "file": str(path), "class": prediction.index, "label": prediction.label, "score": prediction.score,
                "top_k": [{"class": r.index, "label": r.label, "score": r.score} for r in prediction.top_k],
            }
            print(json.dumps(row, ensure_ascii=False))
        else:
            ranked = ", ".join(f"{r.label} {r.score:.3f}" for r in prediction.top_k)
            print(f"{path}: {prediction.label} ({prediction.score:.3f})  [{ranked}]")
    return 0
