"""``tfclassify score --images s3://...`` against a real S3 server on loopback (``rclone serve s3``, see
``tests/s3server.py``) and a real tfclassify server: a prefix, a zip object, a tar.gz object and a manifest of
object URLs score exactly as the same files do from the local disk; shards and limits work on a prefix; dropped
connections and 503 SlowDown answers (a fault-injecting proxy) are retried; a missing bucket, refused credentials,
no credentials and a missing key each end in one line, exit 5, no secret shown."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from archives import by_member, image_members, read_jsonl, write_manifest, write_tar, write_tree, write_zip
from conftest import FASHION_LABELS, tfclassify_cmd
from faultproxy import FaultyProxy
from s3server import ACCESS_KEY, SECRET_KEY, s3_server  # noqa: F401 - the session fixture, used by name

N = 48
BUCKET = "images"


def score(env: dict, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run(tfclassify_cmd("score", *args, "--no-progress"), capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == expect, result.stderr
    assert "Traceback" not in result.stderr
    return result


@pytest.fixture(scope="module")
def photos(fashion_test, tmp_path_factory, s3_server):  # noqa: F811 - the fixture imported above
    """The same class-folder tree of PNGs (with a truncated PNG and hidden files) on disk and in the bucket under
    ``photos/``, as a zip and a tar.gz under ``exports/``, and a manifest of object URLs under ``lists/``."""
    members = image_members(fashion_test.images[:N], fashion_test.labels[:N], FASHION_LABELS)
    truncated = members[0][1][: len(members[0][1]) // 2]
    tree = members + [("Shirt/truncated.png", truncated), (".DS_Store", b"\0\1"), ("Shirt/.hidden.png", truncated)]
    local = write_tree(tmp_path_factory.mktemp("local") / "photos", tree)
    bucket = s3_server.bucket(BUCKET)
    shutil.copytree(local, bucket / "photos")
    (bucket / "exports").mkdir()
    write_zip(bucket / "exports" / "photos.zip", members + [("Shirt/truncated.png", truncated)])
    write_tar(bucket / "exports" / "photos.tar.gz", members + [("Shirt/truncated.png", truncated)])
    (bucket / "lists").mkdir()
    # Half as absolute URLs, half as keys relative to the manifest's own location.
    rows = [(f"s3://{BUCKET}/photos/{name}" if i % 2 else f"../photos/{name}", name.split("/")[0])
            for i, (name, _) in enumerate(members)]
    write_manifest(bucket / "lists" / "urls.csv", rows)
    return local


@pytest.fixture(scope="module")
def local_rows(server, photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("local-out") / "local.jsonl"
    score(None, "--server", server.address, "--model", "fashion", "--images", str(photos), "--labels", "folder",
          "--output", str(out), expect=3)
    return read_jsonl(out)


def test_a_prefix_scores_as_the_same_local_folder(server, s3_server, photos, local_rows, tmp_path):  # noqa: F811
    out = tmp_path / "bucket.jsonl"
    result = score(s3_server.env(), "--server", server.address, "--model", "fashion", "--images",
                   f"s3://{BUCKET}/photos/", "--labels", "folder", "--output", str(out), expect=3)
    rows = read_jsonl(out)
    assert len(rows) == N + 1, "every image once, the hidden objects left out"
    assert {r["source"] for r in rows} == {r["source"] for r in local_rows}, "named as the local folder's files"
    assert by_member(rows) == by_member(local_rows), "the same classes, scores and true labels"
    broken = [r for r in rows if r.get("skipped")]
    assert [b["source"] for b in broken] == ["photos/Shirt/truncated.png"]
    assert broken[0]["skipped"].startswith("corrupt or truncated image")
    assert f"scored {N} of the {N + 1} files of photos" in result.stdout
    assert SECRET_KEY not in result.stdout + result.stderr


@pytest.mark.parametrize("archive", ["photos.zip", "photos.tar.gz"])
def test_a_zip_or_tar_object_scores_as_the_local_files(server, s3_server, photos, local_rows, archive, tmp_path):  # noqa: F811
    out = tmp_path / "archive.jsonl"
    score(s3_server.env(), "--server", server.address, "--model", "fashion", "--images",
          f"s3://{BUCKET}/exports/{archive}", "--labels", "folder", "--output", str(out), expect=3)
    rows = read_jsonl(out)
    assert all(r["source"].startswith(f"{archive}/") for r in rows)
    assert by_member(rows) == by_member(local_rows)


def test_a_manifest_of_object_urls_and_relative_keys(server, s3_server, photos, local_rows, tmp_path):  # noqa: F811
    out = tmp_path / "manifest.jsonl"
    score(s3_server.env(), "--server", server.address, "--model", "fashion", "--images",
          f"s3://{BUCKET}/lists/urls.csv", "--output", str(out))
    rows = read_jsonl(out)
    local = {r["source"].split("/", 1)[1]: r for r in local_rows}
    assert len(rows) == N and not any(r.get("skipped") for r in rows)
    for row in rows:
        member = row["source"].split("/photos/", 1)[1] if "://" in row["source"] else row["source"].split("/", 1)[1]
        member = member.removeprefix("../photos/")
        assert (row["class"], row["score"], row["true_class"]) == \
            (local[member]["class"], local[member]["score"], local[member]["true_class"]), row


def test_shards_and_limit_on_a_prefix(server, s3_server, photos, tmp_path):  # noqa: F811
    env = s3_server.env()
    common = ("--server", server.address, "--model", "fashion", "--images", f"s3://{BUCKET}/photos/",
              "--labels", "folder", "--skipped-ok")
    shards = []
    for i in range(2):
        score(env, *common, "--shard", f"{i}/2", "--output", str(tmp_path / f"s{i}.jsonl"))
        shards.append({r["source"] for r in read_jsonl(tmp_path / f"s{i}.jsonl")})
    assert shards[0] and shards[1] and not shards[0] & shards[1]
    assert len(shards[0] | shards[1]) == N + 1
    score(env, *common, "--limit", "10", "--output", str(tmp_path / "limit.jsonl"))
    assert len(read_jsonl(tmp_path / "limit.jsonl")) == 10


@pytest.mark.parametrize("case", ["missing bucket", "missing bucket of an object", "wrong credentials", "no credentials",
                                  "missing key"])
def test_storage_errors_are_one_line_exit_5_and_show_no_secret(server, s3_server, photos, case):  # noqa: F811
    url, env, expected = f"s3://{BUCKET}/photos/", s3_server.env(), ""
    if case == "missing bucket":
        url, expected = "s3://no-such-bucket/photos/", "bucket s3://no-such-bucket does not exist"
    elif case == "missing bucket of an object":
        url, expected = "s3://no-such-bucket/export.zip", "bucket s3://no-such-bucket does not exist"
    elif case == "wrong credentials":
        env = s3_server.env(AWS_SECRET_ACCESS_KEY="wrong-" + SECRET_KEY)
        expected = "the credentials were refused"
    elif case == "no credentials":
        env = s3_server.env(AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None)
        expected = "no credentials found for s3://images"
    else:
        url, expected = f"s3://{BUCKET}/exports/missing.zip", "no such object"
    result = score(env, "--server", server.address, "--model", "fashion", "--images", url, expect=5)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfclassify: error: ") and expected in lines[0], result.stderr
    output = result.stdout + result.stderr
    assert SECRET_KEY not in output and ACCESS_KEY not in output and "wrong-" not in output


def test_keys_region_and_endpoint_from_a_named_profile_of_the_shared_files(server, s3_server, photos,  # noqa: F811
                                                                           local_rows, tmp_path):
    """No AWS_ variable but AWS_PROFILE: the profile's keys (credentials file), region and endpoint (config file,
    as MinIO users write it) reach the bucket; a profile that is in neither file is one line, exit 5."""
    (tmp_path / "credentials").write_text(f"[default]\naws_access_key_id = nope\naws_secret_access_key = nope\n\n"
                                          f"[lab]\naws_access_key_id = {ACCESS_KEY}\n"
                                          f"aws_secret_access_key = {SECRET_KEY}\n")
    (tmp_path / "config").write_text(f"[profile lab]\nregion = us-east-1\nendpoint_url = {s3_server.endpoint}\n")
    env = s3_server.env(AWS_ENDPOINT_URL=None, AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None, AWS_REGION=None,
                        AWS_PROFILE="lab", AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "credentials"),
                        AWS_CONFIG_FILE=str(tmp_path / "config"))
    out = tmp_path / "profile.jsonl"
    score(env, "--server", server.address, "--model", "fashion", "--images", f"s3://{BUCKET}/photos/",
          "--labels", "folder", "--output", str(out), expect=3)
    assert by_member(read_jsonl(out)) == by_member(local_rows)
    result = score({**env, "AWS_PROFILE": "elsewhere"}, "--server", server.address, "--model", "fashion",
                   "--images", f"s3://{BUCKET}/photos/", expect=5)
    assert result.stderr.strip() == (f"tfclassify: error: s3://{BUCKET}/photos/: AWS_PROFILE=elsewhere: no such profile "
                                     f"in {tmp_path / 'credentials'} or {tmp_path / 'config'}")


def test_without_the_storage_extra_one_line_says_what_to_install(server, s3_server):  # noqa: F811
    code = ("import sys; sys.modules['obstore'] = None\nfrom tfclassify.client.cli import main\n"
            "sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", code, "score", "--server", server.address, "--model", "fashion",
                             "--images", f"s3://{BUCKET}/photos/"], capture_output=True, text=True, timeout=60,
                            env=s3_server.env())
    assert result.returncode == 1
    assert result.stderr.strip() == ("tfclassify: error: reading object storage needs the storage extra: "
                                     "pip install 'tfclassify[storage]'")



def test_dropped_connections_and_slowdowns_are_retried(server, s3_server, photos, local_rows, tmp_path):  # noqa: F811
    proxy = FaultyProxy(s3_server.port)
    try:
        out = tmp_path / "retried.jsonl"
        result = score(s3_server.env(AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}"), "--server",
                       server.address, "--model", "fashion", "--images", f"s3://{BUCKET}/photos/", "--labels", "folder",
                       "--output", str(out), expect=3)
    finally:
        proxy.stop()
    assert proxy.dropped and proxy.slowed, "faults were injected"
    assert by_member(read_jsonl(out)) == by_member(local_rows), "every object read despite them"
    counts = json.loads(out.with_name(out.name + ".run.json").read_text())["storage_retries"]
    assert counts["connection"] >= proxy.dropped and counts["throttled"] >= proxy.slowed, (counts, proxy.dropped)
    total = sum(counts.values())
    assert f"object storage: {total} requests tried again (" in result.stdout, result.stdout


def test_a_zip_object_is_read_by_ranges_not_downloaded(server, s3_server, fashion_test, tmp_path):  # noqa: F811
    """A 4 MiB zip object whose last member is 4 MiB of noise: scoring its first 10 images reads its directory and
    those members, a small fraction of the object."""
    members = image_members(fashion_test.images[:10], fashion_test.labels[:10], FASHION_LABELS)
    noise = bytes(range(256)) * (16 << 10)
    archive = write_zip(s3_server.bucket(BUCKET) / "big.zip", members + [("zz/noise.bin", noise)])
    proxy = FaultyProxy(s3_server.port, faults=False)
    try:
        score(s3_server.env(AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}"), "--server", server.address,
              "--model", "fashion", "--images", f"s3://{BUCKET}/big.zip", "--limit", "10",
              "--output", str(tmp_path / "big.jsonl"))
    finally:
        proxy.stop()
    assert len(read_jsonl(tmp_path / "big.jsonl")) == 10
    size = archive.stat().st_size
    assert size > 4 << 20 and proxy.bytes_down < size // 8, (proxy.bytes_down, size)


#: Lists a prefix and reads every object under it at once through ``common.storage.reads`` (the scorer's calls),
#: then prints what it read and the retries counted, and ends as the tfclassify command does after using object
#: storage (``cli.console``: without finalizing, which obstore's threads can abort).
READ_ALL = """
import asyncio, json, os, sys
from tfclassify.common.storage import reads, retries
from tfclassify.common.storage.urls import parse

async def read_all(prefix):
    urls = [prefix.with_key(key) for key, _ in reads.list_prefix(prefix)]
    return await asyncio.gather(*(reads.read_async(url, 1 << 20) for url in urls))

data = asyncio.run(read_all(parse(sys.argv[1])))
print(json.dumps({"objects": len(data), "bytes": sum(map(len, data)), "retries": retries.counts()}), flush=True)
os._exit(0)
"""


def read_all(env: dict, url: str) -> dict:
    result = subprocess.run([sys.executable, "-c", READ_ALL, url], capture_output=True, text=True, timeout=60,
                            env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("fault", ["drops and slowdowns", "stalls"])
def test_transient_failures_are_retried_and_counted_by_kind(s3_server, photos, fault):  # noqa: F811
    """Every object of the prefix read whole through the faults, each retry counted under its kind: a dropped
    connection as "connection", a 503 SlowDown as "throttled", a stall past TFCLASSIFY_STORAGE_TIMEOUT as
    "timeout"."""
    files = [p for p in photos.rglob("*") if p.is_file()]
    stalls = fault == "stalls"
    proxy = FaultyProxy(s3_server.port, faults=not stalls, stall_every=3 if stalls else 0, stall_seconds=4)
    try:
        report = read_all(s3_server.env(AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}",
                                        TFCLASSIFY_STORAGE_TIMEOUT="1"), f"s3://{BUCKET}/photos/")
    finally:
        proxy.stop()
    assert (report["objects"], report["bytes"]) == (len(files), sum(p.stat().st_size for p in files))
    counted = report["retries"]
    if stalls:
        assert proxy.stalled and counted["timeout"] >= proxy.stalled, (proxy.stalled, counted)
    else:
        assert proxy.dropped and proxy.slowed, "faults were injected"
        assert counted["connection"] >= proxy.dropped and counted["throttled"] >= proxy.slowed, (
            proxy.dropped, proxy.slowed, counted)


def test_stalled_requests_are_retried_and_every_object_scored(server, s3_server, photos, local_rows, tmp_path):  # noqa: F811
    """Every third connection's first GET of an object gets no answer: with TFCLASSIFY_STORAGE_TIMEOUT=1 the scorer
    abandons it after a second and asks again, and scores every object as the local folder's files."""
    proxy = FaultyProxy(s3_server.port, faults=False, stall_every=3, stall_seconds=4)
    out = tmp_path / "stalled.jsonl"
    try:
        score(s3_server.env(AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}", TFCLASSIFY_STORAGE_TIMEOUT="1"),
              "--server", server.address, "--model", "fashion", "--images", f"s3://{BUCKET}/photos/",
              "--labels", "folder", "--output", str(out), expect=3)
    finally:
        proxy.stop()
    assert proxy.stalled, "stalls were injected"
    assert by_member(read_jsonl(out)) == by_member(local_rows), "every object read despite them"
