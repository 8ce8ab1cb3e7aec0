"""A short soak (``bench/soak.py``; ``make soak`` runs it for 10 minutes): mixed traffic from all three APIs,
unary and streaming, at 80% of the measured capacity, through a hot reload, a rollback and a config change.
No call may fail, the server's memory may not grow by 5%, and it drains and exits 0 at the end."""

from __future__ import annotations

from bench.soak import run


def test_mixed_traffic_through_reload_rollback_and_config_change_loses_nothing(model_repo, tmp_path):
    result = run(model_repo / "fashion" / "1", tmp_path, seconds=20, load=0.8, serve_args=[])
    assert result["events"] == ["hot reload: version 2 served", "rollback: version 2 unloaded",
                                "config change: max_batch_size 4096 -> 512"]
    assert set(result["calls"]) == {"single", "batch256", "stream", "tfs_predict", "oip_infer8"}
    assert sum(result["calls"].values()) > 1000
    assert not result["failures"], result["failure_examples"]
    rss = result["rss_mib"]
    assert rss["end"] < rss["start"] * 1.05, rss
    assert result["exit_code"] == 0
