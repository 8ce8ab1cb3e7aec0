"""The archive readers, image conversion, labels and shards, on real Fashion-MNIST images (no server)."""

from __future__ import annotations

import io
import random
import time
import zipfile

import numpy as np
import pytest
from archives import bomb_png, broken_files, encode, image_members, write_tar, write_tree, write_zip
from conftest import FASHION_LABELS
from PIL import Image

from tfclassify.client.inputs.plan import ScoringPlan, parse_shard, shard_of
from tfclassify.common.image_files import ConversionSpec, ImageDecodeError, apply_invert, decode_image
from tfclassify.common.inputs import zipindex
from tfclassify.common.inputs.decoding import decode_files
from tfclassify.common.inputs.labels import LabelError, LabelResolver, read_manifest
from tfclassify.common.inputs.sources import InputError, open_input

SPEC = ConversionSpec()


def test_zip_index_reads_what_zipfile_reads(tmp_path, fashion_test):
    members = image_members(fashion_test.images[:30], fashion_test.labels[:30], FASHION_LABELS)
    path = tmp_path / "mixed.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i, (name, data) in enumerate(members):
            archive.writestr(name, data, compress_type=(zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2)[i % 3])
        archive.writestr("Shirt/", b"")
        archive.writestr("ünïcode/名前.png", members[0][1])
        with archive.open("zip64.png", "w", force_zip64=True) as out:
            out.write(members[1][1])
    reference = zipfile.ZipFile(path)
    for prefix in (b"", b"#!/bin/sh\nexec unzip\n" * 20):  # a self-extracting archive shifts every offset
        data = io.BytesIO(prefix + path.read_bytes())
        listed = list(zipindex.iter_members(data))
        assert [m.name for m in listed] == reference.namelist()
        for member in listed:
            if not member.is_dir:
                assert zipindex.read_member(data, member, 1 << 20) == reference.read(member.name)


def test_zip_index_rejects_corrupt_data_and_bombs(tmp_path):
    path = write_zip(tmp_path / "a.zip", [("a.png", b"x" * 1000)], zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    member = next(zipindex.iter_members(io.BytesIO(bytes(data))))
    with pytest.raises(zipindex.ZipFormatError, match="larger than the 100-byte limit"):
        zipindex.read_member(io.BytesIO(bytes(data)), member, 100)
    stored = write_zip(tmp_path / "b.zip", [("a.png", b"y" * 1000)])
    data = bytearray(stored.read_bytes())
    data[40] ^= 0xFF  # a byte of the member's data
    member = next(zipindex.iter_members(io.BytesIO(bytes(data))))
    with pytest.raises(zipindex.ZipFormatError, match="CRC"):
        zipindex.read_member(io.BytesIO(bytes(data)), member, 1 << 20)
    with pytest.raises(zipindex.ZipFormatError, match="not a zip file"):
        list(zipindex.iter_members(io.BytesIO(b"PK\x03\x04 truncated")))


def test_every_pillow_format_converts_to_the_same_pixels(fashion_test):
    image = fashion_test.images[7]
    for fmt in ("PNG", "BMP", "TIFF", "GIF", "WEBP"):
        params = {"lossless": True} if fmt == "WEBP" else {}
        assert np.array_equal(decode_image(encode(image, fmt, **params), SPEC), image), fmt
    rgb = Image.fromarray(image).convert("RGB")
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG")
    assert np.array_equal(decode_image(buffer.getvalue(), SPEC), image)
    jpeg = decode_image(encode(image, "JPEG", quality=95), SPEC)
    assert np.abs(jpeg.astype(int) - image).mean() < 3


def test_large_photos_are_resized_and_dark_on_light_is_inverted(fashion_test):
    image = fashion_test.images[3]
    scan = Image.fromarray(255 - image).resize((280, 280), Image.Resampling.NEAREST)  # a "scan": dark on light
    pixels = decode_image(encode(np.asarray(scan), "PNG"), SPEC)
    assert pixels.shape == (28, 28)
    batch = np.stack([pixels, image])
    converted = apply_invert(batch.copy(), "auto")
    assert np.abs(converted[0].astype(int) - image).mean() < 8, "the scan is inverted back"
    assert np.array_equal(converted[1], image), "a light-on-dark image is left alone"
    assert np.array_equal(apply_invert(batch.copy(), "no"), batch)
    assert np.array_equal(apply_invert(batch.copy(), "yes"), 255 - batch)
    transparent = Image.new("LA", (28, 28), (0, 0))  # fully transparent: composited onto white
    buffer = io.BytesIO()
    transparent.save(buffer, format="PNG")
    assert decode_image(buffer.getvalue(), SPEC).min() == 255


def test_bad_files_are_reported_with_their_reason_and_bombs_are_not_decoded(fashion_test):
    valid = encode(fashion_test.images[0])
    for name, (data, reason) in broken_files(valid).items():
        started = time.monotonic()
        with pytest.raises(ImageDecodeError, match=reason):
            decode_image(data, SPEC)
        assert time.monotonic() - started < 0.5, name
    just_over = ConversionSpec(max_pixels=1000)
    with pytest.raises(ImageDecodeError, match="declares 40x40 pixels, more than the limit of 1,000"):
        decode_image(bomb_png(40, 40), just_over)


def test_a_worker_decodes_a_chunk_and_names_what_failed(tmp_path, fashion_test):
    members = image_members(fashion_test.images[:5], fashion_test.labels[:5], FASHION_LABELS)
    members += [(name, data) for name, (data, _) in broken_files(members[0][1]).items()]
    source = open_input(write_zip(tmp_path / "a.zip", members))
    pixels, failed = decode_files([item.ref for item in source.items()], SPEC)
    assert np.array_equal(pixels, fashion_test.images[:5])
    assert [position for position, _ in failed] == [5, 6, 7, 8]
    reasons = [reason for _, reason in failed]
    assert reasons[0] == "empty file"
    assert reasons[1].startswith("corrupt or truncated image: ")
    assert reasons[2] == "not an image (no format that Pillow reads recognises it)"
    assert reasons[3].startswith("image declares") and "(a decompression bomb?): not decoded" in reasons[3]


def test_folders_and_archives_list_the_same_items_in_a_stable_order(tmp_path, fashion_test):
    members = image_members(fashion_test.images[:40], fashion_test.labels[:40], FASHION_LABELS)
    shuffled = random.Random(1).sample(members, len(members))
    tree = write_tree(tmp_path / "imgs", shuffled)  # files created in random order
    (tree / ".DS_Store").write_bytes(b"junk")
    (tree / "__MACOSX").mkdir()
    (tree / "__MACOSX" / "x.png").write_bytes(b"junk")
    listed = [i.member for i in open_input(tree).items()]
    assert listed == sorted(name for name, _ in members), "sorted walk, hidden files left out"
    zipped = open_input(write_zip(tmp_path / "imgs.zip", shuffled))
    tarred = open_input(write_tar(tmp_path / "imgs.tar.xz", shuffled, "w:xz"))
    assert [i.member for i in zipped.items()] == [name for name, _ in shuffled], "archive order"
    assert sorted(i.member for i in tarred.items()) == listed
    assert next(i.source for i in tarred.items()) == f"imgs.tar.xz/{shuffled[0][0]}"


def test_shards_partition_the_inputs_independently_of_listing_order(tmp_path, fashion_test):
    members = image_members(fashion_test.images[:300], fashion_test.labels[:300], FASHION_LABELS)
    resolver = LabelResolver(FASHION_LABELS)
    by_shard = []
    for order in (members, members[::-1]):
        path = write_zip(tmp_path / "same.zip", order)
        shards = []
        for i in range(3):
            plan = ScoringPlan([open_input(path)], shard=(i, 3))
            survey = plan.survey(resolver)
            rows = [s for chunk in plan.chunks(resolver, 64) for s in chunk.sources]
            assert len(rows) == survey.shard_sizes[i]
            shards.append(set(rows))
        by_shard.append(shards)
    assert by_shard[0] == by_shard[1], "a shard holds the same files whatever the archive's order"
    assert set().union(*by_shard[0]) == {f"same.zip/{name}" for name, _ in members}
    assert sum(len(s) for s in by_shard[0]) == 300 and all(60 < len(s) < 140 for s in by_shard[0])
    assert shard_of("same.zip/Bag/00001.png", 3) == shard_of("same.zip/Bag/00001.png", 3)
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_chunks_start_at_fixed_positions_so_a_resume_batches_alike(tmp_path, fashion_test):
    members = image_members(fashion_test.images[:50], fashion_test.labels[:50], FASHION_LABELS)
    plan = ScoringPlan([open_input(write_zip(tmp_path / "a.zip", members))], labels="folder")
    resolver = LabelResolver(FASHION_LABELS)
    assert [len(c) for c in plan.chunks(resolver, 16)] == [16, 16, 16, 2]
    assert [c.indices[0] for c in plan.chunks(resolver, 16, skip=21)] == [21, 32, 48]
    chunk = next(plan.chunks(resolver, 16))
    assert chunk.true == fashion_test.labels[:16].tolist(), "folder names resolve to class indices"


def test_labels_from_manifests_and_folder_names_are_checked_against_the_model(tmp_path):
    resolver = LabelResolver(FASHION_LABELS)
    assert [resolver.resolve(x) for x in ("Shirt", "6", "T-shirt_top", "T-shirt/top", 3, "10", "shirt")] == [
        6, 6, 0, 0, 3, None, None]
    with pytest.raises(LabelError, match=r"folder name 'Shrt' is not a class of the model; its classes are "
                                         r"'T-shirt/top', 'Trouser'.*\(or their indices 0-9\)"):
        resolver.check(["Shirt", "Shrt"], "folder name")
    (tmp_path / "m.csv").write_text("path,label\n./a/1.png,Shirt\nb\\2.png,7\n", encoding="utf-8")
    (tmp_path / "m.jsonl").write_text('{"path": "a/1.png", "label": "Shirt"}\n\n{"path": "b/2.png", "label": 7}\n')
    assert read_manifest(tmp_path / "m.csv") == read_manifest(tmp_path / "m.jsonl") == {"a/1.png": "Shirt", "b/2.png": "7"}
    cases = {
        "x.csv": ("file,class\na,b\n", "needs a header with the columns path and label"),
        "y.csv": ("path,label\na,1\na,2\n", "'a' is listed twice"),
        "z.jsonl": ('{"path": "a"}\n', 'expected {"path": ..., "label": ...}'),
        "w.jsonl": ("{oops\n", "not JSON"),
        "v.csv": ("path,label\n", "lists no images"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        with pytest.raises(LabelError, match=message):
            read_manifest(tmp_path / name)


def test_missing_and_unreadable_inputs_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        open_input(tmp_path / "nope.zip")
    (tmp_path / "fake.zip").write_bytes(b"not a zip at all")
    with pytest.raises(InputError, match="not a zip file"):
        list(open_input(tmp_path / "fake.zip").items())
    (tmp_path / "fake.tar.gz").write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(InputError, match="not a readable tar archive"):
        list(open_input(tmp_path / "fake.tar.gz").items())
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images to score"):
        ScoringPlan([open_input(tmp_path / "empty")]).survey(LabelResolver(FASHION_LABELS))


def test_fast_rows_are_exactly_what_json_dumps_writes():
    from tfclassify.client.inputs.plan import Chunk
    from tfclassify.client.scoring.engine import ChunkResult
    from tfclassify.client.scoring.output import chunk_rows, chunk_text, dump_row

    names = ['say "hi"', "naïve/ünï", "tab\there", "T-shirt/top"]
    sources = ["a.zip/x.png", 'q"uote\\.png', "日本/画像.png", "new\nline.png"]
    chunk = Chunk(0, [5, 6, 7, 8], sources, [1, None, 3, 0], [], None)
    scores = np.array([0.5, 1 / 3, 1e-7, 0.99999999], np.float32)
    for k, skipped in ((0, {}), (0, {2: "empty file"}), (2, {})):
        result = ChunkResult(chunk, np.array([0, 1, 2, 3], np.int32), scores, np.tile([[3, 0]], (4, 1))[:, :k],
                             np.full((4, 2), 0.25, np.float32)[:, :k], np.array([1, 1, 2, 2]), skipped)
        assert chunk_text(result, names, "m\u00e9") == "".join(dump_row(r) for r in chunk_rows(result, names, "m\u00e9"))


def test_padding_a_sliver_to_the_models_aspect_ratio_is_refused_before_any_canvas_is_made():
    """A 20,000 x 4 PNG is 80,000 pixels, but padded to a square it would be 400 megapixels."""
    sliver = io.BytesIO()
    Image.new("RGB", (20_000, 4), (200, 10, 10)).save(sliver, "PNG")
    spec = ConversionSpec(32, 32, "no", 2**24, channels=3, resize="pad")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(sliver.getvalue(), spec)
    assert "20000x4 pixels, 20000x20000 once padded to the model's aspect ratio" in str(info.value)
    gray = ConversionSpec(32, 32, "no", 2**24, channels=1, resize="pad")
    with pytest.raises(ImageDecodeError):
        decode_image(sliver.getvalue(), gray)
    assert decode_image(sliver.getvalue(), ConversionSpec(32, 32, "no", 2**24, channels=3, resize="crop")).shape \
        == (32, 32, 3)
