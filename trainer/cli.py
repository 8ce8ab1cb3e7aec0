"""``tfclassify train``: train a classifier and export it into a model repository (``--compare``: several).

The subcommand's parser and run, registered by the ``tfclassify`` dispatcher (``tfclassify.client.cli``). Light at
import (the catalog, the dataset names): TensorFlow is imported only when the command runs, so ``tfclassify train
--help`` is instant and works in the base install, which holds this package but not TensorFlow."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from tfclassify.common.commands import CliError
from tfclassify.common.datasets import DatasetNotFoundError, dataset_names
from tfclassify.common.text import counted
from tfclassify.common.tf_logs import quiet_tensorflow, tensorflow_noise_filtered
from tfclassify.trainer.architectures import (
    ALIASES,
    ARCHITECTURES,
    AUGMENTATIONS,
    OPTIMIZERS,
    RECIPES,
    SCHEDULES,
)


def add_parser(sub) -> None:
    archs = "; ".join(f"{s.name}: {s.summary}" for s in ARCHITECTURES.values())
    parser = sub.add_parser(
        "train",
        help="train a model and export a new version",
        description="Train a Keras classifier on a named dataset (the MNIST family, CIFAR-10) or your own images and "
        "export it as a new SavedModel version (with a model card and a training-history plot) into a model "
        f"repository. Architectures: {archs}. Each trains with its tutorial's settings unless flags say otherwise. "
        "The keras.applications ones (transfer learning) start from ImageNet weights, train a new head on the "
        "frozen backbone for --epochs, then fine-tune the top --fine-tune-layers of the backbone for "
        "--fine-tune-epochs at --fine-tune-learning-rate. "
        "Needs the trainer extra: pip install 'tfclassify[trainer]'.",
    )
    data = parser.add_argument_group("data (one of --dataset, --npz, --train-images, --images)")
    data.add_argument("--dataset", choices=dataset_names(),
                      help="a dataset by name (downloaded once into ~/.cache/tfclassify/datasets)")
    data.add_argument("--data-dir", type=Path, help="folder holding the dataset files (downloaded by hand)")
    data.add_argument("--npz", type=Path, help="one .npz file holding x_train, y_train (and x_test, y_test)")
    data.add_argument("--npz-keys", default="x_train,y_train,x_test,y_test", metavar="X,Y,XT,YT",
                      help="array names inside --npz [default: %(default)s]")
    data.add_argument("--train-images", type=Path, help="IDX or .npz file of uint8 images [N, H, W] or [N, H, W, 3] (or [N, 784])")
    data.add_argument("--train-labels", type=Path, help="IDX or .npz file of their integer labels")
    data.add_argument("--test-images", type=Path, help="test images (else --test-fraction is held out)")
    data.add_argument("--test-labels", type=Path, help="test labels")
    data.add_argument("--images", type=Path,
                      help="folder, .zip or .tar of image files in one folder per class (Shirt/0001.png)")
    data.add_argument("--image-size", metavar="H[,W]",
                      help="--images: the size files are resized to (as the scorer resizes them: colour bilinear, "
                      "grayscale Lanczos, aspect ratio not kept) [default: 28]")
    data.add_argument("--channels", choices=("auto", "1", "3"),
                      help="--images: 1 (grayscale, inverted to light-on-dark when the border is light, as the "
                      "scorer does), 3 (RGB), or auto: 3 when any file is colour (any Pillow mode but grayscale "
                      "1, L, LA, I, I;16, F: palette images count as colour), else 1 [default: auto]")
    data.add_argument("--class-names", help="class names of array data, comma-separated, or @FILE (one per line)")
    data.add_argument("--test-fraction", type=float, default=0.2,
                      help="share held out as the test set when the data has none [default: %(default)s]")
    parser.add_argument("--model-repo", type=Path, required=True, help="model repository folder")
    parser.add_argument("--name", help="model name in the repository (default: the dataset's or file's name)")
    parser.add_argument("--arch", default="mlp512", choices=[*ARCHITECTURES, *ALIASES],
                        help="architecture (mlp is the old name of mlp512) [default: %(default)s]")
    tl = parser.add_argument_group("transfer learning (mobilenetv3small, mobilenetv3large, efficientnetv2b0)")
    tl.add_argument("--weights", metavar="imagenet|none|FILE",
                    help="the backbone's starting weights: imagenet (downloaded by Keras once, into ~/.keras/models), "
                    "none (random), or a .weights.h5 (or Keras .h5) file of the backbone alone, built with "
                    "include_top=False, e.g. keras.applications.MobileNetV3Small(include_top=False)"
                    ".save_weights(FILE) or Keras' own *no_top* download [default: imagenet]")
    tl.add_argument("--fine-tune-epochs", type=int, metavar="N",
                    help="epochs of fine-tuning after the frozen --epochs; 0: the head only [default: 5]")
    tl.add_argument("--fine-tune-layers", type=_layers, metavar="N|all",
                    help="how many of the backbone's top layers are fine-tuned (BatchNormalization layers stay "
                    "frozen and in inference mode) [default: 30, 40, 50 for the three backbones]")
    tl.add_argument("--fine-tune-learning-rate", type=float, metavar="RATE",
                    help="learning rate of the fine-tuning phase (--learning-rate is the head's) [default: 1e-5]")
    parser.add_argument("--augment", type=_augmentations, default=(), metavar=",".join(AUGMENTATIONS),
                        help="random augmentation as Keras preprocessing layers inside the model, active in training "
                        "only (the exported model answers as without them), any architecture: flip (horizontal), "
                        "rotation (up to 36 degrees), zoom (10%%), contrast (20%%) [default: none]")
    hyper = parser.add_argument_group("training (default: the architecture's own)")
    hyper.add_argument("--recipe", choices=RECIPES, default="tutorial",
                       help="the settings flags start from: the architecture's tutorial, or our tuned recipe "
                       "(more epochs, cosine decay) where it has one [default: %(default)s]")
    hyper.add_argument("--optimizer", choices=OPTIMIZERS)
    hyper.add_argument("--learning-rate", type=float)
    hyper.add_argument("--schedule", choices=SCHEDULES,
                       help="learning rate: constant, cosine decay to 0, or exponential decay to a tenth")
    hyper.add_argument("--batch-size", type=int)
    hyper.add_argument("--epochs", type=int)
    hyper.add_argument("--steps", type=int, help="optimizer steps instead of epochs")
    hyper.add_argument("--dropout", type=float, help="rate of the architecture's dropout layers")
    hyper.add_argument("--l2", type=float, help="L2 weight decay on every kernel")
    hyper.add_argument("--validation-split", type=float, default=0.0,
                       help="share of the training images held out for validation [default: %(default)s]")
    hyper.add_argument("--early-stopping", type=int, default=0, metavar="EPOCHS",
                       help="stop when the validation loss has not improved for this many epochs, keeping the "
                       "best weights (needs --validation-split) [default: off]")
    hyper.add_argument("--seed", type=int, default=0, help="random seed: the same seed on the same CPU gives the "
                       "same weights [default: %(default)s]")
    parser.add_argument("--devices", default="auto",
                        help="auto (every GPU, mirrored, when there are several), one, or a list to mirror over "
                        "(GPU:0,GPU:1) [default: %(default)s]")
    parser.add_argument("--cpu-devices", type=int, default=1, help=argparse.SUPPRESS)  # tests: mirror over CPUs
    parser.add_argument("--compare-seconds", type=float, default=2.0, help=argparse.SUPPRESS)  # tests: shorter
    parser.add_argument("--version", type=int, help="version to export as (default: the next free one)")
    parser.add_argument("--train-limit", type=int, help="train on the first N training images only")
    parser.add_argument("--compare", metavar="ARCH,ARCH|all",
                        help="train each of these architectures on the same data (model NAME-ARCH each) and "
                        "print a table: accuracy, parameters, seconds per epoch, inference images/s; all: every "
                        "architecture trained from scratch (name transfer-learning ones to add them)")
    parser.add_argument("--log-level", type=str.upper, default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="logging level; DEBUG also shows TensorFlow's harmless C++ notices [default: %(default)s]")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tfclassify.trainer.config import TrainConfig
    from tfclassify.trainer.data import DataError, DataSource, load_training_data

    keys = tuple(k.strip() for k in args.npz_keys.split(","))
    if len(keys) != 4:
        raise CliError(f"--npz-keys: expected 4 comma-separated names, got {args.npz_keys!r}")
    source = DataSource(
        dataset=args.dataset, data_dir=args.data_dir, npz=args.npz, npz_keys=keys, train_images=args.train_images,
        train_labels=args.train_labels, test_images=args.test_images, test_labels=args.test_labels,
        images=args.images, class_names=_class_names(args.class_names), test_fraction=args.test_fraction,
        seed=args.seed, **_image_options(args),
    )
    config = TrainConfig(
        source=source, model_repo=args.model_repo, model_name=args.name, arch=args.arch, recipe=args.recipe,
        optimizer=args.optimizer,
        learning_rate=args.learning_rate, schedule=args.schedule, batch_size=args.batch_size, epochs=args.epochs,
        steps=args.steps, dropout=args.dropout, l2=args.l2, fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_layers=args.fine_tune_layers, fine_tune_learning_rate=args.fine_tune_learning_rate,
        weights=args.weights, augment=args.augment, validation_split=args.validation_split,
        early_stopping=args.early_stopping, version=args.version, train_limit=args.train_limit, seed=args.seed,
        devices=args.devices, cpu_devices=args.cpu_devices,
    )
    try:
        # Bad flags and bad data fail here, in a second, before TensorFlow is imported.
        config.hyperparameters()
        names = [config.arch]
        if args.compare:
            names = ([a.name for a in ARCHITECTURES.values() if not a.transfer] if args.compare == "all"
                     else [a.strip() for a in args.compare.split(",")])
            for name in names:
                dataclasses.replace(config, arch=name).hyperparameters()
        data = load_training_data(source)
    except (DataError, DatasetNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from None
    _print_skipped(data.skipped)
    quiet_tensorflow()
    logging.getLogger().setLevel(args.log_level)
    with tensorflow_noise_filtered(args.log_level):  # for the whole run: training logs its own harmless "errors"
        try:
            from tfclassify.trainer.comparison import compare, comparison_table
            from tfclassify.trainer.train import train
        except ImportError as exc:
            raise CliError(f"tfclassify train needs the trainer extra ({exc}): "
                           "pip install 'tfclassify[trainer]'") from exc
        try:
            if args.compare:
                print(comparison_table(compare(config, names, data, args.compare_seconds)))
                return 0
            result = train(config, data)
        except (FileExistsError, ValueError) as exc:  # an existing version; a device --devices names that is not
            # here; a backbone's weights that cannot be downloaded or loaded
            raise CliError(str(exc)) from None
    print(
        f"exported {result.version_dir} (version {result.version}): test accuracy {result.test_accuracy:.4f}, "
        f"trained in {result.train_seconds:.1f} s ({result.seconds_per_epoch:.1f} s per epoch), "
        f"{result.parameters:,} parameters"
    )
    return 0


def _print_skipped(skipped: list[tuple[str, str]], show: int = 10) -> None:
    """The files of --images left out (not images, or outside a class folder), as ``score`` lists its skipped
    files: the count, then the first few with their reasons. The model card counts them too."""
    if not skipped:
        return
    print(f"{counted(len(skipped), 'file')} skipped (not trained on):")
    for source, reason in skipped[:show]:
        print(f"  {source}: {reason}")
    if len(skipped) > show:
        print(f"  ... and {len(skipped) - show:,} more")


def _image_options(args: argparse.Namespace) -> dict:
    """``image_size`` and ``channels`` of a ``DataSource`` from --image-size and --channels (--images only)."""
    options: dict = {}
    if args.image_size is None and args.channels is None:
        return options
    if args.images is None:
        raise CliError("--image-size and --channels apply to --images only (other data is 28 x 28 grayscale)")
    if args.image_size is not None:
        options["image_size"] = _image_size(args.image_size)
    if args.channels not in (None, "auto"):
        options["channels"] = int(args.channels)
    return options


def _image_size(value: str) -> tuple[int, int]:
    parts = value.split(",")
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2) or min(sides) < 1 or max(sides) > 4096:
        raise CliError(f"--image-size: expected H or H,W in pixels (1 to 4096), got {value!r}")
    return (sides[0], sides[-1])


def _layers(value: str) -> int:
    """``--fine-tune-layers``: a count, or all (0)."""
    if value == "all":
        return 0
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a number of layers (1 or more) or all, got {value!r}")
    return count


def _augmentations(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected some of {','.join(AUGMENTATIONS)}, comma-separated, got {value!r}")
    return names


def _class_names(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if value.startswith("@"):
        path = Path(value[1:])
        if not path.is_file():
            raise CliError(f"--class-names: {path}: no such file")
        return tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return tuple(name.strip() for name in value.split(","))
