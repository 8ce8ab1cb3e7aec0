"""The library API of the scorer: one result per image of folders, archives and datasets.

>>> from tfclassify.client.scoring import score_files
>>> for result in score_files(["photos.zip"], model="fashion_mnist", servers=["localhost:8500"]):
...     print(result.source, result.label, result.score)

``score_files`` is a plain iterator (the pipeline runs on an event loop in a
background thread); ``score_files_async`` is the same for asyncio code.
Both take the options of ``tfclassify score``.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tfclassify.client.inputs.plan import ScoringPlan
from tfclassify.client.scoring.engine import Scorer, ScoringOptions
from tfclassify.client.scoring.output import chunk_rows
from tfclassify.common.inputs.sources import Input, open_input


@dataclass(frozen=True)
class ImageResult:
    """The outcome for one image: its prediction, or why it was skipped."""

    index: int  # position among all the inputs' images
    source: str  # e.g. "photos.zip/Shirt/0001.png"
    true_class: int | None
    true_label: str | None
    class_index: int | None  # None when skipped
    label: str | None
    score: float | None
    top_k: tuple[tuple[int, str, float], ...]
    version: int | None
    skipped: str | None  # the reason, when the image was not scored

    @classmethod
    def from_row(cls, row: dict) -> ImageResult:
        return cls(
            row["index"], row["source"], row.get("true_class"), row.get("true_label"), row.get("class"),
            row.get("label"), row.get("score"),
            tuple((r["class"], r["label"], r["score"]) for r in row.get("top_k", ())), row.get("version"),
            row.get("skipped"),
        )


def make_plan(
    paths: Sequence[str | Path | Input], labels: str | Path | None = None, shard: tuple[int, int] = (0, 1)
) -> ScoringPlan:
    """A ``ScoringPlan`` over folders, archives, image files and object URLs (or ready ``Input`` objects)."""
    inputs = [p if isinstance(p, Input) else open_input(p) for p in paths]
    return ScoringPlan(inputs, labels, shard)


async def score_files_async(
    paths: Sequence[str | Path | Input],
    *,
    model: str,
    servers: Sequence[str] = ("localhost:8500",),
    labels: str | Path | None = None,
    shard: tuple[int, int] = (0, 1),
    **options,
) -> AsyncIterator[ImageResult]:
    """Score every image of ``paths`` on ``servers``; yields an ``ImageResult`` per image, in input order.

    ``labels``: ``"folder"`` (class-named folders), a manifest path, or None.
    ``options`` are ``ScoringOptions`` fields (``top_k``, ``invert``, ``batch_size`` ...).
    Files are decoded on threads unless ``decode_workers=N`` asks for N
    processes (faster for large runs; like any ``multiprocessing`` code, the
    calling program's main module must then be guarded by
    ``if __name__ == "__main__":``, since the workers import it).
    """
    async for chunk in _chunks_of_results(paths, model, servers, labels, shard, options):
        for result in chunk:
            yield result


def score_files(
    paths: Sequence[str | Path | Input],
    *,
    model: str,
    servers: Sequence[str] = ("localhost:8500",),
    labels: str | Path | None = None,
    shard: tuple[int, int] = (0, 1),
    **options,
) -> Iterator[ImageResult]:
    """The synchronous ``score_files_async``: a plain iterator; stop early with ``close()`` or ``break``."""
    handover: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    done = object()

    def put(item: object) -> None:  # on a worker thread: blocks while the consumer is behind
        while not stop.is_set():
            try:
                handover.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    async def produce() -> None:
        try:
            async for chunk in _chunks_of_results(paths, model, servers, labels, shard, options):
                if stop.is_set():
                    return
                await asyncio.to_thread(put, chunk)
            put(done)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
            put(exc)

    thread = threading.Thread(target=asyncio.run, args=(produce(),), name="tfclassify-scoring", daemon=True)
    thread.start()
    try:
        while (item := handover.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield from item
    finally:
        stop.set()
        thread.join()


async def _chunks_of_results(paths, model, servers, labels, shard, options) -> AsyncIterator[list[ImageResult]]:
    plan = make_plan(paths, labels, shard)
    options.setdefault("decode_workers", 0)
    scorer = Scorer(list(servers), ScoringOptions(model=model, **options))
    try:
        await scorer.start(plan)
        assert scorer.model is not None
        names = list(scorer.model.labels)
        async for result in scorer.results():
            yield [ImageResult.from_row(row) for row in chunk_rows(result, names, scorer.model.name)]
        await scorer.final_survey()  # a listing still going on may yet find a label that is not a class
    finally:
        await scorer.close()


__all__ = ["ImageResult", "make_plan", "score_files", "score_files_async"]
