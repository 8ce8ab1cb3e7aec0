"""The client library as services use it: bad arguments, the asyncio client, the scoring API."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import grpc
import numpy as np
import pytest
from archives import image_members, write_zip
from conftest import FASHION_LABELS, readme_example

from tfclassify.client import ClassifierClient, TfclassifyError, aio
from tfclassify.client.scoring import score_files, score_files_async

ZEROS = np.zeros((2, 28, 28), np.uint8)


def test_every_bad_argument_raises_the_library_error(client):
    cases = [
        (lambda: client.classify(ZEROS.astype(np.float64), "fashion"), "got float64: convert with images.astype"),
        (lambda: client.classify(ZEROS.astype(np.int64), "fashion"), "got int64"),
        (lambda: client.classify(ZEROS.tolist(), "fashion"), "a numpy array of uint8 pixels [N, H, W] or [N, H, W, C], got list"),
        (lambda: client.classify(np.zeros(784, np.uint8), "fashion"), "is one flattened image; send a batch"),
        (lambda: client.classify(np.zeros((28, 28), np.uint8), "fashion"), "to send one image [H, W], send "
                                                                            "image[np.newaxis]"),
        (lambda: client.classify(np.zeros((0, 28, 28), np.uint8), "fashion"), "empty batch"),
        (lambda: client.classify(np.zeros((2, 28, 28, 3), np.uint8), "fashion"),
         "images have shape [2, 28, 28, 3]; expected [N, 28, 28], [N, 28, 28, 1] or [N, 784] (the model takes "
         "1-channel images; these have 3)"),
        (lambda: client.classify(np.zeros((2, 28, 28, 2), np.uint8), "fashion"), "got shape [2, 28, 28, 2]"),
        (lambda: client.classify(ZEROS, "fashion", top_k=-1), "top_k must be an integer >= 0"),
        (lambda: client.classify(ZEROS, "fashion", version=1, version_label="stable"), "not both"),
        (lambda: client.classify(ZEROS, ""), "non-empty model name"),
        (lambda: client.classify_encoded(b"png", "fashion"), "a sequence of bytes objects"),
        (lambda: ClassifierClient("localhost"), "'localhost' is not HOST:PORT"),
        (lambda: ClassifierClient("dns:///tfclassify.svc"), "has no port"),
        (lambda: aio.ClassifierClient("[::1]"), "is not HOST:PORT"),
    ]
    for call, message in cases:
        with pytest.raises(TfclassifyError) as info:
            call()
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and message in info.value.details, info.value


def test_a_flat_batch_of_784_images_is_784_images(client, fashion_test):
    flat = fashion_test.images[:784].reshape(784, 784)
    result = client.classify(flat, "fashion")
    assert len(result) == 784
    assert np.array_equal(result.classes, client.classify(fashion_test.images[:784], "fashion").classes)
    ClassifierClient("dns:///localhost:8500").close()  # a name with a port: fine (resolved lazily)


def test_omit_labels_leaves_the_label_strings_out(client, fashion_test):
    full = client.classify(fashion_test.images[:8], "fashion", top_k=2)
    bare = client.classify(fashion_test.images[:8], "fashion", top_k=2, omit_labels=True)
    assert np.array_equal(bare.classes, full.classes) and np.array_equal(bare.top_k_classes, full.top_k_classes)
    assert bare.labels == [""] * 8 and full.labels[0] != ""


def test_the_asyncio_client_mirrors_the_sync_one(server, client, fashion_test):
    images = fashion_test.images[:50]

    async def calls():
        async with aio.ClassifierClient(server.address, timeout=30) as aclient:
            assert await aclient.is_server_ready()
            await aclient.wait_for_ready(5)
            result = await aclient.classify(images, "fashion", top_k=3, return_probabilities=True)
            info = await aclient.get_model_metadata("fashion")
            models = await aclient.list_models()
            status = await aclient.get_model_status("fashion")
            with pytest.raises(TfclassifyError) as missing:
                await aclient.classify(images, "missing")
            return result, info, models, status, missing.value

    result, info, models, status, missing = asyncio.run(calls())
    expected = client.classify(images, "fashion", top_k=3, return_probabilities=True)
    assert np.array_equal(result.probabilities, expected.probabilities)
    assert result.top_k_labels == expected.top_k_labels and result.labels == expected.labels
    assert info == client.get_model_metadata("fashion")
    assert {m.name for m in models} == {"fashion", "digits"} and status[0].state == "AVAILABLE"
    assert missing.code == grpc.StatusCode.NOT_FOUND and isinstance(missing.__cause__, grpc.RpcError)


def test_score_files_yields_one_result_per_image_in_order(server, client, fashion_test, tmp_path):
    archive = write_zip(tmp_path / "photos.zip", image_members(fashion_test.images[:300], fashion_test.labels[:300],
                                                               FASHION_LABELS))
    expected = client.classify(fashion_test.images[:300], "fashion").classes
    results = list(score_files([archive], model="fashion", servers=[server.address], labels="folder", top_k=2))
    assert [r.index for r in results] == list(range(300))
    assert [r.class_index for r in results] == expected.tolist()
    assert [r.true_class for r in results] == fashion_test.labels[:300].tolist()
    assert all(r.top_k[0][0] == r.class_index and r.skipped is None for r in results)
    first = score_files([archive], model="fashion", servers=[server.address])
    assert next(first).source == "photos.zip/Ankle boot/00000.png"
    first.close()  # stopping early stops the pipeline

    async def collect():
        return [r async for r in score_files_async([archive], model="fashion", servers=[server.address],
                                                   decode_workers=2)]

    assert [r.class_index for r in asyncio.run(collect())] == expected.tolist(), "on worker processes too"


def test_readme_scoring_example_runs(server, fashion_test, tmp_path):
    write_zip(tmp_path / "photos.zip", image_members(fashion_test.images[:20], fashion_test.labels[:20],
                                                     FASHION_LABELS))
    code = readme_example("score-files", server.address, "fashion")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("photos.zip/Ankle boot/00000.png ") and len(lines) == 21
    assert lines[-1].startswith("accuracy on 20 labelled images: ")
