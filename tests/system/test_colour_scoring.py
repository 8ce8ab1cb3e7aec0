"""``tfclassify score`` and ``classify`` on colour photos of many sizes and formats, against colour models from
outside the project (tests/make_colour_models.py): files are prepared from the model's metadata (RGB at its size,
resized as ``tf.image.resize`` does; files untouched for a model that decodes them itself), and the served
accuracy is the accuracy the model gives in process on the same files."""

from __future__ import annotations

import io
import json
import subprocess

import numpy as np
import pytest
import tensorflow as tf
from conftest import ServerProcess, tfclassify_cmd
from make_colour_models import LABELS, colour_images
from PIL import Image

from tfclassify.common.image_files import ConversionSpec, ImageDecodeError, decode_image

PHOTOS = 96
RGB = ConversionSpec(32, 32, channels=3)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(tfclassify_cmd(*args), capture_output=True, text=True, timeout=300)


def save(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def colour(colour_repo, tmp_path_factory):
    """(server, repo): the colour models served."""
    repo = colour_repo
    proc = ServerProcess(repo, tmp_path_factory.mktemp("colour-scoring"))
    with proc.client() as client:
        client.wait_for_ready(120)
    yield proc, repo
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of class folders (red/, green/ ...) of colour images from 32 to 200 pixels, some not square, as
    PNG and JPEG; and the files with their classes, in the scorer's (sorted) order."""
    root = tmp_path_factory.mktemp("photos") / "photos"
    rng = np.random.default_rng(7)
    files = []
    for i in range(PHOTOS):
        side = int(rng.integers(32, 201))
        pixels, label = colour_images(1, seed=1000 + i, size=side)
        image = Image.fromarray(pixels[0])
        if i % 3 == 0:  # not square: the default resize stretches it, as Keras does
            image = image.resize((side, max(32, int(side * rng.uniform(0.6, 0.9)))), Image.Resampling.BILINEAR)
        fmt, suffix, params = (("PNG", "png", {}), ("JPEG", "jpg", {"quality": 92}))[i % 2]
        path = root / LABELS[label[0]] / f"{i:03d}.{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(save(image, fmt, **params))
        files.append((path, int(label[0])))
    files.sort(key=lambda f: str(f[0].relative_to(root)))
    return root, files


def in_process(repo, model: str, files) -> np.ndarray:
    """The model's classes in process: Pillow decodes each file to RGB, ``tf.image.resize`` (bilinear, Keras'
    default) brings it to 32 x 32, rounded to uint8; a model that takes files gets their bytes."""
    serve = tf.saved_model.load(str(repo / model / "1")).signatures["serving_default"]
    if model == "jpeg_input":
        probabilities = serve(image_bytes=tf.constant([path.read_bytes() for path, _ in files]))["probabilities"]
        return np.argmax(probabilities.numpy(), axis=1)
    batch = []
    for path, _ in files:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        batch.append(tf.cast(tf.clip_by_value(tf.round(tf.image.resize(rgb, [32, 32])), 0, 255), tf.uint8))
    (probabilities,) = serve(tf.stack(batch)).values()
    return np.argmax(probabilities.numpy(), axis=1)


def score_folder(proc, model: str, folder, tmp_path, *extra: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    output = tmp_path / f"{model}.jsonl"
    result = run("score", "--server", proc.address, "--model", model, "--images", str(folder), "--labels", "folder",
                 "--output", str(output), "--report", str(tmp_path / f"{model}.json"), "--no-progress", *extra)
    rows = [json.loads(line) for line in output.read_text().splitlines() if line.startswith("{")]
    return result, [row for row in rows if "index" in row]


@pytest.mark.parametrize("model", ["rgb_cnn", "jpeg_input"])
def test_a_folder_of_colour_photos_scores_as_well_as_in_process(colour, photos, model, tmp_path):
    proc, repo = colour
    folder, files = photos
    result, rows = score_folder(proc, model, folder, tmp_path)
    assert result.returncode == 0, result.stderr
    served = np.array([row["class"] for row in rows])
    truth = np.array([label for _, label in files])
    assert [row["true_label"] for row in rows] == [LABELS[label] for label in truth]
    expected = in_process(repo, model, files)
    report = json.loads((tmp_path / f"{model}.json").read_text())
    print(f"{model}: served accuracy {report['accuracy']:.4f}, in process {np.mean(expected == truth):.4f}")
    # The same preparation as in process (bilinear, no antialiasing); a rounding step of 1 may move one answer.
    assert np.mean(served == expected) >= 1 - 1 / PHOTOS
    assert abs(report["accuracy"] - np.mean(expected == truth)) <= 1 / PHOTOS
    assert report["accuracy"] > 0.8


def mixed_files(pixels: np.ndarray) -> dict[str, bytes]:
    """One colour image in every format people keep photos in, and a corrupt file."""
    image = Image.fromarray(pixels)
    rgba = np.dstack([pixels, np.full(pixels.shape[:2], 255, np.uint8)])
    rgba[:2] = 0  # a transparent strip on top: composited onto white
    rotated = image.transpose(Image.Transpose.ROTATE_90)  # stored on its side, EXIF says: turn it back
    exif = Image.Exif()
    exif[0x0112] = 6
    sixteen = Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
    return {
        "plain.png": save(image, "PNG"),
        "photo.jpg": save(image, "JPEG", quality=95),
        "alpha.png": save(Image.fromarray(rgba, "RGBA"), "PNG"),
        "palette.gif": save(image.convert("P", palette=Image.Palette.ADAPTIVE), "GIF"),
        "cmyk.jpg": save(image.convert("CMYK"), "JPEG", quality=95),
        "rotated.jpg": save(rotated, "JPEG", quality=95, exif=exif),
        "sixteen.png": save(sixteen, "PNG"),
        "corrupt.png": save(image, "PNG")[:200],
    }


def test_every_format_decodes_as_a_person_sees_it():
    pixels = colour_images(1, seed=3, size=48)[0][0]
    files = mixed_files(pixels)
    spec = ConversionSpec(48, 48, channels=3)
    decoded = {name: decode_image(data, spec) for name, data in files.items() if name != "corrupt.png"}
    assert np.array_equal(decoded["plain.png"], pixels)
    for name in ("photo.jpg", "cmyk.jpg", "rotated.jpg", "palette.gif"):
        assert decoded[name].shape == (48, 48, 3)
        assert np.abs(decoded[name].astype(int) - pixels).mean() < 8, f"{name}: colours and orientation kept"
    assert (decoded["alpha.png"][:2] == 255).all() and np.array_equal(decoded["alpha.png"][2:], pixels[2:])
    gray = np.asarray(Image.fromarray(pixels).convert("L"))
    assert np.array_equal(decoded["sixteen.png"], np.repeat(gray[:, :, None], 3, axis=2)), "65535 -> 255, as RGB"
    rgba = decode_image(files["alpha.png"], ConversionSpec(48, 48, channels=4))
    assert rgba.shape == (48, 48, 4) and (rgba[:2, :, 3] == 0).all()
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        decode_image(files["corrupt.png"], spec)


def test_crop_and_pad_keep_the_aspect_ratio():
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, 20:40] = 255  # a white square in the middle of a black band
    cropped = decode_image(save(Image.fromarray(wide), "PNG"), ConversionSpec(20, 20, channels=3, resize="crop"))
    assert (cropped == 255).all(), "the centre square, alone"
    padded = decode_image(save(Image.fromarray(np.full((20, 60, 3), 200, np.uint8)), "PNG"),
                          ConversionSpec(30, 30, channels=3, resize="pad"))
    assert (padded[:9] == 0).all() and (padded[-9:] == 0).all() and (padded[12:18] == 200).all()
    stretched = decode_image(save(Image.fromarray(wide), "PNG"), ConversionSpec(20, 20, channels=3))
    assert stretched.shape == (20, 20, 3) and stretched[:, 0].max() == 0 and stretched[:, 10].min() == 255


def test_a_folder_of_mixed_formats_is_scored_and_the_corrupt_file_skipped(colour, tmp_path):
    proc, repo = colour
    pixels, labels = colour_images(8, seed=11, size=48)
    serve = tf.saved_model.load(str(repo / "rgb_cnn" / "1")).signatures["serving_default"]
    small = tf.cast(tf.round(tf.image.resize(pixels, [32, 32])), tf.uint8)
    (probabilities,) = serve(small).values()
    right = np.flatnonzero(np.argmax(probabilities.numpy(), axis=1) == labels)
    pick = int(right[0])  # an image the model gets right in process
    folder = tmp_path / "mixed" / LABELS[labels[pick]]
    folder.mkdir(parents=True)
    for name, data in mixed_files(pixels[pick]).items():
        (folder / name).write_bytes(data)
    html = tmp_path / "mixed.html"
    result, rows = score_folder(proc, "rgb_cnn", tmp_path / "mixed", tmp_path, "--report", str(html))
    assert result.returncode == 3, result.stderr
    by_file = {row["source"].rsplit("/", 1)[1]: row for row in rows}
    assert by_file["corrupt.png"]["skipped"].startswith("corrupt or truncated image")
    assert "corrupt.png" in result.stdout
    for name in ("plain.png", "photo.jpg", "alpha.png", "palette.gif", "cmyk.jpg", "rotated.jpg"):
        assert by_file[name].get("label") == LABELS[labels[pick]], (name, by_file[name])
    assert "skipped" not in by_file["sixteen.png"]  # grayscale: scored, whatever the model makes of it
    assert html.read_text().count("data:image/png") >= 1, "colour thumbnails in the report"


def test_classify_a_colour_file_and_invert_is_for_one_channel_models(colour, photos):
    proc, _ = colour
    path, _label = photos[1][0]
    result = run("classify", "--server", proc.address, "--model", "rgb_cnn", "--json", str(path))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["label"] in LABELS
    refused = run("classify", "--server", proc.address, "--model", "rgb_cnn", "--invert", "yes", str(path))
    assert refused.returncode == 1
    assert "--invert yes is for one-channel (MNIST-style) models" in refused.stderr
    padded = run("classify", "--server", proc.address, "--model", "mobilenet", "--resize", "pad", "--json", str(path))
    assert padded.returncode == 0, padded.stderr
    assert json.loads(padded.stdout)["label"] in LABELS
