"""The ``tfclassify`` command: ``train``, ``serve``, ``score``, ``merge``, ``report``, ``compare``, ``promote``, ``classify``, ``models``, ``health``.

Subcommands that need TensorFlow (``train``, ``serve``) import it only when
they run, so ``tfclassify score --help`` is instant and works without it.
"""

from __future__ import annotations

import argparse
import sys

from tfclassify.client.cli import classify, compare, health, merge, models, promote, report, score, serve, train
from tfclassify.client.cli.common import CliError, run_command
from tfclassify.common.version import package_version

COMMANDS = (train, serve, score, merge, report, compare, promote, classify, models, health)


class _Parser(argparse.ArgumentParser):
    """An argument parser that takes no abbreviated options: argparse would read ``serve --port 8600`` as
    ``--port-file 8600`` (the only option starting so) and serve on the default port. Subcommands inherit it."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tfclassify",
        description="Train, serve and score TensorFlow image classifiers (the MNIST family).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 failure, 2 usage error, 3 files skipped, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    return run_command(args.run, args)


__all__ = ["CliError", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
