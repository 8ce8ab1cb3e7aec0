"""Fuzzing (``bench/fuzzing.py``): a few thousand hypothesis-generated hostile requests for all three APIs and
garbage bytes for any method. No answer is INTERNAL or UNKNOWN or carries an overlong message, a well-behaved
client calling alongside is answered every time, and the server's memory comes back within 10% of its level
after warm-up. The same over the HTTP/REST port: no 5xx for any request (but the client's own deadline and
``:regress``), every error a JSON ``{"error": ..., "code": ...}``. ``make fuzz`` runs the same for longer."""

from __future__ import annotations

import time

import pytest
from conftest import ServerProcess

from bench.fuzzing import Bystander, fuzz, fuzz_http, warmed_up_rss
from tfclassify.server.runtime.memory import resident_mib

pytestmark = [pytest.mark.slow, pytest.mark.long]

CASES = 2000
#: HTTP cases: about 5 ms each (a tenth are raw requests on connections of their own).
HTTP_CASES = 1500


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_hostile_requests_get_clean_answers_and_cost_others_nothing(model_repo, tmp_path, transport):
    proc = ServerProcess(model_repo, tmp_path)  # one server per transport: failures of one do not hide the other's
    try:
        before = warmed_up_rss(proc)
        with Bystander(proc.address) as bystander:
            if transport == "grpc":
                cases, tally = CASES, fuzz(proc.address, CASES)
            else:
                cases, tally = HTTP_CASES, fuzz_http("127.0.0.1", proc.http_port, HTTP_CASES)
        time.sleep(2)
        after = resident_mib(proc.proc.pid)
        with proc.client() as client:
            assert client.is_server_ready()
    finally:
        assert proc.stop() == 0
    assert tally.cases == cases
    assert not tally.faults, "\n".join(tally.faults[:5])
    expected = {"INVALID_ARGUMENT", "NOT_FOUND"} if transport == "grpc" else {"HTTP 200", "HTTP 400", "HTTP 404",
                                                                            "HTTP 405"}
    assert expected <= set(tally.statuses), tally.statuses
    assert bystander.latencies and not bystander.failures, bystander.failures[:3]
    # A stalled event loop showed as seconds here; a responsive one as milliseconds (generous for slow machines).
    assert max(bystander.latencies) < 2.0, f"the well-behaved client waited {max(bystander.latencies):.2f} s"
    assert after <= before * 1.10, f"RSS {before:.0f} MiB after warm-up, {after:.0f} MiB after the fuzzing"
    log = proc.log()
    assert "Traceback" not in log, "expected client errors are not logged as server errors"
    assert [line for line in log.splitlines() if " ERROR " in line] == []
