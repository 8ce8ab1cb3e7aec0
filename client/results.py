"""Typed results of the client library's calls."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from tfclassify.common.tensors import dtype_name, from_tensor_proto
from tfclassify.v1 import classifier_pb2 as pb


@dataclass(frozen=True)
class RankedClass:
    """One class with its probability."""

    index: int
    label: str
    score: float


@dataclass(frozen=True)
class Prediction:
    """The classification of one image."""

    index: int
    label: str
    score: float
    #: The best ``top_k`` classes, best first (empty when none were requested).
    top_k: tuple[RankedClass, ...]
    #: The full probability vector, when requested.
    probabilities: np.ndarray | None


@dataclass(frozen=True)
class FeedbackResult:
    """What a ``feedback`` call counted: the version judged, its labelled images and the correct ones."""

    model: str
    version: int
    labelled: int
    correct: int

    @classmethod
    def from_proto(cls, response: pb.FeedbackResponse) -> FeedbackResult:
        return cls(response.model_spec.name, response.model_spec.version, response.labelled, response.correct)


@dataclass(frozen=True)
class ClassifyResult:
    """The classification of a batch of N images, as numpy columns.

    ``result[i]`` gives image i as a ``Prediction``; iterate for all.
    """

    model: str
    version: int
    classes: np.ndarray  # [N] int32
    scores: np.ndarray  # [N] float32
    labels: list[str]  # [N] ("" when requested with omit_labels)
    top_k_classes: np.ndarray  # [N, k] int32
    top_k_scores: np.ndarray  # [N, k] float32
    top_k_labels: list[tuple[str, ...]]  # [N][k]
    probabilities: np.ndarray | None  # [N, C] float32

    @classmethod
    def from_proto(cls, response: pb.ClassifyResponse) -> ClassifyResult:
        """Build from a ``ClassifyResponse`` message."""
        n, k = len(response.classes), response.top_k
        flat_labels = list(response.top_k_labels) or [""] * (n * k)
        top_k_labels: list[tuple[str, ...]] = [tuple(flat_labels[i * k : (i + 1) * k]) for i in range(n)] if k else [()] * n
        return cls(
            model=response.model_spec.name,
            version=response.model_spec.version,
            classes=np.asarray(response.classes, dtype=np.int32),
            scores=np.asarray(response.scores, dtype=np.float32),
            labels=list(response.labels) or [""] * n,
            top_k_classes=np.asarray(response.top_k_classes, dtype=np.int32).reshape(n, k),
            top_k_scores=np.asarray(response.top_k_scores, dtype=np.float32).reshape(n, k),
            top_k_labels=top_k_labels,
            probabilities=from_tensor_proto(response.probabilities) if response.HasField("probabilities") else None,
        )

    def __len__(self) -> int:
        return len(self.classes)

    def __getitem__(self, i: int) -> Prediction:
        ranked = tuple(
            RankedClass(int(c), label, float(s))
            for c, s, label in zip(self.top_k_classes[i], self.top_k_scores[i], self.top_k_labels[i])
        )
        probs = self.probabilities[i] if self.probabilities is not None else None
        return Prediction(int(self.classes[i]), self.labels[i], float(self.scores[i]), ranked, probs)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


@dataclass(frozen=True)
class ModelInfo:
    """What ``GetModelMetadata`` tells about one model version."""

    name: str
    version: int
    versions: tuple[int, ...]
    input_shape: tuple[int, ...]
    input_dtype: str
    input_scale: float
    labels: tuple[str, ...]
    output_kind: str
    signature_name: str
    training_metadata: dict
    device: str
    #: How the server runs the version: "session" or "function" (a SavedModel a session cannot run).
    runtime: str = "session"
    #: Channels of one image: 1 (grayscale), 3 (RGB) or 4 (RGBA); 0 for a model that takes encoded files
    #: (``input_dtype`` STRING) and decodes them in its graph.
    channels: int = 1
    #: What the model expects of images. How files of another size are resized to it: ``resize`` ("stretch",
    #: "crop" or "pad"), ``crop_fraction`` (the central share of each side kept) and ``interpolation`` ("":
    #: bilinear for colour, Lanczos for one channel); what a float-input model gets of uint8 pixels: ``scale``,
    #: ``offset``, ``mean``, ``std`` (per channel, or one value; empty: 0 and 1) and ``channel_order`` ("RGB" or
    #: "BGR"). Clients preparing files, or sending float32, apply it.
    preprocessing: dict = field(default_factory=dict)

    @classmethod
    def from_proto(cls, m: pb.ModelMetadata) -> ModelInfo:
        """Build from a ``ModelMetadata`` message."""
        return cls(
            name=m.model_spec.name,
            version=m.model_spec.version,
            versions=tuple(m.versions),
            input_shape=tuple(m.input_shape),
            input_dtype=dtype_name(m.input_dtype),
            input_scale=m.input_scale,
            labels=tuple(m.labels),
            output_kind=m.output_kind,
            signature_name=m.signature_name,
            training_metadata=json.loads(m.training_metadata_json or "{}"),
            device=m.device,
            runtime=m.runtime or "session",
            channels=m.channels,
            preprocessing={"scale": m.preprocessing.scale, "offset": m.preprocessing.offset,
                           "mean": list(m.preprocessing.mean), "std": list(m.preprocessing.std),
                           "channel_order": m.preprocessing.channel_order or "RGB",
                           # A server from before these were declared sends none: its files were stretched.
                           "resize": m.preprocessing.resize or "stretch",
                           "crop_fraction": m.preprocessing.crop_fraction or 1.0,
                           "interpolation": m.preprocessing.interpolation},
        )

    @property
    def num_classes(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class VersionStatus:
    """What ``GetModelStatus`` tells about one model version."""

    name: str
    version: int
    state: str  # LOADING, AVAILABLE, UNLOADING or FAILED
    error: str
    devices: tuple[str, ...]
    labels: tuple[str, ...]
    load_seconds: float

    @classmethod
    def from_proto(cls, m: pb.ModelVersionStatus) -> VersionStatus:
        """Build from a ``ModelVersionStatus`` message."""
        return cls(
            name=m.name,
            version=m.version,
            state=pb.ModelVersionStatus.State.Name(m.state),
            error=m.error,
            devices=tuple(m.devices),
            labels=tuple(m.labels),
            load_seconds=m.load_seconds,
        )


@dataclass(frozen=True)
class RepositoryStatus:
    """Every version's state, and the repository folders the server does not serve (name, reason)."""

    versions: tuple[VersionStatus, ...]
    ignored_folders: tuple[tuple[str, str], ...]

    @classmethod
    def from_proto(cls, m: pb.GetModelStatusResponse) -> RepositoryStatus:
        """Build from a ``GetModelStatusResponse`` message."""
        return cls(tuple(VersionStatus.from_proto(v) for v in m.versions),
                   tuple((f.name, f.reason) for f in m.ignored_folders))
