"""``tfclassify score --output s3://...`` against a real S3 server on loopback (``rclone serve s3``, see
``tests/s3server.py``) and a real tfclassify server: the final object holds the rows a local run writes and is
absent until the run completes; a SIGKILL, then a Ctrl-C, then ``--resume`` give every image exactly once;
``--overwrite`` and the refusal without it; Parquet; shards merged in the bucket; reports written to the bucket."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import pytest
from archives import image_members, read_jsonl, write_tree, write_zip
from conftest import FASHION_LABELS, tfclassify_cmd
from s3server import SECRET_KEY, S3Server

N = 48
BUCKET = "results"
#: A run of 10,000 images in small batches, one at a time, committed every 0.05 s: stopped well before its end.
LIMIT = 10000
PART = re.compile(r"part-(\d{6})-(\d+)\.jsonl")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A writable S3 server on loopback for this module."""
    work = tmp_path_factory.mktemp("s3-out")
    (work / "data").mkdir()
    # Written through the S3 API, which rclone sees at once: a short directory cache keeps its PUTs fast.
    server = S3Server(work / "data", work / "rclone.log", dir_cache_time="100ms")
    try:
        yield server
    finally:
        server.stop()


def score(env: dict | None, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run(tfclassify_cmd("score", *args, "--no-progress"), capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == expect, result.stderr
    assert "Traceback" not in result.stderr
    return result


@pytest.fixture(scope="module")
def photos(fashion_test, tmp_path_factory):
    """A local class-folder tree of PNGs with one truncated PNG."""
    members = image_members(fashion_test.images[:N], fashion_test.labels[:N], FASHION_LABELS)
    truncated = members[0][1][: len(members[0][1]) // 2]
    return write_tree(tmp_path_factory.mktemp("local") / "photos", members + [("Shirt/truncated.png", truncated)])


@pytest.fixture(scope="module")
def local_output(server, photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("local-out") / "local.jsonl"
    score(None, "--server", server.address, "--model", "fashion", "--images", str(photos), "--labels", "folder",
          "--output", str(out), "--skipped-ok")
    return out


def test_the_final_object_holds_a_local_runs_rows_and_a_report(server, s3, photos, local_output):
    bucket = s3.bucket(BUCKET)
    common = ("--server", server.address, "--model", "fashion", "--images", str(photos), "--labels", "folder",
              "--skipped-ok", "--output", f"s3://{BUCKET}/one/pred.jsonl")
    result = score(s3.env(), *common, "--report", f"s3://{BUCKET}/one/report.json",
                   "--report", f"s3://{BUCKET}/one/report.md")
    final = bucket / "one" / "pred.jsonl"
    assert final.read_bytes() == local_output.read_bytes(), "the same rows, in the same order, byte for byte"
    record = json.loads((bucket / "one" / "pred.jsonl.run.json").read_text())
    assert record["complete"] is True and record["rows"] == N + 1
    assert not parts_of(bucket / "one"), "the parts are deleted"
    report = json.loads((bucket / "one" / "report.json").read_text())
    assert report["schema"] == "tfclassify-report/1" and report["num_images"] == N and report["skipped"] == 1
    assert "accuracy" in (bucket / "one" / "report.md").read_text().lower()
    assert f"predictions: s3://{BUCKET}/one/pred.jsonl ({N + 1} rows)" in result.stdout
    assert SECRET_KEY not in result.stdout + result.stderr

    refused = score(s3.env(), *common, expect=1)
    assert f"s3://{BUCKET}/one/pred.jsonl exists: continue that run with --resume, or replace it with --overwrite" \
        in refused.stderr
    final.write_bytes(b"old\n")
    score(s3.env(), *common, "--overwrite")
    assert final.read_bytes() == local_output.read_bytes()
    again = score(s3.env(), *common, "--resume")
    assert "is already complete: nothing to resume" in again.stdout


def test_parquet_to_the_bucket(server, s3, photos, local_output):
    pq = pytest.importorskip("pyarrow.parquet")
    score(s3.env(), "--server", server.address, "--model", "fashion", "--images", str(photos), "--labels",
          "folder", "--skipped-ok", "--output", f"s3://{BUCKET}/pq/pred.parquet")
    table = pq.read_table(s3.bucket(BUCKET) / "pq" / "pred.parquet")
    rows = [{k: v for k, v in row.items() if v is not None} for row in table.to_pylist()]
    assert rows == read_jsonl(local_output)


def test_shards_in_the_bucket_merge(server, s3, photos, local_output):
    env = s3.env()
    common = ("--server", server.address, "--model", "fashion", "--images", str(photos), "--labels", "folder",
              "--skipped-ok")
    shards = [f"s3://{BUCKET}/shards/s{i}.jsonl" for i in range(2)]
    for i, url in enumerate(shards):
        score(env, *common, "--shard", f"{i}/2", "--output", url)
    merged = subprocess.run(
        tfclassify_cmd("merge", *shards[::-1], "--output", f"s3://{BUCKET}/shards/merged.jsonl", "--skipped-ok",
                       "--report", f"s3://{BUCKET}/shards/merged.json"),
        capture_output=True, text=True, timeout=120, env=env)
    assert merged.returncode == 0, merged.stderr
    assert "merged 2 shards into" in merged.stdout
    folder = s3.bucket(BUCKET) / "shards"
    assert (folder / "merged.jsonl").read_bytes() == local_output.read_bytes()
    assert json.loads((folder / "merged.json").read_text())
    missing = subprocess.run(tfclassify_cmd("merge", shards[0], "--output", f"s3://{BUCKET}/shards/m2.jsonl"),
                             capture_output=True, text=True, timeout=120, env=env)
    assert missing.returncode == 1 and "missing shard 1/2" in missing.stderr
    assert not (folder / "m2.jsonl").exists() and not (folder / "m2.jsonl.run.json").exists()


@pytest.fixture(scope="module")
def big_zip(tmp_path_factory, fashion_test):
    members = image_members(fashion_test.images[:LIMIT], fashion_test.labels[:LIMIT], FASHION_LABELS)
    return write_zip(tmp_path_factory.mktemp("big") / "fashion10k.zip", members)


def parts_of(folder) -> list:
    """The committed parts (not a temporary file the S3 server may be writing one into)."""
    parts = folder / ".pred.jsonl.parts"
    return sorted(p for p in parts.iterdir() if PART.fullmatch(p.name)) if parts.exists() else []


def committed_rows(folder) -> int:
    return sum(int(PART.fullmatch(p.name).group(2)) for p in parts_of(folder))


def wait_for_parts(folder, count: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(parts_of(folder)) < count:
        assert proc.poll() is None, f"the run ended before {count} parts: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no {count} parts after {timeout} s"
        time.sleep(0.01)


def test_sigkill_and_ctrl_c_then_resume_every_image_exactly_once(server, s3, big_zip, tmp_path):
    env = s3.env()
    reference = tmp_path / "reference.jsonl"
    common = ("--server", server.address, "--model", "fashion", "--images", str(big_zip), "--labels", "folder",
              "--batch-size", "16", "--decode-workers", "0")
    score(None, *common, "--output", str(reference))
    url = f"s3://{BUCKET}/killed/pred.jsonl"
    folder = s3.bucket(BUCKET) / "killed"
    slow = (*common, "--in-flight", "1", "--output", url, "--commit-interval", "0.05", "--no-progress")

    proc = subprocess.Popen(tfclassify_cmd("score", *slow), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    wait_for_parts(folder, 1, proc)
    assert not (folder / "pred.jsonl").exists(), "no final object while the run goes on"
    proc.kill()
    proc.communicate()
    killed_at = committed_rows(folder)
    assert 0 < killed_at < LIMIT, "killed mid-run"
    assert not (folder / "pred.jsonl").exists()

    proc = subprocess.Popen(tfclassify_cmd("score", *slow, "--resume"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    wait_for_parts(folder, len(parts_of(folder)) + 1, proc)
    proc.send_signal(signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    stopped_at = committed_rows(folder)
    assert killed_at < stopped_at < LIMIT
    assert f"interrupted after {stopped_at:,} of {LIMIT:,} images" in stderr, "a clean stop commits every row"
    assert not (folder / "pred.jsonl").exists()

    result = score(env, *slow, "--resume")
    assert "of them in this run" in result.stdout
    assert (folder / "pred.jsonl").read_bytes() == reference.read_bytes(), "every image exactly once, in order"
    assert not parts_of(folder), "the parts are deleted once the final object is written"
    assert json.loads((folder / "pred.jsonl.run.json").read_text())["complete"] is True


def test_a_large_output_is_committed_by_size_and_uploaded_in_parts(s3, monkeypatch):
    """In process: parts committed when the buffer is full, and a final object larger than a multipart chunk
    assembled through a multipart upload, read back whole."""
    from tfclassify.client.scoring import object_output
    from tfclassify.client.scoring.output import open_writer, read_record, read_rows
    from tfclassify.common.storage import writes

    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(object_output, "PART_BYTES", 1 << 20)
    monkeypatch.setattr(writes, "MULTIPART_CHUNK", 5 << 20)
    url = f"s3://{BUCKET}/large/pred.jsonl"
    writer = open_writer(url, commit_seconds=3600)
    record = {"format": "tfclassify-predictions/1", "identity": {}, "complete": False}
    writer.create(record, overwrite=True)
    line = '{"index": %d, "source": "%s", "class": 1, "label": "x", "score": 0.5, "model": "m", "version": 1}\n'
    rows = 0
    for _ in range(70):
        text = "".join(line % (rows + i, "p" * 1000) for i in range(100))
        writer.write_text(text, 100)
        rows += 100
    folder = s3.bucket(BUCKET) / "large"
    assert len(parts_of(folder)) >= 6, "committed by size, not only at the end"
    writer.finish(record)
    assert (folder / "pred.jsonl").stat().st_size > 5 << 20
    assert [r["index"] for r in read_rows(url)] == list(range(rows))
    assert read_record(url)["rows"] == rows
    assert not parts_of(folder)
