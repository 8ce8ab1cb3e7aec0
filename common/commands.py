"""What every ``tfclassify`` subcommand shares, wherever it lives (``client/cli``, ``server/cli.py``,
``trainer/cli.py``): the error that ends a command with a one-line message. Stdlib only."""

from __future__ import annotations


class CliError(Exception):
    """A user-facing error: printed as ``tfclassify: error: ...``, exit status 1."""
