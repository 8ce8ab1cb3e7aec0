"""The ``tfclassify`` command: ``train``, ``serve``, ``score``, ``merge``, ``report``, ``compare``, ``promote``, ``classify``, ``models``, ``health``.

The dispatcher: each subcommand is a module with ``add_parser(sub)`` and its ``run``. ``train`` lives with the
trainer (``tfclassify.trainer.cli``), ``serve`` with the server (``tfclassify.server.cli``), the others here.
Subcommands that need TensorFlow (``train``, ``serve``) import it only when they run, so ``tfclassify score
--help`` is instant and works without it.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys

from tfclassify.client.cli import classify, compare, health, merge, models, promote, report, score
from tfclassify.client.cli.arguments import CliError, run_command
from tfclassify.common.version import package_version
from tfclassify.server import cli as serve
from tfclassify.trainer import cli as train

#: The subcommands by name, in the order ``--help`` lists them: each a module with ``add_parser(sub)``.
COMMANDS = {
    "train": train, "serve": serve, "score": score, "merge": merge, "report": report, "compare": compare,
    "promote": promote, "classify": classify, "models": models, "health": health,
}


class _Parser(argparse.ArgumentParser):
    """An argument parser that takes no abbreviated options: argparse would read ``serve --port 8600`` as
    ``--port-file 8600`` (the only option starting so) and serve on the default port. Subcommands inherit it."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


class _CommandParser(_Parser):
    """A subcommand's parser: it reports the options it does not know itself, with its own usage and the option
    meant (argparse leaves them to the top-level parser, whose usage says nothing about the subcommand's options)."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}{self._did_you_mean(extras)}")
        return namespace, extras

    def _did_you_mean(self, extras: list[str]) -> str:
        options = [o for o in self._option_string_actions if o.startswith("--")]
        for extra in extras:
            close = difflib.get_close_matches(extra.split("=", 1)[0], options, n=1, cutoff=0.75)
            if extra.startswith("--") and close:
                return f" (did you mean {close[0]}?)"
        return ""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tfclassify",
        description="Train, serve and score TensorFlow image classifiers (the MNIST family).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser)
    for command in COMMANDS.values():
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 failure, 2 usage error, 3 files skipped, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    return run_command(args.run, args)


def console() -> None:
    """The ``tfclassify`` command: ``main``, then the process's end.

    After object storage was used the process ends without finalizing the interpreter (output and logs
    flushed first): obstore's runtime threads (Rust's tokio) may still be closing connections then, and one
    that reaches into Python while it is finalized aborts the process (SIGABRT) after a run that succeeded —
    3 times in 8 reading a prefix through dropped connections, never once the process ended this way.
    """
    try:
        status = main()
    except SystemExit as exc:  # argparse and the commands' own exits: the status Python would give
        code = exc.code
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
        status = 1 if code is not None and not isinstance(code, int) else (code or 0)
    if sys.modules.get("obstore") is not None:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(status)
    sys.exit(status)


__all__ = ["CliError", "build_parser", "console", "main"]

if __name__ == "__main__":
    console()
