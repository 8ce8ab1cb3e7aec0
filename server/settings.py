"""Server settings: one typed object, filled from flags and ``TFCLASSIFY_*`` variables.

Importing this module does not import TensorFlow, so ``tfclassify serve
--help`` stays instant.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from tfclassify.common.ports import DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT, DEFAULT_METRICS_PORT

ENV_PREFIX = "TFCLASSIFY_"


def setting(default: Any = MISSING, *, help: str) -> Any:  # noqa: A002 - mirrors argparse
    """A settings field with its documentation (shown by ``--help``)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ServerSettings:
    """How ``tfclassify serve`` runs. Each field is also a ``--flag`` and a
    ``TFCLASSIFY_<FIELD>`` environment variable (the flag wins)."""

    model_repo: Path | str = setting(
        help="model repository: a folder of <model>/<version>/ SavedModel folders, or the URL of one in a bucket "
        "(s3://bucket/models, gs://, az://; versions are fetched into --model-cache, needs the storage extra)"
    )
    model_cache: Path | None = setting(
        None, help="with a bucket --model-repo: the local folder its versions are fetched into (owned by the "
        "server: versions gone from the bucket are removed from it); default: $XDG_CACHE_HOME/tfclassify/models/"
        "<hash of the URL>, else ~/.cache/..., else the system's temporary folder"
    )
    model_config: Path | None = setting(
        None, help="model config file (text-format or JSON ServerConfig): models, version policies, labels, batching"
    )
    poll_interval_s: float = setting(
        5.0, help="how often to look for new, removed or changed versions and config (0: only at start)"
    )
    host: str = setting("0.0.0.0", help="address the gRPC, HTTP/REST and metrics servers bind to")
    grpc_port: int = setting(DEFAULT_GRPC_PORT, help="gRPC port (Classifier, health, reflection); 0 picks a free one")
    http_port: int = setting(
        DEFAULT_HTTP_PORT, help="HTTP/REST port: TensorFlow Serving's REST API, the Open Inference Protocol over "
        "HTTP and /classify (TLS, tokens and limits as on the gRPC port); 0 picks a free one, -1 turns it off"
    )
    http_read_timeout_s: float = setting(
        30.0, help="how long an HTTP request's headers and body may take to arrive (a slower body gets 408, slower "
        "headers a closed connection, as a silent client does) and an idle keep-alive connection stays open"
    )
    metrics_port: int = setting(DEFAULT_METRICS_PORT, help="Prometheus /metrics port; 0 picks a free one, -1 turns it off")
    tls_cert: Path | None = setting(
        None, help="PEM certificate (chain) for TLS on the gRPC and HTTP/REST ports; reloaded when the file changes"
    )
    tls_key: Path | None = setting(None, help="PEM private key of --tls-cert")
    tls_client_ca: Path | None = setting(
        None, help="PEM CA bundle: require client certificates signed by it (mutual TLS)"
    )
    metrics_tls: str = setting(
        "off", help="the HTTP port: off (plain HTTP), tls (HTTPS with --tls-cert/--tls-key), or mtls (HTTPS "
        "that also requires client certificates signed by --tls-client-ca)"
    )
    reflection: int = setting(
        1, help="1: serve gRPC server reflection (grpcurl works without the .proto); 0: do not list the services"
    )
    auth_tokens: Path | None = setting(
        None, help="file of bearer tokens, 'TOKEN MODEL,MODEL' or 'TOKEN *' per line: every service but health "
        "then needs one (re-read when it changes)"
    )
    max_requests_in_progress: int = setting(
        1024, help="requests worked on at once (each stream message counts while it is answered); past it a "
        "request gets RESOURCE_EXHAUSTED at once instead of queueing; 0: no limit"
    )
    max_request_bytes_in_progress: int = setting(
        128 * 1024 * 1024, help="bytes of large request messages (1 MiB or more) decoded and answered at once; "
        "past it such a request gets RESOURCE_EXHAUSTED before it is decoded (one alone is always admitted), which "
        "bounds the memory that a burst of maximum-size requests takes (about 3x their size while answered)"
    )
    max_requests_per_client: int = setting(
        0, help="of those, the most one client may hold (a client: its bearer token, else its IP address); "
        "0: no per-client share"
    )
    max_pending_calls: int = setting(
        512, help="calls gRPC has received that the server has not started yet (its own queue, where calls wait "
        "while the server is busy): past half of it gRPC refuses a growing share of new calls, past it every "
        "new call (gRPC answers those CANCELLED), which bounds the wait before a request is seen"
    )
    max_images_per_request: int = setting(16384, help="most images one request may carry (more: INVALID_ARGUMENT)")
    max_message_bytes: int = setting(
        64 * 1024 * 1024, help="largest gRPC message or HTTP body received or sent (gRPC's 4 MiB default holds ~5,000 images)"
    )
    max_batch_size: int = setting(4096, help="most images in one TensorFlow call (larger requests are split)")
    max_batch_bytes: int = setting(
        64 * 1024 * 1024, help="most bytes of model input in one TensorFlow call: caps --max-batch-size for large "
        "images (a 224x224x3 float image is 588 KiB), with the queue and the warm-up scaled alike"
    )
    batch_timeout_micros: int = setting(
        5000, help="how long a partial batch waits for more images while another batch runs, or on a saturated "
        "server while requests from several callers keep coming (a lone caller's request: no wait)"
    )
    max_enqueued_images: int = setting(65536, help="most images queued per model version (more: RESOURCE_EXHAUSTED)")
    max_concurrent_batches: int = setting(
        0, help="TensorFlow calls of one version running at once, per replica; 0: 1 on a CPU, 2 on a GPU"
    )
    warmup_batch_sizes: str = setting("1,32,4096", help="batch sizes run to warm each version up before it serves")
    xla_max_batch_size: int = setting(
        0, help="XLA-compile each model for batches up to this size (padded to powers of two); 0: off"
    )
    device: str = setting(
        "auto", help="replica devices: auto (every GPU, else the CPU), cpu, cpu:all, cpu:N, gpu, gpu:N, or a list a,b"
    )
    logical_cpu_devices: int = setting(1, help="split the CPU into this many logical devices (with --device cpu:all)")
    gpu_memory_limit_mb: int = setting(0, help="per-GPU memory limit for this process; 0: grow as needed")
    workers: int = setting(
        1, help="server processes sharing the gRPC port, each with its own TensorFlow (use the cores: about one per "
        "2 cores on CPUs); the merged metrics and health are on the HTTP port"
    )
    intra_op_threads: int = setting(0, help="TensorFlow threads within one op (0: TensorFlow's default, one per core)")
    inter_op_threads: int = setting(0, help="TensorFlow ops run at once (0: TensorFlow's default)")
    inference_threads: int = setting(0, help="threads running TensorFlow calls (all versions share them); 0: replicas x max-concurrent-batches, "
                                   "at least 2 per replica")
    max_connection_age_s: float = setting(
        0.0, help="close client connections after this long (they reconnect, spreading over new pods); 0: never"
    )
    shutdown_grace_s: float = setting(10.0, help="on SIGTERM, how long in-flight requests may take to finish")
    port_file: Path | None = setting(None, help="write the bound ports as JSON here once the server is ready")
    access_log_sample: float = setting(
        0.0, help="log this fraction of RPCs (0: none, 1: all) as access-log lines: API, method, model, version, "
        "images, latency and status only"
    )
    feedback_capacity: int = setting(
        100_000, help="most images whose predictions are kept for a later Feedback call (requests with "
        "keep_for_feedback; the oldest go first; each request counts at least 1); 0: refuse keep_for_feedback"
    )
    feedback_ttl_s: float = setting(3600.0, help="how long kept predictions wait for their Feedback call")
    memory_trim_interval_s: float = setting(
        10.0, help="how often to give the heap's freed pages back to the system (glibc malloc_trim): without it, "
        "the resident size creeps up under steady traffic; 0: never"
    )
    log_level: str = setting("INFO", help="logging level (DEBUG also shows TensorFlow's start-up notices)")
    log_format: str = setting("text", help="log lines as text, or json (one object per line, for log collectors)")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add one ``--flag`` per field to ``parser`` (defaults from the environment)."""
        for f in fields(cls):
            env_name = ENV_PREFIX + f.name.upper()
            convert = _converter(str(f.type))
            env = os.environ.get(env_name)
            default = convert(env) if env is not None else (None if f.default is MISSING else f.default)
            parser.add_argument(
                "--" + f.name.replace("_", "-"),
                dest=f.name,
                type=convert,
                default=default,
                required=default is None and f.default is MISSING,
                metavar=f.name.split("_")[-1].upper(),
                help=f"{f.metadata['help']} [env {env_name}; default: {default}]",
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServerSettings:
        """Build from a namespace filled by ``add_arguments``."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def _path_or_url(text: str) -> Path | str:
    """A folder, or an object-store URL kept as text (a ``Path`` would fold its ``//``)."""
    from tfclassify.common.storage.urls import is_object_url

    return text if is_object_url(text) else Path(text)


def _converter(type_name: str):
    if type_name == "Path | str":
        return _path_or_url
    if "Path" in type_name:
        return Path
    if type_name.startswith("int"):
        return int
    if type_name.startswith("float"):
        return float
    return str
