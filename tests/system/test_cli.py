"""The ``tfclassify`` command as a user runs it, against a real server."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
from archives import image_members, write_zip
from conftest import FASHION_DIR, FASHION_LABELS, MNIST_DIR, tfclassify_cmd
from PIL import Image

from tfclassify.client.cli import COMMANDS


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(tfclassify_cmd(*args), capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_score_dataset_writes_a_consistent_report(server, client, fashion_test, tmp_path):
    report_path, preds_path = tmp_path / "report.json", tmp_path / "preds.jsonl"
    result = run(
        "score", "--server", server.address, "--model", "fashion", "--dataset", "fashion_mnist",
        "--data-dir", str(FASHION_DIR), "--limit", "3000", "--batch-size", "500",
        "--report", str(report_path), "--predictions", str(preds_path), "--no-progress",
    )
    report = json.loads(report_path.read_text())
    expected = client.classify(fashion_test.images[:3000], "fashion").classes
    assert report["num_images"] == 3000
    assert report["accuracy"] == float(np.mean(expected == fashion_test.labels[:3000]))
    assert sum(map(sum, report["confusion_matrix"])) == 3000
    assert len(report["per_class"]) == 10 and report["per_class"][0]["label"] == "T-shirt/top"
    assert report["run"]["versions"] == {"1": 3000}
    lines = [json.loads(line) for line in preds_path.read_text().splitlines()]
    assert [row["index"] for row in lines] == list(range(3000)), "every image exactly once, in order"
    assert [row["class"] for row in lines] == expected.tolist()
    assert f"accuracy {report['accuracy']:.4f} on 3000 images" in result.stdout
    assert "most confused pairs" in result.stdout


def test_score_idx_files_with_labels(server, tmp_path):
    result = run(
        "score", "--server", server.address, "--model", "digits", "--no-progress",
        "--images", str(MNIST_DIR / "t10k-images-idx3-ubyte.gz"),
        "--labels", str(MNIST_DIR / "t10k-labels-idx1-ubyte.gz"), "--report", str(tmp_path / "r.json"),
    )
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["num_images"] == 10000 and report["accuracy"] > 0.85
    assert "scored 10,000 images of t10k-images-idx3-ubyte.gz with digits version 1 in " in result.stdout


def test_classify_models_and_health_commands(server, fashion_test, tmp_path):
    files = []
    for i in range(2):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(fashion_test.images[i]).save(path)
        files.append(str(path))
    out = run("classify", "--server", server.address, "--model", "fashion", "--json", *files).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["file"] for r in rows] == files and all(len(r["top_k"]) == 3 for r in rows)
    listing = run("models", "--server", server.address).stdout
    # The architecture and accuracy from the card, with the 4 decimals of every accuracy the commands print.
    assert re.search(r"^fashion .* 10 mlp512 +0\.\d{4}  ", listing, re.M), listing
    assert re.search(r"^digits .* 10 - +- ", listing, re.M), listing
    info = json.loads(run("models", "fashion", "--server", server.address).stdout)
    assert info["labels"][1] == "Trouser" and info["training_metadata"]["arch"]["parameters"] == 407_050
    assert "SERVING" in run("health", "--server", server.address).stdout


def test_errors_are_one_line_messages_not_tracebacks(server, tmp_path):
    cases = [
        (("score", "--server", server.address, "--model", "nope", "--dataset", "fashion_mnist",
          "--data-dir", str(FASHION_DIR)), "NOT_FOUND: model 'nope' not found"),
        (("score", "--server", server.address, "--model", "fashion", "--images", str(tmp_path / "missing.npz")),
         "missing.npz"),
        (("score", "--server", "127.0.0.1:1", "--model", "fashion", "--dataset", "fashion_mnist",
          "--data-dir", str(FASHION_DIR), "--timeout", "2"), "UNAVAILABLE"),
        (("health", "--server", "127.0.0.1:1", "--timeout", "1"), "not serving"),
    ]
    for args, needle in cases:
        result = run(*args, check=False)
        assert result.returncode == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr and needle in result.stderr, result.stderr
        assert result.stderr.startswith("tfclassify: error: ")


def test_an_abbreviated_option_is_a_usage_error_not_another_option(tmp_path):
    # argparse would take --port for --port-file: a server on the default port and a file named 8600.
    result = subprocess.run(tfclassify_cmd("serve", "--model-repo", str(tmp_path), "--port", "8600"),
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2 and "unrecognized arguments: --port 8600" in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []
    result = run("score", "--serv", "127.0.0.1:1", "--model", "m", "--dataset", "mnist", check=False)
    assert result.returncode == 2 and "unrecognized arguments: --serv" in result.stderr, result.stderr


def test_train_reports_a_missing_dataset_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TFCLASSIFY_DATASET_MIRROR", (tmp_path / "offline").as_uri())
    result = subprocess.run(
        tfclassify_cmd("train", "--dataset", "k49", "--model-repo", str(tmp_path / "repo")),
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "dataset 'k49' (train split) not found" in result.stderr and "k49-train-imgs.npz" in result.stderr
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").rglob("saved_model.pb"))


def test_the_summary_says_what_was_scored_and_skipped_once_in_good_english(server, fashion_test, tmp_path):
    """One image is "1 image"; with nothing scored there is no version and no rate; an empty input "holds" no
    files and two "hold" none; a finished merge counts its shards and rows in the right number."""
    common = ("score", "--server", server.address, "--model", "fashion", "--no-progress")
    one = tmp_path / "one.png"
    Image.fromarray(fashion_test.images[0]).save(one)
    result = run(*common, "--images", str(one))
    assert re.match(r"scored 1 image of one\.png with fashion version 1 in \d+\.\d\d s \([\d,]+ images/s, "
                    r"\+\d+\.\d\d s listing and checking the inputs\)\n", result.stdout), result.stdout
    junk = write_zip(tmp_path / "junk.zip", [("Shirt/a.txt", b"no"), ("Shirt/b.png", b"")])
    result = run(*common, "--images", str(junk), "--labels", "folder", check=False)
    assert result.returncode == 3, result.stderr
    first = result.stdout.splitlines()[0]
    assert re.fullmatch(r"scored none of the 2 files of junk\.zip in \d+\.\d\d s \(\+\d+\.\d\d s listing and "
                        r"checking the inputs\); 2 skipped", first), first
    empty = write_zip(tmp_path / "empty.zip", [])
    result = run(*common, "--images", str(empty), check=False)
    assert (result.returncode, result.stderr) == (1, f"tfclassify: error: no images to score: {empty} holds no files\n")
    result = run(*common, "--images", str(empty), "--images", str(empty), check=False)
    assert result.stderr == f"tfclassify: error: no images to score: {empty}, {empty} hold no files\n"
    members = image_members(fashion_test.images[:40], fashion_test.labels[:40], FASHION_LABELS)
    photos = write_zip(tmp_path / "photos.zip", members)
    for i in range(2):
        run(*common, "--images", str(photos), "--shard", f"{i}/2", "--output", str(tmp_path / f"s{i}.jsonl"))
    result = run("merge", str(tmp_path / "s0.jsonl"), str(tmp_path / "s1.jsonl"), "--output", str(tmp_path / "m.jsonl"))
    assert result.stdout.startswith(f"merged 2 shards into {tmp_path / 'm.jsonl'}: 40 rows\n"), result.stdout


def test_a_misspelt_option_gets_the_commands_own_usage_and_the_option_meant(tmp_path):
    result = run("score", "--model", "m", "--dataset", "mnist", "--lables", "folder", check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("usage: tfclassify score ") and "[--labels auto|folder|none|FILE]" in result.stderr
    assert result.stderr.endswith(
        "tfclassify score: error: unrecognized arguments: --lables folder (did you mean --labels?)\n"), result.stderr
    result = run("report", str(tmp_path / "p.jsonl"), "--qiet", check=False)
    assert result.returncode == 2 and result.stderr.startswith("usage: tfclassify report ")
    assert "unrecognized arguments: --qiet (did you mean --quiet?)" in result.stderr
    result = run("models", "--zzz", check=False)
    assert result.returncode == 2 and result.stderr.endswith("tfclassify models: error: unrecognized arguments: --zzz\n")


def test_every_help_page_shows_percent_signs_and_defaults_as_written():
    """argparse %-formats option help but not descriptions: "95%%" must be written "95%" in one and not the other."""
    names = list(COMMANDS)
    assert len(names) == 10
    for name in ["", *names]:
        result = run(*([name] if name else []), "--help")
        assert "%%" not in result.stdout and "%(" not in result.stdout, (name, result.stdout)
    assert "95% intervals" in run("report", "--help").stdout
