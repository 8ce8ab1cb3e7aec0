"""The access log's sampling, in process: a fraction of the calls is logged, and a fraction outside 0..1 is
refused (tests/system/test_access_log.py checks what a server logs)."""

from __future__ import annotations

import logging

import pytest

from tfclassify.server.apis.access_log import AccessLog


def test_the_sample_keeps_about_that_fraction(caplog):
    access = AccessLog(0.25)
    with caplog.at_level(logging.INFO, logger="tfclassify.access"):
        for _ in range(4000):
            access.record("tfclassify", "Classify", "fashion", True, "1", 1, 0.001, "OK")
    # Binomial(4000, 0.25): mean 1,000, standard deviation 27; 800-1,200 is more than 7 deviations wide.
    assert 800 < len(caplog.records) < 1200
    with pytest.raises(ValueError, match="between 0 and 1"):
        AccessLog(1.5)
