"""``tfclassify train``: every architecture trains and exports with its model card and history plot (real
Fashion-MNIST, small slices, one epoch; the full-accuracy runs are `make train-all`), a seed gives the same
weights, the user's own arrays and image folders train with their class names, the mirrored strategy runs on
two logical CPUs, and bad input fails in one line with nothing half-written."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from archives import image_members, write_zip
from conftest import FASHION_DIR, FASHION_LABELS, tfclassify_cmd
from PIL import Image

from tfclassify.common.datasets import load_dataset

#: Parameters as ``model.summary()`` counts them.
PARAMETERS = {
    "mlp512": 784 * 512 + 512 + 512 * 10 + 10,
    "mlp128-dropout": 101_770,  # the Fashion-MNIST tutorial's figure
    "mlp-deep": sum(a * b + b for a, b in zip((784, 500, 400, 300, 200, 100), (500, 400, 300, 200, 100, 10))),
    "mlp128-256": 784 * 128 + 128 + 128 * 256 + 256 + 256 * 10 + 10,
    "cnn": (9 * 32 + 32) + (9 * 32 * 64 + 64) + (7 * 7 * 64 * 128 + 128) + (128 * 10 + 10),
}
SMALL = ("--dataset", "fashion_mnist", "--data-dir", str(FASHION_DIR), "--train-limit", "1000", "--epochs", "1")


def train(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(tfclassify_cmd("train", *args), capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def card(version_dir: Path) -> dict:
    return json.loads((version_dir / "tfclassify.json").read_text())


def answers(version_dir: Path, images: np.ndarray) -> np.ndarray:
    """The exported model's probabilities for ``images``, through its serving signature."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    return serve(images=tf.constant(images))["probabilities"].numpy()


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> tuple[Path, str]:
    """``--compare all``: every architecture on the same 1,000 images for one epoch."""
    repo = tmp_path_factory.mktemp("compare")
    result = train(*SMALL, "--model-repo", str(repo), "--name", "fmnist", "--compare", "all", "--compare-seconds", "0.2")
    return repo, result.stdout


def test_every_architecture_exports_a_model_card_and_a_history_plot(compared):
    import tensorflow as tf

    repo, table = compared
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| architecture")]
    assert [r.split(" | ")[0][2:] for r in rows] == list(PARAMETERS)
    for arch, parameters in PARAMETERS.items():
        version = repo / f"fmnist-{arch}" / "1"
        card = json.loads((version / "tfclassify.json").read_text())
        assert card["architecture"] == arch and card["arch"]["parameters"] == parameters, arch
        assert f"| {arch} | {card['test_accuracy']:.4f} | {parameters:,} | 1 |" in table
        assert card["data"]["class_names"] == FASHION_LABELS and card["data"]["train_images"] == 1000
        assert card["data"]["test_images"] == 10000 and len(card["data"]["checksums"]["train_images"]) == 64
        assert card["evaluation"]["test_images"] == 10000 and len(card["evaluation"]["per_class"]) == 10
        per_class = card["evaluation"]["per_class"]
        right = sum(round(c["accuracy"] * c["images"]) for c in per_class)
        assert right == round(card["test_accuracy"] * 10000), "per-class accuracy adds up to the accuracy"
        assert card["environment"]["tensorflow"] == tf.__version__ and card["seed"] == 0
        assert (version / "labels.txt").read_text().splitlines() == FASHION_LABELS
        markdown = (version / "model_card.md").read_text()
        assert f"# Model card: fmnist-{arch} version 1" in markdown and f"({parameters:,} parameters)" in markdown
        assert f"Accuracy **{card['test_accuracy']:.4f}**" in markdown and "| Ankle boot |" in markdown
        plot = np.asarray(Image.open(version / "history.png").convert("L"))
        assert plot.shape == (400, 1000) and (plot < 128).mean() > 0.005, "a drawn plot, not a blank image"
    # The tutorial's low-level network outputs logits: the exported signature applies the softmax.
    serve = tf.saved_model.load(str(repo / "fmnist-mlp128-256" / "1")).signatures["serving_default"]
    images = load_dataset("fashion_mnist", "test", FASHION_DIR).images[:64]
    out = serve(images=tf.constant(images))
    assert np.allclose(out["probabilities"].numpy().sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(out["classes"].numpy(), out["probabilities"].numpy().argmax(axis=1))
    card = json.loads((repo / "fmnist-mlp128-256" / "1" / "tfclassify.json").read_text())
    assert card["hyperparameters"]["optimizer"] == "sgd" and card["hyperparameters"]["learning_rate"] == 0.1
    assert card["hyperparameters"]["batch_size"] == 256 and card["training"]["steps"] == 4, "1 epoch of 1,000 images"


def test_the_same_seed_gives_the_same_weights_and_another_seed_does_not(compared, tmp_path, fashion_test):
    repo, _ = compared
    first = repo / "fmnist-mlp512" / "1"
    train(*SMALL, "--model-repo", str(tmp_path), "--name", "again", "--arch", "mlp512")
    train(*SMALL, "--model-repo", str(tmp_path), "--name", "other", "--arch", "mlp512", "--seed", "7")
    again, other = tmp_path / "again" / "1", tmp_path / "other" / "1"
    assert card(again)["weights_sha256"] == card(first)["weights_sha256"], "op determinism: every weight equal"
    assert np.array_equal(answers(again, fashion_test.images[:256]), answers(first, fashion_test.images[:256]))
    assert card(again)["data"]["checksums"] == card(first)["data"]["checksums"]
    assert card(other)["weights_sha256"] != card(first)["weights_sha256"]
    assert card(other)["seed"] == 7 and card(other)["deterministic"] is True


def test_an_archive_of_class_folders_trains_with_the_folder_names(tmp_path, fashion_test):
    names = ["Bag", "Sandal", "Trouser"]
    keep = np.isin(fashion_test.labels, [8, 5, 1])
    images, labels = fashion_test.images[keep][:240], fashion_test.labels[keep][:240]
    mapped = np.searchsorted([1, 5, 8], labels)  # Trouser, Sandal, Bag -> 0, 1, 2 in that order
    members = image_members(images, mapped, ["Trouser", "Sandal", "Bag"])
    members += [("README.txt", b"not in a class folder"), ("Bag/notes.txt", b"not an image")]
    archive = write_zip(tmp_path / "shop.zip", members)
    result = train("--images", str(archive), "--model-repo", str(tmp_path / "repo"), "--epochs", "3",
                   "--arch", "mlp128-dropout", "--test-fraction", "0.25")
    version = tmp_path / "repo" / "shop" / "1"
    assert (version / "labels.txt").read_text().splitlines() == names, "folder names, sorted"
    card = json.loads((version / "tfclassify.json").read_text())
    assert card["data"]["classes"] == 3 and card["data"]["test_images"] == 60 and card["data"]["train_images"] == 180
    assert card["data"]["skipped"] == 2 and card["data"]["test_split"] == "25% held out at random (seed 0)"
    assert card["arch"]["parameters"] == 784 * 128 + 128 + 128 * 3 + 3
    assert card["test_accuracy"] >= 0.8, "three easy classes"
    assert "test accuracy" in result.stdout
    # The scorer's rule and its report: skipped, counted and named on the terminal, never fatal.
    assert ("2 files skipped (not trained on):\n  shop.zip/README.txt: not in a class folder\n"
            "  shop.zip/Bag/notes.txt: not an image") in result.stdout, result.stdout


def test_one_npz_with_both_splits_or_array_files_per_split(tmp_path, fashion_test):
    x, y = fashion_test.images[:600], fashion_test.labels[:600]
    np.savez(tmp_path / "mine.npz", x_train=x[:500], y_train=y[:500], x_test=x[500:], y_test=y[500:])
    train("--npz", str(tmp_path / "mine.npz"), "--model-repo", str(tmp_path / "repo"), "--epochs", "1",
          "--class-names", ",".join(FASHION_LABELS))
    card = json.loads((tmp_path / "repo" / "mine" / "1" / "tfclassify.json").read_text())
    assert (card["data"]["train_images"], card["data"]["test_images"]) == (500, 100)
    assert card["data"]["test_split"] == "the data's test split" and card["data"]["class_names"] == FASHION_LABELS
    # Flat [N, 784] images and a labels file per split, named by flags, numbers as class names.
    np.savez(tmp_path / "flat.npz", pixels=x.reshape(-1, 784))
    np.savez(tmp_path / "flat-labels.npz", classes=y)
    train("--train-images", str(tmp_path / "flat.npz"), "--train-labels", str(tmp_path / "flat-labels.npz"),
          "--model-repo", str(tmp_path / "repo"), "--name", "flat", "--epochs", "1", "--arch", "mlp-deep")
    card = json.loads((tmp_path / "repo" / "flat" / "1" / "tfclassify.json").read_text())
    assert (card["data"]["train_images"], card["data"]["test_images"]) == (480, 120)
    assert card["data"]["class_names"] == [str(i) for i in range(10)]


def test_mirrored_over_two_logical_cpus(tmp_path):
    result = train(*SMALL, "--model-repo", str(tmp_path), "--cpu-devices", "2", "--devices", "CPU:0,CPU:1")
    card = json.loads((tmp_path / "fashion_mnist" / "1" / "tfclassify.json").read_text())
    assert [d.rsplit("/", 1)[1] for d in card["training"]["devices"]] == ["device:CPU:0", "device:CPU:1"]
    assert card["test_accuracy"] > 0.5, result.stdout
    missing = train(*SMALL, "--model-repo", str(tmp_path), "--devices", "GPU:0,GPU:1", check=False)
    assert missing.returncode == 1 and "--devices: no device GPU:0 here" in missing.stderr, missing.stderr


@pytest.mark.parametrize("args, message", [
    (("--arch", "resnet"), "invalid choice: 'resnet'"),
    (("--npz", "nowhere.npz"), "nowhere.npz: no such file"),
    (("--npz", "{tmp}/short.npz"), "99 labels for 100 images"),
    (("--npz", "{tmp}/tiny.npz"), "1 label for 2 images"),
    (("--npz", "{tmp}/one-class.npz", "--class-names", "only"), "needs at least 2 classes, got 1"),
    (("--images", "{tmp}/single"), "expected images in at least 2 class folders"),
    (("--dataset", "fashion_mnist", "--images", "{tmp}/single"), "give exactly one of --dataset"),
    (("--npz", "{tmp}/short.npz", "--early-stopping", "2"), "give --validation-split too"),
    (("--npz", "{tmp}/floats.npz"), "expected uint8 pixels 0..255"),
    (("--npz", "{tmp}/short.npz", "--arch", "mlp128-256", "--devices", "CPU:0,CPU:1"), "own loop on one device"),
    (("--images", "{tmp}/single", "--image-size", "0,32"), "--image-size: expected H or H,W in pixels"),
    (("--npz", "{tmp}/short.npz", "--channels", "3"), "--image-size and --channels apply to --images only"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (100, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "short.npz", x_train=images, y_train=np.zeros(99, np.int64))
    np.savez(tmp_path / "tiny.npz", x_train=images[:2], y_train=np.zeros(1, np.int64))
    np.savez(tmp_path / "one-class.npz", x_train=images, y_train=np.zeros(100, np.int64))
    np.savez(tmp_path / "floats.npz", x_train=images / 255.0, y_train=np.arange(100) % 10)
    (tmp_path / "single" / "Shirt").mkdir(parents=True)
    Image.fromarray(images[0]).save(tmp_path / "single" / "Shirt" / "a.png")
    args = tuple(a.format(tmp=tmp_path) for a in args)
    result = train(*args, "--model-repo", str(tmp_path / "repo"), check=False)
    assert result.returncode in (1, 2) and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "repo").exists()


def test_an_existing_version_is_refused_before_training(compared):
    repo, _ = compared
    before = sorted(p.name for p in (repo / "fmnist-cnn").iterdir())
    result = train(*SMALL, "--model-repo", str(repo), "--name", "fmnist-cnn", "--arch", "cnn", "--version", "1",
                   check=False)
    assert result.returncode == 1 and re.search(r"fmnist-cnn/1 already exists: versions are never overwritten",
                                                result.stderr), result.stderr
    assert "Epoch" not in result.stdout, "refused before training"
    assert sorted(p.name for p in (repo / "fmnist-cnn").iterdir()) == before, "nothing half-written"


def test_early_stopping_keeps_the_best_epoch_on_validation_loss(tmp_path):
    # 500 images and 400,000 weights: the validation loss turns up within a few epochs.
    train("--dataset", "fashion_mnist", "--data-dir", str(FASHION_DIR), "--train-limit", "500", "--epochs", "40",
          "--validation-split", "0.2", "--early-stopping", "2", "--model-repo", str(tmp_path))
    training = card(tmp_path / "fashion_mnist" / "1")["training"]
    val_loss = training["history"]["val_loss"]
    assert training["stopped_early"] is True and training["epochs_run"] == len(val_loss) < 40
    best = val_loss.index(min(val_loss))
    assert best == len(val_loss) - 3, "stopped 2 epochs after the best, whose weights were kept"
    assert card(tmp_path / "fashion_mnist" / "1")["hyperparameters"]["early_stopping_patience"] == 2
