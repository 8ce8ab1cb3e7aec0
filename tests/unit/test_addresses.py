"""gRPC target addresses split into the host and port a client asks over HTTP when the server it reached does not
speak gRPC (tests/system/test_operator_traps.py points a client at such a server)."""

from __future__ import annotations

import pytest

from tfclassify.client.wrong_port import host_and_port


@pytest.mark.parametrize("address, expected", [
    ("localhost:8502", ("localhost", "8502")), ("[::1]:8502", ("[::1]", "8502")),
    ("dns:///models.example:8502", ("models.example", "8502")), ("ipv4:10.0.0.1:8502", ("10.0.0.1", "8502")),
    ("dns:models.example:8502", ("models.example", "8502")), ("dns://8.8.8.8/models.example:8502",
                                                               ("models.example", "8502")),
    ("unix:/run/tfclassify.sock", None), ("localhost", None), ("::1", None),
])
def test_addresses_are_split_for_the_http_question(address, expected):
    assert host_and_port(address) == expected
