"""``tfclassify serve``: run the gRPC server on a model repository."""

from __future__ import annotations

import argparse

from tfclassify.client.cli.common import CliError, quiet_tensorflow
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
    try:
        from tfclassify.server import app
    except ImportError as exc:
        raise CliError(f"tfclassify serve needs the server extra ({exc}): pip install 'tfclassify[server]'") from exc
    settings = ServerSettings.from_args(args)
    if not settings.model_repo.is_dir():
        raise CliError(f"--model-repo {settings.model_repo} is not a folder")
    return app.run(settings)
