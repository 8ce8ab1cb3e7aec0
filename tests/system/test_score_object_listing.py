"""A prefix of more images than the listing preview (``TFCLASSIFY_LISTING_PREVIEW``, ten here) is scored while it
is still being listed, against a real S3 server on loopback and a real tfclassify server: shards started from the
preview merge into exactly the rows of a local run, their run records hold the whole listing's counts, and a
folder that is not a class, listed after scoring began, ends the run with the label error."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from archives import by_member, image_members, read_jsonl, write_tree
from conftest import FASHION_LABELS, tfclassify_cmd
from s3server import s3_server  # noqa: F401 - the session fixture, used by name

N = 40
BUCKET = "listing"
PREVIEW = "10"


def run(env: dict | None, command: str, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    extra = ("--no-progress",) if command == "score" else ()
    result = subprocess.run(tfclassify_cmd(command, *args, *extra), capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode == expect, result.stderr
    assert "Traceback" not in result.stderr
    return result


@pytest.fixture(scope="module")
def photos(fashion_test, tmp_path_factory, s3_server):  # noqa: F811 - the fixture imported above
    """The same class-folder tree of PNGs (one of them truncated) on disk and in the bucket under ``photos/``."""
    members = image_members(fashion_test.images[:N], fashion_test.labels[:N], FASHION_LABELS)
    tree = members + [("Shirt/truncated.png", members[0][1][:100])]
    local = write_tree(tmp_path_factory.mktemp("local") / "photos", tree)
    shutil.copytree(local, s3_server.bucket(BUCKET) / "photos")
    return local


def test_shards_scored_while_listing_merge_into_a_local_runs_rows(server, s3_server, photos, tmp_path):  # noqa: F811
    local = tmp_path / "local.jsonl"
    run(None, "score", "--server", server.address, "--model", "fashion", "--images", str(photos),
        "--output", str(local), "--skipped-ok")
    env = s3_server.env(TFCLASSIFY_LISTING_PREVIEW=PREVIEW)
    shards = [tmp_path / f"shard-{i}.jsonl" for i in range(2)]
    for i, out in enumerate(shards):
        result = run(env, "score", "--server", server.address, "--model", "fashion", "--images",
                     f"s3://{BUCKET}/photos/", "--shard", f"{i}/2", "--output", str(out), "--skipped-ok")
        assert "scoring while listing: more than 10 images" in result.stderr
        assert "true labels: the class folders" in result.stderr, "--labels auto settled from the preview"
    records = [json.loads(out.with_name(out.name + ".run.json").read_text()) for out in shards]
    assert [r["survey"]["total"] for r in records] == [N + 1, N + 1], "the whole listing's counts"
    assert [r["rows"] for r in records] == records[0]["survey"]["shard_sizes"]
    assert [r["batch_size"] for r in records] == [4096, 4096], "a listing past its preview is large, in every shard"
    merged = tmp_path / "merged.jsonl"
    run(None, "merge", *map(str, shards), "--output", str(merged), "--skipped-ok")
    assert by_member(read_jsonl(merged)) == by_member(read_jsonl(local))


def test_a_folder_that_is_not_a_class_listed_after_scoring_began_ends_the_run(server, s3_server, photos,  # noqa: F811
                                                                              tmp_path):
    bucket = s3_server.bucket(BUCKET)
    shutil.copytree(photos, bucket / "late")
    (bucket / "late" / "Zeppelin").mkdir()  # listed last: keys are listed in byte order
    shutil.copy(next(photos.glob("Bag/*.png")), bucket / "late" / "Zeppelin" / "z.png")
    result = run(s3_server.env(TFCLASSIFY_LISTING_PREVIEW=PREVIEW), "score", "--server", server.address,
                 "--model", "fashion", "--images", f"s3://{BUCKET}/late/", "--labels", "folder",
                 "--output", str(tmp_path / "late.jsonl"), expect=1)
    assert "folder name 'Zeppelin' is not a class of the model" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2, result.stderr
