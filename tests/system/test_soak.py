"""The soak in short (``make soak`` is the 10-minute version): every kind of call — single images,
256-image batches and streams through our API, TensorFlow Serving ``Predict``, OIP ``ModelInfer`` — sent
open loop at a fixed rate well under capacity, while the model config is changed under it: a hot reload,
a rollback and a batching change. Every call must succeed, and the version that answers must follow the
config."""

from __future__ import annotations

import pytest

from bench import soak

pytestmark = [pytest.mark.slow, pytest.mark.long]

SECONDS = 16.0  # eighths of 2 s: the reload at 4 s, the rollback at 8 s, the batching change at 12 s
RATE = 100.0  # calls/s: under a fifth of the slowest capacity measured here (473 calls/s with 30% of the CPU stolen)


def test_short_soak_loses_no_call_through_reload_rollback_and_config_change(model_repo, tmp_path):
    result = soak.run(model_repo / "fashion" / "1", tmp_path, SECONDS, load=0.8, serve_args=[], rate=RATE,
                      capacity_seconds=2.0, settle_seconds=0.0)

    assert result["failures"] == {}, result["failure_examples"]
    assert result["exit_code"] == 0, "SIGTERM drains and exits 0"
    calls = result["calls"]
    assert set(calls) == {kind.name for kind in soak.mix()}, calls
    assert sum(calls.values()) >= 0.95 * SECONDS * RATE, calls
    assert result["events"] == ["hot reload: version 2 served", "rollback: version 2 unloaded",
                                "config change: max_batch_size 4096 -> 512"]
    versions = [set(by_version) for by_version in result["versions_by_eighth"]]
    assert versions[0] == versions[1] == {1}, versions
    assert 2 in versions[2] | versions[3], f"version 2 never answered after the reload: {versions}"
    assert versions[5] == versions[6] == versions[7] == {1}, f"version 2 still answered after the rollback: {versions}"
    rss = result["rss_mib"]
    assert rss["end"] < 1.10 * rss["start"], rss
    table = soak.table(result)
    assert "| failed calls | 0 | 0 | 0 | 0 | 0 | 0 | 0 | 0 |" in table, table
