"""The clients' ``retries`` argument is checked when a client is made (tests/system/test_overload.py shows the
retries against a flooded server)."""

from __future__ import annotations

import pytest

from tfclassify.client import TfclassifyError
from tfclassify.client.aio import ClassifierClient


def test_client_retries_are_checked():
    from tfclassify.client import ClassifierClient as SyncClient

    for bad in (-1, 5, 1.5, True, "2"):
        with pytest.raises(TfclassifyError, match="retries must be a whole number from 0 to 4"):
            SyncClient("localhost:1", retries=bad)
        with pytest.raises(TfclassifyError, match="retries must be a whole number from 0 to 4"):
            ClassifierClient("localhost:1", retries=bad)
