"""``python -m bench.object_store`` at tiny sizes: it runs to its table, every row scored what it says, and the CPU
it attributes to rclone is on the rows that read from it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
@pytest.mark.long
def test_the_object_store_bench_at_tiny_sizes(model_repo, tmp_path):
    repo = tmp_path / "models"
    repo.mkdir()
    (repo / "fashion_mnist").symlink_to(model_repo / "fashion")  # the name the benchmarks score with
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.object_store", "--model-repo", str(repo), "--images", "400", "--big", "4000", "--batch-size", "64",
         "--rounds", "1", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3. prefix, 4,000 objects" in result.stdout
    r = json.loads(out.read_text())
    expected = {"prefix": 400, "folder": 400, "zip_object": 400, "zip": 400, "first": 400, "big": 4000}
    assert {key: r[key]["images"] for key in expected} == expected
    assert all(r[key]["rate"] > 0 and r[key]["peak_mib"] > 0 for key in expected)
    assert r["prefix"]["cpu"]["rclone"] > 0 and r["big"]["cpu"]["rclone"] > 0, "rclone served the prefixes"
    assert r["folder"]["cpu"]["rclone"] < 0.05 and r["zip"]["cpu"]["rclone"] < 0.05, "local rows leave rclone idle"
    assert r["big"]["memory"]["at_images"] >= 1000 and r["big"]["memory"]["hwm_at"] > 0, "RSS sampled at the mark"
