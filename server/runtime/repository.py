"""The model repository layout the server reads, as the server's modules name it: the layout itself (file names,
version folders, ``next_version``) lives in ``tfclassify.common.repository``, shared with the trainer that writes
it, so neither imports the other. Stdlib only: no TensorFlow import."""

from tfclassify.common.repository import (  # re-exported for the server's modules
    GOLDEN_FILE,
    LABELS_FILE,
    METADATA_FILE,
    SAVED_MODEL_FILE,
    IgnoredFolder,
    VersionDir,
    model_folders,
    model_versions,
    next_version,
)

__all__ = [
    "GOLDEN_FILE",
    "LABELS_FILE",
    "METADATA_FILE",
    "SAVED_MODEL_FILE",
    "IgnoredFolder",
    "VersionDir",
    "model_folders",
    "model_versions",
    "next_version",
]
