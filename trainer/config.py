"""Training settings (no TensorFlow import, so ``tfclassify train --help`` is instant)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Architectures ``tfclassify train --arch`` builds.
ARCHITECTURES = ("mlp",)


@dataclass(frozen=True)
class TrainConfig:
    """One training run: which data, which model, where it is exported."""

    dataset: str
    model_repo: Path
    #: Model name in the repository (default: the dataset name).
    model_name: str | None = None
    arch: str = "mlp"
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    #: Version to export as; default: one above the highest in the repository.
    version: int | None = None
    data_dir: Path | None = None
    #: Train on the first N training images only (quick runs and tests).
    train_limit: int | None = None
    #: Fraction of the training images held out for validation during training.
    validation_split: float = 0.0
    seed: int = 0

    @property
    def name(self) -> str:
        return self.model_name or self.dataset
