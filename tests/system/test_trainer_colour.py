"""``tfclassify train --images`` on colour files: ``--channels auto`` finds the colour, ``--image-size`` sets the
size, the files are decoded as the scorer decodes them, and the exported CNN takes uint8 ``[N, H, W, 3]``
(real process; generated images, class = the colour of a shape)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import tfclassify_cmd
from make_colour_models import LABELS, colour_images
from PIL import Image

from tfclassify.common.image_files import ConversionSpec
from tfclassify.common.inputs.decoding import decode_files
from tfclassify.common.inputs.sources import open_input


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray, prefix: str, fmt: str = "png") -> None:
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / LABELS[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{prefix}{i:04d}.{fmt}", quality=95)


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory) -> Path:
    """480 PNGs at 32 x 32, 60 at 48 x 48 and 40 JPEGs at 24 x 24, in one folder per colour."""
    root = tmp_path_factory.mktemp("colours") / "shapes"
    write_folder(root, *colour_images(480, seed=1), "a")
    write_folder(root, *colour_images(60, seed=2, size=48), "b")
    write_folder(root, *colour_images(40, seed=3, size=24), "c", fmt="jpg")
    return root


def test_a_colour_folder_trains_a_cnn_taking_uint8_rgb_at_the_chosen_size(tmp_path, colour_folder):
    import tensorflow as tf

    repo = tmp_path / "repo"
    result = subprocess.run(tfclassify_cmd("train", "--images", str(colour_folder), "--image-size", "32",
                                           "--channels", "auto", "--arch", "cnn", "--epochs", "3",
                                           "--batch-size", "32", "--model-repo", str(repo)),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    version = repo / "shapes" / "1"
    card = json.loads((version / "tfclassify.json").read_text())
    assert card["input"]["shape"] == [32, 32, 3] and card["input"]["channels"] == 3
    assert card["input"]["dtype"] == "uint8" and (card["input"]["height"], card["input"]["width"]) == (32, 32)
    assert card["input"]["decoded"]["resize"] == "stretch"
    assert card["data"]["train_images"] + card["data"]["test_images"] == 580
    assert card["test_accuracy"] >= 0.8, card["evaluation"]
    assert (version / "labels.txt").read_text().splitlines() == sorted(LABELS)
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    spec = serve.structured_input_signature[1]["images"]
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 32, 32, 3]
    # Held-out files of other sizes, decoded by the scorer's own code: the model reads them as well.
    held_out = tmp_path / "held_out"
    images, labels = colour_images(80, seed=9, size=40)
    write_folder(held_out, images, labels, "h")
    items = list(open_input(held_out).items())
    pixels, failed = decode_files([item.ref for item in items], ConversionSpec(32, 32, channels=3))
    assert not failed
    truth = [sorted(LABELS).index(Path(item.source).parent.name) for item in items]
    predicted = serve(images=tf.constant(pixels))["classes"].numpy()
    assert (predicted == np.array(truth)).mean() >= 0.8


def test_auto_keeps_a_grey_folder_grey_and_channels_1_makes_colour_grey(tmp_path, colour_folder):
    from tfclassify.trainer.data import DataSource, image_channels, load_training_data

    grey = tmp_path / "grey"
    for label in ("dark", "light"):
        (grey / label).mkdir(parents=True)
        for i in range(5):
            Image.new("L", (20, 30), 40 if label == "dark" else 200).save(grey / label / f"{i}.png")
    (grey / "dark" / "notes.txt").write_text("not an image")
    data = load_training_data(DataSource(images=grey, image_size=(16, 24)))
    assert data.input_shape == (16, 24) and data.conversion["channels"] == 1
    assert image_channels([item.ref for item in open_input(colour_folder).items()]) == 3
    forced = load_training_data(DataSource(images=colour_folder, image_size=(8, 8), channels=1))
    assert forced.input_shape == (8, 8) and forced.x_train.dtype == np.uint8
