"""``tfclassify serve``: run the gRPC server on a model repository.

The subcommand's parser and run, registered by the ``tfclassify`` dispatcher (``tfclassify.client.cli``). Light at
import (settings and logs, no TensorFlow, no gRPC server): ``tfclassify serve --help`` is instant, and in the base
install, which holds this package but not the server extra, ``serve`` says which extra it needs."""

from __future__ import annotations

import argparse

from tfclassify.common.commands import CliError
from tfclassify.common.tf_logs import quiet_tensorflow
from tfclassify.server.logs import LOG_FORMATS, StartupNoiseFilter, nvidia_driver_present
from tfclassify.server.settings import ServerSettings


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "serve",
        help="serve a model repository over gRPC",
        description="Serve every model in a model repository over gRPC (Classifier, health, reflection), "
        "with Prometheus metrics. Needs the server extra: pip install 'tfclassify[server]'.",
    )
    ServerSettings.add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    quiet_tensorflow()
    settings = ServerSettings.from_args(args)
    if settings.log_format not in LOG_FORMATS:
        raise CliError(f"--log-format must be one of {', '.join(LOG_FORMATS)}, not {settings.log_format!r}")
    if isinstance(settings.model_repo, str):
        _check_bucket_repository(settings)
    elif not settings.model_repo.is_dir():
        raise CliError(f"--model-repo {settings.model_repo} is not a folder")
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise CliError("--tls-cert and --tls-key go together")
    if settings.tls_client_ca is not None and settings.tls_cert is None:
        raise CliError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    try:
        from tfclassify.server.apis.access_log import AccessLog  # neither imports TensorFlow
        from tfclassify.server.tls import check_http_tls

        check_http_tls(settings.metrics_tls, settings.tls_cert, settings.tls_client_ca)
        AccessLog(settings.access_log_sample)
    except ImportError as exc:
        raise CliError(f"tfclassify serve needs the server extra ({exc}): pip install 'tfclassify[server]'") from exc
    except ValueError as exc:
        raise CliError(str(exc)) from None
    for path in (settings.tls_cert, settings.tls_key, settings.tls_client_ca):
        if path is not None and not path.is_file():
            raise CliError(f"{path}: no such file")
    if settings.auth_tokens is not None:
        from tfclassify.server.auth import TokenFileError, TokenTable  # no TensorFlow in it

        try:
            TokenTable(settings.auth_tokens)
        except TokenFileError as exc:
            raise CliError(str(exc)) from None
    if settings.max_requests_in_progress < 0 or settings.max_requests_per_client < 0:
        raise CliError("--max-requests-in-progress and --max-requests-per-client must not be negative")
    if settings.max_batch_bytes < 1:
        raise CliError(f"--max-batch-bytes must be 1 or more, not {settings.max_batch_bytes}")
    if settings.max_request_bytes_in_progress < 1:
        raise CliError(f"--max-request-bytes-in-progress must be 1 or more, not {settings.max_request_bytes_in_progress}")
    if settings.max_pending_calls < 2:
        raise CliError(f"--max-pending-calls must be 2 or more, not {settings.max_pending_calls}")
    if settings.feedback_capacity < 0 or settings.feedback_ttl_s <= 0:
        raise CliError("--feedback-capacity must not be negative and --feedback-ttl-s must be positive")
    if settings.workers < 1:
        raise CliError(f"--workers must be 1 or more, not {settings.workers}")
    if settings.workers > 1:
        return _supervise(settings)
    try:
        from tfclassify.server.ports import BindError, check_port_free  # no TensorFlow in either
        from tfclassify.server.workers import WorkerPlace
    except ImportError as exc:
        raise CliError(f"tfclassify serve needs the server extra ({exc}): pip install 'tfclassify[server]'") from exc

    if WorkerPlace.from_environment() is None:  # a --workers worker shares its supervisor's port on purpose
        try:  # before TensorFlow's seconds of start-up; the server checks again when it binds
            check_port_free(settings.host, settings.grpc_port)
            if settings.http_port >= 0:
                check_port_free(settings.host, settings.http_port, "HTTP/REST")
        except BindError as exc:
            raise CliError(str(exc)) from None
    # TensorFlow's start-up notices (and, without an NVIDIA driver, its cuInit "error") are dropped
    # while it is imported and the devices are set up; --log-level DEBUG shows them.
    noise = StartupNoiseFilter(gpu_lines_are_noise=not nvidia_driver_present(),
                               json_lines=settings.log_format == "json")
    if settings.log_level.upper() != "DEBUG":
        noise.start()
    try:
        try:
            from tfclassify.server import app
        except ImportError as exc:
            raise CliError(f"tfclassify serve needs the server extra ({exc}): pip install 'tfclassify[server]'") from exc
        try:
            return app.run(settings, after_setup=noise.stop)
        except app.BindError as exc:
            raise CliError(str(exc)) from None
    finally:
        noise.stop()


def _check_bucket_repository(settings: ServerSettings) -> None:
    """A bucket ``--model-repo``: a URL with a bucket, the storage extra, a bucket that answers, a cache folder that
    can be made; each failure one line. An unreachable store is not fatal: the server starts from its cache and
    polls on (``--model-repo`` of a store that is down for a while must not keep a pod from starting)."""
    from tfclassify.common.storage.errors import UNREACHABLE, StorageError, StorageUnavailable
    from tfclassify.common.storage.urls import parse
    from tfclassify.server.core.object_repository import default_cache

    url = str(settings.model_repo)
    try:
        root = parse(url if url.endswith("/") else url + "/")
    except ValueError as exc:
        raise CliError(f"--model-repo {exc}") from None
    try:
        from tfclassify.common.storage.syncing import list_objects

        next(iter(list_objects(root, page_size=1)), None)
    except StorageUnavailable as exc:
        raise CliError(f"--model-repo {url}: {exc}") from None
    except StorageError as exc:
        if exc.kind != UNREACHABLE:
            raise CliError(f"--model-repo {exc}") from None
    cache = settings.model_cache or default_cache(url)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"--model-cache {cache}: cannot be made ({exc.strerror or exc})") from None


def _supervise(settings: ServerSettings) -> int:
    """``--workers N``: the supervisor (no TensorFlow here) runs N server processes as one server."""
    try:
        from tfclassify.server.logs import configure_logging
        from tfclassify.server.ports import BindError
        from tfclassify.server.workers import Supervisor
    except ImportError as exc:
        raise CliError(f"tfclassify serve needs the server extra ({exc}): pip install 'tfclassify[server]'") from exc
    configure_logging(settings.log_level, settings.log_format)
    try:
        return Supervisor(settings).run()
    except BindError as exc:
        raise CliError(str(exc)) from None
