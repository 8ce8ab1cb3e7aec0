"""Reading the server's model config file (``tfclassify serve --model-config``): a ``tfclassify.v1.ServerConfig``
in protobuf text format or, for a ``.json`` file, JSON. The server reads it at every poll; ``tfclassify
promote`` reads it to move a version label."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import json_format, text_format

from tfclassify.v1 import model_config_pb2 as config_pb


class ModelConfigError(ValueError):
    """The model config file cannot be read, or is inconsistent."""


def read_model_config(path: Path) -> config_pb.ServerConfig:
    """Parse the file at ``path`` (``.json``: JSON; anything else: text format); ``ModelConfigError`` if it
    cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelConfigError(f"cannot read model config {path}: {exc.strerror or exc}") from exc
    config = config_pb.ServerConfig()
    try:
        if path.suffix == ".json":
            json_format.Parse(text, config)
        else:
            text_format.Parse(text, config)
    except (text_format.ParseError, json_format.ParseError) as exc:
        raise ModelConfigError(f"{path}: {exc}") from exc
    return config
