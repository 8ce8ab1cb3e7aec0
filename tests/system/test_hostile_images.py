"""Hostile encoded images, through our API and TensorFlow Serving's Classify: decompression bombs of every
kind and formats we do not accept get INVALID_ARGUMENT at the cost of a header read, without decoding a
pixel, and a well-behaved client beside them is not held up."""

from __future__ import annotations

import io
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from archives import bomb_png, encode
from conftest import metric_value
from PIL import Image
from tensorflow_serving.apis import classification_pb2, prediction_service_pb2_grpc

from tfclassify.client import TfclassifyError

ZEROS = np.zeros((28, 28), np.uint8)


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real 28x28 JPEG whose frame header (SOF0) is rewritten to declare ``width`` x ``height``."""
    data = bytearray(encode(ZEROS, "JPEG"))
    at = data.index(b"\xff\xc0") + 5  # marker, length (2), precision (1), then height and width
    data[at : at + 4] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def png_of(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """Small files that would decode into hundreds of megabytes (or declare billions of pixels)."""
    return {
        "PNG header declaring 50,000x50,000": bomb_png(50_000, 50_000),
        "JPEG header declaring 50,000x50,000": jpeg_declaring(50_000, 50_000),
        "complete 1-bit PNG, 14,000x14,000": png_of(Image.new("1", (14_000, 14_000))),
        "complete RGBA PNG, 9,400x9,400": png_of(Image.new("RGBA", (9_400, 9_400), (10, 20, 30, 255))),
    }


#: Formats Pillow opens but requests may not carry (each is one more parser facing the network).
OTHER_FORMATS = ("BMP", "GIF", "TIFF", "WEBP", "ICO", "PPM")


def test_bombs_are_refused_from_their_header_without_decoding(client, server, bombs):
    rss_before = metric_value(server.metrics_text(), "process_resident_memory_bytes")
    for name, data in bombs.items():
        assert len(data) < 400_000, name
        started = time.perf_counter()
        with pytest.raises(TfclassifyError) as info:
            client.classify_encoded([data], "fashion")
        seconds = time.perf_counter() - started
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT, (name, info.value)
        assert "pixels" in info.value.details, info.value.details  # declared over our limit, or over Pillow's
        assert seconds < 0.5, f"{name}: {seconds:.2f} s, decoded rather than refused from its header"
    rss_after = metric_value(server.metrics_text(), "process_resident_memory_bytes")
    assert rss_after - rss_before < 100e6, f"RSS grew {(rss_after - rss_before) / 1e6:.0f} MB"


@pytest.mark.parametrize("fmt", OTHER_FORMATS)
def test_formats_other_than_png_and_jpeg_are_refused(client, fmt):
    data = encode(ZEROS, fmt)
    with pytest.raises(TfclassifyError) as info:
        client.classify_encoded([data], "fashion")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{len(data)} bytes are not a PNG or JPEG file" in info.value.details


def test_malformed_files_get_invalid_argument_not_internal(client):
    valid = encode(ZEROS, "PNG")
    for data in (valid[:40], valid[:-20], valid.replace(b"IDAT", b"IDAX"), b"\x89PNG\r\n\x1a\n" + b"\0" * 64,
                 encode(ZEROS, "JPEG")[:30], b"\xff\xd8\xff" + bytes(range(256)) * 4):
        with pytest.raises(TfclassifyError) as info:
            client.classify_encoded([data], "fashion")
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT, (data[:16], info.value)


def test_tensorflow_serving_classify_refuses_bombs_in_examples(server, bombs):
    with grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for name, data in bombs.items():
            request = classification_pb2.ClassificationRequest()
            request.model_spec.name = "fashion"
            request.input.example_list.examples.add().CopyFrom(tf.train.Example(features=tf.train.Features(
                feature={"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))})))
            with pytest.raises(grpc.RpcError) as info:
                stub.Classify(request, timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, info.value.details())


def test_a_well_behaved_client_is_not_held_up_by_bombs(server, bombs):
    """Bombs from four threads for two seconds; single images from another client meanwhile."""
    stop = threading.Event()
    refused = []

    def attack() -> None:
        with server.client() as attacker:
            while not stop.is_set():
                for data in bombs.values():
                    try:
                        attacker.classify_encoded([data] * 4, "fashion")
                    except TfclassifyError as exc:
                        refused.append(exc.code)

    threads = [threading.Thread(target=attack) for _ in range(4)]
    for t in threads:
        t.start()
    latencies = []
    try:
        with server.client() as client:
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                started = time.perf_counter()
                assert len(client.classify(ZEROS[np.newaxis], "fashion").classes) == 1
                latencies.append(time.perf_counter() - started)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert refused and set(refused) == {grpc.StatusCode.INVALID_ARGUMENT}
    assert max(latencies) < 0.5, f"worst latency beside the bombs: {max(latencies) * 1e3:.0f} ms"
