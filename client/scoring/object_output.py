"""Predictions written to an object URL (``--output s3://bucket/results/pred.jsonl``): committed parts, then one
final object, resumable, every image exactly once.

Object stores have no append, and a PUT is atomic. So the rows are buffered here and committed as part objects
under a hidden prefix beside the output, ``.pred.jsonl.parts/part-<seq>-<rows>.jsonl`` (six-digit sequence numbers
from 0, the part's row count in its name), one PUT each: when the buffer holds ``PART_BYTES``, when
``commit_seconds`` have passed since the last commit, and at every clean stop (Ctrl-C, SIGTERM, a server failure).
A SIGKILL or a lost pod loses only the rows not yet committed, which ``--resume`` scores again: it lists the parts,
counts their rows from their names and goes on from there. The run record is an object beside the output
(``pred.jsonl.run.json``), as it is a file beside a local output.

``finish`` reads the parts in order into the final object (one PUT up to 8 MiB; above, the parts are copied one
after another into a local temporary file that a multipart upload sends; for ``.parquet`` the rows are converted in
a local temporary file, then uploaded), marks the run record complete, then deletes the parts. The final object is
absent until then: it never exists half-written. A run killed during ``finish`` is finished again by ``--resume``
(the final object is written again from the same parts).
"""

from __future__ import annotations

import io
import json
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tfclassify.client.scoring.output import (
    FORMAT,
    PARQUET_ROWS_PER_GROUP,
    OutputError,
    _check_pyarrow,
    _read_jsonl,
    check_same_command,
    dump_row,
    write_parquet_rows,
)
from tfclassify.common.storage import reads, writes
from tfclassify.common.storage.errors import MISSING_OBJECT, StorageError
from tfclassify.common.storage.urls import ObjectURL, parse

#: A part is committed once its rows take this many bytes (the buffer's bound), or ``commit_seconds`` after the last.
PART_BYTES = 16 << 20
#: Seconds between commits while rows come in: what a SIGKILL can lose at most (rows scored again on --resume).
COMMIT_SECONDS = 10.0
#: The largest run record read.
MAX_RECORD_BYTES = 16 << 20
_PART = re.compile(r"part-(\d{6,})-(\d+)\.jsonl")


def record_url(output: ObjectURL) -> ObjectURL:
    return output.with_key(output.key + ".run.json")


def parts_prefix(output: ObjectURL) -> ObjectURL:
    """The hidden "folder" of the committed parts: ``results/.pred.jsonl.parts/``."""
    folder, _, name = output.key.rpartition("/")
    return output.with_key(f"{folder}/.{name}.parts/" if folder else f".{name}.parts/")


def list_parts(output: ObjectURL) -> list[tuple[str, int]]:
    """``(key, rows)`` of the committed parts, in order; ``OutputError`` when one is missing between others. Other
    keys under the prefix (a store's own temporary upload, say) are not parts and are left out."""
    prefix = parts_prefix(output)
    found = []
    for key, _size in reads.list_prefix(prefix):
        match = _PART.fullmatch(key[len(prefix.key):])
        if match is None:
            continue
        found.append((int(match.group(1)), key, int(match.group(2))))
    found.sort()
    for position, (seq, key, _rows) in enumerate(found):
        if seq != position:
            raise OutputError(f"{output}: part {position} is missing before {key}; start again with --overwrite")
    return [(key, rows) for _seq, key, rows in found]


def read_record(output: ObjectURL) -> dict:
    url = record_url(output)
    try:
        record = json.loads(reads.read(url, MAX_RECORD_BYTES))
    except StorageError as exc:
        if exc.kind == MISSING_OBJECT:
            raise OutputError(f"{output}: no run record {url.key.rsplit('/', 1)[-1]} beside it "
                              "(not written by tfclassify score?)") from None
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OutputError(f"{url}: unreadable run record: {exc}") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise OutputError(f"{url}: not a {FORMAT} run record")
    return record


def write_record(output: ObjectURL, record: dict) -> None:
    writes.put(record_url(output), (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode())


class ObjectPredictionsWriter:
    """``PredictionsWriter``'s interface for an object URL: rows committed as parts, assembled by ``finish``."""

    def __init__(self, output: str, commit_seconds: float = COMMIT_SECONDS) -> None:
        self.name = output
        self.url = parse(output)
        self.parquet = self.url.key.lower().endswith(".parquet")
        self.commit_seconds = commit_seconds
        self.rows = 0
        self._parts: list[tuple[str, int]] = []
        self._buffer: list[str] = []
        self._buffered_rows = 0
        self._buffered_bytes = 0
        self._last_commit = time.monotonic()
        self._open = False
        if self.url.is_prefix:
            raise OutputError(f"--output {output}: name an object (e.g. {output.rstrip('/')}/pred.jsonl), not a prefix")

    def create(self, record: dict, overwrite: bool) -> None:
        if self.parquet:
            _check_pyarrow()
        parts = list_parts_loosely(self.url)
        if not overwrite and (parts or writes.exists(self.url) or writes.exists(record_url(self.url))):
            raise OutputError(f"{self.name} exists: continue that run with --resume, or replace it with --overwrite")
        if overwrite:
            writes.delete(self.url)  # the old final object goes first: it never stands beside another run's record
            if parts:
                writes.delete(self.url, parts)
        write_record(self.url, record)
        self._start()

    def started(self) -> bool:
        return (writes.exists(record_url(self.url)) or writes.exists(self.url)
                or bool(list_parts_loosely(self.url)))

    def resume(self, identity: dict) -> dict:
        if self.parquet:
            _check_pyarrow()
        record = read_record(self.url)
        check_same_command(self.name, record, identity)
        if record.get("complete"):
            raise OutputError(f"{self.name} is already complete ({record.get('rows')} rows): nothing to resume")
        self._parts = list_parts(self.url)
        self.rows = sum(rows for _key, rows in self._parts)
        self._start()
        return record

    def _start(self) -> None:
        self._open = True
        self._last_commit = time.monotonic()

    def write(self, rows: Iterator[dict]) -> int:
        lines = [dump_row(row) for row in rows]
        return self.write_text("".join(lines), len(lines))

    def write_text(self, text: str, rows: int) -> int:
        """Buffer one chunk's lines; commit the buffer as a part when it is large or old enough."""
        assert self._open, "create() or resume() first"
        if rows:
            self._buffer.append(text)
            self._buffered_rows += rows
            self._buffered_bytes += len(text)
            self.rows += rows
        if self._buffered_bytes >= PART_BYTES or time.monotonic() - self._last_commit >= self.commit_seconds:
            self.commit()
        return rows

    def commit(self) -> None:
        """Write the buffered rows as the next part (one atomic PUT)."""
        self._last_commit = time.monotonic()
        if not self._buffered_rows:
            return
        prefix = parts_prefix(self.url)
        key = f"{prefix.key}part-{len(self._parts):06d}-{self._buffered_rows}.jsonl"
        writes.put(self.url.with_key(key), "".join(self._buffer).encode())
        self._parts.append((key, self._buffered_rows))
        self._buffer, self._buffered_rows, self._buffered_bytes = [], 0, 0

    def close(self) -> None:
        """Commit what is buffered (a clean stop keeps every row written so far)."""
        if self._open:
            self._open = False
            self.commit()

    def finish(self, record: dict) -> None:
        """Commit, assemble the parts into the final object, mark the record complete, delete the parts."""
        self.close()
        if self.parquet:
            with tempfile.TemporaryDirectory(prefix="tfclassify-parquet-") as folder:
                local = Path(folder) / "out.parquet"
                write_parquet_rows(local, self._part_rows())
                writes.put(self.url, local)
        elif sum(size for _key, size in self._part_sizes()) <= writes.MULTIPART_CHUNK:
            writes.put(self.url, b"".join(self._part_bodies()))
        else:  # the parts one after another into a local file, uploaded by a multipart upload
            with tempfile.TemporaryDirectory(prefix="tfclassify-output-") as folder:
                local = Path(folder) / "out.jsonl"
                with open(local, "wb") as f:
                    for body in self._part_bodies():
                        f.write(body)
                writes.put(self.url, local)
        write_record(self.url, {**record, "complete": True, "rows": self.rows})
        if self._parts:
            writes.delete(self.url, [key for key, _rows in self._parts])

    def discard(self) -> None:
        """Delete everything this output has in the bucket (a failed merge leaves nothing)."""
        self._open = False
        writes.delete(self.url)
        parts = list_parts_loosely(self.url)
        if parts:
            writes.delete(self.url, parts)
        writes.delete(record_url(self.url))

    def _part_sizes(self) -> list[tuple[str, int]]:
        sizes = dict(reads.list_prefix(parts_prefix(self.url)))
        return [(key, sizes.get(key, 0)) for key, _rows in self._parts]

    def _part_bodies(self) -> Iterator[bytes]:
        """Each part's bytes in order, its row count checked against its name."""
        for key, rows in self._parts:
            body = reads.read(self.url.with_key(key), 1 << 40)
            lines = body.count(b"\n")
            if lines != rows or (body and not body.endswith(b"\n")):
                raise OutputError(f"{self.url.root}/{key}: holds {lines} rows, its name says {rows}; "
                                  "start again with --overwrite")
            yield body

    def _part_rows(self) -> Iterator[dict]:
        for body in self._part_bodies():
            yield from _read_jsonl(io.StringIO(body.decode("utf-8")), self.name)


def list_parts_loosely(output: ObjectURL) -> list[str]:
    """Every key under the output's parts prefix (to delete them, or to see that a run has begun)."""
    return [key for key, _size in reads.list_prefix(parts_prefix(output))]


def read_rows(output: str) -> Iterator[dict]:
    """The rows of the output at ``output``: its final object (streamed; Parquet read by ranges), or the rows
    committed so far while the run is incomplete."""
    url = parse(output)
    if not writes.exists(url):
        for key, _rows in list_parts(url):
            body = reads.read(url.with_key(key), 1 << 40)
            yield from _read_jsonl(io.StringIO(body.decode("utf-8")), output)
        return
    if url.key.lower().endswith(".parquet"):
        _, pq = _check_pyarrow()
        with io.BufferedReader(reads.RangedReader(url), buffer_size=4 << 20) as raw:
            for batch in pq.ParquetFile(raw).iter_batches(batch_size=PARQUET_ROWS_PER_GROUP):
                for row in batch.to_pylist():
                    yield {k: v for k, v in row.items() if v is not None}
        return
    with io.TextIOWrapper(reads.open_stream(url), encoding="utf-8") as text:
        yield from _read_jsonl(text, output)
