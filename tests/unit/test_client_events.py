"""grpc.aio's ERROR records about answers a departed client could not receive become counted DEBUG records."""

from __future__ import annotations

import logging

import pytest

from tfclassify.server import client_events


@pytest.fixture()
def grpc_log(caplog):
    counted = []
    remove = client_events.install(lambda: counted.append(1))
    yield logging.getLogger(client_events.GRPC_AIO_LOGGER), caplog, counted
    remove()


def raise_and_log(logger: logging.Logger, message: str) -> None:
    try:
        raise RuntimeError("Failed \"execute_batch\": (<grpc._cython.cygrpc.SendMessageOperation ...>,)")
    except RuntimeError:
        logger.exception(message)


def test_an_undelivered_answer_is_counted_and_not_an_error(grpc_log):
    logger, caplog, counted = grpc_log
    with caplog.at_level(logging.INFO):
        raise_and_log(logger, "ExecuteBatchError raised in core by servicer method [/tfclassify.v1.Classifier/Classify]")
        raise_and_log(logger, "Failed sending error status from server")
    assert counted == [1, 1]
    assert caplog.records == []


def test_it_is_one_debug_line_without_traceback_at_debug_level(grpc_log):
    logger, caplog, _counted = grpc_log
    with caplog.at_level(logging.DEBUG):
        raise_and_log(logger, "ExecuteBatchError raised in core by servicer method [/inference.GRPCInferenceService/ModelInfer]")
    [record] = caplog.records
    assert record.levelname == "DEBUG" and record.exc_info is None
    assert record.getMessage() == ("ExecuteBatchError raised in core by servicer method "
                                   "[/inference.GRPCInferenceService/ModelInfer]: the client went away before its "
                                   "answer was sent")


def test_other_grpc_errors_still_pass_as_errors(grpc_log):
    logger, caplog, counted = grpc_log
    with caplog.at_level(logging.INFO):
        raise_and_log(logger, "Unexpected [ValueError] raised by servicer method [/x/y]")
    assert counted == [] and [r.levelname for r in caplog.records] == ["ERROR"]
    assert caplog.records[0].exc_info is not None
