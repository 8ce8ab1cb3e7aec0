"""One loaded SavedModel version, called through its signature's concrete function.

Any SavedModel whose serving signature takes one batch of 28x28-style images
(uint8 or float; ``[N, H, W]``, ``[N, H, W, 1]`` or ``[N, H*W]``) and returns
class scores is served: our trainer's exports, a Keras ``Model.export()`` or
a ``tf.saved_model.save`` of a classifier. Outputs that are not probabilities
(logits) are turned into probabilities with a softmax.
"""

from __future__ import annotations

import bisect
import functools
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import saved_model_pb2

from tfclassify.server.errors import ModelLoadError
from tfclassify.server.repository import GOLDEN_FILE, VersionDir

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
#: Output names tried first, in order, when a signature returns several tensors.
_PREFERRED_OUTPUTS = ("probabilities", "probs", "predictions", "scores", "logits", "output_0")
_FLOAT_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)


@dataclass
class ModelRuntime:
    """A loaded, callable model version. ``predict`` is thread-safe."""

    name: str
    version: int
    path: str
    device: str
    signature_name: str
    input_key: str
    #: Shape of one image as the signature takes it, e.g. (28, 28) or (784,).
    input_shape: tuple[int, ...]
    input_dtype: tf.DType
    #: Factor applied to uint8 pixels fed to a float-input model.
    input_scale: float
    output_key: str
    #: "probabilities" or "logits".
    output_kind: str
    #: Every output of the signature that has one row per image: name -> (dtype, shape of one row).
    outputs: dict[str, tuple[np.dtype, tuple[int, ...]]]
    labels: list[str]
    training_metadata: dict
    #: The served signature as a serialized ``tensorflow.SignatureDef`` (for TensorFlow Serving's metadata).
    signature_def: bytes = b""
    load_seconds: float = 0.0
    #: Padded batch sizes with an XLA-compiled program, ascending (empty: XLA off).
    xla_batch_sizes: tuple[int, ...] = ()
    _compiled: object = field(default=None, repr=False)
    _function: object = field(default=None, repr=False)
    _loaded: object = field(default=None, repr=False)  # keeps the SavedModel's variables alive

    @functools.cached_property  # read per request; the signature does not change
    def image_size(self) -> tuple[int, int]:
        """(height, width) of one image."""
        if len(self.input_shape) == 1:
            side = math.isqrt(self.input_shape[0])
            return side, side
        return self.input_shape[0], self.input_shape[1]

    @functools.cached_property
    def label_array(self) -> np.ndarray:
        """``labels`` as a numpy object array, for indexing by class arrays."""
        return np.asarray(self.labels, dtype=object)

    @functools.cached_property
    def mean_label_bytes(self) -> int:
        """The mean length of a label in UTF-8 (rounded up), for estimating the size of answers."""
        return -(-sum(len(label.encode()) for label in self.labels) // max(1, len(self.labels)))

    @functools.cached_property  # read per request, and comparing tf.DTypes takes microseconds
    def takes_float(self) -> bool:
        """Whether the signature takes float pixels (else uint8)."""
        return self.input_dtype != tf.uint8

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities ``[N, C]`` (float32) for uint8 or float32 images ``[N, H, W]``."""
        return self.probabilities(self.run(self.as_model_input(images)))

    def as_model_input(self, images: np.ndarray) -> np.ndarray:
        """``images`` in the dtype the batching queue holds for this model.

        uint8 pixels stay uint8 for uint8 models and become float32 times
        ``input_scale`` for float models; float32 images go to float models
        as they are. Converting before queueing keeps every batch one dtype.
        """
        if self.takes_float and images.dtype == np.uint8:
            return images.astype(np.float32) * np.float32(self.input_scale)
        return images

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """The signature's per-image outputs (``outputs``) for a batch ``[N, H, W]``
        already in the model's input dtype (see ``as_model_input``)."""
        n = len(images)
        x = images.reshape((n, *self.input_shape))
        sizes = self.xla_batch_sizes
        with tf.device(self.device):
            if sizes and n <= sizes[-1]:
                padded = sizes[bisect.bisect_left(sizes, n)]
                if padded != n:  # zero rows up to the compiled size; their outputs are dropped
                    x = np.concatenate([x, np.zeros((padded - n, *x.shape[1:]), x.dtype)])
                results = self._compiled(tf.constant(x, dtype=self.input_dtype))
            else:
                results = self._function(**{self.input_key: tf.constant(x, dtype=self.input_dtype)})
        if not isinstance(results, dict):
            results = {"output_0": results}
        return {k: results[k].numpy()[:n] for k in self.outputs} if self.outputs else {
            k: v.numpy()[:n] for k, v in results.items()  # while probing, before ``outputs`` is known
        }

    def probabilities(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """Class probabilities ``[N, C]`` (float32) from the outputs of ``run``."""
        scores = outputs[self.output_key].astype(np.float32, copy=False)
        return softmax(scores) if self.output_kind == "logits" else scores

    def compile_small_batches(self, max_batch_size: int) -> bool:
        """XLA-compile the model for batches of 1, 2, 4 ... ``max_batch_size`` images.

        TensorFlow's per-call overhead dominates small batches (0.4-0.7 ms
        for the MLP here); one fused XLA program per padded size cuts it by
        about half. Batches are padded up to the next compiled size, so
        the set of shapes, and of compilations, stays fixed. Returns False
        (and keeps the plain path) when the model does not compile.
        """
        if max_batch_size < 1:
            return False
        function, key = self._function, self.input_key

        @tf.function(jit_compile=True)
        def compiled(images: tf.Tensor) -> dict[str, tf.Tensor]:
            return function(**{key: images})

        sizes = tuple(2**i for i in range(max_batch_size.bit_length()) if 2**i <= max_batch_size)
        try:
            with tf.device(self.device):
                for size in sizes:
                    compiled(tf.zeros((size, *self.input_shape), self.input_dtype))
        except Exception as exc:  # an op XLA cannot compile, say: serve without it
            log.warning("%s version %d: XLA compilation failed, serving without it: %s", self.name, self.version, exc)
            return False
        self._compiled, self.xla_batch_sizes = compiled, sizes
        return True


def load_runtime(version_dir: VersionDir, device: str = "/CPU:0") -> ModelRuntime:
    """Load and check one version folder; raises ``ModelLoadError`` with the reason."""
    started = time.monotonic()
    try:
        with tf.device(device):
            loaded = tf.saved_model.load(str(version_dir.path))
    except Exception as exc:  # TensorFlow raises many types for a corrupt SavedModel
        raise ModelLoadError(f"{version_dir.path}: not a loadable SavedModel: {exc}") from exc
    signature_name, function = _pick_signature(loaded, version_dir)
    input_key, input_spec = _pick_input(function, version_dir, signature_name)
    output_key = _pick_output(function, version_dir, signature_name)
    try:
        metadata = version_dir.metadata()
        labels = version_dir.labels()
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{version_dir.path}: {exc}") from exc
    runtime = ModelRuntime(
        name=version_dir.model,
        version=version_dir.version,
        path=str(version_dir.path),
        device=device,
        signature_name=signature_name,
        input_key=input_key,
        input_shape=tuple(int(d) for d in input_spec.shape[1:]),
        input_dtype=input_spec.dtype,
        input_scale=float(metadata.get("input_scale", 1.0 if input_spec.dtype == tf.uint8 else 1.0 / 255)),
        output_key=output_key,
        output_kind="probabilities",
        outputs={},
        labels=[],
        training_metadata=metadata,
        _function=function,
        _loaded=loaded,
    )
    num_classes, runtime.output_kind, runtime.outputs = _probe(runtime, metadata.get("output_kind"))
    runtime.signature_def = _read_signature_def(version_dir, signature_name)
    runtime.labels = labels if labels is not None else [str(i) for i in range(num_classes)]
    if len(runtime.labels) != num_classes:
        raise ModelLoadError(
            f"{version_dir.path}: labels.txt names {len(runtime.labels)} classes but the model outputs {num_classes}"
        )
    runtime.load_seconds = time.monotonic() - started
    return runtime


def warm_up(runtime: ModelRuntime, batch_sizes: tuple[int, ...], repeats: int = 3) -> None:
    """Run a few batches of each size, so the first real request does not pay
    for TensorFlow's lazy initialisation (kernel selection, thread pools, memory)."""
    height, width = runtime.image_size
    for size in batch_sizes:
        images = np.zeros((size, height, width), np.uint8)
        for _ in range(repeats):
            runtime.predict(images)


def check_golden_set(runtime: ModelRuntime, version_dir: VersionDir) -> None:
    """If the version ships ``golden.npz`` (``images``, ``labels``, optional
    ``min_accuracy``, default 1.0), require the model to classify it that well."""
    path = version_dir.path / GOLDEN_FILE
    if not path.is_file():
        return
    try:
        with np.load(path, allow_pickle=False) as golden:
            images, labels = golden["images"], golden["labels"]
            min_accuracy = float(golden["min_accuracy"]) if "min_accuracy" in golden.files else 1.0
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{path}: unreadable golden set (needs arrays images and labels): {exc}") from exc
    predicted = runtime.predict(images).argmax(axis=1)
    correct = int(np.sum(predicted == labels))
    if correct < min_accuracy * len(labels):
        raise ModelLoadError(
            f"{path}: the model classifies {correct} of {len(labels)} golden images correctly; "
            f"at least {min_accuracy:.0%} are required"
        )


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _pick_signature(loaded, version_dir: VersionDir):
    signatures = dict(loaded.signatures)
    if DEFAULT_SIGNATURE in signatures:
        return DEFAULT_SIGNATURE, signatures[DEFAULT_SIGNATURE]
    if len(signatures) == 1:
        return next(iter(signatures.items()))
    raise ModelLoadError(
        f"{version_dir.path}: no {DEFAULT_SIGNATURE!r} signature "
        f"(signatures: {', '.join(signatures) or 'none'}); export one with tf.saved_model.save(..., signatures=...)"
    )


def _pick_input(function, version_dir: VersionDir, signature_name: str):
    args, kwargs = function.structured_input_signature
    specs = {**{str(i): a for i, a in enumerate(args)}, **kwargs}
    if len(specs) != 1:
        raise ModelLoadError(
            f"{version_dir.path}: signature {signature_name!r} takes {len(specs)} inputs ({', '.join(specs)}); "
            "an image classifier takes exactly one batch of images"
        )
    key, spec = next(iter(specs.items()))
    dims = spec.shape.as_list() if spec.shape.rank is not None else None
    ok_rank = dims is not None and (
        (len(dims) == 2 and dims[1] and math.isqrt(dims[1]) ** 2 == dims[1])
        or (len(dims) == 3 and all(dims[1:]))
        or (len(dims) == 4 and all(dims[1:3]) and dims[3] == 1)
    )
    if not ok_rank or (spec.dtype != tf.uint8 and spec.dtype not in _FLOAT_DTYPES):
        raise ModelLoadError(
            f"{version_dir.path}: signature {signature_name!r} input {key!r} is {spec.dtype.name} {dims}; "
            "expected uint8 or float images [N, H, W], [N, H, W, 1] or [N, H*W]"
        )
    return key, spec


def _pick_output(function, version_dir: VersionDir, signature_name: str) -> str:
    outputs = function.structured_outputs
    if not isinstance(outputs, dict):
        outputs = {"output_0": outputs}
    candidates = {
        k: s
        for k, s in outputs.items()
        if isinstance(s, tf.TensorSpec) and s.dtype in _FLOAT_DTYPES and s.shape.rank == 2 and (s.shape[1] or 0) >= 2
    }
    for key in _PREFERRED_OUTPUTS:
        if key in candidates:
            return key
    if len(candidates) == 1:
        return next(iter(candidates))
    raise ModelLoadError(
        f"{version_dir.path}: signature {signature_name!r} outputs {dict((k, str(v)) for k, v in outputs.items())}; "
        "expected one float tensor of class scores [N, C] (or one named 'probabilities' or 'logits')"
    )


def _probe(
    runtime: ModelRuntime, declared_kind: str | None
) -> tuple[int, str, dict[str, tuple[np.dtype, tuple[int, ...]]]]:
    """Run a small batch: checks the model works, counts its classes, tells
    probabilities from logits (unless the version's metadata declares it) and
    finds the outputs with one row per image."""
    height, width = runtime.image_size
    rng = np.random.default_rng(0)
    probe = np.concatenate(
        [np.zeros((1, height, width), np.uint8), np.full((1, height, width), 255, np.uint8),
         rng.integers(0, 256, (6, height, width), dtype=np.uint8)]
    )
    runtime.output_kind = "probabilities"
    try:
        outputs = runtime.run(runtime.as_model_input(probe))
    except Exception as exc:
        raise ModelLoadError(f"{runtime.path}: a test batch of {len(probe)} images failed: {exc}") from exc
    scores = outputs[runtime.output_key]
    if scores.ndim != 2 or scores.shape[0] != len(probe):
        raise ModelLoadError(f"{runtime.path}: output has shape {list(scores.shape)} for {len(probe)} images")
    # Outputs without one row per image (a constant, say) cannot be split between the requests of a batch.
    # The class scores first, then the rest by name: a stable order for metadata and responses.
    names = [runtime.output_key, *sorted(k for k in outputs if k != runtime.output_key)]
    per_image = {
        k: (outputs[k].dtype, outputs[k].shape[1:])
        for k in names
        if outputs[k].ndim >= 1 and outputs[k].shape[0] == len(probe)
    }
    if declared_kind in ("probabilities", "logits"):
        return scores.shape[1], declared_kind, per_image
    looks_like_probabilities = (
        "logit" not in runtime.output_key.lower()
        and bool(np.all(scores >= 0) and np.all(scores <= 1))
        and bool(np.allclose(scores.sum(axis=1), 1.0, atol=1e-3))
    )
    return scores.shape[1], "probabilities" if looks_like_probabilities else "logits", per_image


def _read_signature_def(version_dir: VersionDir, signature_name: str) -> bytes:
    """The served ``SignatureDef`` from ``saved_model.pb``, serialized (b"" if it cannot be read)."""
    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString((version_dir.path / "saved_model.pb").read_bytes())
        signatures = saved_model.meta_graphs[0].signature_def
        if signature_name not in signatures:
            raise KeyError(signature_name)
        return signatures[signature_name].SerializeToString()
    except (OSError, IndexError, KeyError, ValueError, DecodeError) as exc:
        log.warning("%s: cannot read signature %r from saved_model.pb: %s", version_dir.path, signature_name, exc)
        return b""
