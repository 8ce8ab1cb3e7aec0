"""Moving a version label in the server's model config file (``tfclassify serve --model-config``).

The file is a ``tfclassify.v1.ServerConfig`` in protobuf text format or JSON.
It is rewritten whole, to a temporary file that is renamed over it, so the
server (which re-reads it at every poll) sees the old file or the new one,
never a part. The rewrite is canonical: comments and layout are not kept.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import json_format, text_format

from tfclassify.client.atomic import write_atomic
from tfclassify.common.model_config import ModelConfigError, read_model_config
from tfclassify.v1 import model_config_pb2 as config_pb


def set_label(path: Path, model: str, label: str, version: int) -> int | None:
    """Point ``label`` of ``model`` at ``version`` in the file at ``path``; returns the version it named before.

    The file must already list the model (the server serves only the models its config lists).
    """
    config = read_model_config(path)
    entry = _model(config, model, path)
    assert entry is not None  # with a path, _model raises rather than return None
    before = entry.version_labels.get(label)
    entry.version_labels[label] = version
    if path.suffix == ".json":
        text = json_format.MessageToJson(config, indent=2, preserving_proto_field_name=True) + "\n"
    else:
        text = text_format.MessageToString(config)
    write_atomic(path, text)
    return before


def _model(config: config_pb.ServerConfig, model: str, path: Path | None) -> config_pb.ModelConfig | None:
    for entry in config.models:
        if entry.name == model:
            return entry
    if path is None:
        return None
    listed = ", ".join(m.name for m in config.models) or "none"
    raise ModelConfigError(f"{path} does not list model {model!r} (it lists: {listed}); add it before labelling")
