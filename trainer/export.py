"""Export a trained Keras model as a new version of the model repository, atomically."""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf

from tfclassify.common.repository import LABELS_FILE, METADATA_FILE, next_version
from tfclassify.trainer.data import IMAGE_SHAPE

log = logging.getLogger(__name__)

SIGNATURE_NAME = "serving_default"


def export_version(
    model: keras.Model,
    model_dir: Path,
    labels: list[str] | tuple[str, ...],
    metadata: dict,
    version: int | None = None,
    extra_files: dict[str, Callable[[int], bytes]] | None = None,
    softmax: bool = False,
    input_shape: tuple[int, ...] = IMAGE_SHAPE,
) -> Path:
    """Write ``model`` as ``<model_dir>/<version>/`` and return that folder.

    The serving signature takes uint8 ``images [N, *input_shape]`` (``[N, H, W]`` or ``[N, H, W, C]``) and returns
    ``probabilities [N, C]`` and ``classes [N]`` (``softmax``: the model
    returns logits, and the signature applies the softmax). ``extra_files``
    maps file names to their contents, made from the version number.
    Everything is written into a hidden ``.tmp-*`` folder first and renamed
    into place, so a reader never sees a half-written version; an existing
    version is never replaced.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(model_dir) if version is None else version
    final = model_dir / str(version)
    if final.exists():
        raise FileExistsError(f"{final} already exists: versions are never overwritten")
    tmp = model_dir / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    try:
        _write_saved_model(model, tmp, softmax, input_shape)
        (tmp / LABELS_FILE).write_text("\n".join(labels) + "\n", encoding="utf-8")
        (tmp / METADATA_FILE).write_text(json.dumps({**metadata, "version": version}, indent=2, ensure_ascii=False)
                                         + "\n", encoding="utf-8")
        for name, contents in (extra_files or {}).items():
            (tmp / name).write_bytes(contents(version))
        _fsync_tree(tmp)
        os.rename(tmp, final)  # atomic on one filesystem; fails if `final` appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s", final)
    return final


def _write_saved_model(model: keras.Model, path: Path, softmax: bool, input_shape: tuple[int, ...]) -> None:
    input_spec = tf.TensorSpec([None, *input_shape], tf.uint8, name="images")

    @tf.function(input_signature=[input_spec])
    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = model(images, training=False)
        if softmax:
            probabilities = tf.nn.softmax(probabilities)
        return {"probabilities": probabilities, "classes": tf.argmax(probabilities, axis=-1, output_type=tf.int32)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE_NAME, serve)
    archive.write_out(str(path), verbose=False)


def _fsync_tree(root: Path) -> None:
    """Flush every file so the rename cannot expose a version whose data is still in flight."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
