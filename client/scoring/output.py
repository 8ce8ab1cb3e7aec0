"""Predictions written as the run goes, a run record beside them, resume, and reading them back.

The rows go to a JSON Lines file, one line per image in input order, each
chunk in one ``write`` as soon as it is scored: a crash (even SIGKILL)
leaves a valid prefix, at worst followed by a partial line that a resumed
run cuts off. ``--output x.parquet`` writes the same JSONL to a hidden
journal beside it and converts it to Parquet at the end (a Parquet file is
only readable once its footer is written). ``x.<ext>.run.json``, the run
record, says what was run (inputs, model, shard, options) and, once done,
``complete: true`` with the counts; resume and merge read it.

An object URL (``s3://bucket/results/pred.jsonl``) is written by ``object_output.ObjectPredictionsWriter``
instead (committed parts, then one final object); ``open_writer``, ``read_record``, ``read_rows``,
``finished_record`` and ``output_started`` take either.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypeGuard, cast

import numpy as np

from tfclassify.client.atomic import write_atomic
from tfclassify.client.quality.report import MAX_SKIPPED_LISTED, RowSummary, SkippedFile
from tfclassify.client.scoring.engine import ChunkResult
from tfclassify.common.storage.urls import is_object_url

if TYPE_CHECKING:
    from tfclassify.client.scoring.object_output import ObjectPredictionsWriter

#: Where an output goes: a local path, or an object URL (a ``str``: a ``Path`` would fold its ``//``).
Output = Path | str

FORMAT = "tfclassify-predictions/1"
PARQUET_ROWS_PER_GROUP = 65536
READ_BLOCK_BYTES = 4 << 20
_json_string = json.encoder.encode_basestring  # json.dumps' own, for ensure_ascii=False


class OutputError(ValueError):
    """The output cannot be written or continued as asked."""


def chunk_rows(result: ChunkResult, labels: list[str], model: str) -> Iterator[dict]:
    """The output rows of one chunk: scored images, and skipped files with their reason."""
    columns = _Columns(result)
    return (columns.row(p, labels, model) for p in range(len(result)))


def chunk_text(result: ChunkResult, labels: list[str], model: str) -> str:
    """The JSONL lines of one chunk: exactly ``dump_row`` of each of ``chunk_rows``, built faster.

    When no image was skipped and no ``top_k`` asked for, rows are filled into
    a template column by column (strings escaped by the function
    ``json.dumps`` itself uses, floats by ``repr`` as ``json.dumps`` does);
    otherwise every row goes through ``json.dumps``. Both take the scores
    from ``rounded``.
    """
    columns = _Columns(result)
    chunk = result.chunk
    scores = columns.scores
    if columns.k or result.skipped or not np.isfinite(result.scores).all():
        return "".join(dump_row(columns.row(p, labels, model)) for p in range(len(chunk)))
    label_json = [_json_string(label) for label in labels]
    tail = f', "model": {_json_string(model)}, "version": '
    truths = [f', "true_class": {t}, "true_label": {label_json[t]}' if t is not None else "" for t in chunk.true]
    return "".join([
        f'{{"index": {i}, "source": {s}{t}, "class": {c}, "label": {label_json[c]}, "score": {sc!r}{tail}{v}}}\n'
        for i, s, t, c, sc, v in zip(chunk.indices, map(_json_string, chunk.sources), truths, columns.classes,
                                     scores, columns.versions)
    ])


def summarize_chunk(summary: RowSummary, result: ChunkResult) -> None:
    """Add one chunk to ``summary`` as ``summarize_rows`` would count its rows (runs without an output file)."""
    chunk = result.chunk
    summary.rows += len(chunk)
    if not result.skipped and None not in chunk.true:  # the common chunk: list operations in C only
        for version, count in zip(*np.unique(result.versions, return_counts=True)):
            summary.versions[str(version)] = summary.versions.get(str(version), 0) + int(count)
        summary.true += cast("list[int]", chunk.true)  # no None in it (checked above)
        summary.predicted += result.classes.tolist()
        summary.scores += rounded(result.scores)
        summary.sources += chunk.sources
        summary.indices += chunk.indices
        if result.top_k_classes.shape[1]:
            summary.ranked += result.top_k_classes.tolist()
        return
    for p, reason in sorted(result.skipped.items()):
        summary.skipped += 1
        if len(summary.skipped_files) < MAX_SKIPPED_LISTED:
            summary.skipped_files.append(SkippedFile(chunk.sources[p], reason))
    scored = [p for p in range(len(chunk)) if p not in result.skipped]
    for version, count in zip(*np.unique(result.versions[scored], return_counts=True)):
        summary.versions[str(version)] = summary.versions.get(str(version), 0) + int(count)
    labelled = [p for p in scored if chunk.true[p] is not None]
    summary.unlabelled += len(scored) - len(labelled)
    summary.true += [cast(int, chunk.true[p]) for p in labelled]  # labelled: not None
    summary.predicted += result.classes[labelled].tolist()
    summary.scores += rounded(result.scores[labelled])
    summary.sources += [chunk.sources[p] for p in labelled]
    summary.indices += [chunk.indices[p] for p in labelled]
    if result.top_k_classes.shape[1]:
        summary.ranked += result.top_k_classes[labelled].tolist()


class _Columns:
    """A chunk result's columns as Python lists (one conversion per chunk, not per row)."""

    def __init__(self, result: ChunkResult) -> None:
        self.result = result
        self.classes, self.scores = result.classes.tolist(), rounded(result.scores)
        self.versions = result.versions.tolist()
        self.k = result.top_k_classes.shape[1]
        self.top_classes = result.top_k_classes.tolist() if self.k else []
        self.top_scores = rounded(result.top_k_scores) if self.k else []

    def row(self, p: int, labels: list[str], model: str) -> dict:
        chunk = self.result.chunk
        row: dict = {"index": chunk.indices[p], "source": chunk.sources[p]}
        true = chunk.true[p]
        if true is not None:
            row["true_class"] = true
            row["true_label"] = labels[true]
        reason = self.result.skipped.get(p)
        if reason is not None:
            row["skipped"] = reason
            return row
        c = self.classes[p]
        row["class"] = c
        row["label"] = labels[c]
        row["score"] = self.scores[p]
        if self.k:
            row["top_k"] = [
                {"class": tc, "label": labels[tc], "score": ts} for tc, ts in zip(self.top_classes[p], self.top_scores[p])
            ]
        row["model"] = model
        row["version"] = self.versions[p]
        return row


def rounded(scores: np.ndarray) -> list:
    """Scores rounded to 6 decimals, as Python floats (the one rounding of every output path:
    numpy's, 30x faster than ``round`` per value)."""
    return np.round(scores.astype(np.float64), 6).tolist()


def dump_row(row: dict) -> str:
    """One JSONL line (with its newline)."""
    return json.dumps(row, ensure_ascii=False) + "\n"


def record_path(output: Path) -> Path:
    """The run record beside ``output``."""
    return output.with_name(output.name + ".run.json")


def read_record(output: Output) -> dict:
    """The run record of ``output``; ``OutputError`` when it has none."""
    if is_url(output):
        from tfclassify.client.scoring import object_output

        return object_output.read_record(_url(output))
    output = Path(output)
    path = record_path(output)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OutputError(f"{output}: no run record {path.name} beside it (not written by tfclassify score?)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise OutputError(f"{path}: unreadable run record: {exc}") from exc
    if record.get("format") != FORMAT:
        raise OutputError(f"{path}: not a {FORMAT} run record")
    return record


def write_record(output: Path, record: dict) -> None:
    """Write the run record atomically (temporary file, then rename)."""
    write_atomic(record_path(output), json.dumps(record, indent=2, ensure_ascii=False) + "\n")


def check_same_command(output: Output, record: dict, identity: dict) -> None:
    """``OutputError`` unless ``record`` (the run record of ``output``) was written by the command ``identity``
    describes: the same inputs, labels, shard, model and options."""
    if record.get("identity") != identity:
        differs = sorted(k for k in {*identity, *record.get("identity", {})}
                         if identity.get(k) != record.get("identity", {}).get(k))
        raise OutputError(
            f"{output} was written by a different command (it differs in: {', '.join(differs)}); "
            "run the original command with --resume, or start again with --overwrite"
        )


def finished_record(output: Output, identity: dict, any_labels: bool = False) -> dict | None:
    """The run record of ``output`` when it holds a finished run of the command ``identity`` describes: a
    ``--resume`` then has nothing to do (a retried Kubernetes Job pod). None when no run has begun writing
    ``output``, or when its run is not finished; ``OutputError`` for another command's output. ``any_labels``:
    folder labels or none match (``--labels auto``, not yet settled)."""
    if not open_writer(output).started():
        return None
    record = read_record(output)
    recorded = record.get("identity", {}).get("labels", None)
    if any_labels and recorded in (None, "folder"):
        identity = {**identity, "labels": recorded}
    check_same_command(output, record, identity)
    return record if record.get("complete") else None


def open_writer(output: Output, commit_seconds: float | None = None) -> PredictionsWriter | ObjectPredictionsWriter:
    """The writer of ``output``: a local file's, or an object URL's (``commit_seconds``: how often it commits)."""
    if is_url(output):
        from tfclassify.client.scoring import object_output

        return object_output.ObjectPredictionsWriter(
            output, object_output.COMMIT_SECONDS if commit_seconds is None else commit_seconds)
    return PredictionsWriter(Path(output))


def is_url(output: Output) -> TypeGuard[str]:
    """Whether ``output`` is an object URL (a ``str`` naming a local path is not)."""
    return isinstance(output, str) and is_object_url(output)


def output_started(output: Output) -> bool:
    """Whether a run has begun writing ``output`` (False when that cannot be told: the store is unreachable)."""
    try:
        return open_writer(output).started()
    except (OSError, OutputError):
        return False


def _url(output: str):
    from tfclassify.common.storage.urls import parse

    return parse(output)


class PredictionsWriter:
    """Writes rows to ``output`` (``.jsonl``, or ``.parquet`` through a journal) chunk by chunk."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.parquet = output.suffix.lower() == ".parquet"
        self.journal = output.with_name(f".{output.name}.journal.jsonl") if self.parquet else output
        self.rows = 0
        self._file: TextIO | None = None

    def create(self, record: dict, overwrite: bool) -> None:
        """Start a new output; refuse to replace an existing one unless ``overwrite``."""
        if self.parquet:
            _check_pyarrow()
        if not overwrite and (self.output.exists() or self.journal.exists()):
            raise OutputError(
                f"{self.output} exists: continue that run with --resume, or replace it with --overwrite"
            )
        self.output.parent.mkdir(parents=True, exist_ok=True)
        if self.parquet:
            self.output.unlink(missing_ok=True)
        write_record(self.output, record)
        self._file = open(self.journal, "w", encoding="utf-8")

    def started(self) -> bool:
        """Whether a run has begun writing ``output`` (its run record, journal or output exists)."""
        return record_path(self.output).exists() or self.journal.exists() or self.output.exists()

    def resume(self, identity: dict) -> dict:
        """Continue an interrupted output; returns its run record. Cuts a partial last line off."""
        if self.parquet:
            _check_pyarrow()
        record = read_record(self.output)
        check_same_command(self.output, record, identity)
        if record.get("complete"):  # run_job answers a finished run before it gets here (finished_record)
            raise OutputError(f"{self.output} is already complete ({record.get('rows')} rows): nothing to resume")
        if not self.journal.exists():
            raise OutputError(f"{self.journal}: missing, so {self.output} cannot be resumed; start again with --overwrite")
        self.rows = _cut_partial_line(self.journal)
        self._file = open(self.journal, "a", encoding="utf-8")
        return record

    def write(self, rows: Iterator[dict]) -> int:
        """Append rows in one write, flushed to the OS; returns how many."""
        lines = [dump_row(row) for row in rows]
        return self.write_text("".join(lines), len(lines))

    def write_text(self, text: str, rows: int) -> int:
        """Append ``rows`` JSONL lines (one chunk) in one write, flushed to the OS: a crash leaves whole chunks,
        or a partial last line that ``resume`` cuts off."""
        assert self._file is not None, "begin() or resume() first"
        self._file.write(text)
        self._file.flush()
        self.rows += rows
        return rows

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def finish(self, record: dict) -> None:
        """Close; for Parquet, convert the journal; then mark the run record complete."""
        self.close()
        if self.parquet:
            jsonl_to_parquet(self.journal, self.output)
            self.journal.unlink()
        write_record(self.output, {**record, "complete": True, "rows": self.rows})

    def discard(self) -> None:
        """Delete the output, its journal and its run record (a failed merge leaves nothing)."""
        self.close()
        self.output.unlink(missing_ok=True)
        self.journal.unlink(missing_ok=True)
        record_path(self.output).unlink(missing_ok=True)


def read_rows(output: Output) -> Iterator[dict]:
    """The rows of an output (JSONL, its Parquet journal while incomplete, or Parquet), in order; an object URL's
    final object, or its committed parts while its run is incomplete."""
    if is_url(output):
        from tfclassify.client.scoring import object_output

        yield from object_output.read_rows(output)
        return
    output = Path(output)
    if output.suffix.lower() == ".parquet":
        journal = output.with_name(f".{output.name}.journal.jsonl")
        if not output.exists() and journal.exists():
            yield from read_rows(journal)
            return
        yield from _parquet_rows(output)
        return
    with open(output, encoding="utf-8") as f:
        yield from _read_jsonl(f, output)


def _read_jsonl(f: TextIO, output: Output) -> Iterator[dict]:
    """The rows of an open JSONL text file, a block of lines at a time; a partial last line left out."""
    first_line = 1
    while lines := f.readlines(READ_BLOCK_BYTES):
        if not lines[-1].endswith("\n"):
            lines.pop()  # a partial line left by a crash
        yield from _parse_lines(output, lines, first_line)
        first_line += len(lines)


def _parse_lines(output: Output, lines: list[str], first_line: int) -> list[dict]:
    # One json.loads for a block of lines: the per-call overhead dominates for short lines.
    try:
        return json.loads("[" + ",".join(lines) + "]")
    except json.JSONDecodeError:
        for offset, line in enumerate(lines):
            try:
                json.loads(line)
            except json.JSONDecodeError as exc:
                raise OutputError(f"{output}:{first_line + offset}: not a JSON line: {exc.msg}") from exc
        raise


def write_parquet_rows(path: Path | str, rows: Iterable[dict]) -> None:
    """Write ``rows`` to a Parquet file at ``path`` in row groups of ``PARQUET_ROWS_PER_GROUP`` (memory stays
    bounded however many rows come)."""
    pa, pq = _check_pyarrow()
    schema = parquet_schema(pa)
    with pq.ParquetWriter(str(path), schema) as writer:
        batch: list[dict] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= PARQUET_ROWS_PER_GROUP:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))


def jsonl_to_parquet(jsonl: Path, parquet: Path) -> None:
    """Convert rows from JSONL to Parquet in bounded row groups (temporary file, then rename)."""
    _check_pyarrow()
    fd, tmp = tempfile.mkstemp(prefix=f".{parquet.name}.", dir=parquet.parent)
    os.close(fd)
    try:
        write_parquet_rows(tmp, read_rows(jsonl))
        os.replace(tmp, parquet)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def parquet_schema(pa):
    """The Parquet columns: the JSONL keys, absent values as nulls."""
    ranked = pa.struct([("class", pa.int32()), ("label", pa.string()), ("score", pa.float64())])
    return pa.schema([
        ("index", pa.int64()), ("source", pa.string()), ("true_class", pa.int32()), ("true_label", pa.string()),
        ("class", pa.int32()), ("label", pa.string()), ("score", pa.float64()), ("top_k", pa.list_(ranked)),
        ("model", pa.string()), ("version", pa.int64()), ("skipped", pa.string()),
    ])


def _parquet_rows(path: Path) -> Iterator[dict]:
    _, pq = _check_pyarrow()
    for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_ROWS_PER_GROUP):
        for row in batch.to_pylist():
            yield {k: v for k, v in row.items() if v is not None}


def _check_pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise OutputError("Parquet output needs pyarrow: pip install 'tfclassify[parquet]' (or write .jsonl)") from None
    return pa, pq


def _cut_partial_line(path: Path) -> int:
    """Truncate ``path`` after its last complete line; returns the number of complete lines."""
    lines = 0
    last_end = 0
    with open(path, "rb") as f:
        position = 0
        while block := f.read(1 << 20):
            lines += block.count(b"\n")
            end = block.rfind(b"\n")
            if end >= 0:
                last_end = position + end + 1
            position += len(block)
    if last_end != position:
        with open(path, "r+b") as f:
            f.truncate(last_end)
    return lines
