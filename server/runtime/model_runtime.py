"""One loaded SavedModel version, run the way TensorFlow Serving runs it: its graph in a session.

Any SavedModel whose serving signature takes one batch of images of a fixed size, grayscale or colour
(uint8, another integer type or float; ``[N, H, W]``, ``[N, H, W, C]`` with C = 1, 3 or 4, or flattened
``[N, H*W]`` / ``[N, H*W*3]``), and returns class scores is served: our trainer's exports, a Keras
``Model.export()``, ``keras.applications`` networks, or a ``tf.saved_model.save`` of a classifier. Outputs
that are not probabilities (logits) are turned into probabilities with a softmax. Inside the server an
image is ``[H, W, C]`` (``image_shape``); ``run`` reshapes a batch to the signature's own layout.

Two runtimes run a version. The session runtime (below) is the default; a SavedModel it cannot run (a Keras
model held in a ``tf.Module`` and saved with ``tf.saved_model.save`` leaves variables a TF1 session sees as
uninitialized, say) is served by the signature-function runtime: ``tf.saved_model.load`` and the signature's
concrete function, as TensorFlow 2 runs it. ``runtime_kind`` says which; the load log says why once.

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
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2, saved_model_pb2

from tfclassify.common.image_files import ConversionSpec
from tfclassify.server.core.errors import InvalidInputError, ModelLoadError
from tfclassify.server.core.images import MAX_FILE_PIXELS, sample_png
from tfclassify.server.runtime.preprocessing import ARITHMETIC_KEYS, Preprocessing
from tfclassify.server.runtime.repository import GOLDEN_FILE, VersionDir

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
SESSION, FUNCTION = "session", "function"
#: Output names tried first, in order, when a signature returns several tensors.
_PREFERRED_OUTPUTS = ("probabilities", "probs", "predictions", "scores", "logits", "output_0")
_FLOAT_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
#: Pixel dtypes a signature may take: uint8 pixels are fed to integer inputs as they are (cast), and as float32
#: times ``input_scale`` to float inputs.
_PIXEL_DTYPES = (tf.uint8, tf.uint16, tf.int16, tf.int32, tf.int64, *_FLOAT_DTYPES)
#: Channels an image may have: grayscale, RGB, RGBA.
CHANNELS = (1, 3, 4)
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
    #: What a float-input model gets of uint8 pixels (declared in tfclassify.json; 1/255 scaling by default).
    preprocessing: Preprocessing
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
    #: "session" (the graph in a TF1 session) or "function" (``tf.saved_model.load``'s signature function).
    runtime_kind: str = SESSION
    #: Why the session runtime could not serve this version ("" for session versions).
    fallback_reason: str = ""
    _session: tf.compat.v1.Session | None = field(default=None, repr=False)
    _signature: meta_graph_pb2.SignatureDef | None = field(default=None, repr=False)
    #: The session callables fetching the outputs: every output until ``outputs`` is known.
    _fetch: _Fetcher | None = field(default=None, repr=False)
    _compiled: object = field(default=None, repr=False)
    _loaded: object = field(default=None, repr=False)  # function runtime: the TF2 object whose variables it reads
    _xla_loaded: object = field(default=None, repr=False)  # XLA: its own load of the version, likewise
    _function: object = field(default=None, repr=False)  # the signature function (function runtime)

    @functools.cached_property  # read per request; the signature does not change
    def takes_encoded(self) -> bool:
        """Whether the signature takes encoded image files (``tf.string [N]``) and decodes them in its graph."""
        return self.input_dtype == tf.string

    @functools.cached_property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of one image (not for models that take encoded images)."""
        if self.takes_encoded:
            raise ValueError(f"model {self.name!r} takes encoded images: their size is the file's")
        return image_shape_of(self.input_shape)

    @functools.cached_property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of one image."""
        return self.image_shape[:2]

    @functools.cached_property
    def file_spec(self) -> ConversionSpec:
        """How the server decodes a PNG/JPEG file sent for this pixel model: to its size and channels, resized as its
        preprocessing declares (the clients' own conversion, ``tfclassify.common.image_files``)."""
        height, width, channels = self.image_shape
        p = self.preprocessing
        return ConversionSpec(height, width, "no", MAX_FILE_PIXELS, channels, p.resize, p.interpolation or None,
                              p.crop_fraction)

    @property
    def channels(self) -> int:
        """1 (grayscale), 3 (RGB) or 4 (RGBA); 0 for a model that takes encoded images (its graph decides)."""
        return 0 if self.takes_encoded else self.image_shape[2]

    @property
    def input_scale(self) -> float:
        """Factor applied to uint8 pixels fed to a float-input model (1 for integer inputs)."""
        return self.preprocessing.scale if self.takes_float else 1.0

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
        """Whether the signature takes float pixels (else uint8 pixels, cast to its integer type)."""
        return self.input_dtype.is_floating

    @functools.cached_property
    def _numpy_input_dtype(self) -> np.dtype:
        return np.dtype(self.input_dtype.as_numpy_dtype)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities ``[N, C]`` (float32) for uint8 or float32 images ``[N, H, W, C]`` (or any layout of
        the same pixels)."""
        return self.probabilities(self.run(self.as_model_input(images)))

    def as_model_input(self, images: np.ndarray) -> np.ndarray:
        """``images`` in the dtype the batching queue holds for this model.

        uint8 pixels stay uint8 for integer models and become float32 as
        ``preprocessing`` declares for float models; float32 images go to float
        models as they are. Converting before queueing keeps every batch one dtype.
        """
        if self.takes_float and images.dtype == np.uint8:
            return self.preprocessing.apply(images)
        return images  # uint8 for integer models, encoded files (an object array) for string models

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """The signature's per-image outputs (``outputs``) for a batch ``[N, H, W, C]`` (or any layout of the
        same pixels) already in the model's input dtype (see ``as_model_input``)."""
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
        try:
            if self._function is not None:
                with tf.device(self.device):
                    results = self._function(**{self.input_key: tf.constant(x)})
                return {k: results[k].numpy() for k in (self.outputs or results)}
            fetch = self._fetch
            values = (fetch.in_caller_thread if n <= CALLER_THREAD_MAX_BATCH else fetch.on_thread_pool)(x)
            return dict(zip(fetch.names, values))
        except tf.errors.InvalidArgumentError as exc:
            if not self.takes_encoded:
                raise
            # A file its graph cannot decode (truncated, corrupt): the client's input, not a server failure.
            raise InvalidInputError(f"model {self.name!r} could not decode a file: {_first_line(exc)}") from None

    def close(self) -> None:
        """Free the session (the version is unloaded; ``run`` may not be called again)."""
        if self._session is not None:
            self._session.close()
        self._function = self._loaded = self._compiled = self._xla_loaded = None

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
        if max_batch_size < 1 or self.takes_encoded:  # XLA has no kernels for decoding files
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
        except Exception as exc:  # noqa: BLE001 - an op XLA cannot compile, say: serve without it
            log.warning("%s version %d: XLA compilation failed, serving without it: %s", self.name, self.version, exc)
            return False
        self._compiled, self._xla_loaded, self.xla_batch_sizes = compiled, loaded, sizes
        return True


class SessionRuntimeError(ModelLoadError):
    """The session runtime cannot load or run a version that may still be served by the function runtime."""


def load_runtime(version_dir: VersionDir, device: str = "/CPU:0") -> ModelRuntime:
    """Load and check one version folder: with the session runtime, else the signature-function runtime (see
    the module's docstring); raises ``ModelLoadError`` with the reason."""
    started = time.monotonic()
    try:
        session, meta_graph = _open_session(version_dir, device)
        try:
            runtime = _build_runtime(version_dir, device, meta_graph, _SessionRunner(session))
        except BaseException:
            session.close()
            raise
    except SessionRuntimeError as session_failure:
        try:
            runtime = _load_function_runtime(version_dir, device)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{exc} (the session runtime failed too: {session_failure})") from exc
        runtime.fallback_reason = str(session_failure)
        log.warning("%s version %d: served by the signature-function runtime, as the session runtime cannot run "
                    "it: %s", runtime.name, runtime.version, session_failure)
    runtime.load_seconds = time.monotonic() - started
    return runtime


def _load_function_runtime(version_dir: VersionDir, device: str = "/CPU:0") -> ModelRuntime:
    """The version as TensorFlow 2 runs it: ``tf.saved_model.load`` and its serving signature's function."""
    try:
        with tf.device(device):
            loaded = tf.saved_model.load(str(version_dir.path), tags=[tf.saved_model.SERVING])
    except Exception as exc:  # TensorFlow raises many types for a SavedModel it cannot load
        raise ModelLoadError(f"{version_dir.path}: not a loadable SavedModel: {exc}") from exc
    meta_graph = _read_meta_graph(version_dir)
    return _build_runtime(version_dir, device, meta_graph, _FunctionRunner(loaded))


def _read_meta_graph(version_dir: VersionDir) -> meta_graph_pb2.MetaGraphDef:
    """The ``serve`` MetaGraphDef of the version's ``saved_model.pb`` (its signatures, as the session sees them)."""
    try:
        saved = saved_model_pb2.SavedModel.FromString((version_dir.path / "saved_model.pb").read_bytes())
    except (OSError, DecodeError) as exc:
        raise ModelLoadError(f"{version_dir.path}: unreadable saved_model.pb: {exc}") from exc
    for meta_graph in saved.meta_graphs:
        if tf.saved_model.SERVING in meta_graph.meta_info_def.tags:
            return meta_graph
    raise ModelLoadError(f"{version_dir.path}: no MetaGraph tagged {tf.saved_model.SERVING!r}")


@dataclass
class _SessionRunner:
    """Makes a runtime run its graph in ``session``."""

    session: tf.compat.v1.Session

    def attach(self, runtime: ModelRuntime) -> None:
        runtime._session = self.session
        runtime._fetch = _fetcher(runtime, list(runtime._signature.outputs))

    def fetch_only(self, runtime: ModelRuntime) -> None:
        """From now on compute only ``runtime.outputs``."""
        runtime._fetch = _fetcher(runtime, list(runtime.outputs))


@dataclass
class _FunctionRunner:
    """Makes a runtime call its signature's function on ``loaded``."""

    loaded: object

    def attach(self, runtime: ModelRuntime) -> None:
        try:
            function = self.loaded.signatures[runtime.signature_name]
        except KeyError as exc:
            raise ModelLoadError(f"{runtime.path}: tf.saved_model.load finds no signature "
                                 f"{runtime.signature_name!r}") from exc
        runtime._loaded, runtime._function, runtime.runtime_kind = self.loaded, function, FUNCTION

    def fetch_only(self, runtime: ModelRuntime) -> None:
        """The function computes every output; ``run`` returns only ``runtime.outputs``."""


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
        raise SessionRuntimeError(f"{version_dir.path}: not a loadable SavedModel: {exc}") from exc
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
    version_dir: VersionDir, device: str, meta_graph: meta_graph_pb2.MetaGraphDef,
    runner: _SessionRunner | _FunctionRunner,
) -> ModelRuntime:
    """The runtime of a loaded version: its signature checked, its classes and outputs probed (run by
    ``runner``), its labels read."""
    try:
        metadata = version_dir.metadata()
        labels = version_dir.labels()
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{version_dir.path}: {exc}") from exc
    signature_name, signature = _pick_signature(meta_graph, version_dir)
    input_key, input_dtype, input_dims = _pick_input(signature, version_dir, signature_name,
                                                     _declared_size(metadata, version_dir))
    output_key = _pick_output(signature, version_dir, signature_name, metadata.get("scores_output"))
    runtime = ModelRuntime(
        name=version_dir.model,
        version=version_dir.version,
        path=str(version_dir.path),
        device=device,
        signature_name=signature_name,
        input_key=input_key,
        input_shape=tuple(input_dims[1:]),
        input_dtype=input_dtype,
        preprocessing=_declared_preprocessing(metadata, input_dims, input_dtype, version_dir),
        output_key=output_key,
        output_kind="probabilities",
        outputs={},
        labels=[],
        training_metadata=metadata,
        signature_def=_as_served(signature, input_key, input_dims).SerializeToString(),
        _signature=signature,
    )
    runner.attach(runtime)
    num_classes, runtime.output_kind, runtime.outputs = _probe(runtime, metadata.get("output_kind"))
    runner.fetch_only(runtime)
    runtime.labels = labels if labels is not None else [str(i) for i in range(num_classes)]
    if len(runtime.labels) != num_classes:
        raise ModelLoadError(
            f"{version_dir.path}: labels.txt names {len(runtime.labels)} classes but the model outputs {num_classes}"
        )
    return runtime


def _as_served(signature: meta_graph_pb2.SignatureDef, input_key: str, input_dims: list) -> meta_graph_pb2.SignatureDef:
    """The signature as served: an image size the graph leaves open is the one tfclassify.json declares, the only
    size requests may have."""
    served = meta_graph_pb2.SignatureDef()
    served.CopyFrom(signature)
    dims = served.inputs[input_key].tensor_shape.dim
    if not served.inputs[input_key].tensor_shape.unknown_rank and len(dims) == len(input_dims):
        for dim, size in zip(dims[1:], input_dims[1:]):
            if dim.size < 0 and size:
                dim.size = size
    return served


def _declared_preprocessing(metadata: dict, input_dims: list, input_dtype: tf.DType,
                            version_dir: VersionDir) -> Preprocessing:
    block = metadata.get("preprocessing") or {}
    declared = set(block) if isinstance(block, dict) else set()
    if input_dtype == tf.string and declared:
        raise ModelLoadError(f"{version_dir.path}: tfclassify.json declares preprocessing, but the signature takes "
                             "encoded files and decodes them in its graph: declare none")
    channels = 0 if len(input_dims) == 1 else image_shape_of(tuple(input_dims[1:]))[2]
    arithmetic = sorted(declared & set(ARITHMETIC_KEYS))
    if arithmetic and not input_dtype.is_floating:
        raise ModelLoadError(f"{version_dir.path}: tfclassify.json declares preprocessing {', '.join(arithmetic)}, "
                             f"but the signature takes {input_dtype.name} pixels, which get the pixels as they are: "
                             f"declare {', '.join(ARITHMETIC_KEYS)} for float inputs only")
    try:
        return Preprocessing.declared(metadata, channels or 3, 1.0 / 255)
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"{version_dir.path}: {exc}") from exc


@dataclass(frozen=True)
class _Fetcher:
    """Session callables feeding the signature's input and fetching the outputs ``names``: one that runs the
    graph in the calling thread (small batches), one that runs it on the inter-op pool."""

    names: list[str]
    in_caller_thread: Callable[[np.ndarray], list[np.ndarray]]
    on_thread_pool: Callable[[np.ndarray], list[np.ndarray]]


def _fetcher(runtime: ModelRuntime, names: list[str]) -> _Fetcher:
    """The callables of ``runtime``'s session for the outputs ``names`` (see the module's docstring)."""
    signature, session = runtime._signature, runtime._session
    feeds = [signature.inputs[runtime.input_key].name]
    fetches = [signature.outputs[k].name for k in names]
    make = getattr(session, "_make_callable_from_options", None)
    if make is None:  # a TensorFlow without it: the public, slower callable
        generic = session.make_callable(fetches, feeds, accept_options=True)
        return _Fetcher(names, functools.partial(generic, options=_IN_CALLER_THREAD),
                        functools.partial(generic, options=_ON_THREAD_POOL))

    def made(run_options: config_pb2.RunOptions) -> Callable[[np.ndarray], list[np.ndarray]]:
        return make(config_pb2.CallableOptions(feed=feeds, fetch=fetches, run_options=run_options))

    return _Fetcher(names, made(_IN_CALLER_THREAD), made(_ON_THREAD_POOL))


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
    for size in batch_sizes:
        images = (np.array([sample_png(np.zeros((32, 32, 3), np.uint8))] * size, dtype=object)
                  if runtime.takes_encoded else np.zeros((size, *runtime.image_shape), np.uint8))
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


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """The line of an exception's message that says what went wrong, without TensorFlow's "Graph execution
    error:" heading and op traces."""
    lines = [line.strip() for line in str(exc).splitlines()]
    useful = [line for line in lines if line and not line.endswith("execution error:") and not line.startswith("[[")]
    text = useful[0] if useful else type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


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


def image_shape_of(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(height, width, channels) of one image a signature takes as ``input_shape`` (without the batch
    dimension): ``(H, W)``, ``(H, W, C)``, or flattened ``(H*W,)`` (grayscale) / ``(H*W*3,)`` (RGB), square."""
    if len(input_shape) == 3:
        return input_shape[0], input_shape[1], input_shape[2]
    if len(input_shape) == 2:
        return input_shape[0], input_shape[1], 1
    (flat,) = input_shape
    for channels in (1, 3):
        side = math.isqrt(flat // channels)
        if flat % channels == 0 and side * side * channels == flat:
            return side, side, channels
    raise ValueError(f"{flat} values are neither a square grayscale image nor a square RGB image")


def _declared_size(metadata: dict, version_dir: VersionDir) -> tuple[int, int] | None:
    """``image_size`` [height, width] from tfclassify.json: the size clients resize to for a signature that leaves
    it open (None when not declared)."""
    size = metadata.get("image_size")
    if size is None:
        return None
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise ModelLoadError(f"{version_dir.path}: tfclassify.json: image_size must be [height, width] in pixels, "
                             f"not {size!r}")
    return size[0], size[1]


def _pick_input(signature: meta_graph_pb2.SignatureDef, version_dir: VersionDir, signature_name: str,
                declared_size: tuple[int, int] | None = None):
    """The one input's key, dtype and dimensions ([None, H, W, C], say): an image size the signature leaves open
    (``None``) is ``declared_size``."""
    if len(signature.inputs) != 1:
        raise ModelLoadError(
            f"{version_dir.path}: signature {signature_name!r} takes {len(signature.inputs)} inputs "
            f"({', '.join(signature.inputs)}); an image classifier takes exactly one batch of images"
        )
    key, info = next(iter(signature.inputs.items()))
    dtype, dims = tf.dtypes.as_dtype(info.dtype), _dims(info)
    if dtype == tf.string and dims is not None and len(dims) == 1:  # encoded files, decoded in the graph
        return key, dtype, dims
    if declared_size is not None and dims is not None and len(dims) in (3, 4):
        declared = list(declared_size)
        if any(d is not None and d != want for d, want in zip(dims[1:3], declared)):
            raise ModelLoadError(f"{version_dir.path}: tfclassify.json declares image_size {declared}, but signature "
                                 f"{signature_name!r} input {key!r} is fixed at {dims[1:3]}")
        dims = [dims[0], *declared, *dims[3:]]
    ok = dims is not None and dtype in _PIXEL_DTYPES and (
        (len(dims) == 2 and bool(dims[1]) and _flat_image(dims[1]))
        or (len(dims) == 3 and all(dims[1:]))
        or (len(dims) == 4 and all(dims[1:3]) and dims[3] in CHANNELS)
    )
    if not ok:
        unknown_size = dims is not None and len(dims) in (3, 4) and not all(dims[1:3])
        hint = (" (the signature leaves the image size open: declare the size clients resize to in "
                "tfclassify.json, \"image_size\": [height, width])" if unknown_size else "")
        raise ModelLoadError(
            f"{version_dir.path}: signature {signature_name!r} input {key!r} is {dtype.name} {dims}; "
            "expected numeric images [N, H, W], [N, H, W, C] with C = 1, 3 or 4, flattened square images "
            f"[N, H*W] or [N, H*W*3], or encoded image files (string [N]){hint}"
        )
    return key, dtype, dims


def _flat_image(values: int) -> bool:
    try:
        image_shape_of((values,))
    except ValueError:
        return False
    return True


def _pick_output(signature: meta_graph_pb2.SignatureDef, version_dir: VersionDir, signature_name: str,
                 declared: str | None = None) -> str:
    """The output holding the class scores: the one tfclassify.json names (``scores_output``), else the first of
    ``_PREFERRED_OUTPUTS`` that is a float ``[N, C]``, else the only float ``[N, C]``."""
    candidates = []
    for key, info in signature.outputs.items():
        dims = _dims(info)
        if tf.dtypes.as_dtype(info.dtype) in _FLOAT_DTYPES and dims is not None and len(dims) == 2 and (dims[1] or 0) >= 2:
            candidates.append(key)
    described = {k: f"{tf.dtypes.as_dtype(v.dtype).name} {_dims(v)}" for k, v in signature.outputs.items()}
    if declared is not None and not isinstance(declared, str):
        raise ModelLoadError(f"{version_dir.path}: tfclassify.json: scores_output must be the name of an output, "
                             f"not {declared!r}")
    if declared is not None:
        if declared in candidates:
            return declared
        what = (f"is {described[declared]}, not a float tensor of class scores [N, C]" if declared in described
                else f"is not one of its outputs {described}")
        raise ModelLoadError(f"{version_dir.path}: tfclassify.json names scores_output {declared!r}, which in "
                             f"signature {signature_name!r} {what}")
    for key in _PREFERRED_OUTPUTS:
        if key in candidates:
            return key
    if len(candidates) == 1:
        return candidates[0]
    raise ModelLoadError(
        f"{version_dir.path}: signature {signature_name!r} outputs {described}; "
        "expected one float tensor of class scores [N, C] (or one named 'probabilities' or 'logits', or name it in "
        "tfclassify.json: \"scores_output\": \"<output>\")"
    )


def _probe(
    runtime: ModelRuntime, declared_kind: str | None
) -> tuple[int, str, dict[str, tuple[np.dtype, tuple[int, ...]]]]:
    """Run a small batch: checks the model works, counts its classes, tells
    probabilities from logits (unless the version's metadata declares it) and
    finds the outputs with one row per image."""
    shape = (32, 32, 3) if runtime.takes_encoded else runtime.image_shape
    rng = np.random.default_rng(0)
    probe = np.concatenate(
        [np.zeros((1, *shape), np.uint8), np.full((1, *shape), 255, np.uint8),
         rng.integers(0, 256, (6, *shape), dtype=np.uint8)]
    )
    if runtime.takes_encoded:  # PNG files of those pixels: the model decodes (and resizes) them itself
        probe = np.array([sample_png(image) for image in probe], dtype=object)
    runtime.output_kind = "probabilities"
    try:
        outputs = runtime.run(runtime.as_model_input(probe))
    except Exception as exc:
        error = SessionRuntimeError if runtime.runtime_kind == SESSION else ModelLoadError
        raise error(f"{runtime.path}: a test batch of {len(probe)} images failed: {_first_line(exc)}") from exc
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
