"""Live accuracy: true classes sent with requests (our API, its stream, the Open Inference Protocol through
Triton's own client, ``tfclassify score --send-labels``) or later through ``Feedback``, counted per model,
version and class in the server's metrics, against a real server process."""

from __future__ import annotations

import subprocess
import sys

import grpc
import numpy as np
import pytest
from conftest import FASHION_DIR, FASHION_LABELS, metric_value, tfclassify_cmd

from tfclassify.client import TfclassifyError
from tfclassify.v1 import classifier_pb2 as pb
from tfclassify.v1 import classifier_pb2_grpc as pb_grpc


def truth_counts(server, model: str = "fashion") -> tuple[np.ndarray, np.ndarray]:
    """(labelled, correct) per class of ``model`` version 1, from /metrics."""
    text = server.metrics_text()
    labelled = [metric_value(text, "tfclassify_labelled_images_total", model=model, version="1", **{"class": c})
                for c in FASHION_LABELS]
    correct = [metric_value(text, "tfclassify_correct_images_total", model=model, version="1", **{"class": c})
               for c in FASHION_LABELS]
    return np.array(labelled, dtype=int), np.array(correct, dtype=int)


def expected_counts(true: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labelled, correct = np.zeros(10, int), np.zeros(10, int)
    for t, p in zip(true.tolist(), predicted.tolist()):
        if t >= 0:
            labelled[t] += 1
            correct[t] += t == p
    return labelled, correct


def test_true_classes_with_requests_are_counted_per_class(server, client, fashion_test):
    images, true = fashion_test.images[:400], fashion_test.labels[:400].copy()
    true[::7] = -1  # unknown for some images: left out
    before = truth_counts(server)
    plain = client.classify(images, "fashion")
    answered = client.classify(images, "fashion", true_classes=true)
    assert np.array_equal(answered.classes, plain.classes) and np.array_equal(answered.scores, plain.scores)
    # The stream carries them too.
    channel = grpc.insecure_channel(server.address)
    stub = pb_grpc.ClassifierStub(channel)
    spec = pb.ModelSpec(name="fashion")
    stream_images = fashion_test.images[400:500]
    requests = [pb.ClassifyRequest(model_spec=spec, tensor=pb.Tensor(dtype=pb.UINT8, shape=[50, 28, 28],
                                                                     content=stream_images[i:i + 50].tobytes()),
                                   true_classes=fashion_test.labels[400 + i:450 + i].tolist(), request_id=str(i))
                for i in (0, 50)]
    streamed = np.concatenate([np.array(r.classes) for r in stub.ClassifyStream(iter(requests))])
    after = truth_counts(server)
    labelled, correct = expected_counts(np.concatenate([true, fashion_test.labels[400:500]]),
                                        np.concatenate([plain.classes, streamed]))
    assert np.array_equal(after[0] - before[0], labelled) and np.array_equal(after[1] - before[1], correct)
    assert labelled.sum() == 400 - len(true[::7]) + 100

    # Refused before any work, with what was expected.
    for bad, message in (([0] * 3, "true_classes holds 3 entries for 4 images"),
                         ([0, 1, 10, 2], "true_classes holds 10: each must be -1 (unknown) or a class index from 0 to 9"),
                         ([0, -2, 1, 2], "true_classes holds -2")):
        with pytest.raises(grpc.RpcError) as caught:
            stub.Classify(pb.ClassifyRequest(model_spec=spec, tensor=pb.Tensor(
                dtype=pb.UINT8, shape=[4, 28, 28], content=images[:4].tobytes()), true_classes=bad))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in caught.value.details()
    assert np.array_equal(truth_counts(server)[0], after[0]), "refused requests count nothing"
    channel.close()


def test_feedback_later_by_request_id(server, client, fashion_test):
    images, true = fashion_test.images[1000:1200], fashion_test.labels[1000:1200]
    before = truth_counts(server)
    first = client.classify(images, "fashion", keep_for_feedback=True, request_id="review-1")
    assert np.array_equal(truth_counts(server)[0], before[0]), "nothing counted before the truth arrives"
    later = true.copy()
    later[:20] = -1  # the review has not reached these yet
    result = client.feedback("fashion", "review-1", later)
    labelled, correct = expected_counts(later, first.classes)
    assert (result.model, result.version, result.labelled, result.correct) == ("fashion", 1, 180, correct.sum())
    after = truth_counts(server)
    assert np.array_equal(after[0] - before[0], labelled) and np.array_equal(after[1] - before[1], correct)

    with pytest.raises(TfclassifyError) as again:
        client.feedback("fashion", "review-1", later)
    assert again.value.code == grpc.StatusCode.NOT_FOUND and "feedback was already given" in again.value.details
    client.classify(images[:5], "fashion", keep_for_feedback=True, request_id="review-2")
    with pytest.raises(TfclassifyError) as twice:
        client.classify(images[:5], "fashion", keep_for_feedback=True, request_id="review-2")
    assert twice.value.code == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(TfclassifyError) as short:
        client.feedback("fashion", "review-2", [1, 2])
    assert short.value.code == grpc.StatusCode.INVALID_ARGUMENT and "2 entries for 5 images" in short.value.details
    assert client.feedback("fashion", "review-2", true[:5]).labelled == 5, "a refused feedback leaves it kept"
    # the server's own check (the client library checks too)
    with pytest.raises(grpc.RpcError) as no_id, grpc.insecure_channel(server.address) as channel:
            pb_grpc.ClassifierStub(channel).Classify(pb.ClassifyRequest(
                model_spec=pb.ModelSpec(name="fashion"), keep_for_feedback=True,
                tensor=pb.Tensor(dtype=pb.UINT8, shape=[1, 28, 28], content=images[0].tobytes())))
    assert no_id.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "needs a request_id" in no_id.value.details()


def test_open_inference_protocol_true_classes_parameter(server, fashion_test, tmp_path):
    """Triton's own client sends the request parameter ``true_classes`` (and ``keep_for_feedback`` with its id)."""
    np.save(tmp_path / "images.npy", fashion_test.images[2000:2064])
    script = f"""
import json, numpy as np, tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException
images = np.load({str(tmp_path / 'images.npy')!r})
client = tc.InferenceServerClient({server.address!r})
tensor = tc.InferInput("images", list(images.shape), "UINT8")
tensor.set_data_from_numpy(images)
true = {fashion_test.labels[2000:2064].tolist()!r}
answer = client.infer("fashion", [tensor], parameters={{"true_classes": ",".join(map(str, true))}})
kept = client.infer("fashion", [tensor], request_id="oip-7", parameters={{"keep_for_feedback": True}})
bad = []
for text in ("1,x", "\u0661", " 2", "1_0", "99999999999999999999"):  # Arabic-Indic one; int() takes all but x
    try:
        client.infer("fashion", [tensor], parameters={{"true_classes": text}})
        bad.append(None)
    except InferenceServerException as exc:
        bad.append([exc.status(), exc.message()])
print(json.dumps({{"classes": answer.as_numpy("classes").tolist(), "bad": bad}}))
"""
    before = truth_counts(server)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    import json

    out = json.loads(result.stdout)
    true = fashion_test.labels[2000:2064]
    labelled, correct = expected_counts(true, np.array(out["classes"]))
    after = truth_counts(server)
    assert np.array_equal(after[0] - before[0], labelled) and np.array_equal(after[1] - before[1], correct)
    assert all(b is not None and b[0] == "StatusCode.INVALID_ARGUMENT" and "comma-separated class indices" in b[1]
               for b in out["bad"]), out["bad"]
    # The OIP request's id finds its kept predictions through our Feedback RPC.
    with grpc.insecure_channel(server.address) as channel:
        reply = pb_grpc.ClassifierStub(channel).Feedback(pb.FeedbackRequest(
            model_name="fashion", request_id="oip-7", true_classes=true.tolist()))
    assert (reply.labelled, reply.correct) == (64, correct.sum())


def test_score_send_labels_feeds_live_accuracy(server, fashion_test):
    before = truth_counts(server)
    subprocess.run(tfclassify_cmd("score", "--server", server.address, "--model", "fashion", "--dataset",
                                  "fashion_mnist", "--data-dir", str(FASHION_DIR), "--limit", "300",
                                  "--send-labels", "--no-progress"), check=True, capture_output=True, timeout=120)
    after = truth_counts(server)
    assert (after[0] - before[0]).sum() == 300
    assert np.array_equal(after[0] - before[0], np.bincount(fashion_test.labels[:300], minlength=10))
    text = server.metrics_text()
    # The Prometheus expression of the README: live accuracy = correct / labelled.
    accuracy = (metric_value(text, "tfclassify_correct_images_total", model="fashion")
                / metric_value(text, "tfclassify_labelled_images_total", model="fashion"))
    assert 0.6 < accuracy <= 1.0
    series = [line for line in text.splitlines() if line.startswith("tfclassify_labelled_images_total")]
    assert series and not [line for line in series if 'model="digits"' in line], \
        "no series for a model that never got labels"
