"""Expected client events that gRPC's own Python code logs as server errors: counted, logged at DEBUG.

When a client goes away (it cancels, its deadline passes, its connection drops) while the server is sending it
an answer, grpc.aio logs ``ExecuteBatchError raised in core by servicer method [...]`` at ERROR with a traceback,
unless it noticed the client's departure first (a race inside grpc.aio). Nothing is wrong with the server: the
answer just has nobody to go to. An operator alerting on ERROR lines must not be paged for that, so this filter
on grpc's logger turns such records into one DEBUG line without the traceback and counts them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

#: The logger grpc.aio's servicer-side errors come from.
GRPC_AIO_LOGGER = "grpc._cython.cygrpc"
#: How grpc.aio's messages about answers that could not be sent begin.
UNDELIVERED_PREFIXES = ("ExecuteBatchError raised in core by servicer method", "Failed sending error status from server")


class UndeliveredAnswerFilter(logging.Filter):
    """Turns grpc.aio's records about answers a departed client could not receive into DEBUG records without a
    traceback, calling ``count()`` for each; other records pass unchanged."""

    def __init__(self, count: Callable[[], None]) -> None:
        super().__init__()
        self._count = count

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and str(record.msg).startswith(UNDELIVERED_PREFIXES):
            self._count()
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.exc_info = record.exc_text = None
            record.msg, record.args = f"{record.getMessage()}: the client went away before its answer was sent", None
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def install(count: Callable[[], None]) -> Callable[[], None]:
    """Filter grpc.aio's logger (see the module's docstring); returns a function that removes the filter."""
    logger = logging.getLogger(GRPC_AIO_LOGGER)
    undelivered = UndeliveredAnswerFilter(count)
    logger.addFilter(undelivered)
    return lambda: logger.removeFilter(undelivered)
