"""Build small, real colour image classifiers the way users outside tfclassify do, as a model repository.

The class of each generated image is the colour of one shape (a disc or a square of random size and place)
on a grey, noisy background: red, green, blue or yellow. The shape's brightness is random, so a model
cannot classify from luminance alone: an image turned grey loses its class, and red and blue swap when the
channels are read in BGR order. Trained for a second or two, each net classifies these well above chance.

::

    <OUT_REPO>/rgb_cnn/1/           Keras CNN, uint8 [N, 32, 32, 3], Rescaling inside, Model.export()
    <OUT_REPO>/mobilenet/1/         keras.applications.MobileNetV3Small(weights=None), float32 [N, 96, 96, 3]
                                    at 0..255 (it rescales inside), Model.export()
    <OUT_REPO>/module_keras/1/      a Keras model held in a tf.Module, uint8 [N, 32, 32, 3], tf.saved_model.save:
                                    runs with tf.saved_model.load, fails in a TF1 session (uninitialized variables)
    <OUT_REPO>/jpeg_input/1/        tf.string [N] of encoded JPEG/PNG (input key ``image_bytes``), decoded,
                                    resized to 32 x 32 and classified by rgb_cnn in its graph; tf.saved_model.save
    <OUT_REPO>/rgb_logits_multi/1/  float32 [N, 32, 32, 3] at 0..1 (no preprocessing inside), outputs
                                    ``logits`` [N, 4], ``probabilities`` [N, 4], ``embedding`` [N, 16]
    <OUT_REPO>/answers.npz          a fixed test batch and every model's answers in process (``load_answers``)

Every version folder holds ``labels.txt``. Deterministic (fixed seeds, TensorFlow op determinism): two runs
write the same answers. About 35 s on two cores, the MobileNet built meanwhile in a second process.

Usage: python tests/make_colour_models.py OUT_REPO
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

LABELS = ["red", "green", "blue", "yellow"]
SIZE = 32  # rgb_cnn, module_keras, jpeg_input, rgb_logits_multi
MOBILENET_SIZE = 96
TRAIN_IMAGES = 2048
TEST_IMAGES = 64
ANSWERS_FILE = "answers.npz"
MODELS = ["rgb_cnn", "mobilenet", "module_keras", "jpeg_input", "rgb_logits_multi"]

# The shape's colour per class, as the channels that are bright (1) or dark (0).
_CLASS_CHANNELS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])


def colour_images(count: int, seed: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``count`` uint8 images [count, size, size, 3] and their classes (int64, indexes into ``LABELS``)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(LABELS), count)
    grey = rng.uniform(40, 200, (count, 1, 1, 1))
    images = grey + rng.normal(0, 12, (count, size, size, 3))
    rows, cols = np.mgrid[:size, :size]
    for image, label in zip(images, labels):
        radius = rng.uniform(size * 0.15, size * 0.3)
        cy, cx = rng.uniform(radius, size - radius, 2)
        if rng.random() < 0.5:
            mask = (rows - cy) ** 2 + (cols - cx) ** 2 <= radius**2
        else:
            mask = (abs(rows - cy) <= radius) & (abs(cols - cx) <= radius)
        bright, dark = rng.uniform(130, 255), rng.uniform(0, 70)
        colour = np.where(_CLASS_CHANNELS[label] == 1, bright, dark) + rng.normal(0, 8, 3)
        image[mask] = colour
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), labels.astype(np.int64)


def upscale(images: np.ndarray, size: int = MOBILENET_SIZE) -> np.ndarray:
    """Nearest-neighbour upscaling by a whole factor (exact, no resampling library involved)."""
    factor = size // images.shape[1]
    return images.repeat(factor, axis=1).repeat(factor, axis=2)


def encode(images: np.ndarray, fmt: str) -> np.ndarray:
    """Each image as encoded ``jpeg`` (quality 95) or ``png`` bytes, in a numpy bytes array (``S`` dtype: no
    trailing NUL is lost, as JPEG ends with FF D9 and PNG with IEND's CRC)."""
    encoder = {"jpeg": lambda x: tf.io.encode_jpeg(x, quality=95), "png": tf.io.encode_png}[fmt]
    return np.array([encoder(image).numpy() for image in images], dtype=bytes)


def _write_labels(version_dir: Path) -> None:
    (version_dir / "labels.txt").write_text("".join(f"{label}\n" for label in LABELS), encoding="utf-8")


def _small_cnn(inputs: keras.KerasTensor) -> keras.KerasTensor:
    """Two small convolutions and global pooling: the features of every 32 x 32 model here."""
    x = keras.layers.Conv2D(16, 3, activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, activation="relu")(x)
    return keras.layers.GlobalAveragePooling2D()(x)


def _train(
    model: keras.Model, x: np.ndarray, y: np.ndarray, steps: int, from_logits: bool = False, learning_rate: float = 0.01
) -> None:
    """``steps`` Adam steps on batches of 64 drawn in a fixed order. A plain traced step, not ``Model.fit``:
    tracing fit's train function costs seconds per model (25 s for the MobileNet), the steps themselves little."""
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)

    @tf.function(autograph=False)
    def step(images: tf.Tensor, labels: tf.Tensor) -> None:
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

    rng = np.random.default_rng(0)
    for _ in range(steps):
        batch = rng.choice(len(x), 64, replace=False)
        step(x[batch], y[batch])


def build_rgb_cnn(version_dir: Path, train: tuple[np.ndarray, np.ndarray]) -> keras.Model:
    """A Keras CNN on uint8 [N, 32, 32, 3] with its preprocessing inside, exported with ``Model.export()``."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8", name="images")
    features = _small_cnn(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(len(LABELS), activation="softmax")(features), name="rgb_cnn")
    _train(model, *train, steps=200)
    model.export(str(version_dir), verbose=False)
    _write_labels(version_dir)
    return model


def build_mobilenet(version_dir: Path, train: tuple[np.ndarray, np.ndarray]) -> keras.Model:
    """``keras.applications.MobileNetV3Small(weights=None)`` on float32 [N, 96, 96, 3] at 0..255, trained a
    few steps, exported with ``Model.export()``."""
    keras.utils.set_random_seed(2)
    model = keras.applications.MobileNetV3Small(
        input_tensor=keras.Input((MOBILENET_SIZE, MOBILENET_SIZE, 3), name="images"),
        weights=None, classes=len(LABELS), include_preprocessing=True,
    )
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            # The default 0.999 leaves the moving statistics at their initial values after a few steps, and
            # the net's inference answers degenerate (nearly the same for every image); 0.5 lets them follow
            # the data within 12 steps. The low learning rate keeps its answers off 0 and 1.
            layer.momentum = 0.5
    x, y = train
    _train(model, upscale(x[:768]).astype(np.float32), y[:768], steps=12, learning_rate=0.001)
    model.export(str(version_dir), verbose=False)
    _write_labels(version_dir)
    return model


class KerasInModule(tf.Module):
    """A Keras model held in a ``tf.Module`` with a ``tf.function`` serving signature, as many users write
    it. Its variables reach the SavedModel only through the Keras model's own tracking, which
    ``tf.saved_model.load`` restores but a TF1 session (``tf.compat.v1.saved_model.loader.load``) does not:
    running the signature there fails with ``Could not find variable ... uninitialized``."""

    def __init__(self, model: keras.Model) -> None:
        super().__init__()
        self.model = model

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.uint8, name="images")])
    def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"probabilities": self.model(images)}


def build_module_keras(version_dir: Path, train: tuple[np.ndarray, np.ndarray]) -> keras.Model:
    """A Keras ``Sequential`` (uint8 in, Rescaling inside) in a ``tf.Module``, ``tf.saved_model.save``."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3), dtype="uint8"),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(len(LABELS), activation="softmax"),
    ], name="sequential")
    _train(model, *train, steps=200)
    module = KerasInModule(model)
    tf.saved_model.save(module, str(version_dir), signatures={"serving_default": module.serve})
    _write_labels(version_dir)
    return model


class DecodingClassifier(tf.Module):
    """TensorFlow Serving's classic image signature: encoded JPEG/PNG/GIF/BMP bytes in, decoded to RGB and
    resized (bilinear) to the classifier's 32 x 32 in the graph. Unlike ``KerasInModule`` it tracks the
    underlying ``tf.Variable`` objects itself, so a TF1 session restores them too: this model runs in both
    runtimes."""

    def __init__(self, classifier: keras.Model) -> None:
        super().__init__()
        self.classifier = classifier
        self.tf_variables = [v.value for v in classifier.variables]  # Keras 3: the tf.Variable behind each

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels = tf.map_fn(_decode_one, image_bytes, fn_output_signature=tf.TensorSpec([SIZE, SIZE, 3], tf.uint8))
        return {"probabilities": self.classifier(pixels)}


def _decode_one(encoded: tf.Tensor) -> tf.Tensor:
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    resized = tf.image.resize(image, [SIZE, SIZE])  # the identity for an image already 32 x 32
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def build_jpeg_input(version_dir: Path, rgb_cnn: keras.Model) -> None:
    """``rgb_cnn``'s net behind a ``tf.string [N]`` input of encoded images, ``tf.saved_model.save``."""
    module = DecodingClassifier(rgb_cnn)
    tf.saved_model.save(module, str(version_dir), signatures={"serving_default": module.serve})
    _write_labels(version_dir)


def build_rgb_logits_multi(version_dir: Path, train: tuple[np.ndarray, np.ndarray]) -> keras.Model:
    """float32 [N, 32, 32, 3] at 0..1 in (scaled by the caller), three named outputs, ``Model.export()``."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((SIZE, SIZE, 3), name="images")
    embedding = keras.layers.Dense(16, activation="relu", name="embedding")(_small_cnn(inputs))
    logits = keras.layers.Dense(len(LABELS), name="logits")(embedding)
    probabilities = keras.layers.Softmax(name="probabilities")(logits)
    x, y = train
    _train(keras.Model(inputs, logits), x.astype(np.float32) / 255, y, steps=200, from_logits=True)
    outputs = {"logits": logits, "probabilities": probabilities, "embedding": embedding}
    model = keras.Model(inputs, outputs, name="rgb_logits_multi")
    model.export(str(version_dir), verbose=False)
    _write_labels(version_dir)
    return model


def fixed_batch() -> dict[str, np.ndarray]:
    """The fixed test batch: ``images`` uint8 [64, 32, 32, 3], ``labels``, ``images96`` (the same, upscaled
    3x), and ``jpeg`` / ``png``, each image encoded."""
    images, labels = colour_images(TEST_IMAGES, seed=1000)
    return {"images": images, "labels": labels, "images96": upscale(images),
            "jpeg": encode(images, "jpeg"), "png": encode(images, "png")}


def serving_default(version_dir: Path):
    """The ``serving_default`` function of a SavedModel, loaded in process with ``tf.saved_model.load``."""
    return tf.saved_model.load(str(version_dir)).signatures["serving_default"]


def compute_answers(repo: Path, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each model's answers on ``batch`` in process: ``<model>`` is its probabilities [N, 4];
    ``jpeg_input`` is on the JPEG bytes, ``jpeg_input.png`` on the PNG bytes; ``rgb_logits_multi.logits``
    and ``rgb_logits_multi.embedding`` are its other outputs."""
    version = {name: repo / name / "1" for name in MODELS}
    images = tf.constant(batch["images"])
    multi = serving_default(version["rgb_logits_multi"])(images=tf.cast(images, tf.float32) / 255)
    jpeg_input = serving_default(version["jpeg_input"])
    answers = {
        "rgb_cnn": serving_default(version["rgb_cnn"])(images=images)["output_0"],
        "mobilenet": serving_default(version["mobilenet"])(images=tf.cast(batch["images96"], tf.float32))["output_0"],
        "module_keras": serving_default(version["module_keras"])(images=images)["probabilities"],
        "jpeg_input": jpeg_input(image_bytes=tf.constant(batch["jpeg"]))["probabilities"],
        "jpeg_input.png": jpeg_input(image_bytes=tf.constant(batch["png"]))["probabilities"],
        **{f"rgb_logits_multi.{key}": multi[key] for key in ("logits", "embedding")},
        "rgb_logits_multi": multi["probabilities"],
    }
    return {key: value.numpy() for key, value in answers.items()}


def _build_mobilenet_alone(version_dir: Path) -> None:
    tf.config.experimental.enable_op_determinism()
    build_mobilenet(version_dir, colour_images(TRAIN_IMAGES, seed=0))


def build_repository(repo: Path) -> dict[str, np.ndarray]:
    """Train and write every model into ``repo``, then ``answers.npz``; returns what it holds."""
    # The MobileNet takes as long as the four others together, mostly single-threaded graph tracing and
    # optimising: a second process builds it meanwhile (spawned, as TensorFlow does not survive a fork).
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        mobilenet = pool.submit(_build_mobilenet_alone, repo / "mobilenet" / "1")
        train = colour_images(TRAIN_IMAGES, seed=0)
        rgb_cnn = build_rgb_cnn(repo / "rgb_cnn" / "1", train)
        build_module_keras(repo / "module_keras" / "1", train)
        build_jpeg_input(repo / "jpeg_input" / "1", rgb_cnn)
        build_rgb_logits_multi(repo / "rgb_logits_multi" / "1", train)
        mobilenet.result()
    batch = fixed_batch()
    contents = {**batch, **{f"answer.{key}": value for key, value in compute_answers(repo, batch).items()}}
    np.savez(repo / ANSWERS_FILE, **contents)
    return contents


def load_answers(repo: Path) -> dict[str, np.ndarray]:
    """``answers.npz``: the test batch (``images``, ``labels``, ``images96``, ``jpeg``, ``png``) and
    ``answer.<key>`` per ``compute_answers`` key. No pickles: ``list(answers["jpeg"])`` gives bytes."""
    with np.load(repo / ANSWERS_FILE) as data:
        return {key: data[key] for key in data.files}


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[-1].strip())
    tf.config.experimental.enable_op_determinism()
    started = time.monotonic()
    repo = Path(sys.argv[1])
    contents = build_repository(repo)
    accuracy = {name: float(np.mean(contents[f"answer.{name}"].argmax(1) == contents["labels"])) for name in MODELS}
    print(f"wrote {', '.join(MODELS)} and {ANSWERS_FILE} to {repo} in {time.monotonic() - started:.1f} s; "
          f"test accuracy {accuracy}")


if __name__ == "__main__":
    main()
