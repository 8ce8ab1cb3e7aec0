"""From input paths to ordered chunks of work: survey, shard, resume, labels.

Every image of every input gets a global ``index`` (its position in the
enumeration of all inputs, in the order given), the same whether a run is
sharded or not, so shard outputs merge back into exactly the rows of one
run. ``--shard I/N`` keeps the items whose ``source`` hashes to I modulo N:
stable across machines and runs, independent of listing order.

Inputs that list slowly (a prefix of objects: one request per 1,000 keys, minutes for ten million) are
surveyed while they are scored: the survey calls back after its first ``LISTING_PREVIEW`` images, with
``--labels auto`` settled and their labels checked, and the scorer starts from that preview.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard, cast

import numpy as np

from tfclassify.common.inputs.labels import (
    AUTO,
    FOLDER,
    NOT_IN_CLASS_FOLDER,
    LabelError,
    LabelResolver,
    folder_label,
    normalise_member,
    read_manifest,
)
from tfclassify.common.inputs.sources import ArrayInput, Input, InputError, Item
from tfclassify.common.storage.urls import is_object_url

#: A run whose inputs list slowly starts scoring once this many images are listed (the rest are listed while it
#: scores); ``TFCLASSIFY_LISTING_PREVIEW`` sets another for a run (``listing_preview``).
LISTING_PREVIEW = 100_000
PREVIEW_VARIABLE = "TFCLASSIFY_LISTING_PREVIEW"


def listing_preview() -> int:
    """``TFCLASSIFY_LISTING_PREVIEW``, else ``LISTING_PREVIEW``; ``InputError`` when it is not a positive whole
    number."""
    text = os.environ.get(PREVIEW_VARIABLE, "").strip()
    if not text:
        return LISTING_PREVIEW
    if not text.isdigit() or int(text) < 1:
        raise InputError(f"{PREVIEW_VARIABLE}={text!r}: expected a whole number of images above 0 "
                         f"(default {LISTING_PREVIEW:,})")
    return int(text)


def shard_of(source: str, num_shards: int) -> int:
    """The shard (0..num_shards-1) that ``source`` belongs to."""
    if num_shards == 1:
        return 0
    return _hash64(source) % num_shards


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N), with 0 <= I < N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard takes I/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= I < N")
    return index, count


@dataclass
class Survey:
    """What a listing pass over every input found (nothing is decoded)."""

    total: int = 0  # images over all shards
    shard_sizes: list[int] = field(default_factory=list)
    #: Order-independent digest of every input's source name (sharded runs only): shards of one job share it.
    digest: str = ""
    labelled: int = 0  # images of this shard with a true label
    #: Files outside every class folder (``--labels folder``), over all shards: each is skipped, not scored.
    unfiled: int = 0
    #: Image files over all shards, and those that sit in a folder named after a class of the model.
    files: int = 0
    in_class_folders: int = 0
    #: False for the preview of a survey still listing: its counts are those of the first images only.
    complete: bool = True

    def to_dict(self) -> dict:
        if not self.complete:  # what a run record says while the listing goes on
            return {"total": None, "shard_sizes": None, "digest": None, "listed_before_scoring": self.total}
        return {"total": self.total, "shard_sizes": self.shard_sizes, "digest": self.digest}


@dataclass
class Chunk:
    """Consecutive images of this shard, scored together as one batch."""

    seq: int
    indices: list[int]  # global index of each image
    sources: list[str]
    true: list[int | None]  # true class index, when known
    refs: list = field(default_factory=list)  # FileRef per image (file inputs)
    array: ArrayInput | None = None  # array inputs: the rows ``refs`` of this array
    #: Files skipped without being read (position in the chunk -> reason): those outside every class folder.
    skipped: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)


class ScoringPlan:
    """The images of one run: its inputs, where labels come from, and its shard."""

    def __init__(
        self, inputs: list[Input], labels: str | Path | None = None, shard: tuple[int, int] = (0, 1),
        limit: int | None = None,
    ) -> None:
        if not inputs:
            raise ValueError("no inputs to score")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.inputs = inputs
        self.shard, self.num_shards = shard
        self.labels_from = labels
        self.limit = limit
        #: Where the true labels of files come from: ``labels``, with ``auto`` settled by ``survey``.
        self._mode: str | Path | None = None if labels == AUTO else labels
        self._surveyed = False
        #: One-line notes for the user (``auto`` labels: what the survey found), after ``survey``.
        self.notes: list[str] = []
        self._manifest: dict[str, str] | None = None
        #: Set to stop a survey running beside the scoring (the run ended first).
        self._stop_survey = threading.Event()
        #: ``auto`` labels settled as folder labels from a preview: a file outside the class folders seen later
        #: is scored without a true label (as all would have been, had the listing been short), not skipped.
        self._auto_from_preview = False
        if labels is not None and str(labels) not in (FOLDER, AUTO):
            self._manifest = read_manifest(labels if is_object_url(labels) else Path(labels))

    @property
    def lists_slowly(self) -> bool:
        """Whether an input lists slowly (objects): its survey goes on while the images are scored."""
        return any(i.lists_slowly for i in self.inputs)

    def stop_survey(self) -> None:
        """Stop a survey running in another thread (it raises ``SurveyStopped``)."""
        self._stop_survey.set()

    def identity(self) -> dict:
        """What a resumed run must share with the run it continues."""
        return {
            "inputs": [i.identity() for i in self.inputs],
            "labels": self._labels_identity(),
            "shard": [self.shard, self.num_shards],
            "limit": self.limit,
        }

    def _labels_identity(self) -> str | None:
        """``labels`` as a run records it: ``auto`` as what the survey settled it to (folder labels, or none), so that
        a run resumes whether it was started with the label source spelled out or left to ``auto`` (the default
        since it was ``none``); plain ``auto`` before the survey."""
        if self.labels_from == AUTO:
            return AUTO if not self._surveyed else cast("str | None", self._mode)  # auto settles to FOLDER or None
        return None if self.labels_from is None else str(self.labels_from)

    def survey(self, resolver: LabelResolver, on_preview: Callable[[Survey], None] | None = None) -> Survey:
        """List every input once: count, shard sizes, digest; check every label against the model first.

        Raises ``LabelError`` naming labels that are not classes of the model,
        before anything is scored. With ``on_preview``, a survey of more than
        ``listing_preview()`` images calls it (from this thread) once that many
        are listed, with their counts (``complete`` False): ``--labels auto``
        settled from them and their labels checked, so scoring can start while
        the listing goes on; a label that is not a class found later raises at
        once. The same listing always gives the same preview.
        """
        preview_at = listing_preview() if on_preview is not None else 0
        survey = Survey(shard_sizes=[0] * self.num_shards)
        digest = 0
        unknown: set[str] = set()
        settling = self.labels_from == AUTO  # until auto labels are settled
        #: Auto labels settled from the preview: a later folder that is not a class gives no true label, as it
        #: would have had the listing been short, rather than failing a run that has begun.
        sampled = False
        if settling:
            self._mode = FOLDER  # tentatively, while the files are counted; settled below
        auto_labelled = 0
        for source in self.inputs:
            if self._is_whole_array(source):
                n = self._take(source, survey.total)
                survey.total += n
                survey.shard_sizes[0] += n
                if source.labels is not None:
                    labels = source.labels[:n]
                    survey.labelled += n
                    unknown.update(str(v) for v in np.unique(labels[(labels < 0) | (labels >= len(resolver.class_names))]))
                continue
            for item in self._listed(source, first_index=survey.total):
                if on_preview is not None and survey.total == preview_at:  # and here is one more
                    if settling:
                        survey.unfiled, settling, sampled = 0, False, True
                        self._settle_auto(survey, auto_labelled)
                        self._auto_from_preview = self._mode == FOLDER
                    self._surveyed = True
                    self._check_labels(resolver, unknown, survey, final=False)
                    on_preview(dataclasses.replace(survey, shard_sizes=list(survey.shard_sizes), complete=False))
                    on_preview = None
                if self._stop_survey.is_set():
                    raise SurveyStopped()
                label = self._label_of(item)
                survey.total += 1
                shard = shard_of(item.source, self.num_shards)
                survey.shard_sizes[shard] += 1
                if self.num_shards > 1:
                    digest = (digest + _hash64(item.source)) % (1 << 64)
                if label is None and self._mode == FOLDER and not self._auto_from_preview:
                    survey.unfiled += 1
                if settling and not source.is_array and item.label is None:
                    # (an item with a label of its own, from a manifest input, is labelled whatever auto settles)
                    survey.files += 1
                    survey.in_class_folders += resolver.names_class(label)
                    auto_labelled += shard == self.shard
                    continue
                if shard != self.shard or label is None:
                    continue
                survey.labelled += 1
                if resolver.resolve(label) is None and (not sampled or item.label is not None):
                    unknown.add(str(label))
                    if on_preview is None and preview_at:  # scoring has begun: stop it now, not at the end
                        self._check_labels(resolver, unknown, survey, final=False)
        if survey.total == 0:
            paths = [i.location for i in self.inputs]
            raise InputError(f"no images to score: {', '.join(paths)} {'holds' if len(paths) == 1 else 'hold'} no files")
        if self.num_shards > 1:
            survey.digest = f"{digest:016x}"
        if settling:
            survey.unfiled = 0
            self._settle_auto(survey, auto_labelled)
        self._surveyed = True
        self._check_labels(resolver, unknown, survey)
        return survey

    def _settle_auto(self, survey: Survey, labelled: int) -> None:
        """``--labels auto``: folder labels when every file sits in a folder named after a class of the model,
        none otherwise (with a hint when some do)."""
        if survey.files and survey.in_class_folders == survey.files:
            self._mode = FOLDER
            survey.labelled += labelled
            self.notes.append("true labels: the class folders (every file sits in a folder named after one of the "
                              "model's classes); --labels none scores without them")
            return
        self._mode = None
        if survey.in_class_folders:
            self.notes.append(f"{survey.in_class_folders:,} of the {survey.files:,} files sit in folders named after "
                              "the model's classes: --labels folder takes those as true labels (the others are "
                              "skipped)")

    def chunks(self, resolver: LabelResolver, batch_size: int, skip: int = 0) -> Generator[Chunk, None, None]:
        """This shard's images in order, ``batch_size`` at a time, after the first ``skip`` (a resumed run).

        A chunk never spans two inputs, and chunks start at multiples of
        ``batch_size`` among this shard's images, so a resumed run batches
        the images it has left as an uninterrupted run would.
        """
        seq = index = position = 0  # global index; position among this shard's images
        for source in self.inputs:
            if self._is_whole_array(source):
                n = self._take(source, index)
                start = max(0, skip - position)
                while start < n:
                    stop = min(n, start + batch_size - (position + start) % batch_size)
                    yield _array_chunk(seq, source, start, stop, index)
                    seq, start = seq + 1, stop
                index, position = index + n, position + n
                continue
            chunk: Chunk | None = None
            for item, label in self._items_of(source, with_data=True, first_index=index):
                index += 1
                if self.num_shards > 1 and shard_of(item.source, self.num_shards) != self.shard:
                    continue
                position += 1
                if position <= skip:
                    continue
                if chunk is not None and (position - 1) % batch_size == 0:
                    yield chunk
                    seq, chunk = seq + 1, None
                if chunk is None:
                    chunk = Chunk(seq, [], [], [], [], source if isinstance(source, ArrayInput) else None)
                if label is None and self._mode == FOLDER and not self._auto_from_preview:
                    chunk.skipped[len(chunk)] = NOT_IN_CLASS_FOLDER
                chunk.indices.append(index - 1)
                chunk.sources.append(item.source)
                chunk.true.append(None if label is None else resolver.resolve(label))
                chunk.refs.append(item.ref)
            if chunk is not None:
                yield chunk
                seq += 1

    # -- helpers -------------------------------------------------------------
    def _is_whole_array(self, source: Input) -> TypeGuard[ArrayInput]:
        """An array input of an unsharded run: handled by slices, without an ``Item`` per row."""
        return isinstance(source, ArrayInput) and self.num_shards == 1

    def _take(self, source: ArrayInput, before: int) -> int:
        """How many rows of ``source`` are within ``limit``, ``before`` images coming first."""
        n = len(source.images)
        return n if self.limit is None else max(0, min(n, self.limit - before))

    def _items_of(self, source: Input, with_data: bool, first_index: int) -> Iterator[tuple[Item, str | int | None]]:
        """The items of one input, the ``first_index``-th image of the run first, with their raw true labels."""
        for item in self._listed(source, first_index, with_data):
            yield item, self._label_of(item)

    def _listed(self, source: Input, first_index: int, with_data: bool = False) -> Iterator[Item]:
        """The items of one input within ``limit``, the ``first_index``-th image of the run first."""
        remaining = -1 if self.limit is None else max(0, self.limit - first_index)
        for item in source.items(with_data=with_data):
            if remaining == 0:
                return
            remaining -= 1
            yield item

    def _label_of(self, item: Item) -> str | int | None:
        """The raw true label of ``item``: its own, its folder's or the manifest's, as labels are taken now."""
        if item.label is not None:
            return item.label
        if self._mode == FOLDER:
            return folder_label(item.member)
        if self._manifest is not None:
            return self._manifest.get(normalise_member(item.member))
        return None

    def _check_labels(self, resolver: LabelResolver, unknown: set[str], survey: Survey, final: bool = True) -> None:
        """``LabelError`` for labels that are not classes; with ``final``, also for a run whose files are all
        outside class folders, or none of which the manifest lists (not known from a preview)."""
        if self.labels_from == FOLDER:
            # A stray file (README.md at the root) is skipped; an input with no class folder at all is the wrong
            # folder (a class folder itself, or one level too high), and scoring it would skip every file.
            if final and survey.unfiled == survey.total:
                raise LabelError(
                    f"--labels folder: no file of {', '.join(i.location for i in self.inputs)} is in a class "
                    "folder; name the folder or archive that holds the class folders (Shirt/0001.png)"
                )
            resolver.check(unknown, "folder name")
        elif self._manifest is not None:
            if final and survey.labelled == 0 and survey.total:
                example = next(iter(self._manifest))
                raise LabelError(
                    f"none of the images is listed in the manifest {self.labels_from} (it lists e.g. {example!r}); "
                    "its paths must be relative to the folder or archive root, e.g. 'Shirt/0001.png'"
                )
            resolver.check(unknown, f"manifest {self.labels_from}: label")
        else:
            resolver.check(unknown, "true label")


class SurveyStopped(Exception):
    """A survey stopped by ``ScoringPlan.stop_survey`` (the run it was listing for ended)."""


def _array_chunk(seq: int, source: ArrayInput, start: int, stop: int, first_index: int) -> Chunk:
    """Rows ``start:stop`` of an array input, whose row 0 is the run's ``first_index``-th image."""
    true = source.labels[start:stop].tolist() if source.labels is not None else [None] * (stop - start)
    return Chunk(seq, list(range(first_index + start, first_index + stop)),
                 [f"{source.name}[{i}]" for i in range(start, stop)], true, list(range(start, stop)), source)


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def array_rows(chunk: Chunk) -> np.ndarray:
    """The pixels of an array chunk."""
    assert chunk.array is not None
    rows = chunk.refs
    start = rows[0]
    if rows[-1] - start + 1 == len(rows):
        return chunk.array.images[start : start + len(rows)]
    return chunk.array.images[np.asarray(rows)]


__all__ = ["LISTING_PREVIEW", "PREVIEW_VARIABLE", "Chunk", "ScoringPlan", "Survey", "SurveyStopped", "array_rows",
           "listing_preview", "parse_shard", "shard_of"]
