"""The model card of an exported version: what it was trained on, how, how well, where it fails, and on what
machine. Written as ``model_card.md`` for people and as the version's ``tfclassify.json`` (which
``GetModelMetadata`` and ``tfclassify models NAME`` return)."""

from __future__ import annotations

import platform
import sys

import numpy as np

#: The card's JSON layout; raised when a field changes meaning.
CARD_SCHEMA_VERSION = 1


def evaluation(y_true: np.ndarray, y_pred: np.ndarray, class_names: tuple[str, ...], top_pairs: int = 5) -> dict:
    """Test accuracy, per-class accuracy (recall) and the most-confused pairs of one set of predictions."""
    n = len(class_names)
    confusion = np.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n)
    support = confusion.sum(axis=1)
    per_class = [{"class": class_names[i], "images": int(support[i]),
                  "accuracy": round(float(confusion[i, i] / support[i]), 6) if support[i] else None}
                 for i in range(n)]
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    pairs = [(int(off[i, j]), i, j) for i in range(n) for j in range(n) if off[i, j]]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    confused = [{"true": class_names[i], "predicted": class_names[j], "images": count,
                 "share_of_true": round(count / int(support[i]), 6)} for count, i, j in pairs[:top_pairs]]
    return {"test_images": len(y_true), "test_accuracy": round(float((y_true == y_pred).mean()), 6),
            "per_class": per_class, "most_confused": confused}


def environment() -> dict:
    """The software and machine a run used."""
    import keras
    import tensorflow as tf

    from tfclassify.common.version import package_version

    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    return {"tfclassify": package_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
            "devices": gpus or ["CPU"]}


def render_markdown(card: dict) -> str:
    """``model_card.md``: the card for people."""
    ev, arch, hp, data = card["evaluation"], card["arch"], card["hyperparameters"], card["data"]
    lines = [
        f"# Model card: {card['model']} version {card['version']}", "",
        f"{arch['name']}: {arch['summary']} ({arch['parameters']:,} parameters). From {arch['source']}.", "",
        "## Data", "",
        f"- Source: {data['source']}; {data['classes']} classes: {', '.join(data['class_names'])}",
        f"- Training images: {data['train_images']:,}; test images: {data['test_images']:,} ({data['test_split']})",
    ]
    if data.get("skipped"):
        lines.append(f"- Files skipped (not images, or outside a class folder): {data['skipped']}")
    lines += [f"- SHA-256 of {name.replace('_', ' ')}: `{digest}`" for name, digest in data["checksums"].items()]
    lines += _input_lines(card.get("input"))
    lines += ["", "## Training", ""]
    lines += [f"- {key.replace('_', ' ')}: {value}" for key, value in hp.items()]
    lines += _transfer_lines(card.get("transfer"))
    augmentation = card["training"].get("augmentation")
    if augmentation:
        lines.append("- Augmentation (training only, inside the exported model): " + ", ".join(
            f"{a['layer']}({', '.join(f'{k}={v}' for k, v in a.items() if k not in ('name', 'layer'))})"
            for a in augmentation))
    lines += [f"- Trained for {card['training']['epochs_run']} epochs ({card['training']['steps']:,} steps) in "
              f"{card['training']['seconds']:.1f} s ({card['training']['seconds_per_epoch']:.1f} s per epoch)"
              + (", stopped early on validation loss" if card["training"]["stopped_early"] else ""),
              f"- Seed {card['seed']}, deterministic ops: {card['deterministic']}",
              "", "## Results on the test set", "",
              f"Accuracy **{ev['test_accuracy']:.4f}** on {ev['test_images']:,} images.", "",
              "| class | images | accuracy |", "|---|---|---|"]
    lines += [f"| {c['class']} | {c['images']:,} | {_fraction(c['accuracy'])} |" for c in ev["per_class"]]
    if ev["most_confused"]:
        lines += ["", "Most confused (true → predicted):", ""]
        lines += [f"- {p['true']} → {p['predicted']}: {p['images']:,} images ({p['share_of_true']:.1%} of "
                  f"{p['true']})" for p in ev["most_confused"]]
    env = card["environment"]
    lines += ["", "## Environment", "",
              f"tfclassify {env['tfclassify']}, TensorFlow {env['tensorflow']}, Keras {env['keras']}, Python "
              f"{env['python']} on {env['platform']} ({', '.join(env['devices'])}); created {card['created']}.", ""]
    return "\n".join(lines)


def _input_lines(described: dict | None) -> list[str]:
    """What the exported signature takes and what the model does to it first."""
    if not described:
        return []
    lines = ["", "## Input", "",
             f"- {described['dtype']} images [N, {', '.join(map(str, described['shape']))}] "
             f"({described['channels']} channel{'s' if described['channels'] != 1 else ''})",
             f"- Preprocessing: {described['rescaling']}"]
    if described.get("inside_model"):
        lines.append(f"- Steps inside the model: {'; '.join(described['inside_model'])}")
    return lines


def _transfer_lines(transfer: dict | None) -> list[str]:
    """Transfer learning: the backbone, its weights, and the two phases."""
    if not transfer:
        return []
    weights = transfer["weights"]
    source = (f"file {weights['file']} (SHA-256 `{weights['sha256']}`)" if weights["source"] == "file"
              else weights["source"])
    return [f"- Backbone: {transfer['backbone']}, weights: {source}",
            f"- Phase 1: {transfer['frozen_epochs']} epochs with the backbone frozen at learning rate "
            f"{transfer['head_learning_rate']} ({transfer['trainable_parameters_frozen']:,} trainable parameters)",
            f"- Phase 2: {transfer['fine_tune_epochs']} epochs fine-tuning the top "
            f"{transfer['fine_tuned_layer_count']} weighted layers of the backbone at learning rate "
            f"{transfer['fine_tune_learning_rate']} ({transfer['trainable_parameters_fine_tune']:,} trainable "
            "parameters)",
            f"- BatchNormalization: {transfer['batch_normalization']}"]


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
