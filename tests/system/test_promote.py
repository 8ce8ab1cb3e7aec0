"""``tfclassify promote`` and ``tfclassify compare`` against a real server whose config file names the labels:
the label moves only past the accuracy gate and the McNemar gate, on the running server, and survives a restart."""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import pytest
from conftest import FASHION_DIR, ServerProcess, tfclassify_cmd

HOLD_OUT = ("--dataset", "fashion_mnist", "--data-dir", str(FASHION_DIR), "--limit", "1000")
CONFIG = 'models {\n  name: "fashion"\n  version_policy { all {} }\n  version_labels { key: "stable" value: 1 }\n}\n'


@pytest.fixture(scope="module")
def setup(model_repo, tmp_path_factory):
    """``fashion`` versions 1 and 3 are our trained MLP; version 2 is the MNIST digits model (a bad candidate)."""
    root = tmp_path_factory.mktemp("promote")
    repo = root / "repo"
    for version, source in ((1, "fashion"), (2, "digits"), (3, "fashion")):
        shutil.copytree(model_repo / source / "1", repo / "fashion" / str(version))
    shutil.copy(repo / "fashion" / "1" / "labels.txt", repo / "fashion" / "2")  # the same classes, by name
    config = root / "models.pbtxt"
    config.write_text(CONFIG)
    args = ("--model-config", str(config), "--poll-interval-s", "0.5", "--warmup-batch-sizes", "1")
    server = ServerProcess(repo, root, *args)
    with server.client() as client:
        client.wait_for_ready(60)
    yield server, repo, root, config, args
    server.stop()


def promote(server, config, *args: str, expect: int) -> subprocess.CompletedProcess:
    result = subprocess.run(tfclassify_cmd("promote", "fashion", "--server", server.address, "--model-config",
                                           str(config), "--no-progress", *HOLD_OUT, *args),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == expect, result.stdout + result.stderr
    return result


def stable_version(server) -> int:
    with server.client() as client:
        return client.get_model_metadata("fashion", version_label="stable").version


def test_the_accuracy_gate_refuses_and_leaves_the_config_alone(setup):
    server, _, _, config, _ = setup
    result = promote(server, config, "--version", "2", "--label", "stable", "--min-accuracy", "0.7", expect=4)
    assert "not promoted: accuracy 0." in result.stdout and "is below --min-accuracy 0.7" in result.stdout
    assert f"{config} is unchanged" in result.stdout
    assert config.read_text() == CONFIG and stable_version(server) == 1


def test_the_mcnemar_gate_refuses_a_significantly_worse_version(setup, tmp_path):
    server, _, _, config, _ = setup
    result = promote(server, config, "--version", "2", "--label", "stable", "--min-accuracy", "0",
                     "--against-label", "stable", "--keep-predictions", str(tmp_path), expect=4)
    assert "is significantly worse than version 1, which 'stable' names now" in result.stdout
    assert config.read_text() == CONFIG and stable_version(server) == 1

    # compare, on the two runs promote kept: the McNemar p-value against an exact computation with integers.
    out = tmp_path / "c.json"
    shown = subprocess.run(tfclassify_cmd("compare", str(tmp_path / "incumbent.jsonl"), str(tmp_path / "candidate.jsonl"),
                                          "--report", str(out), "--report", str(tmp_path / "c.html"),
                                          "--report", str(tmp_path / "c.md")),
                           capture_output=True, text=True, timeout=120, check=True).stdout
    rows_a = [json.loads(line) for line in (tmp_path / "incumbent.jsonl").read_text().splitlines()]
    rows_b = [json.loads(line) for line in (tmp_path / "candidate.jsonl").read_text().splitlines()]
    only_a = sum(a["class"] == a["true_class"] and b["class"] != b["true_class"] for a, b in zip(rows_a, rows_b))
    only_b = sum(b["class"] == b["true_class"] and a["class"] != a["true_class"] for a, b in zip(rows_a, rows_b))
    n, k = only_a + only_b, min(only_a, only_b)
    exact = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
    comparison = json.loads(out.read_text())
    assert comparison["schema"] == "tfclassify-comparison/1" and comparison["num_images"] == 1000
    assert (comparison["mcnemar"]["only_a"], comparison["mcnemar"]["only_b"]) == (only_a, only_b)
    assert comparison["mcnemar"]["p_value"] == pytest.approx(exact, rel=1e-9, abs=1e-300)
    assert comparison["significant"] and comparison["difference"] < 0
    assert "A is better (McNemar p = " in shown
    html = (tmp_path / "c.html").read_text()
    assert html.count("<figure") == min(40, only_a) + min(40, only_b) and 'class="missing"' not in html
    assert (tmp_path / "c.md").read_text().startswith("# Comparison\n")


def test_a_passing_version_moves_the_label_live_and_it_survives_a_restart(setup, tmp_path):
    server, repo, root, config, args = setup
    result = promote(server, config, "--version", "3", "--label", "stable", "--min-accuracy", "0.7",
                     "--against-label", "stable", "--report", str(tmp_path / "r.json"), expect=0)
    assert "no significant difference" in result.stdout
    assert f"promoted: fashion 'stable' -> version 3 (was version 1) in {config}" in result.stdout
    assert "the server answers 'stable' with version 3" in result.stdout, "moved on the running server"
    assert stable_version(server) == 3
    assert json.loads((tmp_path / "r.json").read_text())["accuracy"] >= 0.7
    assert 'key: "stable"\n    value: 3' in config.read_text()
    assert [p.name for p in config.parent.iterdir() if p.name.startswith(".models.pbtxt")] == [], "no temporary left"
    # A new label is added beside it.
    promote(server, config, "--version", "3", "--label", "canary", "--min-accuracy", "0.7", expect=0)
    server.stop()
    restarted = ServerProcess(repo, root, *args)
    try:
        with restarted.client() as client:
            client.wait_for_ready(60)
            assert client.get_model_metadata("fashion", version_label="stable").version == 3
            assert client.get_model_metadata("fashion", version_label="canary").version == 3
    finally:
        assert restarted.stop() == 0


def test_promote_refuses_bad_arguments_in_one_line(setup, tmp_path):
    server, _, _, config, _ = setup
    other = tmp_path / "other.pbtxt"
    other.write_text('models { name: "digits" }\n')
    for args, message in (
        (("--model-config", str(other)), f"{other} does not list model 'fashion': the server would not serve it"),
        (("--min-accuracy", "70"), "--min-accuracy is an accuracy from 0 to 1, not 70.0"),
    ):
        result = subprocess.run(tfclassify_cmd("promote", "fashion", "--server", server.address, "--version", "3",
                                               "--label", "stable", "--model-config", str(config),
                                               "--min-accuracy", "0.5", *HOLD_OUT, *args),
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 1 and result.stderr.strip() == f"tfclassify: error: {message}", result.stderr
