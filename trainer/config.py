"""Training settings (no TensorFlow import, so ``tfclassify train --help`` is instant)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from tfclassify.trainer.architectures import (
    AUGMENTATIONS,
    OPTIMIZERS,
    RECIPES,
    SCHEDULES,
    WEIGHTS_CHOICES,
    ArchitectureSpec,
    Hyperparameters,
    architecture,
)
from tfclassify.trainer.data import DataSource


@dataclass(frozen=True)
class TrainConfig:
    """One training run: which data, which model, how it is trained, where it is exported."""

    source: DataSource
    model_repo: Path
    #: Model name in the repository (default: the dataset's name, or the data file's stem).
    model_name: str | None = None
    arch: str = "mlp512"
    #: "tutorial": the architecture's tutorial settings; "tuned": our recipe for it, where there is one.
    recipe: str = "tutorial"
    #: Flags that override the architecture's defaults (None: the default).
    optimizer: str | None = None
    learning_rate: float | None = None
    schedule: str | None = None
    batch_size: int | None = None
    epochs: int | None = None
    steps: int | None = None
    dropout: float | None = None
    l2: float | None = None
    #: Transfer learning: epochs and layers of the fine-tuning phase (0 layers: the whole backbone), its rate.
    fine_tune_epochs: int | None = None
    fine_tune_layers: int | None = None
    fine_tune_learning_rate: float | None = None
    #: Transfer learning: the backbone's weights, "imagenet", "none" (random) or a weights file (None: imagenet).
    weights: str | None = None
    #: Random augmentation layers in the model, active in training only (``catalog.AUGMENTATIONS``).
    augment: tuple[str, ...] = ()
    #: Fraction of the training images held out for validation during training.
    validation_split: float = 0.0
    #: Stop when the validation loss has not improved for this many epochs (0: never), keeping the best weights.
    early_stopping: int = 0
    #: Version to export as; default: one above the highest in the repository.
    version: int | None = None
    #: Train on the first N training images only (quick runs and tests).
    train_limit: int | None = None
    seed: int = 0
    #: "auto" (every visible GPU, mirrored, when there are several; else one device), "one", or a list such as
    #: "GPU:0,GPU:1" to mirror over.
    devices: str = "auto"
    #: Split the CPU into this many logical devices first (to run the mirrored path without GPUs).
    cpu_devices: int = 1

    @property
    def spec(self) -> ArchitectureSpec:
        return architecture(self.arch)

    @property
    def name(self) -> str:
        if self.model_name:
            return self.model_name
        if self.source.dataset:
            return self.source.dataset
        path = self.source.npz or self.source.images or self.source.train_images
        return path.name.split(".")[0] if path is not None else "model"

    @property
    def weights_source(self) -> str | None:
        """The backbone's weights ("imagenet", "none" or a file); None for an architecture without one."""
        return (self.weights or "imagenet") if self.spec.transfer else None

    def hyperparameters(self) -> Hyperparameters:
        """The architecture's defaults with this run's flags on top, checked."""
        chosen = {f.name: getattr(self, f.name) for f in dataclasses.fields(Hyperparameters)
                  if getattr(self, f.name) is not None}
        if "epochs" in chosen:
            chosen.setdefault("steps", None)
        elif "steps" in chosen:
            chosen["epochs"] = None
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}: expected one of {', '.join(RECIPES)}")
        base = self.spec.tuned if self.recipe == "tuned" and self.spec.tuned else self.spec.defaults
        hp = dataclasses.replace(base, **chosen)
        if hp.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {hp.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
        if hp.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {hp.schedule!r}: expected one of {', '.join(SCHEDULES)}")
        if hp.learning_rate <= 0 or hp.batch_size < 1 or (hp.epochs or hp.steps or 0) < 1 or hp.l2 < 0:
            raise ValueError("the learning rate, batch size, epochs or steps must be positive, and L2 not negative")
        if hp.dropout is not None and not 0 <= hp.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {hp.dropout}")
        if not 0 <= self.validation_split < 1:
            raise ValueError(f"--validation-split must be in [0, 1), got {self.validation_split}")
        if self.spec.low_level and self.devices not in ("auto", "one") and "," in self.devices:
            raise ValueError(f"{self.spec.name} trains with its tutorial's own loop on one device: --devices "
                             f"{self.devices} names several")
        if self.early_stopping and not self.validation_split:
            raise ValueError("--early-stopping watches the validation loss: give --validation-split too")
        self._check_transfer(hp)
        return hp

    def _check_transfer(self, hp: Hyperparameters) -> None:
        unknown = sorted(set(self.augment) - set(AUGMENTATIONS))
        if unknown:
            raise ValueError(f"--augment: unknown {', '.join(unknown)}: expected some of {', '.join(AUGMENTATIONS)}")
        given = [flag for flag, value in (("--weights", self.weights), ("--fine-tune-epochs", self.fine_tune_epochs),
                                          ("--fine-tune-layers", self.fine_tune_layers),
                                          ("--fine-tune-learning-rate", self.fine_tune_learning_rate))
                 if value is not None]
        if not self.spec.transfer:
            if given:
                raise ValueError(f"{given[0]} is for transfer learning: {self.spec.name} has no pretrained backbone")
            return
        if self.steps is not None:
            raise ValueError(f"{self.spec.name} trains by epochs (frozen, then fine-tuned): --steps does not apply")
        # A transfer architecture's defaults set all three, and flags only replace them.
        assert hp.fine_tune_epochs is not None and hp.fine_tune_layers is not None
        assert hp.fine_tune_learning_rate is not None
        if hp.fine_tune_epochs < 0 or hp.fine_tune_layers < 0 or hp.fine_tune_learning_rate <= 0:
            raise ValueError("--fine-tune-epochs and --fine-tune-layers must not be negative, and "
                             "--fine-tune-learning-rate must be positive")
        source = self.weights_source
        assert source is not None  # a transfer architecture's
        if source not in WEIGHTS_CHOICES and not Path(source).is_file():
            raise ValueError(f"--weights {source}: no such file (expected imagenet, none or a .weights.h5 file "
                             "of the backbone)")
