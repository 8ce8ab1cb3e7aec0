"""Combine the outputs of ``--shard I/N`` runs into the output one unsharded run would have written.

Every shard's run record names its shard, the number of images of each
shard and a digest of all the inputs' names; merge checks that the outputs
are the N shards of one job, each complete, and that every image appears
exactly once, then merges the rows by their global index (streaming: memory
does not grow with the outputs' size).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from tfclassify.client.scoring.output import (
    FORMAT,
    Output,
    OutputError,
    open_writer,
    read_record,
    read_rows,
)

#: Missing shards named in an error message.
MAX_NAMED = 10
WRITE_BATCH = 4096


def merge_outputs(outputs: list[Output], destination: Output, *, overwrite: bool = False) -> dict:
    """Merge shard ``outputs`` into ``destination`` (``.jsonl`` or ``.parquet``); returns its run record. Any of
    them may be an object URL (the shards in a bucket, the merged output written there as ``score`` writes it)."""
    records = [read_record(path) for path in outputs]
    _check_shards(outputs, records)
    first = records[0]
    total = first["survey"]["total"]
    merged = {
        "format": FORMAT, "complete": False,
        "identity": {**first["identity"], "shard": [0, 1]},
        "model": first["model"], "shard": [0, 1], "inputs": first.get("inputs", []),
        "survey": {"total": total, "shard_sizes": [total], "digest": ""},
        "merged_from": [str(p) for p in outputs],
    }
    writer = open_writer(destination)
    writer.create(merged, overwrite)
    try:
        expected = 0
        batch: list[dict] = []
        for row in _merged_rows(outputs):
            if row["index"] != expected:
                problem = "appears twice" if row["index"] < expected else f"{row['index'] - expected} missing before it"
                raise OutputError(f"image {row['index']} ({row['source']}): {problem}; the outputs are not one job's shards")
            batch.append(row)
            expected += 1
            if len(batch) == WRITE_BATCH:
                writer.write(iter(batch))
                batch = []
        writer.write(iter(batch))
        if expected != total:
            raise OutputError(f"the shards hold {expected} images but the job has {total}")
        writer.finish(merged)
    except BaseException:
        writer.discard()
        raise
    return read_record(destination)


def _check_shards(outputs: list[Output], records: list[dict]) -> None:
    counts = {tuple(r["shard"])[1] for r in records}
    if len(counts) != 1:
        shards = ", ".join(f"{p} ({r['shard'][0]}/{r['shard'][1]})" for p, r in zip(outputs, records))
        raise OutputError(f"the outputs come from different shardings: {shards}")
    num_shards = counts.pop()
    if len({(r["survey"]["digest"], r["survey"]["total"]) for r in records}) != 1:
        raise OutputError("the outputs are not shards of one job: their inputs differ (different run records' digests)")
    if len({r["model"]["name"] for r in records}) != 1:
        raise OutputError(f"the outputs were scored with different models: {sorted({r['model']['name'] for r in records})}")
    seen: dict[int, Output] = {}
    for path, record in zip(outputs, records):
        shard = record["shard"][0]
        if shard in seen:
            raise OutputError(f"shard {shard}/{num_shards} is given twice: {seen[shard]} and {path}")
        seen[shard] = path
        size = record["survey"]["shard_sizes"][shard]
        if not record.get("complete"):
            raise OutputError(f"{path}: shard {shard}/{num_shards} is incomplete ({_rows(path)} of {size} images): "
                              "finish it with the same command and --resume")
        if record.get("rows") != size:
            raise OutputError(f"{path}: shard {shard}/{num_shards} holds {record.get('rows')} rows, expected {size}")
    missing = [i for i in range(num_shards) if i not in seen]
    if missing:
        sizes = records[0]["survey"]["shard_sizes"]
        named = ", ".join(f"{i}/{num_shards} ({sizes[i]} images)" for i in missing[:MAX_NAMED])
        raise OutputError(f"missing shard{'s' if len(missing) > 1 else ''} {named}: score and pass {'them' if len(missing) > 1 else 'it'} too")


def _merged_rows(outputs: list[Output]) -> Iterator[dict]:
    return heapq.merge(*(read_rows(p) for p in outputs), key=lambda row: row["index"])


def _rows(path: Output) -> int:
    return sum(1 for _ in read_rows(path))
