"""``tfclassify classify``: classify image files, folders and archives, and print each prediction."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from tfclassify.client.cli.arguments import (
    EXIT_OK,
    EXIT_SKIPPED,
    add_server_arguments,
    credentials_from,
    ssl_context_from,
    token_from,
)
from tfclassify.client.cli.score import add_resize_argument
from tfclassify.client.scoring.api import ImageResult, score_files_async
from tfclassify.common.image_files import INVERT_CHOICES


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "classify",
        help="classify image files, folders or archives",
        description="Classify image files (any format Pillow reads), folders and archives (.zip, .tar[.gz|.bz2|.xz]) "
        "and print each prediction. Images are converted to the model's input (its channels: grayscale, RGB or RGBA; "
        "its size, per --resize); a model that decodes files itself gets them untouched. "
        "Exit status: 0, 1 failure, 3 when some files could not be classified (each is named).",
    )
    add_server_arguments(parser)
    parser.add_argument("--model", required=True, help="model name on the server")
    parser.add_argument("--version", type=int, help="model version (default: latest)")
    parser.add_argument("--top-k", type=int, default=3, help="ranked classes to show [default: %(default)s]")
    parser.add_argument("--invert", choices=INVERT_CHOICES, default="auto",
                        help="light-on-dark conversion for one-channel models, as for score [default: %(default)s]")
    add_resize_argument(parser)
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files, folders or archives")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_classify(args))


async def _classify(args: argparse.Namespace) -> int:
    skipped = 0
    async for result in score_files_async(
        args.paths, model=args.model, servers=[args.server], version=args.version, top_k=args.top_k,
        invert=args.invert, resize=args.resize, timeout=args.timeout, credentials=credentials_from(args),
        ssl_context=ssl_context_from(args, [args.server]), token=token_from(args),
    ):
        skipped += result.skipped is not None
        print(_format(result, args.json), flush=True)
    return EXIT_SKIPPED if skipped else EXIT_OK


def _format(result: ImageResult, as_json: bool) -> str:
    if as_json:
        row: dict[str, object] = {"file": result.source}
        if result.skipped is not None:
            row["skipped"] = result.skipped
        else:
            row.update({"class": result.class_index, "label": result.label, "score": result.score,
                        "top_k": [{"class": c, "label": label, "score": s} for c, label, s in result.top_k]})
        return json.dumps(row, ensure_ascii=False)
    if result.skipped is not None:
        return f"{result.source}: skipped: {result.skipped}"
    ranked = ", ".join(f"{label} {s:.3f}" for _, label, s in result.top_k)
    return f"{result.source}: {result.label} ({result.score:.3f})  [{ranked}]"
