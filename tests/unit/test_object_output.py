"""Where an object-URL output keeps its parts and run record, and which outputs are object URLs (no store needed)."""

from __future__ import annotations

from pathlib import Path

from tfclassify.client.scoring.object_output import parts_prefix, record_url
from tfclassify.client.scoring.output import is_url, open_writer, read_rows
from tfclassify.common.storage.urls import parse


def test_the_parts_and_the_record_sit_beside_the_output():
    url = parse("s3://bucket/results/pred.jsonl")
    assert str(parts_prefix(url)) == "s3://bucket/results/.pred.jsonl.parts/"
    assert str(record_url(url)) == "s3://bucket/results/pred.jsonl.run.json"
    top = parse("s3://bucket/pred.parquet")
    assert str(parts_prefix(top)) == "s3://bucket/.pred.parquet.parts/"


def test_a_local_path_given_as_text_is_a_local_output(tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text('{"index": 0, "source": "a.png", "class": 1}\n{"index": 1, "sou')
    assert is_url("s3://b/o.jsonl") and not is_url(str(out)) and not is_url(out)
    assert [r["index"] for r in read_rows(str(out))] == [0], "a partial last line left out, as for a Path"
    assert type(open_writer(str(out))).__name__ == "PredictionsWriter"
    assert open_writer(Path(str(out))).output == out
