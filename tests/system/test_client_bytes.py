"""Requests bounded by bytes, not images: a 224 x 224 x 3 image is 147 KiB, so a few hundred of them exceed gRPC's
64 MiB message limit. The library and ``tfclassify score`` split batches into requests of at most
``max_request_bytes`` (16 MiB by default), counted here on the server's own request counter; a request that a
message limit still refuses says which limit."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import ServerProcess, metric_value, tfclassify_cmd

from tfclassify.client import ClassifierClient, TfclassifyError, aio
from tfclassify.client.requests import explain_size_error

SIDE = 224
IMAGE_BYTES = SIDE * SIDE * 3  # 150,528
LABELS = ["red", "green", "blue", "grey"]
# Mean R, G, B (0..1) -> four class logits: the dominant channel, or grey when none dominates.
WEIGHTS = np.array([[4.0, -2.0, -2.0, 0.0], [-2.0, 4.0, -2.0, 0.0], [-2.0, -2.0, 4.0, 0.0]], np.float32)
BIAS = np.array([0.0, 0.0, 0.0, 0.5], np.float32)


def build_big_model(version_dir) -> None:
    """A Keras model on uint8 [N, 224, 224, 3]: the mean colour through fixed weights (no training)."""
    import keras

    inputs = keras.Input((SIDE, SIDE, 3), dtype="uint8", name="images")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    dense = keras.layers.Dense(len(LABELS), activation="softmax")
    model = keras.Model(inputs, dense(x))
    dense.set_weights([WEIGHTS, BIAS])
    model.export(str(version_dir), verbose=False)
    (version_dir / "labels.txt").write_text("".join(f"{label}\n" for label in LABELS))


def expected_classes(colours: np.ndarray) -> np.ndarray:
    return np.argmax(colours.astype(np.float32) / 255 @ WEIGHTS + BIAS, axis=1)


def solid_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of one colour each [n, 224, 224, 3] (150 KB each) and the class the model gives them."""
    colours = np.random.default_rng(seed).integers(0, 256, (4 * n, 3)).astype(np.uint8)
    logits = np.sort(colours.astype(np.float32) / 255 @ WEIGHTS + BIAS, axis=1)
    colours = colours[logits[:, -1] - logits[:, -2] > 0.05][:n]  # no near ties: float rounding decides none
    images = np.empty((n, SIDE, SIDE, 3), np.uint8)
    images[:] = colours[:, None, None, :]
    return images, expected_classes(colours)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A server of the 224 x 224 x 3 model ``big``."""
    repo = tmp_path_factory.mktemp("big") / "repo"
    build = (f"import sys; sys.path[:0] = {[str(Path(__file__).parent), str(Path(__file__).parents[1])]!r}; from pathlib import Path; "
             f"from test_client_bytes import build_big_model; p = Path({str(repo / 'big' / '1')!r}); "
             "p.mkdir(parents=True); build_big_model(p)")
    subprocess.run([sys.executable, "-c", build], check=True, capture_output=True)
    proc = ServerProcess(repo, tmp_path_factory.mktemp("big-server"))
    with proc.client() as client:
        client.wait_for_ready(120)
    yield proc
    assert proc.stop() == 0, proc.log()


def classify_requests(proc: ServerProcess, code: str = "OK") -> int:
    return int(metric_value(proc.metrics_text(), "tfclassify_requests_total", method="Classify", model="big",
                            code=code))


def test_a_library_call_of_150_mb_goes_in_requests_of_16_mib(big):
    images, expected = solid_images(1000, seed=1)
    assert images.nbytes == 150_528_000  # over gRPC's 64 MiB message limit
    before = classify_requests(big)
    with ClassifierClient(big.address, timeout=120) as client:
        result = client.classify(images, "big", top_k=2)
    assert classify_requests(big) - before == 10  # 9 x 111 images + 1
    assert len(result) == 1000 and np.array_equal(result.classes, expected)
    assert result.labels == [LABELS[c] for c in expected] and result.top_k_classes.shape == (1000, 2)

    async def with_aio() -> np.ndarray:
        async with aio.ClassifierClient(big.address, timeout=120, max_request_bytes=32 * 2**20) as client:
            return (await client.classify(images[:500], "big")).classes

    before = classify_requests(big)
    assert np.array_equal(asyncio.run(with_aio()), expected[:500])
    assert classify_requests(big) - before == 3  # 222 + 222 + 56 images of 150,528 bytes in 32 MiB


def test_feedback_cannot_span_requests(big):
    images, _ = solid_images(200, seed=2)
    with ClassifierClient(big.address) as client, pytest.raises(TfclassifyError) as caught:
        client.classify(images, "big", keep_for_feedback=True, request_id="r1")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "would take 2 requests" in caught.value.details and "at most 111 images" in caught.value.details


def test_a_message_limit_that_still_refuses_says_which(big):
    images, _ = solid_images(500, seed=3)  # 75 MB
    with ClassifierClient(big.address, max_request_bytes=2**30, max_message_bytes=2**30) as client, pytest.raises(TfclassifyError) as caught:
        client.classify(images, "big")
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.details.startswith("a message of 75,264,0")  # the request, as gRPC counts it
    assert "over the 67,108,864-byte limit of a gRPC message limit: the server's --max-message-bytes" in \
        caught.value.details
    with ClassifierClient(big.address, max_request_bytes=2**30, max_message_bytes=2**20) as client, pytest.raises(TfclassifyError) as caught:
        client.classify(images[:10], "big")
    assert "over the 1,048,576-byte limit of this client's max_message_bytes" in caught.value.details
    assert "--max-request-bytes" in caught.value.details
    plain = TfclassifyError(grpc.StatusCode.RESOURCE_EXHAUSTED, "server busy")
    assert explain_size_error(plain) is plain


def test_score_batches_stay_within_the_budget(big, tmp_path):
    images, expected = solid_images(300, seed=4)
    np.savez(tmp_path / "big.npz", images=images, labels=expected)
    for extra, batch, requests in ((), 16, 19), (("--batch-size", "100"), 100, 12):
        before = classify_requests(big)
        output = tmp_path / f"out{batch}.jsonl"
        result = subprocess.run(tfclassify_cmd(
            "score", "--server", big.address, "--model", "big", "--images", str(tmp_path / "big.npz"),
            "--max-request-bytes", "4M", "--output", str(output), "--no-progress", *extra),
            capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        record = json.loads((tmp_path / f"out{batch}.jsonl.run.json").read_text())
        assert record["batch_size"] == batch and record["max_request_bytes"] == 4 * 2**20
        # 4 MiB holds 27 images: auto batches of 16 (19 requests); batches of 100 go as 27 + 27 + 27 + 19
        assert classify_requests(big) - before == requests
        rows = [json.loads(line) for line in output.read_text().splitlines()]
        assert [row["class"] for row in rows] == expected.tolist()
