"""``tfclassify score`` on folders and archives of real images, against a real server.

PNG is lossless, so every prediction must equal what the server answers for
the same pixels sent as a tensor: that is the independent computation the
outputs and reports are checked against.
"""

from __future__ import annotations

import json
import subprocess
import zipfile

import numpy as np
import pytest
from archives import broken_files, image_members, read_jsonl, write_manifest, write_tar, write_tree, write_zip
from conftest import FASHION_LABELS, tfclassify_cmd

N = 600


def score(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run(tfclassify_cmd("score", *args), capture_output=True, text=True, timeout=300)
    assert result.returncode == expect, result.stderr
    assert "Traceback" not in result.stderr
    return result


@pytest.fixture(scope="module")
def images(fashion_test):
    return fashion_test.images[:N], fashion_test.labels[:N]


@pytest.fixture(scope="module")
def expected(server, images):
    with server.client() as client:
        return client.classify(images[0], "fashion").classes


@pytest.fixture(scope="module")
def png_zip(tmp_path_factory, images):
    return write_zip(tmp_path_factory.mktemp("zip") / "fashion.zip", image_members(*images, FASHION_LABELS))


def test_zip_of_pngs_with_folder_labels(server, png_zip, images, expected, tmp_path):
    out, report_path = tmp_path / "out.jsonl", tmp_path / "report.json"
    result = score("--server", server.address, "--model", "fashion", "--images", str(png_zip), "--labels", "folder",
                   "--output", str(out), "--report", str(report_path), "--top-k", "2", "--no-progress")
    rows = read_jsonl(out)
    names = [name for name, _ in image_members(*images, FASHION_LABELS)]
    assert [r["index"] for r in rows] == list(range(N)), "every image exactly once, in order"
    assert [r["source"] for r in rows] == [f"fashion.zip/{name}" for name in names]
    assert [r["class"] for r in rows] == expected.tolist()
    assert [r["true_class"] for r in rows] == images[1].tolist()
    assert all(r["label"] == FASHION_LABELS[r["class"]] and r["version"] == 1 and r["model"] == "fashion" for r in rows)
    assert all(len(r["top_k"]) == 2 and r["top_k"][0]["class"] == r["class"] for r in rows)
    report = json.loads(report_path.read_text())
    accuracy = float(np.mean(expected == images[1]))
    assert report["accuracy"] == accuracy and report["num_images"] == N and report["skipped"] == 0
    assert np.array_equal(np.array(report["confusion_matrix"]),
                          np.bincount(images[1] * 10 + expected, minlength=100).reshape(10, 10))
    assert [c["support"] for c in report["per_class"]] == np.bincount(images[1], minlength=10).tolist()
    assert f"scored {N} images of fashion.zip with fashion version 1 in " in result.stdout
    assert f"accuracy {accuracy:.4f} on {N} images" in result.stdout
    record = json.loads((tmp_path / "out.jsonl.run.json").read_text())
    assert record["complete"] and record["rows"] == N and record["survey"]["total"] == N
    score("--server", server.address, "--model", "fashion", "--images", str(png_zip), "--labels", "folder",
          "--report", str(tmp_path / "memory.json"), "--top-k", "2", "--no-progress")  # no output: counted as results come
    from_memory = json.loads((tmp_path / "memory.json").read_text())
    assert {k: v for k, v in from_memory.items() if k != "run"} == {k: v for k, v in report.items() if k != "run"}


def test_tar_folder_and_manifests_label_the_same_images(server, images, expected, tmp_path):
    by_index = image_members(*images, FASHION_LABELS, by_index=True)  # 7/00012.png
    tar = write_tar(tmp_path / "digits.tar.gz", by_index[:200])
    tree = write_tree(tmp_path / "tree", image_members(*images, FASHION_LABELS, fmt="bmp")[200:400])
    plain = [(name.split("/")[1], data) for name, data in by_index[400:]]  # no class folders: a manifest says
    flat = write_zip(tmp_path / "flat.zip", plain)
    manifest = write_manifest(tmp_path / "labels.csv", [(name, FASHION_LABELS[int(label)])
                                                          for (name, _), label in zip(plain, images[1][400:])])
    out = tmp_path / "out.jsonl"
    score("--server", server.address, "--model", "fashion", "--images", str(tar), "--images", str(tree),
          "--labels", "folder", "--output", str(out), "--no-progress")
    rows = read_jsonl(out)
    assert [r["index"] for r in rows] == list(range(400)), "indices run on across inputs"
    position = {name.split("/", 1)[1]: i for i, (name, _) in enumerate(by_index)}  # "00012.png" -> 12
    in_order = [position[r["source"].rsplit("/", 1)[1].replace(".bmp", ".png")] for r in rows]
    assert in_order[:200] == list(range(200)), "a tar is read in its order"
    assert sorted(in_order[200:]) == list(range(200, 400)), "a folder is walked in sorted order"
    assert [r["class"] for r in rows] == expected[in_order].tolist()
    assert [r["true_class"] for r in rows] == images[1][in_order].tolist()
    assert rows[0]["source"] == f"digits.tar.gz/{by_index[0][0]}" and rows[200]["source"].startswith("tree/")
    score("--server", server.address, "--model", "fashion", "--images", str(flat), "--labels", str(manifest),
          "--output", str(tmp_path / "m.jsonl"), "--no-progress")
    rows = read_jsonl(tmp_path / "m.jsonl")
    assert [r["class"] for r in rows] == expected[400:].tolist()
    assert [r["true_label"] for r in rows] == [FASHION_LABELS[c] for c in images[1][400:]]


def test_broken_files_are_skipped_counted_and_exit_3(server, images, expected, tmp_path):
    members = image_members(*images, FASHION_LABELS)[:100]
    broken = broken_files(members[0][1])
    archive = write_zip(tmp_path / "mixed.zip", members[:50] + [(n, d) for n, (d, _) in broken.items()] + members[50:])
    out, report_path = tmp_path / "out.jsonl", tmp_path / "r.json"
    result = score("--server", server.address, "--model", "fashion", "--images", str(archive), "--labels", "folder",
                   "--output", str(out), "--report", str(report_path), "--progress-interval", "0", expect=3)
    rows = read_jsonl(out)
    assert len(rows) == 104 and [r["index"] for r in rows] == list(range(104))
    skipped = {r["source"].split("/", 1)[1]: r["skipped"] for r in rows if "skipped" in r}
    assert list(skipped) == list(broken)
    for name, (_, reason) in broken.items():
        assert reason in skipped[name], (name, skipped[name])
    assert [r["class"] for r in rows if "skipped" not in r] == expected[:100].tolist()
    report = json.loads(report_path.read_text())
    assert report["skipped"] == 4 and report["num_images"] == 100
    assert [f["source"] for f in report["skipped_files"]] == [f"mixed.zip/{n}" for n in broken]
    assert "4 files skipped (not scored):" in result.stdout
    assert "scored 100 of the 104 files of mixed.zip with fashion version 1 in " in result.stdout
    assert " s listing and checking the inputs); 4 skipped\n" in result.stdout
    assert "scored 104/104 images (100.0%)" in result.stderr and "4 skipped" in result.stderr, result.stderr


@pytest.mark.parametrize("kind", ["folder", "zip", "tar"])
def test_files_outside_class_folders_are_skipped_and_reported_like_non_images(kind, server, images, expected, tmp_path):
    """One rule for every input, and the trainer's: a README at the root, an image beside the class folders and a
    text file inside one are skipped and reported, never fatal."""
    members = image_members(*images, FASHION_LABELS)[:20]
    stray = {"README.md": "not in a class folder", "loose.png": "not in a class folder",
             "Shirt/notes.txt": "not an image"}
    everything = [("README.md", b"# my photos\n"), *members[:10], ("Shirt/notes.txt", b"not pixels\n"),
                  *members[10:], ("loose.png", members[0][1])]
    path = {"folder": lambda: write_tree(tmp_path / "bad", everything),
            "zip": lambda: write_zip(tmp_path / "bad.zip", everything),
            "tar": lambda: write_tar(tmp_path / "bad.tar.gz", everything)}[kind]()
    out, report_path = tmp_path / "out.jsonl", tmp_path / "r.json"
    result = score("--server", server.address, "--model", "fashion", "--images", str(path), "--labels", "folder",
                   "--output", str(out), "--report", str(report_path), "--no-progress", expect=3)
    rows = read_jsonl(out)
    assert len(rows) == 23 and [r["index"] for r in rows] == list(range(23))
    skipped = {r["source"].split("/", 1)[1]: r["skipped"] for r in rows if "skipped" in r}
    assert sorted(skipped) == sorted(stray)
    for name, reason in stray.items():
        assert skipped[name].startswith(reason), (name, skipped[name])
    scored = {r["source"].split("/", 1)[1]: r["class"] for r in rows if "skipped" not in r}
    assert scored == {name: int(c) for (name, _), c in zip(members, expected)}
    report = json.loads(report_path.read_text())
    assert report["skipped"] == 3 and report["num_images"] == 20
    assert sorted(f["source"] for f in report["skipped_files"]) == sorted(f"{path.name}/{n}" for n in stray)
    assert f"scored 20 of the 23 files of {path.name} with fashion version 1 in " in result.stdout
    assert " s listing and checking the inputs); 3 skipped\n" in result.stdout and "3 files skipped (not scored):" in result.stdout
    assert f"  {path.name}/README.md: not in a class folder\n" in result.stdout, result.stdout
    score("--server", server.address, "--model", "fashion", "--images", str(path), "--labels", "folder",
          "--no-progress", "--skipped-ok")  # exit 0


def test_an_input_with_no_class_folder_at_all_is_the_wrong_folder(server, images, tmp_path):
    """Skipping every file would score nothing: pointing at a class folder itself is an error, before any scoring."""
    tree = write_tree(tmp_path / "photos", image_members(*images, FASHION_LABELS)[:20])
    result = score("--server", server.address, "--model", "fashion", "--images", str(tree / "Shirt"), "--labels",
                   "folder", "--output", str(tmp_path / "o.jsonl"), expect=1)
    assert result.stderr == (f"tfclassify: error: --labels folder: no file of {tree / 'Shirt'} is in a class folder; "
                             "name the folder or archive that holds the class folders (Shirt/0001.png)\n")
    assert not (tmp_path / "o.jsonl").exists()


def test_parquet_output_holds_the_same_rows(server, png_zip, tmp_path):
    import pyarrow.parquet as pq

    score("--server", server.address, "--model", "fashion", "--images", str(png_zip), "--labels", "folder",
          "--output", str(tmp_path / "p.jsonl"), "--no-progress", "--top-k", "3")
    score("--server", server.address, "--model", "fashion", "--images", str(png_zip), "--labels", "folder",
          "--output", str(tmp_path / "p.parquet"), "--no-progress", "--top-k", "3")
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.num_rows == N and not list(tmp_path.glob(".*journal*")), "the journal is gone"
    parquet_rows = [{k: v for k, v in row.items() if v is not None} for row in table.to_pylist()]
    assert parquet_rows == read_jsonl(tmp_path / "p.jsonl")


def test_npz_with_several_arrays_by_usual_or_given_names(server, images, expected, tmp_path):
    x, y = images
    np.savez(tmp_path / "keras.npz", x_train=x[:10], y_train=y[:10], x_test=x, y_test=y)
    np.savez(tmp_path / "named.npz", pixels=x[:100], truth=y[:100])
    result = score("--server", server.address, "--model", "fashion", "--images", str(tmp_path / "keras.npz"),
                   "--output", str(tmp_path / "k.jsonl"), "--no-progress")
    assert f"accuracy {np.mean(expected == y):.4f} on {N} images" in result.stdout
    assert read_jsonl(tmp_path / "k.jsonl")[3]["source"] == "keras.npz[3]"
    result = score("--server", server.address, "--model", "fashion", "--images", str(tmp_path / "named.npz"),
                   expect=1)
    assert "holds arrays ['pixels', 'truth']; none has a usual name for images" in result.stderr
    assert "--npz-images KEY" in result.stderr
    result = score("--server", server.address, "--model", "fashion", "--images", str(tmp_path / "named.npz"),
                   "--npz-images", "pixels", "--npz-labels", "truth", "--no-progress")
    assert f"accuracy {np.mean(expected[:100] == y[:100]):.4f} on 100 images" in result.stdout


def test_batches_the_server_refuses_are_halved_until_accepted(server, fashion_test, client, tmp_path):
    """The session server takes at most 4096 images per request: 8192-image batches come back INVALID_ARGUMENT."""
    out = tmp_path / "big.jsonl"
    score("--server", server.address, "--model", "fashion", "--dataset", "fashion_mnist", "--data-dir",
          "/usr/share/datasets/fashion-mnist", "--batch-size", "8192", "--output", str(out), "--no-progress")
    rows = read_jsonl(out)
    assert len(rows) == 10000 and not any("skipped" in r for r in rows)
    assert [r["class"] for r in rows[:4096]] == client.classify(fashion_test.images[:4096], "fashion").classes.tolist()


def test_bad_input_gets_one_line_and_exit_1_before_anything_is_scored(server, png_zip, images, tmp_path):
    typo = write_zip(tmp_path / "typo.zip", [("Shrt/1.png", image_members(*images, FASHION_LABELS)[0][1])])
    empty = write_zip(tmp_path / "empty.zip", [])
    existing = tmp_path / "done.jsonl"
    existing.write_text("")
    common = ("--server", server.address, "--model", "fashion", "--no-progress")
    cases = [
        (("--images", str(tmp_path / "missing.zip")), "missing.zip: no such file or folder"),
        (("--images", str(typo), "--labels", "folder", "--output", str(tmp_path / "t.jsonl")),
         "folder name 'Shrt' is not a class of the model; its classes are 'T-shirt/top', 'Trouser'"),
        (("--images", str(empty)), "no images to score"),
        (("--images", str(png_zip), "--output", str(existing)), "exists: continue that run with --resume, or replace it with --overwrite"),
        (("--images", str(png_zip), "--resume"), "--resume needs --output"),
        (("--images", str(png_zip), "--shard", "3/3"), "--shard 3/3: need 0 <= I < N"),
        (("--images", str(png_zip), "--labels", str(tmp_path / "nope.csv")), "cannot read the labels manifest"),
    ]
    for args, message in cases:
        result = score(*common, *args, expect=1)
        assert result.stderr.startswith("tfclassify: error: ") and message in result.stderr, (args, result.stderr)
    assert not (tmp_path / "t.jsonl").exists(), "nothing is scored, or written, when a label is wrong"
    result = score("--server", "127.0.0.1:1", "--model", "fashion", "--images", str(png_zip), "--timeout", "2", expect=1)
    assert "UNAVAILABLE" in result.stderr and result.stderr.count("\n") == 1
    result = score("--server", "localhost", "--model", "fashion", "--images", str(png_zip), expect=1)
    assert "server address 'localhost' is not HOST:PORT" in result.stderr


def test_resume_starts_a_new_run_and_refuses_a_different_command(server, png_zip, tmp_path):
    out = tmp_path / "o.jsonl"
    score("--server", server.address, "--model", "fashion", "--images", str(png_zip), "--output", str(out),
          "--no-progress", "--limit", "10")
    result = score("--server", server.address, "--model", "fashion", "--images", str(png_zip), "--output", str(out),
                   "--resume", "--top-k", "3", "--limit", "10", expect=1)
    assert "was written by a different command (it differs in: top_k)" in result.stderr
    fresh = tmp_path / "fresh.jsonl"
    score("--server", server.address, "--model", "fashion", "--images", str(png_zip), "--output", str(fresh),
          "--resume", "--no-progress", "--limit", "10")
    assert fresh.read_text().count("\n") == 10, "--resume with nothing written yet starts the run"


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_resuming_a_finished_run_changes_nothing_and_reports_it_again(suffix, server, images, tmp_path):
    """A retried Kubernetes Job pod runs the same command after the run finished: exit as that run did, print its
    report again, leave every byte alone, and need no server for it."""
    members = image_members(*images, FASHION_LABELS)[:60]
    archive = write_zip(tmp_path / "photos.zip", [("README.md", b"stray\n"), *members])
    out = tmp_path / f"o{suffix}"
    command = ("--model", "fashion", "--images", str(archive), "--labels", "folder", "--output", str(out),
               "--no-progress", "--skipped-ok")
    first = score("--server", server.address, *command, "--resume", "--report", str(tmp_path / "first.json"))
    files = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir() if p.name.startswith("o")}
    assert sorted(files) == [f"o{suffix}", f"o{suffix}.run.json"]
    again = score("--server", "127.0.0.1:1", *command, "--resume", "--report", str(tmp_path / "again.json"))
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns)
            for p in tmp_path.iterdir() if p.name.startswith("o")} == files, "nothing written"
    lines = again.stdout.splitlines()
    assert lines[:3] == [f"{out} is already complete: nothing to resume, nothing changed",
                         "scored 60 of the 61 files of photos.zip with fashion version 1; 1 skipped",
                         f"predictions: {out} (61 rows)"]
    report = first.stdout[first.stdout.index("\naccuracy "):first.stdout.index("\nreport written")]
    assert report in again.stdout and "1 file skipped (not scored):" in report
    reports = [json.loads((tmp_path / name).read_text()) for name in ("first.json", "again.json")]
    first_report, again_report = ({k: v for k, v in r.items() if k != "run"} for r in reports)
    assert again_report == first_report and again_report["skipped"] == 1
    assert "seconds" in reports[0]["run"] and "seconds" not in reports[1]["run"], "no timing for a run that did nothing"
    result = score("--server", "127.0.0.1:1", *command, "--resume", "--top-k", "2", expect=1)
    assert "was written by a different command (it differs in: top_k)" in result.stderr
    result = score("--server", "127.0.0.1:1", *command[:-1], "--resume", expect=3)  # as the run exits without --skipped-ok
    assert result.stdout.startswith(f"{out} is already complete: nothing to resume, nothing changed\n")
    if suffix == ".jsonl":  # an output cut short after it finished is not reported as complete
        out.write_bytes(out.read_bytes()[: out.read_bytes().rindex(b"\n", 0, -1) + 1])
        result = score("--server", "127.0.0.1:1", *command, "--resume", expect=1)
        assert result.stderr == (f"tfclassify: error: {out} holds 60 rows but its run record says 61: it was changed "
                                 "after the run; start again with --overwrite\n")


def test_classify_takes_files_folders_and_archives(server, png_zip, images, expected, tmp_path):
    members = image_members(*images, FASHION_LABELS)[:3]
    tree = write_tree(tmp_path / "few", members)
    (tree / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    single = tree / members[0][0]
    result = subprocess.run(tfclassify_cmd("classify", "--server", server.address, "--model", "fashion", "--json",
                                           str(single), str(tree)), capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows[0]["file"] == str(single) and rows[0]["class"] == expected[0]
    assert [r["file"] for r in rows[1:]] == ["few/broken.png"] + [f"few/{name}" for name, _ in members]
    assert rows[1]["skipped"].startswith("not an image") and "class" not in rows[1]
    assert [r["class"] for r in rows[2:]] == expected[:3].tolist() and len(rows[2]["top_k"]) == 3
    with zipfile.ZipFile(png_zip) as archive:
        assert archive.namelist()[0] == members[0][0]


def test_a_terminal_gets_a_progress_bar(server, png_zip, tmp_path):
    import fcntl
    import os
    import pty
    import struct
    import termios

    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    proc = subprocess.Popen(
        tfclassify_cmd("score", "--server", server.address, "--model", "fashion", "--images", str(png_zip)),
        stdout=subprocess.DEVNULL, stderr=secondary, stdin=subprocess.DEVNULL,
    )
    os.close(secondary)
    shown = b""
    while True:
        try:
            data = os.read(primary, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not data:
            break
        shown += data
    assert proc.wait(60) == 0
    text = shown.decode(errors="replace")
    assert f"{N}/{N}" in text and "img/s" in text and "100%" in text and "scoring" in text, text
