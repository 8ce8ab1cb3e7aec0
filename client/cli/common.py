"""Helpers shared by the subcommands: server options and error reporting."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from tfclassify.client.datasets import DatasetNotFoundError, IdxFormatError, NpzFormatError
from tfclassify.client.errors import TfclassifyError

DEFAULT_SERVER = "localhost:8500"


class CliError(Exception):
    """A user-facing error: printed as ``tfclassify: error: ...``, exit status 1."""


def add_server_arguments(parser: argparse.ArgumentParser, timeout: float = 30.0) -> None:
    """``--server`` and ``--timeout``."""
    parser.add_argument(
        "--server",
        default=os.environ.get("TFCLASSIFY_SERVER", DEFAULT_SERVER),
        help="server address HOST:PORT [env TFCLASSIFY_SERVER; default: %(default)s]",
    )
    parser.add_argument(
        "--timeout", type=float, default=timeout, help="deadline of each RPC in seconds [default: %(default)s]"
    )


def quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ INFO lines (oneDNN notices, ...) unless the user set a level."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a subcommand, turning expected failures into one-line messages instead of tracebacks."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return func(args)
    except TfclassifyError as exc:
        return _fail(f"server {getattr(args, 'server', '')}: {exc}")
    except (CliError, DatasetNotFoundError, IdxFormatError, NpzFormatError, FileNotFoundError, FileExistsError) as exc:
        return _fail(str(exc))
    except (KeyError, ValueError) as exc:
        return _fail(exc.args[0] if exc.args else repr(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", status=130)
    except BrokenPipeError:
        # The reader of our output went away (`tfclassify score ... | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _fail(message: str, status: int = 1) -> int:
    print(f"tfclassify: error: {message}", file=sys.stderr)
    return status
