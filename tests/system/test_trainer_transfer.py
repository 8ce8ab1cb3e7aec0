"""Transfer learning from ``keras.applications`` (``--arch mobilenetv3small`` ...): the model takes uint8 and
keeps its preprocessing inside, augmentation layers act in training only and change no answer at inference
(in Keras or in the exported SavedModel), the frozen-then-fine-tune schedule keeps BatchNormalization frozen,
and weights that cannot be had fail in one line. Tiny images, random or locally saved weights: no download."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import tfclassify_cmd
from make_colour_models import LABELS, colour_images
from test_trainer_colour import write_folder

AUGMENT = ("flip", "contrast")


def _weights_only(variables) -> list:
    """A model's variables less the augmentation and dropout layers' random-seed states."""
    return [v for v in variables if "seed_generator" not in (getattr(v, "path", None) or v.name)]


def _copy(source_variables, model) -> None:
    targets = _weights_only(model.variables)
    sources = _weights_only(source_variables)
    assert [tuple(t.shape) for t in targets] == [tuple(s.shape) for s in sources]
    for target, source in zip(targets, sources):
        target.assign(source.numpy())


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory) -> Path:
    """A MobileNetV3Small backbone's weights, saved as ``--weights FILE`` takes them."""
    import keras

    path = tmp_path_factory.mktemp("weights") / "mobilenetv3small.weights.h5"
    keras.utils.set_random_seed(3)
    keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3),
                                        pooling="avg").save_weights(path)
    return path


def test_augmentation_acts_in_training_only_and_grey_small_images_fit_the_backbone():
    import keras

    from tfclassify.trainer.architectures import architecture
    from tfclassify.trainer.models import build_model

    spec = architecture("mobilenetv3small")
    images, _ = colour_images(8, seed=4)
    plain = build_model(spec, 4, input_shape=(32, 32, 3), weights="none")
    augmented = build_model(spec, 4, input_shape=(32, 32, 3), augment=("flip", "rotation", "zoom", "contrast"),
                            weights="none", seed=1)
    _copy(plain.variables, augmented)
    assert plain.inputs[0].dtype == "uint8" and plain.get_layer("backbone").get_layer("rescaling") is not None
    expected = plain(images, training=False).numpy()
    np.testing.assert_allclose(augmented(images, training=False).numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(augmented.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6)
    layers = augmented.get_layer("augmentation")
    x = keras.ops.cast(images, "float32")
    assert not np.allclose(layers(x, training=True).numpy(), images), "random changes in training"
    assert np.array_equal(layers(x, training=False).numpy(), images), "none at inference"
    # 28 x 28 grey (the MNIST family): repeated to RGB and resized up to 32 inside the model.
    grey = build_model(spec, 10, input_shape=(28, 28), weights="none")
    assert grey(np.zeros((2, 28, 28), np.uint8)).shape == (2, 10)
    assert grey.get_layer("resize") is not None and grey.get_layer("to_rgb") is not None


def test_frozen_then_fine_tuned_layers_never_unfreeze_batch_normalization(backbone_file):
    import keras

    from tfclassify.trainer import transfer
    from tfclassify.trainer.architectures import architecture
    from tfclassify.trainer.models import build_model

    model = build_model(architecture("mobilenetv3small"), 3, input_shape=(32, 32, 3), weights=str(backbone_file))
    backbone = transfer.backbone_of(model)
    saved = keras.applications.MobileNetV3Small(include_top=False, weights=str(backbone_file),
                                                input_shape=(32, 32, 3), pooling="avg")
    assert all(np.array_equal(a, b) for a, b in zip(backbone.get_weights(), saved.get_weights())), "the file's weights"
    transfer.freeze(model)
    assert transfer.trainable_parameters(model) == 576 * 3 + 3, "the head alone"
    unfrozen = transfer.unfreeze_top(model, 30)
    assert unfrozen and unfrozen[-1] == "conv_1"
    bn = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bn and not any(layer.trainable for layer in bn)
    assert not any(layer.trainable for layer in backbone.layers[:-30])
    # BatchNormalization in inference mode: a training step leaves its moving statistics alone.
    before = [v.numpy() for layer in bn for v in layer.non_trainable_weights]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    images, labels = colour_images(16, seed=5)
    model.fit(images, labels % 3, epochs=1, batch_size=8, verbose=0)
    after = [v.numpy() for layer in bn for v in layer.non_trainable_weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert len(transfer.unfreeze_top(model, 0)) > len(unfrozen), "all: the whole backbone"


@pytest.mark.slow
@pytest.mark.long
def test_transfer_learning_end_to_end_with_a_weights_file_and_augmentation(tmp_path, backbone_file):
    import tensorflow as tf

    from tfclassify.trainer.architectures import architecture
    from tfclassify.trainer.models import build_model

    folder = tmp_path / "shapes"
    write_folder(folder, *colour_images(48, seed=6), "a")
    repo = tmp_path / "repo"
    result = subprocess.run(tfclassify_cmd(
        "train", "--images", str(folder), "--image-size", "32", "--arch", "mobilenetv3small", "--weights",
        str(backbone_file), "--augment", ",".join(AUGMENT), "--epochs", "1", "--fine-tune-epochs", "1",
        "--fine-tune-layers", "20", "--batch-size", "16", "--model-repo", str(repo)),
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    version = repo / "shapes" / "1"
    card = json.loads((version / "tfclassify.json").read_text())
    t = card["transfer"]
    assert t["backbone"] == "keras.applications.MobileNetV3Small"
    assert t["weights"] == {"source": "file", "file": str(backbone_file), "sha256": t["weights"]["sha256"]}
    assert (t["frozen_epochs"], t["fine_tune_epochs"], t["fine_tune_layers_asked"]) == (1, 1, 20)
    assert t["head_learning_rate"] == 1e-3 and t["fine_tune_learning_rate"] == 1e-5
    assert t["fine_tuned_layer_count"] == len(t["fine_tuned_layers"]) > 0
    assert t["trainable_parameters_fine_tune"] > t["trainable_parameters_frozen"] == 576 * 4 + 4
    assert [a["name"] for a in card["training"]["augmentation"]] == list(AUGMENT)
    assert card["epochs"] == 2 and len(card["training"]["history"]["loss"]) == 2
    assert card["input"]["dtype"] == "uint8" and card["input"]["shape"] == [32, 32, 3]
    assert "x / 127.5 - 1" in card["input"]["rescaling"] and "preprocessing" not in card
    markdown = (version / "model_card.md").read_text()
    assert "Phase 2: 1 epochs fine-tuning" in markdown and "RandomFlip(mode=horizontal)" in markdown
    # The exported signature (augmentation inside) answers as the Keras model in inference mode, with the
    # augmentation layers or without them.
    exported = tf.saved_model.load(str(version))
    serve = exported.signatures["serving_default"]
    spec = serve.structured_input_signature[1]["images"]
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 32, 32, 3]
    images, _ = colour_images(16, seed=7)
    answers = serve(images=tf.constant(images))["probabilities"].numpy()
    for augment in (AUGMENT, ()):
        model = build_model(architecture("mobilenetv3small"), len(LABELS), input_shape=(32, 32, 3),
                            augment=augment, weights="none")
        _copy(exported.variables, model)
        np.testing.assert_allclose(answers, model(images, training=False).numpy(), rtol=1e-4, atol=1e-5)


def test_imagenet_weights_offline_fail_in_one_line_within_seconds(tmp_path):
    images, labels = colour_images(20, seed=8)
    np.savez(tmp_path / "tiny.npz", x_train=images, y_train=labels)
    started = time.monotonic()
    result = subprocess.run(tfclassify_cmd("train", "--npz", str(tmp_path / "tiny.npz"), "--arch", "mobilenetv3small",
                                           "--model-repo", str(tmp_path / "repo")),
                            capture_output=True, text=True, timeout=120,
                            env={**__import__("os").environ, "KERAS_HOME": str(tmp_path / "keras")})
    elapsed = time.monotonic() - started
    if result.returncode == 0:
        pytest.skip("this machine can download the ImageNet weights")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("tfclassify: error: cannot download the ImageNet weights of MobileNetV3Small "
                               "(https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/")
    assert lines[0].endswith("; train with --weights none or --weights FILE")
    assert elapsed < 60 and not (tmp_path / "repo").exists()


@pytest.mark.parametrize("args, message", [
    (("--arch", "cnn", "--weights", "none"), "--weights is for transfer learning: cnn has no pretrained backbone"),
    (("--arch", "mobilenetv3small", "--weights", "nowhere.h5"), "--weights nowhere.h5: no such file"),
    (("--arch", "mobilenetv3small", "--steps", "3"), "--steps does not apply"),
    (("--augment", "flip,blur"), "argument --augment: expected some of flip,rotation,zoom,contrast"),
    (("--arch", "mobilenetv3small", "--fine-tune-layers", "-2"), "expected a number of layers (1 or more) or all"),
])
def test_bad_transfer_flags_fail_in_one_line(tmp_path, args, message):
    images, labels = colour_images(10, seed=9)
    np.savez(tmp_path / "tiny.npz", x_train=images, y_train=labels)
    result = subprocess.run(tfclassify_cmd("train", "--npz", str(tmp_path / "tiny.npz"), *args, "--model-repo",
                                           str(tmp_path / "repo")), capture_output=True, text=True, timeout=60)
    assert result.returncode in (1, 2) and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
