"""The scoring pipeline: inputs -> decoding pool -> batches -> RPCs in flight -> results in order.

Bounded at every stage: at most ``window`` chunks exist between the reader
and the consumer (each at most ``batch_size`` images), and at most
``in_flight`` RPCs are on the wire, so memory stays flat whatever the size of
the input. Results come out in input order, every image exactly once: a
chunk is yielded once, after its RPCs (retried as often as needed) have
answered; a server that refuses an image (INVALID_ARGUMENT) gets the batch
again in halves until the refused image is alone, and that image is
recorded as skipped with the server's message while the rest are scored.

Requests are bounded by bytes as well as images: a chunk is sent as several
requests when its images (pixels, or files with ``decode="server"``) exceed
``max_request_bytes``, and the default batch size is the largest that keeps
a batch of pixels within it.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import threading
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import cast

import grpc
import numpy as np

from tfclassify.client.errors import TfclassifyError
from tfclassify.client.inputs.fetch import ObjectFetcher
from tfclassify.client.inputs.plan import Chunk, ScoringPlan, Survey, array_rows, listing_preview
from tfclassify.client.inputs.workers import DecodePool, available_cpus
from tfclassify.client.requests import DEFAULT_MAX_REQUEST_BYTES
from tfclassify.client.results import ClassifyResult, ModelInfo
from tfclassify.client.scoring.decoding import choose_decoding, request_slices
from tfclassify.client.scoring.servers import RetryPolicy, ServerPool
from tfclassify.common.image_files import ConversionSpec, files_array
from tfclassify.common.inputs.labels import LabelResolver
from tfclassify.common.inputs.sources import ArrayInput

#: Below this many image files a run decodes on threads: starting worker processes costs ~0.15 s.
PROCESS_POOL_MIN_FILES = 4096


@dataclass(frozen=True)
class ScoringOptions:
    """How to score: the model, batching, concurrency, conversion and retries."""

    model: str
    version: int | None = None
    version_label: str | None = None
    top_k: int = 0
    #: Images per RPC; 0 picks the largest power of two up to 4096 that makes 8 or more batches.
    batch_size: int = 0
    in_flight: int = 4
    #: Decoding processes; None: one per CPU for large runs, threads for small ones; 0: threads.
    decode_workers: int | None = None
    #: For one-channel (MNIST-style) models: make images light-on-dark (``auto``, ``yes``, ``no``). Colour models
    #: are never inverted: ``auto`` and ``no`` mean the same for them, and ``yes`` is refused.
    invert: str = "auto"
    #: How files meet the model's size: ``stretch``, ``crop`` or ``pad`` (``decode.RESIZE_CHOICES``); None: the
    #: model's declared resize (its metadata's ``preprocessing["resize"]``), else stretch.
    resize: str | None = None
    #: Where files are decoded: ``client`` (the decoding workers send pixels), ``server`` (PNG/JPEG files sent as
    #: they are, the server decodes them; other formats decoded here) or ``auto`` (``decoding.choose_decoding``).
    decode: str = "auto"
    #: Most bytes of images (pixels, or files) in one request; a larger image goes alone.
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: TLS credentials for the servers (``tfclassify.client.tls.channel_credentials``); None: plain text.
    credentials: grpc.ChannelCredentials | None = field(default=None, compare=False, repr=False)
    #: TLS for ``https://`` servers (``tfclassify.client.tls.ssl_context``); None: the system's trusted roots.
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    #: Bearer token for servers started with --auth-tokens.
    token: str | None = field(default=None, compare=False, repr=False)
    #: Send the true labels the inputs carry with each request, for the server's live-accuracy metrics.
    send_labels: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 0 or self.in_flight < 1 or self.top_k < 0 or self.max_request_bytes < 1:
            raise ValueError("batch_size must be >= 0, in_flight >= 1, top_k >= 0 and max_request_bytes >= 1")
        if self.decode not in DECODE_CHOICES:
            raise ValueError(f"decode must be one of {', '.join(DECODE_CHOICES)}, got {self.decode!r}")

    def identity(self) -> dict:
        """The options that change the output's rows (a resumed run must share them)."""
        identity = {"model": self.model, "version": self.version, "version_label": self.version_label,
                    "top_k": self.top_k, "invert": self.invert}
        if self.resize not in (None, "stretch"):  # absent for the default, so that runs written before --resize still resume
            identity["resize"] = self.resize
        return identity


@dataclass
class ChunkResult:
    """The outcome of one chunk, one row per image in input order."""

    chunk: Chunk
    classes: np.ndarray  # [n] int32, -1 where skipped
    scores: np.ndarray  # [n] float32
    top_k_classes: np.ndarray  # [n, k] int32
    top_k_scores: np.ndarray  # [n, k] float32
    versions: np.ndarray  # [n] int64, 0 where skipped
    skipped: dict[int, str]  # position in the chunk -> reason

    def __len__(self) -> int:
        return len(self.chunk)


DECODE_CHOICES = ("auto", "client", "server")


def auto_batch_size(n: int, largest: int = 4096, smallest: int = 256, batches: int = 8, image_bytes: int = 0,
                    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> int:
    """The largest power of two in [smallest, largest] that splits ``n`` images into ``batches`` or more, and
    whose images of ``image_bytes`` each (when known) fit ``max_request_bytes``: 64 images of 224 x 224 x 3 in
    16 MiB, 4,096 of 28 x 28."""
    if image_bytes > 0:
        fits = max(1, max_request_bytes // image_bytes)
        largest = min(largest, 1 << (fits.bit_length() - 1))
        smallest = min(smallest, largest)
    size = largest
    while size > smallest and n < size * batches:
        size //= 2
    return size


class Scorer:
    """Scores the images of a ``ScoringPlan`` against one or more servers (asyncio).

    >>> scorer = Scorer(["localhost:8500"], ScoringOptions(model="fashion_mnist"))
    >>> await scorer.start(plan)            # metadata, listing, label check
    >>> async for result in scorer.results():
    ...     ...
    >>> await scorer.close()
    """

    def __init__(self, servers: list[str], options: ScoringOptions) -> None:
        self.options = options
        self.servers = ServerPool(servers, timeout=options.timeout, retry=options.retry,
                                  credentials=options.credentials, ssl_context=options.ssl_context,
                                  token=options.token,
                                  max_request_bytes=options.max_request_bytes)
        self.model: ModelInfo | None = None
        #: What the listing found: a preview (``complete`` False) while a slow listing goes on beside the scoring.
        self.survey: Survey | None = None
        self._listing: asyncio.Future[Survey] | None = None
        self.batch_size = options.batch_size
        self._plan: ScoringPlan | None = None
        self._resolver: LabelResolver | None = None
        self._decoder: DecodePool | None = None
        self._spec: ConversionSpec | None = None
        #: Whether PNG/JPEG files go to the server as they are (``decode`` server, or auto's choice).
        self.send_files = False
        #: One-line notes for the user about choices made from the model (decoding, labels), after ``start``.
        self.notes: list[str] = []
        #: Fetches the bytes of object-storage items ahead of decoding (nothing for local inputs).
        self._fetcher = ObjectFetcher()

    @property
    def spec(self) -> ConversionSpec | None:
        """How files are turned into this model's input (after ``start``)."""
        return self._spec

    @property
    def decoder_kind(self) -> str:
        if self._decoder is None:
            return "none"
        return f"server ({self._decoder.kind} read the files)" if self.send_files else self._decoder.kind

    async def start(self, plan: ScoringPlan) -> Survey:
        """Fetch the model's metadata, list the inputs and check their labels; nothing is scored yet."""
        o = self.options
        self.model = await self.servers.model_metadata(o.model, o.version, o.version_label)
        self._resolver = LabelResolver(self.model.labels)
        self._plan = plan
        if plan.lists_slowly:
            self.survey = await self._survey_beside_scoring(plan, self._resolver)
        else:
            self.survey = await asyncio.to_thread(plan.survey, self._resolver)
        self.notes = list(plan.notes)
        if not self.survey.complete:
            self.notes.append(f"scoring while listing: more than {listing_preview():,} images; the total follows when "
                              "the listing ends")
        has_files = any(not i.is_array for i in plan.inputs)
        declared = self.model.preprocessing.get("resize") or "stretch"
        self._spec = conversion_spec(self.model, o.invert, o.resize or declared)
        self.send_files, note = choose_decoding(self.model, o.decode, o.invert, o.resize or declared, o.resize)
        if note and has_files:
            self.notes.append(note)
        # A listing that goes on past its preview is large, whatever share of the preview falls in this shard.
        shard_size = self.survey.shard_sizes[plan.shard] if self.survey.complete else 1 << 62
        self.batch_size = o.batch_size or auto_batch_size(
            shard_size, image_bytes=self._image_bytes(plan), max_request_bytes=o.max_request_bytes)
        if has_files:
            workers = o.decode_workers
            if workers is None:  # files sent as they are need no processes: reading them is all the work
                big = shard_size >= PROCESS_POOL_MIN_FILES and not self.send_files
                workers = available_cpus() if big else 0
            self._decoder = DecodePool(workers)
        return self.survey

    async def _survey_beside_scoring(self, plan: ScoringPlan, resolver: LabelResolver) -> Survey:
        """The survey of a slowly listed plan when it ends within ``listing_preview()`` images; else its preview,
        the survey going on in its thread (``final_survey`` has the whole)."""
        listing_preview()  # a bad setting is an error before anything starts
        loop = asyncio.get_running_loop()
        preview: asyncio.Future[Survey] = loop.create_future()
        self._listing = listing = loop.create_future()

        def settle(future: asyncio.Future, result: Survey | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        def on_preview(found: Survey) -> None:  # in the survey's thread
            loop.call_soon_threadsafe(settle, preview, found, None)

        def survey() -> None:  # a daemon thread: a listing stuck in retries never holds the process at exit
            try:
                result, error = plan.survey(resolver, on_preview), None
            except BaseException as exc:  # noqa: BLE001 - handed to the event loop, raised there
                result, error = None, exc
            try:
                loop.call_soon_threadsafe(settle, listing, result, error)
            except RuntimeError:  # the loop has closed: nobody waits for this survey any more
                pass

        threading.Thread(target=survey, name="tfclassify-survey", daemon=True).start()
        await asyncio.wait([listing, preview], return_when=asyncio.FIRST_COMPLETED)
        # A preview comes before the survey's end (both go through the loop in order), so this is deterministic.
        if preview.done():
            return preview.result()
        preview.cancel()
        self._listing = None
        return listing.result()

    def _check_listing(self) -> None:
        """Take the survey going on beside the scoring once it ends: its error (a label that is not a class)
        stops the run; its counts replace the preview."""
        if self._listing is not None and self._listing.done():
            self.survey = self._listing.result()
            self._listing = None

    async def final_survey(self) -> Survey:
        """The whole survey, waiting for a listing still going on."""
        if self._listing is not None:
            self.survey = await self._listing
            self._listing = None
        assert self.survey is not None
        return self.survey

    def _image_bytes(self, plan: ScoringPlan) -> int:
        """Bytes of one image as sent (0: unknown, for files sent as they are)."""
        arrays = [cast(ArrayInput, i) for i in plan.inputs if i.is_array]  # is_array: an ArrayInput
        if arrays:
            return max(int(a.images[:1].nbytes) for a in arrays)
        if self._spec is None or self._spec.channels == 0:
            return 0
        return math.prod(self._spec.shape)

    async def results(self, skip: int = 0) -> AsyncIterator[ChunkResult]:
        """The results of this shard's chunks, in order, after its first ``skip`` images."""
        assert self._plan is not None and self._resolver is not None, "start() first"
        loop = asyncio.get_running_loop()
        reader = ThreadPoolExecutor(1, thread_name_prefix="tfclassify-reader")  # archives are read in order
        chunks = self._plan.chunks(self._resolver, self.batch_size, skip)
        rpc_slots = asyncio.Semaphore(self.options.in_flight)
        window: deque[asyncio.Task] = deque()
        limit = self.options.in_flight + 2 * max(1, self._decoder.workers if self._decoder else 1)
        exhausted = False
        try:
            while True:
                while not exhausted and len(window) < limit:
                    chunk = await loop.run_in_executor(reader, next, chunks, None)
                    if chunk is None:
                        exhausted = True
                    else:
                        window.append(asyncio.create_task(self._score_chunk(chunk, rpc_slots)))
                if not window:
                    return
                result = await window.popleft()
                self._check_listing()
                yield result
        finally:
            for task in window:
                task.cancel()
            await asyncio.gather(*window, return_exceptions=True)
            await loop.run_in_executor(reader, chunks.close)
            reader.shutdown(wait=False)

    async def close(self) -> None:
        """Stop a listing still going on and the decoding workers, and close the channels."""
        if self._listing is not None:
            assert self._plan is not None
            self._plan.stop_survey()  # seen at its next item; a listing request in flight is not waited for long
            await asyncio.wait([self._listing], timeout=2)
            if self._listing.done() and not self._listing.cancelled():
                self._listing.exception()  # retrieved: the run has ended, its survey's error no longer matters
            self._listing = None
        if self._decoder is not None:
            await asyncio.to_thread(self._decoder.close)
            self._decoder = None
        await self.servers.close()

    # -- one chunk -----------------------------------------------------------
    async def _score_chunk(self, chunk: Chunk, rpc_slots: asyncio.Semaphore) -> ChunkResult:
        n, k = len(chunk), self.options.top_k
        skipped: dict[int, str] = {}
        if chunk.array is not None:
            pixels = array_rows(chunk)
            scored_at = list(range(n))
        else:
            assert self._decoder is not None and self._spec is not None
            skipped.update(chunk.skipped)
            decode_at = [p for p in range(n) if p not in skipped]
            refs = await self._fetcher.fetch([chunk.refs[p] for p in decode_at])  # objects' bytes, many at once
            pixels, failed = await asyncio.wrap_future(self._decoder.submit(refs, self._spec, self.send_files))
            skipped.update((decode_at[q], reason) for q, reason in failed)
            scored_at = [p for p in decode_at if p not in skipped]
        result = ChunkResult(
            chunk, np.full(n, -1, np.int32), np.zeros(n, np.float32), np.full((n, k), -1, np.int32),
            np.zeros((n, k), np.float32), np.zeros(n, np.int64), skipped,
        )
        if scored_at:
            async with rpc_slots:
                for images, positions in _by_kind(pixels, scored_at):
                    for part in request_slices(images, self.options.max_request_bytes):
                        await self._classify_into(result, images[part], positions[part])
        return result

    async def _classify_into(self, result: ChunkResult, pixels: np.ndarray, positions: list[int]) -> None:
        """Classify ``pixels`` (the images at ``positions`` of the chunk) into ``result``, halving on refusal."""
        o = self.options
        try:
            truth = None
            if o.send_labels:
                known = [result.chunk.true[p] for p in positions]
                truth = [-1 if t is None else t for t in known] if any(t is not None for t in known) else None
            if pixels.dtype == object:  # files, for a model that decodes them in its graph or for the server to decode
                answer: ClassifyResult = await self.servers.classify_encoded(
                    list(pixels), o.model, version=o.version, version_label=o.version_label, top_k=o.top_k,
                    true_classes=truth)
            else:
                answer = await self.servers.classify(
                    pixels, o.model, version=o.version, version_label=o.version_label, top_k=o.top_k,
                    true_classes=truth)
        except TfclassifyError as exc:
            if exc.code != grpc.StatusCode.INVALID_ARGUMENT:
                first, last = result.chunk.indices[positions[0]], result.chunk.indices[positions[-1]]
                raise TfclassifyError(exc.code, f"images {first}..{last}: {exc.details}") from exc
            if len(positions) == 1:
                result.skipped[positions[0]] = f"refused by the server: {exc.details}"
                return
            half = len(positions) // 2
            await self._classify_into(result, pixels[:half], positions[:half])
            await self._classify_into(result, pixels[half:], positions[half:])
            return
        if len(answer) != len(positions):
            raise TfclassifyError(
                grpc.StatusCode.INTERNAL, f"server answered {len(answer)} results for {len(positions)} images"
            )
        at = np.asarray(positions)
        result.classes[at] = answer.classes
        result.scores[at] = answer.scores
        result.versions[at] = answer.version
        if o.top_k:
            result.top_k_classes[at] = answer.top_k_classes
            result.top_k_scores[at] = answer.top_k_scores


def _by_kind(images: np.ndarray, positions: list[int]) -> list[tuple[np.ndarray, list[int]]]:
    """A chunk's decoded images as (images, their positions) of one kind each: files sent as they are (an object
    array of bytes) and pixels (a uint8 array); ``read_files`` mixes the two when some files must be decoded here."""
    if images.dtype != object or all(isinstance(i, bytes) for i in images):
        return [(images, positions)]
    files = [q for q, image in enumerate(images) if isinstance(image, bytes)]
    decoded = [q for q, image in enumerate(images) if not isinstance(image, bytes)]
    groups = [(np.stack([images[q] for q in decoded]), [positions[q] for q in decoded])]
    if files:
        groups.insert(0, (files_array([images[q] for q in files]), [positions[q] for q in files]))
    return groups


def conversion_spec(model: ModelInfo, invert: str = "auto", resize: str = "stretch") -> ConversionSpec:
    """How files become ``model``'s input, from its metadata: its size and channels (0: files sent untouched)."""
    channels = model.channels
    if channels == 0 and model.input_dtype != "STRING":
        channels = 1  # a server from before colour models: they were all one-channel
    if channels == 0:
        return ConversionSpec(0, 0, "no", channels=0, resize=resize)
    if channels != 1 and invert == "yes":
        raise TfclassifyError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"--invert yes is for one-channel (MNIST-style) models; model {model.name!r} takes "
                              f"colour images {list(model.input_shape)}, which are never inverted")
    height, width = _image_size(model, channels)
    declared = model.preprocessing
    return ConversionSpec(height, width, invert if channels == 1 else "no", channels=channels, resize=resize,
                          interpolation=declared.get("interpolation") or None,
                          crop_fraction=declared.get("crop_fraction") or 1.0)


def _image_size(model: ModelInfo, channels: int) -> tuple[int, int]:
    """(height, width) of the model's images, from one image's shape ([H, W], [H, W, C] or [H*W*C])."""
    dims = model.input_shape
    if len(dims) >= 2 and all(d > 0 for d in dims[:2]):
        return dims[0], dims[1]
    pixels = dims[0] // channels if len(dims) == 1 and dims[0] > 0 else 0
    side = math.isqrt(pixels)
    if side == 0 or side * side != pixels:
        raise TfclassifyError(grpc.StatusCode.FAILED_PRECONDITION,
                              f"model {model.name!r} takes input {list(dims)}, not images of a known square size")
    return side, side
