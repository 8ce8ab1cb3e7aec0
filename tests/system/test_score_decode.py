"""``tfclassify score --decode client|server|auto`` and ``--labels auto``: files sent as they are and decoded by
the server to the model's size score as the client's pixels do; formats the server does not take, one-channel
models that need inverting and a resize other than the model's are decoded in the client, saying so; labels are
taken from folders named after the model's classes."""

from __future__ import annotations

import io
import json
import subprocess

import numpy as np
import pytest
from conftest import ServerProcess, metric_value, tfclassify_cmd
from make_colour_models import LABELS, colour_images
from PIL import Image

from tfclassify.client.inputs.workers import read_files
from tfclassify.client.results import ModelInfo
from tfclassify.client.scoring.decoding import choose_decoding
from tfclassify.common.image_files import ConversionSpec, ImageDecodeError, decode_image
from tfclassify.common.inputs.sources import FileRef

PHOTOS = 48


def model(channels: int, shape: tuple[int, ...], resize: str = "stretch") -> ModelInfo:
    return ModelInfo("m", 1, (1,), shape, "UINT8", 1.0, tuple(LABELS), "probabilities", "serving_default", {}, "cpu",
                     channels=channels, preprocessing={"resize": resize})


def test_where_files_are_decoded():
    small, big, gray = model(3, (32, 32, 3)), model(3, (224, 224, 3), "crop"), model(1, (28, 28))
    assert choose_decoding(small, "auto", "auto", "stretch", None) == (False, None)  # pixels are smaller
    assert choose_decoding(big, "auto", "auto", "crop", None) == (True, None)  # the files are
    assert choose_decoding(small, "server", "auto", "stretch", None) == (True, None)
    assert choose_decoding(big, "client", "auto", "crop", None) == (False, None)
    sent, note = choose_decoding(big, "server", "auto", "pad", "pad")
    assert not sent and note == ("--decode server: files are decoded here: --resize pad is not the model's declared "
                                 "resize (crop), which the server applies")
    assert choose_decoding(big, "auto", "auto", "pad", "pad") == (False, None)  # auto says nothing
    sent, note = choose_decoding(gray, "server", "auto", "stretch", None)
    assert not sent and "--invert auto needs their pixels (--invert no lets the server decode them)" in note
    assert choose_decoding(gray, "server", "no", "stretch", None) == (True, None)
    assert choose_decoding(model(0, ()), "server", "auto", "stretch", None) == (False, None)  # files anyway


def save(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def test_files_the_server_does_not_take_are_decoded_here(tmp_path):
    """PNG and JPEG files within the server's pixel limit go as they are; other formats, and photos larger than the
    server takes whole, are decoded here to the model's input: the pixels the server would make of them."""
    pixels = colour_images(1, seed=5, size=40)[0][0]
    rotated = Image.fromarray(pixels[:, :30]).transpose(Image.Transpose.ROTATE_90)  # 30 x 40 stored as 40 x 30
    exif = Image.Exif()
    exif[0x0112] = 6
    files = {"a.png": save(Image.fromarray(pixels), "PNG"), "b.jpg": save(Image.fromarray(pixels), "JPEG"),
             "c.gif": save(Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE), "GIF"),
             "d.bmp": save(Image.fromarray(pixels), "BMP"), "e.webp": save(rotated, "WEBP", lossless=True, exif=exif),
             "f.png": b"not an image",
             "g.jpg": save(Image.new("RGB", (4200, 4100), (10, 200, 30)), "JPEG")}  # 17.2 MP: over 16.7
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    spec = ConversionSpec(32, 32, channels=3)
    sent, failed = read_files([FileRef(str(tmp_path / name)) for name in files], spec)
    assert sent[0] == files["a.png"] and sent[1] == files["b.jpg"]  # untouched
    # A file whose header does not read is skipped here (one whose data is cut short is the server's to refuse).
    assert [p for p, _ in failed] == [5] and failed[0][1] == decode_error(files["f.png"])
    for position, name in ((2, "c.gif"), (3, "d.bmp"), (4, "e.webp"), (5, "g.jpg")):
        assert isinstance(sent[position], np.ndarray), name
        assert np.array_equal(sent[position], decode_image(files[name], spec)), name


def decode_error(data: bytes) -> str:
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(data, ConversionSpec(32, 32, channels=3))
    return str(caught.value)


@pytest.fixture(scope="module")
def colour(colour_repo, tmp_path_factory):
    proc = ServerProcess(colour_repo, tmp_path_factory.mktemp("decode-server"))
    with proc.client() as client:
        client.wait_for_ready(120)
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Class folders of colour photos from 32 to 160 pixels, not square, as PNG, JPEG, GIF and BMP."""
    root = tmp_path_factory.mktemp("decode-photos") / "photos"
    rng = np.random.default_rng(11)
    for i in range(PHOTOS):
        side = int(rng.integers(32, 161))
        pixels, label = colour_images(1, seed=2000 + i, size=side)
        image = Image.fromarray(pixels[0]).resize((side, max(24, side * 3 // 4)), Image.Resampling.BILINEAR)
        fmt, suffix = (("PNG", "png"), ("JPEG", "jpg"), ("PNG", "png"), ("JPEG", "jpg"), ("GIF", "gif"),
                       ("BMP", "bmp"))[i % 6]
        path = root / LABELS[label[0]] / f"{i:03d}.{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return root


def score(proc, folder, tmp_path, name: str, *extra: str):
    output = tmp_path / f"{name}.jsonl"
    result = subprocess.run(tfclassify_cmd(
        "score", "--server", proc.address, "--model", "rgb_cnn", "--images", str(folder), "--output", str(output),
        "--no-progress", *extra), capture_output=True, text=True, timeout=300)
    rows = [json.loads(line) for line in output.read_text().splitlines()] if output.exists() else []
    record = json.loads((tmp_path / f"{name}.jsonl.run.json").read_text()) if output.exists() else {}
    return result, rows, record


def test_the_server_decodes_files_as_the_client_does(colour, photos, tmp_path):
    client, client_rows, client_record = score(colour, photos, tmp_path, "client", "--decode", "client")
    server, server_rows, server_record = score(colour, photos, tmp_path, "server", "--decode", "server")
    assert client.returncode == 0 and server.returncode == 0, (client.stderr, server.stderr)
    assert client_record["decoding"] == "threads" and server_record["decoding"].startswith("server")
    assert [r["source"] for r in server_rows] == [r["source"] for r in client_rows]
    # The same code prepares the files on either side: the same pixels, the same scores.
    assert [(r["class"], r["score"]) for r in server_rows] == [(r["class"], r["score"]) for r in client_rows]
    # --labels auto: every file sits in a folder named after a class
    assert server.stderr.startswith("tfclassify: true labels: the class folders")
    assert all(r["true_label"] == r["source"].split("/")[1] for r in server_rows)
    accuracy = np.mean([r["class"] == r["true_class"] for r in server_rows])
    assert accuracy > 0.8 and "confusion matrix" in server.stdout.lower()  # a report: the labels were taken


def test_a_resize_the_server_would_not_apply_is_decoded_here(colour, photos, tmp_path):
    result, rows, record = score(colour, photos, tmp_path, "crop", "--decode", "server", "--resize", "crop",
                                 "--labels", "none")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ("tfclassify: --decode server: files are decoded here: --resize crop is not the model's "
                             "declared resize (stretch), which the server applies\n")
    assert record["decoding"] == "threads" and "true_label" not in rows[0]


def test_labels_from_folders_only_when_every_file_is_in_one(colour, photos, tmp_path):
    mixed = tmp_path / "mixed"
    for path in sorted(photos.rglob("*.png"))[:6]:
        target = mixed / path.relative_to(photos)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    (mixed / "holiday").mkdir()
    (mixed / "holiday" / "x.png").write_bytes(path.read_bytes())
    result, rows, _ = score(colour, mixed, tmp_path, "mixed")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ("tfclassify: 6 of the 7 files sit in folders named after the model's classes: "
                             "--labels folder takes those as true labels (the others are skipped)\n")
    assert all("true_label" not in r for r in rows) and "no true labels" in result.stdout
    result, rows, _ = score(colour, mixed, tmp_path, "folder", "--labels", "folder")
    assert result.returncode == 1 and "folder name 'holiday' is not a class of the model" in result.stderr  # as before


def test_true_labels_travel_with_files_sent_as_they_are(colour, photos, tmp_path):
    before = metric_value(colour.metrics_text(), "tfclassify_labelled_images_total", model="rgb_cnn", version="1")
    result, rows, _ = score(colour, photos, tmp_path, "labelled", "--decode", "server", "--send-labels")
    assert result.returncode == 0, result.stderr
    after = metric_value(colour.metrics_text(), "tfclassify_labelled_images_total", model="rgb_cnn", version="1")
    assert after - before == PHOTOS == len(rows)


def test_a_run_from_before_labels_auto_resumes(colour, photos, tmp_path):
    """A finished run recorded with no labels (the default before ``auto``) or with --labels folder is the same
    command as one that leaves --labels to ``auto``, which settles on what the files say."""
    for name, labels in (("none", "none"), ("folder", "folder")):
        first, _, record = score(colour, photos if labels == "folder" else photos / "red", tmp_path, name,
                                 "--labels", labels)
        assert first.returncode == 0, first.stderr
        again, _, _ = score(colour, photos if labels == "folder" else photos / "red", tmp_path, name, "--resume")
        assert again.returncode == 0, again.stderr
        assert record["identity"]["labels"] == (None if labels == "none" else "folder")
