"""Composition root: wires settings, models, data plane, servicers, health,
reflection and metrics into one running server."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from tfclassify.server.dataplane import DataPlane
from tfclassify.server.device import configure_gpus, resolve_device
from tfclassify.server.loader import load_repository
from tfclassify.server.metrics import ServerMetrics
from tfclassify.server.registry import ModelRegistry
from tfclassify.server.servicer import ClassifierServicer
from tfclassify.server.settings import ServerSettings
from tfclassify.v1 import classifier_pb2 as pb
from tfclassify.v1 import classifier_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

CLASSIFIER_SERVICE = pb.DESCRIPTOR.services_by_name["Classifier"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ClassifierServer:
    """One tfclassify server process: ``await start()``, then ``await stop()``."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.metrics_registry = CollectorRegistry()
        self.metrics = ServerMetrics(self.metrics_registry)
        self.registry = ModelRegistry()
        self.executor = ThreadPoolExecutor(settings.inference_threads, thread_name_prefix="inference")
        self.dataplane = DataPlane(self.registry, self.executor, self.metrics, settings.max_images_per_request)
        self.health = health_aio.HealthServicer()
        self.grpc_port = 0
        self.metrics_port = -1
        self._metrics_http = None
        message_limit = settings.max_message_bytes
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", message_limit),
                ("grpc.max_send_message_length", message_limit),
            ]
        )
        pb_grpc.add_ClassifierServicer_to_server(ClassifierServicer(self.dataplane, self.metrics), self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (CLASSIFIER_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self._server,
        )

    async def start(self) -> None:
        """Open the ports (health NOT_SERVING), load the models, then report SERVING."""
        settings = self.settings
        await self._set_health(NOT_SERVING, [""])
        self.grpc_port = self._server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
        if self.grpc_port == 0:
            raise OSError(f"cannot bind gRPC to {settings.host}:{settings.grpc_port}")
        await self._server.start()
        if settings.metrics_port >= 0:
            self._metrics_http, _ = start_http_server(settings.metrics_port, settings.host, self.metrics_registry)
            self.metrics_port = self._metrics_http.server_port
        log.info("gRPC on %s:%d, metrics on %s", settings.host, self.grpc_port, self.metrics_port)
        configure_gpus()
        device = resolve_device(settings.device)
        failures = await asyncio.get_running_loop().run_in_executor(
            self.executor, load_repository, settings.model_repo, self.registry, self.metrics, device
        )
        names = self.registry.names()
        await self._set_health(SERVING, [n for n in names if n not in failures])
        await self._set_health(NOT_SERVING, list(failures))
        ready = not failures
        await self._set_health(SERVING if ready else NOT_SERVING, ["", CLASSIFIER_SERVICE])
        if not ready:
            log.error("not ready: models without a loadable version: %s", ", ".join(sorted(failures)))
        if settings.port_file:
            _write_json_atomically(
                settings.port_file, {"grpc_port": self.grpc_port, "metrics_port": self.metrics_port, "pid": os.getpid()}
            )

    async def stop(self) -> None:
        """Report NOT_SERVING, refuse new RPCs and let in-flight ones finish within the grace period."""
        await self._set_health(NOT_SERVING, ["", CLASSIFIER_SERVICE, *self.registry.names()])
        await self._server.stop(self.settings.shutdown_grace_s)
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
        self.executor.shutdown(wait=True)

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()

    async def _set_health(self, status: int, services: list[str]) -> None:
        for service in services:
            await self.health.set(service, status)


async def serve(settings: ServerSettings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    server = ClassifierServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    await stop.wait()
    log.info("shutting down: draining in-flight requests (grace %.1f s)", settings.shutdown_grace_s)
    await server.stop()
    log.info("stopped")


def run(settings: ServerSettings) -> int:
    """Entry point of ``tfclassify serve``."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    asyncio.run(serve(settings))
    return 0


def _write_json_atomically(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    tmp.replace(path)
