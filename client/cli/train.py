"""``tfclassify train``: train a classifier and export it into a model repository."""

from __future__ import annotations

import argparse
from pathlib import Path

from tfclassify.client.cli.common import CliError, quiet_tensorflow
from tfclassify.client.datasets import dataset_names
from tfclassify.trainer.config import ARCHITECTURES, TrainConfig


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "train",
        help="train a model and export a new version",
        description="Train a Keras classifier on a dataset of the MNIST family and export it as a new "
        "SavedModel version into a model repository. Needs the trainer extra: pip install 'tfclassify[trainer]'.",
    )
    parser.add_argument("--dataset", required=True, choices=dataset_names())
    parser.add_argument("--model-repo", type=Path, required=True, help="model repository folder")
    parser.add_argument("--name", help="model name in the repository (default: the dataset name)")
    parser.add_argument("--arch", default="mlp", choices=ARCHITECTURES, help="architecture [default: %(default)s]")
    parser.add_argument("--epochs", type=int, default=10, help="[default: %(default)s]")
    parser.add_argument("--batch-size", type=int, default=128, help="[default: %(default)s]")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="[default: %(default)s]")
    parser.add_argument("--version", type=int, help="version to export as (default: the next free one)")
    parser.add_argument("--data-dir", type=Path, help="folder holding the dataset files")
    parser.add_argument("--train-limit", type=int, help="train on the first N training images only")
    parser.add_argument("--seed", type=int, default=0, help="random seed [default: %(default)s]")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    quiet_tensorflow()
    try:
        from tfclassify.trainer.train import train
    except ImportError as exc:
        raise CliError(f"tfclassify train needs the trainer extra ({exc}): pip install 'tfclassify[trainer]'") from exc
    config = TrainConfig(
        dataset=args.dataset,
        model_repo=args.model_repo,
        model_name=args.name,
        arch=args.arch,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        version=args.version,
        data_dir=args.data_dir,
        train_limit=args.train_limit,
        seed=args.seed,
    )
    result = train(config)
    print(
        f"exported {result.version_dir} (version {result.version}): test accuracy {result.test_accuracy:.4f}, "
        f"trained in {result.train_seconds:.1f} s"
    )
    return 0
