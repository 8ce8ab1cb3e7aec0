"""``tfclassify health``: ask the standard gRPC health service, optionally waiting."""

from __future__ import annotations

import argparse

from tfclassify.client.cli.arguments import CliError, add_server_arguments, client_from
from tfclassify.client.errors import TfclassifyError


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "health",
        help="check that a server is ready (exit 0) or not (exit 1)",
        description="Ask the server's gRPC health service whether it is SERVING: the whole server, or one "
        "model with --service NAME (with --server http(s)://HOST:PORT, its HTTP readiness: /v2/health/ready, "
        "/v2/models/NAME/ready). With --wait, keep asking until it is or the time is up.",
    )
    add_server_arguments(parser, timeout=5.0)
    parser.add_argument("--service", default="", help="a model name or gRPC service name (default: the server)")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS", help="wait up to this long")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with client_from(args) as client:
        if args.wait > 0:
            try:
                client.wait_for_ready(args.wait, service=args.service)
            except TfclassifyError as exc:
                raise CliError(exc.details) from exc
        elif not client.is_server_ready(args.service):
            raise CliError(f"server at {args.server} is not serving {args.service or 'requests'}")
    print(f"{args.server}: SERVING")
    return 0
