"""Helpers shared by the subcommands: server options and error reporting."""

from __future__ import annotations

import argparse
import logging
import os
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from tfclassify.client.client import ClassifierClient
from tfclassify.client.errors import TfclassifyError
from tfclassify.client.http_transport import is_http_url
from tfclassify.client.quality.outputs import ReportPathError, print_notes, write_reports
from tfclassify.client.quality.report import RowSummary, format_skipped, report_from_rows
from tfclassify.client.quality.run_comparison import ComparisonError
from tfclassify.client.scoring.output import OutputError
from tfclassify.client.tls import channel_credentials, ssl_context
from tfclassify.common.commands import CliError
from tfclassify.common.datasets import DatasetNotFoundError, IdxFormatError, NpzFormatError
from tfclassify.common.inputs.labels import LabelError
from tfclassify.common.inputs.sources import InputError
from tfclassify.common.storage.errors import StorageError, StorageUnavailable
from tfclassify.common.storage.urls import is_object_url

DEFAULT_SERVER = "localhost:8500"

# Exit statuses, documented in the README.
EXIT_OK = 0
EXIT_FAILURE = 1  # the command failed (bad input, server error, ...)
EXIT_USAGE = 2  # wrong command-line arguments (argparse)
EXIT_SKIPPED = 3  # the run completed, but some files were skipped (not images, corrupt, refused)
EXIT_STORAGE = 5  # object storage: no such bucket or object, access denied, no credentials, unreachable
EXIT_INTERRUPTED = 130  # stopped by Ctrl-C or SIGTERM; a scoring run can be resumed

#: Errors whose message is the whole story: printed as one line, exit status 1.
USER_ERRORS = (DatasetNotFoundError, IdxFormatError, NpzFormatError, InputError, LabelError, OutputError, ReportPathError,
               ComparisonError, StorageUnavailable,
               FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)


def add_server_arguments(parser: argparse.ArgumentParser, timeout: float = 30.0, several: bool = False) -> None:
    """``--server`` (repeatable when ``several``) and ``--timeout``."""
    default = os.environ.get("TFCLASSIFY_SERVER", DEFAULT_SERVER)
    if several:
        parser.add_argument(
            "--server", action="append", metavar="ADDRESS",
            help="server HOST:PORT (gRPC), dns:///NAME:PORT for every address of a name (round-robin), or "
            "http(s)://HOST:PORT for the server's HTTP port; repeat it to spread over several servers "
            f"[env TFCLASSIFY_SERVER; default: {default}]",
        )
        parser.set_defaults(default_server=default)
    else:
        parser.add_argument(
            "--server", default=default,
            help="server address HOST:PORT (gRPC), or http(s)://HOST:PORT for its HTTP port "
            "[env TFCLASSIFY_SERVER; default: %(default)s]",
        )
    parser.add_argument(
        "--timeout", type=float, default=timeout,
        help="deadline of each RPC (HTTP request) in seconds [default: %(default)s]"
    )
    tls = parser.add_argument_group("TLS (servers started with --tls-cert; over HTTP, an https:// address)")
    tls.add_argument("--tls-ca", default=os.environ.get("TFCLASSIFY_TLS_CA"), metavar="FILE",
                     help="PEM CA that signed the server's certificate (else the system's trusted roots, "
                     "when --tls is given) [env TFCLASSIFY_TLS_CA]")
    tls.add_argument("--tls", action="store_true", help="use TLS with the system's trusted roots")
    tls.add_argument("--tls-cert", default=os.environ.get("TFCLASSIFY_TLS_CERT"), metavar="FILE",
                     help="this client's PEM certificate, for servers that require one (mutual TLS) "
                     "[env TFCLASSIFY_TLS_CERT]")
    tls.add_argument("--tls-key", default=os.environ.get("TFCLASSIFY_TLS_KEY"), metavar="FILE",
                     help="the PEM key of --tls-cert [env TFCLASSIFY_TLS_KEY]")
    parser.set_defaults(token=os.environ.get("TFCLASSIFY_TOKEN"))  # no --token: it would show in the process list
    parser.add_argument("--token-file", default=os.environ.get("TFCLASSIFY_TOKEN_FILE"), metavar="FILE",
                        help="file holding the bearer token for servers started with --auth-tokens (or the "
                        "token itself in the environment variable TFCLASSIFY_TOKEN; a token on the command "
                        "line would show in the process list) [env TFCLASSIFY_TOKEN_FILE]")


def token_from(args: argparse.Namespace) -> str | None:
    """The bearer token of ``--token-file`` or ``TFCLASSIFY_TOKEN`` (None: no token)."""
    if args.token_file:
        try:
            return Path(args.token_file).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise CliError(f"--token-file {args.token_file}: {exc.strerror}") from None
    return args.token or None


def client_from(args: argparse.Namespace) -> ClassifierClient:
    """A ``ClassifierClient`` for ``--server`` (gRPC, or HTTP for an ``http(s)://`` URL) with the command's
    timeout, TLS options and token."""
    if is_http_url(args.server):
        return ClassifierClient(args.server, timeout=args.timeout, ssl_context=ssl_context_from(args, [args.server]),
                                token=token_from(args))
    return ClassifierClient(args.server, timeout=args.timeout, credentials=credentials_from(args),
                            token=token_from(args))


def credentials_from(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """The channel credentials the TLS options ask for (None: plain text)."""
    if args.tls and not (args.tls_ca or args.tls_cert or args.tls_key):
        return grpc.ssl_channel_credentials()
    return channel_credentials(args.tls_ca, args.tls_cert, args.tls_key)


def ssl_context_from(args: argparse.Namespace, servers: list[str]) -> ssl.SSLContext | None:
    """The TLS of the ``https://`` servers among ``servers``, from the TLS options (None when there is none);
    ``CliError`` for TLS options with a plain ``http://`` server, which would ignore them."""
    wants_tls = bool(args.tls or args.tls_ca or args.tls_cert or args.tls_key)
    plain = [s for s in servers if is_http_url(s) and not s.lower().startswith("https://")]
    if wants_tls and plain:
        raise CliError(f"--server {plain[0]} is plain HTTP: TLS options (--tls, --tls-ca, --tls-cert, --tls-key or "
                       "their TFCLASSIFY_TLS_* variables) need an https:// address")
    if not wants_tls or not any(is_http_url(s) for s in servers):
        return None
    return ssl_context(args.tls_ca, args.tls_cert, args.tls_key)


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a subcommand, turning expected failures into one-line messages instead of tracebacks."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return func(args)
    except TfclassifyError as exc:
        server = getattr(args, "server", None) or getattr(args, "default_server", "")
        return _fail(f"server {', '.join(server) if isinstance(server, list) else server}: {exc}")
    except StorageError as exc:  # its message is ours, secret-free (tfclassify.common.storage.errors)
        return _fail(str(exc), status=EXIT_STORAGE)
    except (CliError, *USER_ERRORS) as exc:
        return _fail(str(exc))
    except (KeyError, ValueError) as exc:
        return _fail(exc.args[0] if exc.args else repr(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", status=EXIT_INTERRUPTED)
    except BrokenPipeError:
        # The reader of our output went away (`tfclassify score ... | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def add_skipped_ok_argument(parser: argparse.ArgumentParser) -> None:
    """``--skipped-ok``: exit 0 rather than 3 when files were skipped (batch jobs whose runner retries
    every non-zero exit, such as a Kubernetes Job)."""
    parser.add_argument("--skipped-ok", action="store_true",
                        help="exit 0, not 3, when some files were skipped (they are still in the output and report)")


def add_report_argument(parser: argparse.ArgumentParser, urls: bool = False) -> None:
    """``--report PATH`` (repeatable; the format by the name's ending) and ``--data-dir`` for thumbnails; ``urls``:
    an object URL is taken too (kept a ``str``)."""
    parser.add_argument("--report", type=path_or_url if urls else Path, action="append", default=[],
                        metavar="PATH|URL" if urls else "PATH",
                        help="write the report here: .json (schema tfclassify-report/1), .md, or .html (plots and "
                        "thumbnails of the mistakes, one self-contained file)"
                        + ("; or an object URL (s3://BUCKET/reports/report.json ...)" if urls else "")
                        + "; repeatable")


def path_or_url(text: str) -> Path | str:
    """An option's value: an object URL as it is (a ``Path`` would fold its ``//``), else a path."""
    return text if is_object_url(text) else Path(text)


def print_report(summary: RowSummary, labels: list[str], run: dict, report_paths: Sequence[Path | str],
                 skipped_ok: bool = False, record: dict | None = None, data_dir: Path | None = None) -> int:
    """Print the report of an output file's rows and write it to ``report_paths``; returns the exit status:
    ``EXIT_SKIPPED`` when some files were skipped, unless ``skipped_ok``. ``record`` (the run record) tells an
    HTML report where to read the thumbnails back from."""
    report = report_from_rows(summary, labels, run=run)
    if report is None:
        print("no true labels: accuracy not computed")
        for line in format_skipped(summary.skipped, summary.skipped_files):
            print(line)
        if report_paths:
            print(f"no report written to {', '.join(map(str, report_paths))}: it needs true labels")
    else:
        print()
        print(report.format_text())
        if report_paths:
            print_notes(write_reports(report, report_paths, record, data_dir=data_dir))
            print(f"\nreport written to {', '.join(map(str, report_paths))}")
    return EXIT_SKIPPED if summary.skipped and not skipped_ok else EXIT_OK


def _fail(message: str, status: int = 1) -> int:
    print(f"tfclassify: error: {message}", file=sys.stderr)
    return status
