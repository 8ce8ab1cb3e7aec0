"""The architectures ``tfclassify train --arch`` builds, with the hyper-parameters of the tutorial each comes
from as its defaults. Plain data (no TensorFlow), so ``tfclassify train --help`` stays instant."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

OPTIMIZERS = ("adam", "sgd", "rmsprop")
RECIPES = ("tutorial", "tuned")
SCHEDULES = ("constant", "cosine", "exponential")


@dataclass(frozen=True)
class Hyperparameters:
    """How one architecture is trained unless flags say otherwise."""

    optimizer: str = "adam"
    learning_rate: float = 1e-3
    schedule: str = "constant"
    batch_size: int = 128
    #: Passes over the training images; ``steps`` (optimizer steps) replaces it when set.
    epochs: int | None = 5
    steps: int | None = None
    #: Dropout rate of the architecture's dropout layers (None: it has none).
    dropout: float | None = None
    l2: float = 0.0
    #: Transfer learning only (None elsewhere): after ``epochs`` with the backbone frozen, this many epochs with
    #: the top ``fine_tune_layers`` layers of the backbone trainable (0: all of them) at ``fine_tune_learning_rate``.
    fine_tune_epochs: int | None = None
    fine_tune_layers: int | None = None
    fine_tune_learning_rate: float | None = None


@dataclass(frozen=True)
class ArchitectureSpec:
    """One architecture: what it is, where it comes from, how it is trained by default."""

    name: str
    summary: str
    source: str
    defaults: Hyperparameters
    #: Our recipe (``--recipe tuned``), where it beats the tutorial's settings; None: the tutorial's.
    tuned: Hyperparameters | None = None
    #: Trained by our own loop (tf.GradientTape) on logits, softmax applied only in the exported model.
    low_level: bool = False
    #: Transfer learning: the ``keras.applications`` network used as the backbone (None: built from scratch).
    backbone: str | None = None

    @property
    def transfer(self) -> bool:
        return self.backbone is not None


#: ``--augment`` choices: the Keras preprocessing layer of each and its setting (those of the Keras
#: transfer-learning and image-classification guides). Active in training only; part of the exported model.
AUGMENTATIONS: dict[str, tuple[str, dict]] = {
    "flip": ("RandomFlip", {"mode": "horizontal"}),
    "rotation": ("RandomRotation", {"factor": 0.1}),  # up to a tenth of a turn either way
    "zoom": ("RandomZoom", {"height_factor": 0.1}),
    "contrast": ("RandomContrast", {"factor": 0.2}),
}
#: ``--weights`` values other than a file.
WEIGHTS_CHOICES = ("imagenet", "none")
#: Smallest side the keras.applications backbones take; smaller images are resized up inside the model.
BACKBONE_MIN_SIDE = 32


#: Our recipe for the multilayer perceptrons: Adam with cosine decay, for 20 epochs.
_TUNED_MLP = Hyperparameters(optimizer="adam", learning_rate=1e-3, schedule="cosine", batch_size=128, epochs=20)

ARCHITECTURES: dict[str, ArchitectureSpec] = {
    spec.name: spec
    for spec in (
        ArchitectureSpec(
            "mlp512",
            "784-512-10 ReLU multilayer perceptron",
            "the Keras 'first look at a neural network' tutorial (97.85% and 97.96% on MNIST reported)",
            Hyperparameters(optimizer="rmsprop", learning_rate=1e-3, batch_size=128, epochs=5),
            tuned=_TUNED_MLP,
        ),
        ArchitectureSpec(
            "mlp128-dropout",
            "784-128 ReLU, dropout 0.2, -10",
            "the TensorFlow Fashion-MNIST tutorial (0.852 after 5 epochs of 800 steps)",
            Hyperparameters(optimizer="adam", learning_rate=1e-3, batch_size=64, epochs=5, dropout=0.2),
            tuned=dataclasses.replace(_TUNED_MLP, batch_size=64, dropout=0.2),
        ),
        ArchitectureSpec(
            "mlp-deep",
            "500-400-300-200-100-10 ReLU, a subclassed Keras model",
            "a TensorFlow 2 tutorial's subclassed model, Adam at 0.001",
            Hyperparameters(optimizer="adam", learning_rate=1e-3, batch_size=128, epochs=10),
            tuned=_TUNED_MLP,
        ),
        ArchitectureSpec(
            "mlp128-256",
            "128-256-10 ReLU on logits, trained step by step",
            "the low-level TensorFlow tutorial: SGD at 0.1, batches of 256, 2,000 steps, softmax at inference",
            Hyperparameters(optimizer="sgd", learning_rate=0.1, batch_size=256, epochs=None, steps=2000),
            low_level=True,
        ),
        ArchitectureSpec(
            "cnn",
            "two 3x3 conv + 2x2 max-pool blocks (32, 64 filters), dropout, dense 128",
            "ours, aimed at >= 0.92 on Fashion-MNIST",
            Hyperparameters(optimizer="adam", learning_rate=1e-3, schedule="cosine", batch_size=128, epochs=15,
                            dropout=0.3),
        ),
    )
}


def _transfer(backbone: str, summary: str, fine_tune_layers: int) -> ArchitectureSpec:
    """A ``keras.applications`` backbone (ImageNet weights, its own preprocessing inside) with a new head."""
    return ArchitectureSpec(
        backbone.lower(),
        f"keras.applications.{backbone} ({summary}) + global average pool, dropout, dense softmax",
        "the Keras transfer-learning guide: the head trained on the frozen backbone with Adam, then the top of "
        "the backbone fine-tuned at 1e-5 with its BatchNormalization layers kept in inference mode",
        Hyperparameters(optimizer="adam", learning_rate=1e-3, batch_size=32, epochs=5, dropout=0.2,
                        fine_tune_epochs=5, fine_tune_layers=fine_tune_layers, fine_tune_learning_rate=1e-5),
        backbone=backbone,
    )


# About the last fifth of each backbone's layers (158, 188 and 271 layers): its last blocks.
for _spec in (_transfer("MobileNetV3Small", "0.9 M parameters", 30),
              _transfer("MobileNetV3Large", "3.0 M parameters", 40),
              _transfer("EfficientNetV2B0", "5.9 M parameters", 50)):
    ARCHITECTURES[_spec.name] = _spec

#: Older names still accepted.
ALIASES = {"mlp": "mlp512"}


def architecture(name: str) -> ArchitectureSpec:
    """The spec of ``name`` (or of the architecture it is an alias of)."""
    spec = ARCHITECTURES.get(ALIASES.get(name, name))
    if spec is None:
        raise ValueError(f"unknown architecture {name!r}: expected one of {', '.join(ARCHITECTURES)}")
    return spec
