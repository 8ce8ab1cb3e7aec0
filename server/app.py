"""Composition root: wires settings, model manager, data plane, servicers,
health, reflection and metrics into one running server."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, disable_created_metrics
from tensorflow_serving.apis import model_service_pb2, prediction_service_pb2

from tfclassify.inference import grpc_service_pb2
from tfclassify.server import client_events
from tfclassify.server.apis.access_log import AccessLog
from tfclassify.server.apis.admission import Admission, ByteBudget
from tfclassify.server.apis.classifier import ClassifierServicer
from tfclassify.server.apis.meter import Metering
from tfclassify.server.apis.oip import InferenceServicer
from tfclassify.server.apis.services import register_services
from tfclassify.server.apis.tfserving import ModelServicer, PredictionServicer
from tfclassify.server.auth import AuthInterceptor, TokenTable
from tfclassify.server.core.batching import BatchingOptions
from tfclassify.server.core.dataplane import DataPlane
from tfclassify.server.core.event_loop import MeasuredEventLoop
from tfclassify.server.core.feedback import FeedbackStore
from tfclassify.server.core.manager import ModelManager
from tfclassify.server.core.metrics import ServerMetrics
from tfclassify.server.core.object_repository import RepositoryMirror, default_cache
from tfclassify.server.core.registry import ModelRegistry
from tfclassify.server.http import Heartbeat, make_app, start_http_server
from tfclassify.server.logs import configure_logging
from tfclassify.server.ports import BindError, bind_message, check_port_free, write_port_file
from tfclassify.server.rest.bodies import BodyReader
from tfclassify.server.rest.frontend import RestApis, RestFrontend
from tfclassify.server.rest.routes import all_routes
from tfclassify.server.runtime.devices import configure_devices, configure_threads, resolve_devices
from tfclassify.server.runtime.memory import Trimmer, trim_periodically
from tfclassify.server.settings import ServerSettings
from tfclassify.server.tls import ReloadingCertificates, http_tls, rest_port_tls
from tfclassify.server.workers import WorkerPlace
from tfclassify.v1 import classifier_pb2 as pb

log = logging.getLogger(__name__)

CLASSIFIER_SERVICE = pb.DESCRIPTOR.services_by_name["Classifier"].full_name
#: Every service on the port, as reflection lists them (the health service aside).
API_SERVICES = (
    CLASSIFIER_SERVICE,
    prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name,
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
    grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
)
#: Health service name that is SERVING while the process serves gRPC at all, models or not: for
#: liveness probes (a probe on "" would restart a pod whose repository has no loadable model yet).
LIVENESS_SERVICE = "liveness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def batching_defaults(settings: ServerSettings, devices: list[str]) -> BatchingOptions:
    """The server-wide batching options from the command line, for replicas on ``devices``."""
    return BatchingOptions(
        max_batch_size=settings.max_batch_size,
        batch_timeout_s=settings.batch_timeout_micros / 1e6,
        max_enqueued_images=settings.max_enqueued_images,
        max_concurrent_batches=settings.max_concurrent_batches or default_concurrent_batches(devices),
        warmup_batch_sizes=tuple(int(s) for s in settings.warmup_batch_sizes.split(",") if s.strip()),
    )


def default_concurrent_batches(devices: list[str]) -> int:
    """TensorFlow calls of a version at once per replica when ``--max-concurrent-batches`` is not set.

    On a CPU, one: a replica's calls share the same cores, whose intra-op pool one large call already fills,
    and a second call beside a small one only split the queue into smaller batches and added a thread
    hand-off (64 single-image callers on 2 cores: 5-10% more requests/s and a third less inference-thread CPU
    with one; 1,024-image requests alike with either). On a GPU, two: one batch is copied while another
    computes.
    """
    return 2 if any("GPU" in d.upper() for d in devices) else 1


class ClassifierServer:
    """One tfclassify server process: ``await start()``, then ``await stop()``."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        #: Under ``serve --workers``: this worker's place, and the board where every worker says it is ready.
        self.place = WorkerPlace.from_environment()
        self.board = self.place.board() if self.place else None
        configure_threads(settings.intra_op_threads, settings.inter_op_threads)
        configure_devices(settings.logical_cpu_devices, settings.gpu_memory_limit_mb)
        devices = resolve_devices(settings.device)
        defaults = batching_defaults(settings, devices)
        # At least two per replica though a version runs one call at a time on a CPU: the pool serves every
        # version, and one's long batch must not hold up another's (or a rollout's new version).
        threads = settings.inference_threads or len(devices) * max(2, defaults.max_concurrent_batches)
        self.metrics_registry = CollectorRegistry()
        self.metrics = ServerMetrics(self.metrics_registry)
        self.registry = ModelRegistry()
        self._remove_log_filter = client_events.install(self.metrics.undelivered_answers.inc)
        #: A bucket repository: mirrored into a local cache folder, which the manager reads as a local repository.
        self.mirror: RepositoryMirror | None = None
        repo = settings.model_repo
        if isinstance(repo, str):
            self.mirror = RepositoryMirror(repo, settings.model_cache or default_cache(repo), self.metrics_registry)
            repo = self.mirror.cache
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="inference")
        self.manager = ModelManager(
            repo, settings.model_config, defaults, devices, self.registry, self.metrics,
            self.executor, self._update_health, settings.xla_max_batch_size, settings.max_batch_bytes,
        )
        self.dataplane = DataPlane(self.registry, settings.max_images_per_request,
                                   FeedbackStore(settings.feedback_capacity, settings.feedback_ttl_s),
                                   max_response_bytes=settings.max_message_bytes)
        self.health = health_aio.HealthServicer()
        self.grpc_port = 0
        self.http_port = -1
        self.metrics_port = -1
        self._metrics_http = None
        self._stopping = False
        self._poller: asyncio.Task | None = None
        self._heart: asyncio.Task | None = None
        self._trimmer: asyncio.Task | None = None
        self._peers: asyncio.Task | None = None
        self.heartbeat = Heartbeat()
        self._last_not_ready: list[str] = []
        options = [
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            # gRPC core's queue of calls the event loop has not picked up yet: it refuses calls at random
            # between the two limits (random early detection). gRPC's defaults (1,000 and 3,000) let a busy
            # server's callers wait seconds there, unseen by the metrics.
            ("grpc.server.max_pending_requests", settings.max_pending_calls // 2),
            ("grpc.server.max_pending_requests_hard_limit", settings.max_pending_calls),
            # SO_REUSEPORT (gRPC's default) only among our own workers: a lone server must fail to bind a port
            # another server holds, not share it and get half of its connections.
            ("grpc.so_reuseport", 1 if self.place else 0),
        ]
        if settings.max_connection_age_s > 0:
            options += [
                ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
                ("grpc.max_connection_age_grace_ms", int(settings.shutdown_grace_s * 1000)),
            ]
        self.tokens = TokenTable(settings.auth_tokens) if settings.auth_tokens else None
        # None when off: the meter and the interceptor then pay nothing per RPC.
        access_log = AccessLog(settings.access_log_sample) if settings.access_log_sample > 0 else None
        interceptors = [AuthInterceptor(self.tokens, access_log)] if self.tokens else []
        self._server = grpc.aio.server(options=options, interceptors=interceptors)
        # Three APIs on one port, over the same data plane: the same queues, statistics and metrics.
        admission = None
        if settings.max_requests_in_progress > 0:
            admission = Admission(settings.max_requests_in_progress, settings.max_requests_per_client,
                                  by_token=self.tokens is not None)
        #: What every API's servicer shares to count, admit and log its RPCs.
        self.metering = metering = Metering(self.metrics, self.registry, self.tokens, access_log, admission)
        services = (
            (pb.DESCRIPTOR.services_by_name["Classifier"], ClassifierServicer(self.dataplane, self.manager, metering)),
            (prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"],
             PredictionServicer(self.dataplane, metering)),
            (model_service_pb2.DESCRIPTOR.services_by_name["ModelService"],
             ModelServicer(self.dataplane, self.manager, metering)),
            (grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"],
             InferenceServicer(self.dataplane, metering, self.is_ready)),
            (health_pb2.DESCRIPTOR.services_by_name["Health"], self.health),
        )
        # Large requests leave megabytes of freed receive buffers in malloc's heap: given back soon after each.
        self._heap_trimmer = Trimmer() if settings.memory_trim_interval_s > 0 else None
        self.request_bytes = ByteBudget(settings.max_request_bytes_in_progress, on_change=self._large_request_bytes,
                                        on_refused=self._large_request_refused)
        # Registered from their descriptors: a request that is not valid protobuf gets INVALID_ARGUMENT, a large
        # one past the byte budget RESOURCE_EXHAUSTED.
        register_services(self._server, services, budget=self.request_bytes)
        # The HTTP/REST APIs call servicers of their own (their metrics say "_http") on the same data plane.
        bodies = BodyReader(settings.max_message_bytes, settings.http_read_timeout_s, self.request_bytes)
        self.rest_apis = RestApis(
            classifier=ClassifierServicer(self.dataplane, self.manager, metering, "http"),
            prediction=PredictionServicer(self.dataplane, metering, "http"),
            model=ModelServicer(self.dataplane, self.manager, metering, "http"),
            inference=InferenceServicer(self.dataplane, metering, self.is_ready, "http"),
            dataplane=self.dataplane, manager=self.manager, metering=metering, is_ready=self.is_ready, bodies=bodies,
        )
        self._rest: RestFrontend | None = None
        if settings.http_port >= 0:
            self._rest = RestFrontend(all_routes(self.rest_apis), metering, bodies, self.tokens, access_log,
                                      settings.max_message_bytes)
        if settings.reflection:
            reflection.enable_server_reflection(
                (*API_SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
                self._server,
            )
        log.info("replica devices: %s; inference threads: %d; batching: %s", ", ".join(devices), threads, defaults)

    async def start(self) -> None:
        """Open the ports (health NOT_SERVING), load and warm up the models, then report SERVING."""
        settings = self.settings
        await self.health.set("", NOT_SERVING)
        await self.health.set(CLASSIFIER_SERVICE, NOT_SERVING)
        await self.health.set(LIVENESS_SERVICE, SERVING)
        self.grpc_port = self._bind_grpc()
        await self._server.start()
        if self._rest is not None:
            try:
                self.http_port = await self._rest.start(settings.host, settings.http_port, rest_port_tls(settings),
                                                        reuse_port=self.place is not None,
                                                        grace_s=settings.shutdown_grace_s)
            except OSError as exc:
                await self._server.stop(0)
                raise BindError(bind_message(settings.host, settings.http_port, "HTTP/REST", exc.strerror)) from exc
        self._heart = asyncio.get_running_loop().create_task(self._beat())
        if settings.memory_trim_interval_s > 0:
            self._trimmer = asyncio.get_running_loop().create_task(trim_periodically(settings.memory_trim_interval_s))
        if settings.metrics_port >= 0:
            app = make_app(self.metrics_registry, self.heartbeat, self.not_ready, self.grpc_port,
                           notes=self.mirror.notes if self.mirror is not None else None)
            # A worker's HTTP port is for its supervisor only, which serves the merged one (with TLS if asked).
            http_host = "127.0.0.1" if self.place else settings.host
            tls = None if self.place else http_tls(settings)
            try:
                self._metrics_http, _ = start_http_server(http_host, settings.metrics_port, app, tls)
            except OSError as exc:
                await self._server.stop(0)
                if self._rest is not None:
                    await self._rest.stop()
                raise BindError(bind_message(settings.host, settings.metrics_port, "metrics", exc.strerror)) from exc
            self.metrics_port = self._metrics_http.server_port
        log.info("gRPC on %s:%d, HTTP/REST on port %s, metrics and probes (/metrics, /healthz, /readyz) on port %s",
                 settings.host, self.grpc_port, self.http_port, self.metrics_port)
        freeze_startup_objects()
        if self.mirror is not None:
            await self._first_sync()
        await self.manager.reconcile()
        if settings.poll_interval_s > 0:
            poll = self._poll_bucket if self.mirror is not None else self.manager.poll
            self._poller = asyncio.get_running_loop().create_task(poll(settings.poll_interval_s))
        if self.board is not None:
            self._peers = asyncio.get_running_loop().create_task(self._watch_peers())
        if settings.port_file:
            write_port_file(
                settings.port_file, {"grpc_port": self.grpc_port, "http_port": self.http_port,
                                     "metrics_port": self.metrics_port, "pid": os.getpid()}
            )

    async def stop(self) -> None:
        """Report NOT_SERVING at once, refuse new RPCs, let in-flight and queued ones finish
        within the grace period, then unload the models."""
        self._stopping = True
        await self._update_health()
        for task in (self._poller, self._heart, self._trimmer, self._peers):
            if task is not None:
                task.cancel()
        grace = self.settings.shutdown_grace_s
        if self._rest is not None:
            await asyncio.gather(self._server.stop(grace), self._rest.stop())
        else:
            await self._server.stop(grace)
        await self.manager.shutdown()
        if self.mirror is not None:
            self.mirror.close()
        self.dataplane.close()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
        self.executor.shutdown(wait=True)
        self._remove_log_filter()

    def _large_request_bytes(self, in_progress: int) -> None:
        self.metrics.large_request_bytes.set(in_progress)
        if self._heap_trimmer is not None:
            self._heap_trimmer.soon()

    def _large_request_refused(self) -> None:
        self.metrics.large_requests_refused.inc()
        if self._heap_trimmer is not None:
            self._heap_trimmer.soon()

    def is_ready(self) -> bool:
        """Whether every model has a version serving, there is one, and the server is not shutting down."""
        return not self.not_ready()

    def not_ready(self) -> list[str]:
        """What keeps the server from being ready (empty when it is ready)."""
        if self._stopping:
            return ["shutting down"]
        ready = self.manager.ready_models()
        if not ready:
            return [f"no model to serve in {self.settings.model_repo} (expected <repo>/<model>/<version>/saved_model.pb)"]
        return [f"model {name!r}: no version serving" for name, ok in sorted(ready.items()) if not ok]

    async def _update_health(self) -> None:
        """SERVING for each model with a version serving; overall SERVING when the server is ready."""
        ready = self.manager.ready_models()
        for name, ok in ready.items():
            await self.health.set(name, SERVING if ok and not self._stopping else NOT_SERVING)
        reasons = self.not_ready()
        overall = NOT_SERVING if reasons else SERVING
        if self.board is not None:
            # A probe reaches any one worker: SERVING only when every worker is ready.
            self.board.set(self.place.index, not reasons)
            if self.board.not_ready():
                overall = NOT_SERVING
        await self.health.set("", overall)
        await self.health.set(CLASSIFIER_SERVICE, overall)
        if reasons != self._last_not_ready and not self._stopping:  # once per change, not at every poll
            if reasons:
                log.warning("not ready: %s", "; ".join(reasons))
            elif self._last_not_ready:
                log.info("ready: every model has a version serving")
        self._last_not_ready = reasons

    async def _first_sync(self, settle_s: float = 1.0) -> None:
        """At start: list the bucket twice, ``settle_s`` apart (a version is taken when its listing holds still
        from one listing to the next), so that the versions in the bucket serve from the first reconcile."""
        assert self.mirror is not None
        log.info("model repository %s: fetching versions into %s", self.mirror.url, self.mirror.cache)
        first = await self.mirror.refresh()
        if first is not None and first.waiting:
            await asyncio.sleep(settle_s)
            await self.mirror.refresh()

    async def _poll_bucket(self, interval_s: float) -> None:
        """Every ``interval_s`` seconds: bring the cache in line with the bucket, then reconcile from the cache."""
        assert self.mirror is not None
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.mirror.refresh()
                await self.manager.reconcile()
            except Exception:  # never let one bad poll stop polling
                log.exception("repository poll failed")

    def _bind_grpc(self) -> int:
        host, port = self.settings.host, self.settings.grpc_port
        if self.place is None:
            check_port_free(host, port)  # before gRPC core tries, which logs its own multi-line error first
        try:
            if self.settings.tls_cert is not None:
                certificates = ReloadingCertificates(self.settings.tls_cert, self.settings.tls_key,
                                                     self.settings.tls_client_ca)
                bound = self._server.add_secure_port(f"{host}:{port}", certificates.credentials())
            else:
                bound = self._server.add_insecure_port(f"{host}:{port}")
        except RuntimeError as exc:  # grpcio raises this when the address is taken
            raise BindError(bind_message(host, port, "gRPC", "address already in use")) from exc
        if bound == 0:
            raise BindError(bind_message(host, port, "gRPC", "address already in use"))
        return bound

    async def _watch_peers(self, interval_s: float = 0.5) -> None:
        """Under ``serve --workers``: follow the other workers' readiness in the health service."""
        while True:
            await asyncio.sleep(interval_s)
            await self._update_health()

    async def _beat(self, interval_s: float = 1.0) -> None:
        """Show /healthz that the event loop runs."""
        while True:
            self.heartbeat.beat()
            await asyncio.sleep(interval_s)


def freeze_startup_objects() -> None:
    """Exempt the ~320,000 objects of TensorFlow's and our imports from the garbage collector's full passes.

    They live as long as the process, yet every full (generation 2) collection walked them all: 200-300 ms
    with the GIL held, on whichever thread allocated last, most often the event loop, which then answered
    nothing (the stalls after a reload or an unload in the soak). Frozen, a full pass walks only what came
    later: loaded models (a few thousand objects each, still collected when unloaded) and requests.
    """
    gc.collect()
    gc.freeze()


async def serve(settings: ServerSettings, after_setup: Callable[[], None] = lambda: None) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully; ``after_setup`` runs once TensorFlow's devices are up."""
    try:
        server = ClassifierServer(settings)
    finally:
        after_setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    await stop.wait()
    log.info("shutting down: draining in-flight requests (grace %.1f s)", settings.shutdown_grace_s)
    await server.stop()
    log.info("stopped")


def run(settings: ServerSettings, after_setup: Callable[[], None] = lambda: None) -> int:
    """Entry point of ``tfclassify serve``; ``after_setup`` as for ``serve``."""
    place = WorkerPlace.from_environment()
    configure_logging(settings.log_level, settings.log_format, place.index if place else None)
    # Every counter and histogram would also export a *_created series: twice the series, and
    # Prometheus ignores them; turned off for this process.
    disable_created_metrics()
    # The loop measures how busy it is: the batchers wait for company only when it is saturated.
    with asyncio.Runner(loop_factory=MeasuredEventLoop) as runner:
        runner.run(serve(settings, after_setup))
    return 0
