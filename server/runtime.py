"""One loaded SavedModel version, run the way TensorFlow Serving runs it: its graph in a session.

Any SavedModel whose serving signature takes one batch of 28x28-style images
(uint8 or float; ``[N, H, W]``, ``[N, H, W, 1]`` or ``[N, H*W]``) and returns
class scores is served: our trainer's exports, a Keras ``Model.export()`` or
a ``tf.saved_model.save`` of a classifier. Outputs that are not probabilities
(logits) are turned into probabilities with a softmax.

Why a session and not ``tf.saved_model.load``'s signature function: for the
small batches a server mostly runs, TensorFlow's fixed cost per call is most of
the call. A session's callable takes and returns numpy arrays without the
signature's structured-argument handling, and can run a small batch's graph in
the calling thread instead of handing it to the inter-op thread pool and back
(two thread wake-ups, ~100 µs each on a busy VM). On our 2-core machine a
batch-1 call took ~30% less CPU and 0.2-0.3 ms less wall time inside the server.
"""

from __future__ import annotations

import bisect
import functools
import logging
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2

from tfclassify.server.errors import ModelLoadError
from tfclassify.server.repository import GOLDEN_FILE, VersionDir

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
#: Output names tried first, in order, when a signature returns several tensors.
_PREFERRED_OUTPUTS = ("probabilities", "probs", "predictions", "scores", "logits", "output_0")
_FLOAT_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
#: Batches up to this size run their graph in the calling thread (``inter_op_thread_pool=-1``): for them the
#: hand-off to TensorFlow's inter-op pool costs more than it saves. Larger batches run on the pool, so the
#: independent branches of a graph can still run at once.
CALLER_THREAD_MAX_BATCH = 64
_IN_CALLER_THREAD = config_pb2.RunOptions(inter_op_thread_pool=-1)
_ON_THREAD_POOL = config_pb2.RunOptions()


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
    _session: tf.compat.v1.Session | None = field(default=None, repr=False)
    _signature: meta_graph_pb2.SignatureDef | None = field(default=None, repr=False)
    #: (output names, the session callable fetching them): every output until ``outputs`` is known.
    _fetch: tuple[list[str], object] | None = field(default=None, repr=False)
    _compiled: object = field(default=None, repr=False)
    _loaded: object = field(default=None, repr=False)  # XLA only: the TF2 object whose variables it reads

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

    @functools.cached_property
    def _numpy_input_dtype(self) -> np.dtype:
        return np.dtype(self.input_dtype.as_numpy_dtype)

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
        x = images.reshape((n, *self.input_shape)).astype(self._numpy_input_dtype, copy=False)
        sizes = self.xla_batch_sizes
        if sizes and n <= sizes[-1]:
            padded = sizes[bisect.bisect_left(sizes, n)]
            if padded != n:  # zero rows up to the compiled size; their outputs are dropped
                x = np.concatenate([x, np.zeros((padded - n, *x.shape[1:]), x.dtype)])
            with tf.device(self.device):
                results = self._compiled(tf.constant(x))
            return {k: results[k].numpy()[:n] for k in self.outputs}
        names, fetch = self._fetch
        values = fetch(x, options=_IN_CALLER_THREAD if n <= CALLER_THREAD_MAX_BATCH else _ON_THREAD_POOL)
        return dict(zip(names, values))

    def close(self) -> None:
        """Free the session (the version is unloaded; ``run`` may not be called again)."""
        if self._session is not None:
            self._session.close()

    def probabilities(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """Class probabilities ``[N, C]`` (float32) from the outputs of ``run``."""
        scores = outputs[self.output_key].astype(np.float32, copy=False)
        return softmax(scores) if self.output_kind == "logits" else scores

    def compile_small_batches(self, max_batch_size: int) -> bool:
        """XLA-compile the model for batches of 1, 2, 4 ... ``max_batch_size`` images.

        One fused XLA program per padded size: batches are padded up to the
        next compiled size, so the set of shapes, and of compilations, stays
        fixed. Against the signature function it halved a small batch's call;
        against the session path it is slower on our CPUs (batch 1: 0.71 vs
        0.45 ms), so it is for GPUs, where it is not yet measured. Returns
        False (and keeps the plain path) when the model does not compile.
        """
        if max_batch_size < 1:
            return False
        sizes = tuple(2**i for i in range(max_batch_size.bit_length()) if 2**i <= max_batch_size)
        try:
            # XLA compiles TF2 functions: the version is loaded a second time that way (its weights twice).
            with tf.device(self.device):
                loaded = tf.saved_model.load(self.path)
            function, key = loaded.signatures[self.signature_name], self.input_key

            @tf.function(jit_compile=True)
            def compiled(images: tf.Tensor) -> dict[str, tf.Tensor]:
                return function(**{key: images})

            with tf.device(self.device):
                for size in sizes:
                    compiled(tf.zeros((size, *self.input_shape), self.input_dtype))
        except Exception as exc:  # an op XLA cannot compile, say: serve without it
            log.warning("%s version %d: XLA compilation failed, serving without it: %s", self.name, self.version, exc)
            return False
        self._compiled, self._loaded, self.xla_batch_sizes = compiled, loaded, sizes
        return True


def load_runtime(version_dir: VersionDir, device: str = "/CPU:0") -> ModelRuntime:
    """Load and check one version folder; raises ``ModelLoadError`` with the reason."""
    started = time.monotonic()
    session, meta_graph = _open_session(version_dir, device)
    try:
        runtime = _build_runtime(version_dir, device, session, meta_graph)
    except BaseException:
        session.close()
        raise
    runtime.load_seconds = time.monotonic() - started
    return runtime


def _open_session(version_dir: VersionDir, device: str) -> tuple[tf.compat.v1.Session, meta_graph_pb2.MetaGraphDef]:
    """A session holding the version's ``serve`` graph, every op placed on ``device``."""
    config = config_pb2.ConfigProto(
        allow_soft_placement=True,  # an op without a kernel for ``device`` runs on the CPU
        # The thread pools and CPU devices the server configured for TensorFlow (``configure_threads``,
        # ``configure_devices``), which a session does not inherit.
        intra_op_parallelism_threads=tf.config.threading.get_intra_op_parallelism_threads(),
        inter_op_parallelism_threads=tf.config.threading.get_inter_op_parallelism_threads(),
        device_count={"CPU": len(tf.config.list_logical_devices("CPU"))},
    )
    _mirror_gpu_settings(config.gpu_options)
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=config)
    try:
        with graph.as_default(), graph.device(device), _quiet_v1_loader:
            meta_graph = tf.compat.v1.saved_model.loader.load(
                session, [tf.saved_model.SERVING], str(version_dir.path), clear_devices=True
            )
    except Exception as exc:  # TensorFlow raises many types for a corrupt SavedModel
        session.close()
        raise ModelLoadError(f"{version_dir.path}: not a loadable SavedModel: {exc}") from exc
    return session, meta_graph


def _mirror_gpu_settings(options: config_pb2.GPUOptions) -> None:
    """Give the session the GPU memory settings ``configure_devices`` gave the process (growth, or a per-GPU
    memory limit): TensorFlow keeps one allocator per GPU for the process, created with the first settings."""
    limits = []
    for gpu in tf.config.list_physical_devices("GPU"):
        logical = tf.config.get_logical_device_configuration(gpu) or []
        limits.append([c.memory_limit for c in logical if c.memory_limit is not None])
        if tf.config.experimental.get_memory_growth(gpu):
            options.allow_growth = True
    if any(limits):
        for per_gpu in limits:
            options.experimental.virtual_devices.add().memory_limit_mb.extend(per_gpu)


def _build_runtime(
    version_dir: VersionDir, device: str, session: tf.compat.v1.Session, meta_graph: meta_graph_pb2.MetaGraphDef
) -> ModelRuntime:
    """The runtime of a loaded session: its signature checked, its classes and outputs probed, its labels read."""
    signature_name, signature = _pick_signature(meta_graph, version_dir)
    input_key, input_dtype, input_dims = _pick_input(signature, version_dir, signature_name)
    output_key = _pick_output(signature, version_dir, signature_name)
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
        input_shape=tuple(input_dims[1:]),
        input_dtype=input_dtype,
        input_scale=float(metadata.get("input_scale", 1.0 if input_dtype == tf.uint8 else 1.0 / 255)),
        output_key=output_key,
        output_kind="probabilities",
        outputs={},
        labels=[],
        training_metadata=metadata,
        signature_def=signature.SerializeToString(),
        _session=session,
        _signature=signature,
    )
    runtime._fetch = _fetcher(runtime, list(signature.outputs))
    num_classes, runtime.output_kind, runtime.outputs = _probe(runtime, metadata.get("output_kind"))
    runtime._fetch = _fetcher(runtime, list(runtime.outputs))  # from now on only these are computed
    runtime.labels = labels if labels is not None else [str(i) for i in range(num_classes)]
    if len(runtime.labels) != num_classes:
        raise ModelLoadError(
            f"{version_dir.path}: labels.txt names {len(runtime.labels)} classes but the model outputs {num_classes}"
        )
    return runtime


def _fetcher(runtime: ModelRuntime, names: list[str]) -> tuple[list[str], object]:
    """A session callable feeding the signature's input and fetching its outputs ``names``."""
    signature = runtime._signature
    fetch = runtime._session.make_callable(
        [signature.outputs[k].name for k in names], [signature.inputs[runtime.input_key].name], accept_options=True
    )
    return names, fetch


class _QuietV1Loader(logging.Filter):
    """Drops the v1 loader's deprecation notice and its per-load "Restoring parameters" line: we use that
    loader on purpose (see the module's docstring), and operators have our own load log line."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._loading = 0  # versions being loaded at once (the manager's loader threads)

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not ("Restoring parameters from" in message or "tf.saved_model.load" in message
                    or "is deprecated and will be removed" in message)

    def __enter__(self) -> None:
        with self._lock:
            self._loading += 1
            logging.getLogger("tensorflow").addFilter(self)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._loading -= 1
            if not self._loading:
                logging.getLogger("tensorflow").removeFilter(self)


_quiet_v1_loader = _QuietV1Loader()


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


def _pick_signature(meta_graph: meta_graph_pb2.MetaGraphDef, version_dir: VersionDir):
    signatures = meta_graph.signature_def
    if DEFAULT_SIGNATURE in signatures:
        return DEFAULT_SIGNATURE, signatures[DEFAULT_SIGNATURE]
    served = [k for k in signatures if not k.startswith("__")]  # "__saved_model_init_op" is not a signature
    if len(served) == 1:
        return served[0], signatures[served[0]]
    raise ModelLoadError(
        f"{version_dir.path}: no {DEFAULT_SIGNATURE!r} signature "
        f"(signatures: {', '.join(served) or 'none'}); export one with tf.saved_model.save(..., signatures=...)"
    )


def _dims(info: meta_graph_pb2.TensorInfo) -> list[int | None] | None:
    """The tensor's dimensions (None: unknown), or None for an unknown rank."""
    shape = info.tensor_shape
    return None if shape.unknown_rank else [d.size if d.size >= 0 else None for d in shape.dim]


def _pick_input(signature: meta_graph_pb2.SignatureDef, version_dir: VersionDir, signature_name: str):
    """The one input's key, dtype and dimensions ([None, H, W], say)."""
    if len(signature.inputs) != 1:
        raise ModelLoadError(
            f"{version_dir.path}: signature {signature_name!r} takes {len(signature.inputs)} inputs "
            f"({', '.join(signature.inputs)}); an image classifier takes exactly one batch of images"
        )
    key, info = next(iter(signature.inputs.items()))
    dtype, dims = tf.dtypes.as_dtype(info.dtype), _dims(info)
    ok_rank = dims is not None and (
        (len(dims) == 2 and dims[1] and math.isqrt(dims[1]) ** 2 == dims[1])
        or (len(dims) == 3 and all(dims[1:]))
        or (len(dims) == 4 and all(dims[1:3]) and dims[3] == 1)
    )
    if not ok_rank or (dtype != tf.uint8 and dtype not in _FLOAT_DTYPES):
        raise ModelLoadError(
            f"{version_dir.path}: signature {signature_name!r} input {key!r} is {dtype.name} {dims}; "
            "expected uint8 or float images [N, H, W], [N, H, W, 1] or [N, H*W]"
        )
    return key, dtype, dims


def _pick_output(signature: meta_graph_pb2.SignatureDef, version_dir: VersionDir, signature_name: str) -> str:
    candidates = []
    for key, info in signature.outputs.items():
        dims = _dims(info)
        if tf.dtypes.as_dtype(info.dtype) in _FLOAT_DTYPES and dims is not None and len(dims) == 2 and (dims[1] or 0) >= 2:
            candidates.append(key)
    for key in _PREFERRED_OUTPUTS:
        if key in candidates:
            return key
    if len(candidates) == 1:
        return candidates[0]
    described = {k: f"{tf.dtypes.as_dtype(v.dtype).name} {_dims(v)}" for k, v in signature.outputs.items()}
    raise ModelLoadError(
        f"{version_dir.path}: signature {signature_name!r} outputs {described}; "
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
