"""One training run: read the data, build the architecture, train it (Keras ``fit``; a transfer-learning
architecture in two phases, frozen then fine-tuned; the step-by-step loop of a ``low_level`` architecture),
evaluate it on the test set and export it with its model card."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfclassify.trainer import transfer
from tfclassify.trainer.architectures import BACKBONE_MIN_SIDE, ArchitectureSpec, Hyperparameters
from tfclassify.trainer.augment import describe as describe_augmentation
from tfclassify.trainer.card import CARD_SCHEMA_VERSION, environment, evaluation, render_markdown
from tfclassify.trainer.config import TrainConfig
from tfclassify.trainer.data import TrainingData, load_training_data
from tfclassify.trainer.distribute import choose_strategy, split_cpu, strategy_devices
from tfclassify.trainer.export import export_version
from tfclassify.trainer.history import HISTORY_PLOT, plot_history
from tfclassify.trainer.models import build_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    version_dir: Path
    version: int
    test_accuracy: float
    test_loss: float
    train_seconds: float
    seconds_per_epoch: float
    parameters: int
    card: dict


def train(config: TrainConfig, data: TrainingData | None = None) -> TrainResult:
    """Train per ``config`` (on ``data``, else what ``config.source`` names), evaluate on the test split, export
    a new version with its model card."""
    spec = config.spec
    hp = config.hyperparameters()
    target = Path(config.model_repo) / config.name
    if config.version is not None and (target / str(config.version)).exists():  # before, not after, the training
        raise FileExistsError(f"{target / str(config.version)} already exists: versions are never overwritten")
    data = (data or load_training_data(config.source)).limited(config.train_limit)
    split_cpu(config.cpu_devices)
    # Same seed, same CPU: the same weights (every op deterministic, at some cost in speed).
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    # The low-level loop is the tutorial's own: one device (auto: the first GPU, else the CPU).
    strategy = tf.distribute.get_strategy() if spec.low_level else choose_strategy(config.devices)
    x_fit, y_fit, validation = _validation_split(data, config.validation_split)
    steps_per_epoch = math.ceil(len(x_fit) / hp.batch_size)
    if hp.epochs:
        epochs = hp.epochs
    else:
        assert hp.steps is not None  # hyperparameters() requires epochs or steps
        epochs = max(1, math.ceil(hp.steps / steps_per_epoch))
    total_steps = hp.steps or epochs * steps_per_epoch
    with strategy.scope():
        # Before anything is trained: a backbone's weights that cannot be had fail here, in seconds.
        model = build_model(spec, data.num_classes, hp.dropout, hp.l2, data.input_shape, config.augment,
                            config.weights_source or "none", config.seed)
        optimizer = _optimizer(hp, total_steps)
    log.info("training %s (%s parameters) on %d images of %s for %s", spec.name, f"{model.count_params():,}",
             len(x_fit), data.source, f"{hp.steps:,} steps" if hp.steps else f"{epochs} epochs")
    started = time.monotonic()
    phases = None
    if spec.low_level:
        history = _train_steps(model, optimizer, x_fit, y_fit, validation, hp, total_steps, steps_per_epoch, config.seed)
        stopped_early = False
    elif spec.transfer:
        history, stopped_early, phases = _train_transfer(model, optimizer, strategy, config, hp, x_fit, y_fit,
                                                         validation, steps_per_epoch)
    else:
        history, stopped_early = _fit(model, optimizer, config, hp, x_fit, y_fit, validation, epochs)
    train_seconds = time.monotonic() - started
    epochs_run = len(history.get("loss", [])) or epochs

    probabilities = _probabilities(model, data.x_test, spec.low_level)
    predicted = probabilities.argmax(axis=1)
    test_loss = _log_loss(probabilities, data.y_test)
    results = evaluation(data.y_test, predicted, data.class_names)
    log.info("test accuracy %.4f (loss %.4f) after %.1f s", results["test_accuracy"], test_loss, train_seconds)
    card = _card(config, data, hp, model, results, test_loss, history, train_seconds, epochs_run,
                 stopped_early, total_steps if spec.low_level else epochs_run * steps_per_epoch,
                 strategy_devices(strategy), phases)
    with tempfile.TemporaryDirectory(prefix="tfclassify-train-") as tmp:
        plot = plot_history(history, f"{config.name}: {spec.name} on {data.source}", Path(tmp) / HISTORY_PLOT)
        version_dir = export_version(
            model, target, data.class_names, card, config.version,
            extra_files={"model_card.md": lambda v: render_markdown({**card, "version": v}).encode(),
                         HISTORY_PLOT: lambda v: plot.read_bytes()},
            softmax=spec.low_level, input_shape=data.input_shape,
        )
    return TrainResult(version_dir, int(version_dir.name), results["test_accuracy"], test_loss, train_seconds,
                       card["training"]["seconds_per_epoch"], int(model.count_params()), card)


def _validation_split(data: TrainingData, fraction: float):
    """The last ``fraction`` of the training images held out for validation (as Keras' validation_split)."""
    if not fraction:
        return data.x_train, data.y_train, None
    n = len(data.x_train) - max(1, int(len(data.x_train) * fraction))
    return data.x_train[:n], data.y_train[:n], (data.x_train[n:], data.y_train[n:])


def _fit(model: keras.Model, optimizer, config: TrainConfig, hp: Hyperparameters, x: np.ndarray, y: np.ndarray,
         validation, epochs: int, initial_epoch: int = 0) -> tuple[dict[str, list[float]], bool]:
    """Keras ``fit`` from ``initial_epoch`` up to epoch ``epochs``: the history and whether it stopped early."""
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks = []
    if config.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stopping,
                                                       restore_best_weights=True))
    fit = model.fit(x, y, epochs=epochs, initial_epoch=initial_epoch, batch_size=hp.batch_size,
                    validation_data=validation, callbacks=callbacks, shuffle=True,
                    verbose=1 if sys.stdout.isatty() else 2)
    history = {k: [float(v) for v in vs] for k, vs in fit.history.items()}
    return history, len(history.get("loss", [])) < epochs - initial_epoch


def _train_transfer(model: keras.Model, optimizer, strategy, config: TrainConfig, hp: Hyperparameters,
                    x: np.ndarray, y: np.ndarray, validation,
                    steps_per_epoch: int) -> tuple[dict[str, list[float]], bool, dict]:
    """The Keras transfer-learning guide's schedule: the head on the frozen backbone at ``learning_rate``, then
    the top ``fine_tune_layers`` of the backbone too at ``fine_tune_learning_rate`` (each phase its own
    optimizer, as the model is recompiled). Returns the joined history, whether a phase stopped early, and
    what each phase trained."""
    # hyperparameters() of a transfer architecture: epochs (--steps refused) and the fine-tuning settings
    assert hp.epochs is not None and hp.fine_tune_epochs is not None and hp.fine_tune_layers is not None
    transfer.freeze(model)
    frozen_parameters = transfer.trainable_parameters(model)
    history, stopped_early = _fit(model, optimizer, config, hp, x, y, validation, hp.epochs)
    frozen_epochs = len(history.get("loss", []))
    phases: dict[str, Any] = {"frozen_epochs": frozen_epochs, "fine_tune_epochs": 0, "head_learning_rate": hp.learning_rate,
              "fine_tune_learning_rate": hp.fine_tune_learning_rate, "trainable_parameters_frozen": frozen_parameters,
              "fine_tuned_layers": [], "trainable_parameters_fine_tune": 0}
    if hp.fine_tune_epochs:
        unfrozen = transfer.unfreeze_top(model, hp.fine_tune_layers)
        log.info("fine-tuning %d layers of the backbone at %g", len(unfrozen), hp.fine_tune_learning_rate)
        with strategy.scope():
            optimizer = _optimizer(hp, hp.fine_tune_epochs * steps_per_epoch, hp.fine_tune_learning_rate)
        more, stopped = _fit(model, optimizer, config, hp, x, y, validation, frozen_epochs + hp.fine_tune_epochs,
                             initial_epoch=frozen_epochs)
        for key, values in more.items():
            history.setdefault(key, []).extend(values)
        stopped_early = stopped_early or stopped
        phases.update(fine_tune_epochs=len(more.get("loss", [])), fine_tuned_layers=unfrozen,
                      trainable_parameters_fine_tune=transfer.trainable_parameters(model))
    return history, stopped_early, phases


def _optimizer(hp: Hyperparameters, total_steps: int, learning_rate: float | None = None) -> keras.optimizers.Optimizer:
    initial = hp.learning_rate if learning_rate is None else learning_rate
    if hp.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(initial, total_steps)
    elif hp.schedule == "exponential":  # a tenth of the initial rate by the end
        rate = keras.optimizers.schedules.ExponentialDecay(initial, total_steps, 0.1)
    else:
        rate = initial
    return {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}[
        hp.optimizer](rate)


def _train_steps(model: keras.Model, optimizer, x: np.ndarray, y: np.ndarray, validation, hp: Hyperparameters,
                 total_steps: int, steps_per_epoch: int, seed: int) -> dict[str, list[float]]:
    """The low-level tutorial's loop: shuffled batches, loss on logits, one gradient step at a time; an
    "epoch" of history is every ``steps_per_epoch`` steps."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    batches = iter(tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
                   .repeat().batch(hp.batch_size))

    @tf.function
    def step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = loss_fn(labels, logits) + tf.add_n([tf.constant(0.0)] + model.losses)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1), tf.cast(labels, tf.int64)), tf.float32))
        return loss, correct

    history: dict[str, list[float]] = {"loss": [], "accuracy": []}
    losses, correct, seen = [], 0.0, 0
    for i in range(1, total_steps + 1):
        images, labels = next(batches)
        loss, right = step(images, labels)
        losses.append(float(loss))
        correct, seen = correct + float(right), seen + len(labels)
        if i % steps_per_epoch == 0 or i == total_steps:
            history["loss"].append(float(np.mean(losses)))
            history["accuracy"].append(correct / seen)
            line = f"step {i}/{total_steps} - loss: {history['loss'][-1]:.4f} - accuracy: {history['accuracy'][-1]:.4f}"
            if validation is not None:
                p = _probabilities(model, validation[0], logits=True)
                history.setdefault("val_accuracy", []).append(float((p.argmax(1) == validation[1]).mean()))
                history.setdefault("val_loss", []).append(_log_loss(p, validation[1]))
                line += f" - val_loss: {history['val_loss'][-1]:.4f} - val_accuracy: {history['val_accuracy'][-1]:.4f}"
            print(line, flush=True)
            losses, correct, seen = [], 0.0, 0
    return history


def _weights_digest(model: keras.Model) -> str:
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


def _log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of the true classes (what Keras reports as the loss, without regularisation)."""
    return float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1)).mean())


def _probabilities(model: keras.Model, images: np.ndarray, logits: bool) -> np.ndarray:
    out = model.predict(images, batch_size=1024, verbose=0)
    return tf.nn.softmax(out).numpy() if logits else out


def _card(config: TrainConfig, data: TrainingData, hp: Hyperparameters, model: keras.Model, results: dict,
          test_loss: float, history: dict, seconds: float, epochs_run: int, stopped_early: bool, steps: int,
          devices: list[str], phases: dict | None = None) -> dict:
    spec = config.spec
    # The fine-tuning settings mean nothing to an architecture trained from scratch: left out of its card.
    settings = {k: v for k, v in asdict(hp).items() if spec.transfer or not k.startswith("fine_tune_")}
    card = {
        "card_schema": CARD_SCHEMA_VERSION,
        "model": config.name,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        # Flat keys that tools read directly (tfclassify models, earlier versions' readers).
        "dataset": data.source,
        "architecture": spec.name,
        "epochs": epochs_run,
        "test_accuracy": results["test_accuracy"],
        "test_loss": round(test_loss, 6),
        "train_seconds": round(seconds, 2),
        "seed": config.seed,
        "deterministic": True,
        "arch": {"name": spec.name, "summary": spec.summary, "source": spec.source,
                 "parameters": int(model.count_params())},
        # A fingerprint of the trained weights: two runs agree on it exactly when they agree on every weight.
        "weights_sha256": _weights_digest(model),
        "hyperparameters": {"recipe": config.recipe, **settings, "validation_split": config.validation_split,
                            "early_stopping_patience": config.early_stopping, "train_limit": config.train_limit},
        "data": {"source": data.source, "classes": data.num_classes, "class_names": list(data.class_names),
                 "train_images": len(data.x_train), "test_images": len(data.x_test),
                 "test_split": data.test_split, "checksums": data.checksums(), "skipped": len(data.skipped)},
        "training": {"epochs_run": epochs_run, "steps": steps, "seconds": round(seconds, 2), "devices": devices,
                     "seconds_per_epoch": round(seconds / max(1, epochs_run), 2), "stopped_early": stopped_early,
                     "augmentation": describe_augmentation(config.augment),
                     "history": {k: [round(v, 6) for v in vs] for k, vs in history.items()}},
        "evaluation": results,
        "environment": environment(),
        "input": _input(data, spec),
    }
    if spec.transfer:
        card["transfer"] = _transfer_card(config, hp, phases or {})
    return card


def _transfer_card(config: TrainConfig, hp: Hyperparameters, phases: dict) -> dict:
    """How a transfer-learning run trained: the backbone, where its weights came from, the two phases."""
    source = config.weights_source
    assert source is not None  # a transfer architecture's
    weights: dict = {"source": source}
    if source not in ("imagenet", "none"):
        weights = {"source": "file", "file": str(Path(source).absolute()), "sha256": _file_digest(Path(source))}
    return {"backbone": f"keras.applications.{config.spec.backbone}", "weights": weights,
            "batch_normalization": "inference mode in both phases (the backbone is called with training=False); "
                                   "its BatchNormalization layers are never unfrozen",
            "fine_tune_layers_asked": hp.fine_tune_layers, **phases,
            "fine_tuned_layer_count": len(phases.get("fine_tuned_layers", []))}


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


#: What each backbone does to the 0..255 floats it is given (``include_preprocessing=True``).
_BACKBONE_SCALING = {
    "MobileNetV3Small": "x / 127.5 - 1 (the backbone's own Rescaling layer)",
    "MobileNetV3Large": "x / 127.5 - 1 (the backbone's own Rescaling layer)",
    "EfficientNetV2B0": "x / 255, then (x - ImageNet mean) / ImageNet std per channel (the backbone's own layers)",
}


def _input(data: TrainingData, spec: ArchitectureSpec | None = None) -> dict:
    """The exported signature's input, what the model does to it before the network proper (all inside the
    graph: clients send raw uint8 pixels), and for image files how they were decoded (as the scorer does)."""
    shape = data.input_shape
    channels = shape[2] if len(shape) == 3 else 1
    described = {"dtype": "uint8", "shape": list(shape), "height": shape[0], "width": shape[1],
                 "channels": channels, "rescaling": "x / 255, inside the model"}
    if spec is not None and spec.backbone is not None:  # transfer learning
        steps = ["uint8 to float32, 0..255"]
        if channels == 1:
            steps.append("grey repeated to 3 channels")
        size = (max(shape[0], BACKBONE_MIN_SIDE), max(shape[1], BACKBONE_MIN_SIDE))
        if size != tuple(shape[:2]):
            steps.append(f"resized (bilinear) to {size[0]} x {size[1]}, the backbone's smallest input")
        scaling = _BACKBONE_SCALING.get(spec.backbone, "the backbone's own preprocessing")
        described.update(rescaling=f"{scaling}, inside the model", inside_model=[*steps, scaling])
    if data.conversion is not None:
        described["decoded"] = data.conversion
    return described


__all__ = ["TrainResult", "train"]
