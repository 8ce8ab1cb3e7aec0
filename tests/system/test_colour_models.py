"""The colour test models of ``make_colour_models.py``: their signatures, their answers in process, and the
runtime each one runs in (a TF1 session, or only ``tf.saved_model.load``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT
from make_colour_models import LABELS, MODELS, load_answers

pytestmark = pytest.mark.slow

# model: (input key, dtype, shape), output keys
SIGNATURES = {
    "rgb_cnn": (("images", tf.uint8, [None, 32, 32, 3]), {"output_0"}),
    "mobilenet": (("images", tf.float32, [None, 96, 96, 3]), {"output_0"}),
    "module_keras": (("images", tf.uint8, [None, 32, 32, 3]), {"probabilities"}),
    "jpeg_input": (("image_bytes", tf.string, [None]), {"probabilities"}),
    "rgb_logits_multi": (("images", tf.float32, [None, 32, 32, 3]), {"logits", "probabilities", "embedding"}),
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("colour") / "repo"
    subprocess.run([sys.executable, str(ROOT / "tests" / "make_colour_models.py"), str(repo)], check=True,
                   capture_output=True, timeout=300)
    return repo


@pytest.fixture(scope="module")
def answers(repo: Path) -> dict[str, np.ndarray]:
    return load_answers(repo)


def serving_default(repo: Path, model: str):
    return tf.saved_model.load(str(repo / model / "1")).signatures["serving_default"]


def model_inputs(model: str, answers: dict[str, np.ndarray]) -> np.ndarray:
    """The test batch as ``model``'s ``answer.<model>`` was computed from."""
    return {
        "rgb_cnn": answers["images"], "module_keras": answers["images"], "jpeg_input": answers["jpeg"],
        "mobilenet": answers["images96"].astype(np.float32),
        "rgb_logits_multi": answers["images"].astype(np.float32) / 255,
    }[model]


def run_in_v1_session(version_dir: Path, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """The ``serving_default`` signature run the way the server's session runtime runs it."""
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, [tf.saved_model.SERVING], str(version_dir))
        signature = meta_graph.signature_def["serving_default"]
        (input_info,) = signature.inputs.values()
        fetches = {key: info.name for key, info in signature.outputs.items()}
        return session.run(fetches, {input_info.name: inputs})


@pytest.mark.parametrize("model", MODELS)
def test_signature_and_labels(repo: Path, model: str) -> None:
    (key, dtype, shape), outputs = SIGNATURES[model]
    function = serving_default(repo, model)
    assert function.structured_input_signature == ((), {key: tf.TensorSpec(shape, dtype, name=key)})
    assert set(function.structured_outputs) == outputs
    assert (repo / model / "1" / "labels.txt").read_text().split() == LABELS


@pytest.mark.parametrize("model", MODELS)
def test_answers_file_holds_the_models_answers_in_process(repo: Path, answers: dict, model: str) -> None:
    (key, _, _), outputs = SIGNATURES[model]
    result = serving_default(repo, model)(**{key: tf.constant(model_inputs(model, answers))})
    scores = result["output_0" if "output_0" in outputs else "probabilities"].numpy()
    np.testing.assert_allclose(scores, answers[f"answer.{model}"], atol=1e-6)


def test_answers_file_holds_the_test_batch(answers: dict) -> None:
    assert answers["images"].shape == (64, 32, 32, 3) and answers["images"].dtype == np.uint8
    assert answers["images96"].shape == (64, 96, 96, 3)
    np.testing.assert_array_equal(answers["images96"][:, ::3, ::3], answers["images"])
    assert [bytes(b)[:2] for b in answers["jpeg"]] == [b"\xff\xd8"] * 64
    assert all(bytes(b).startswith(b"\x89PNG") for b in answers["png"])
    assert set(answers["labels"]) == set(range(len(LABELS)))


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(scores.argmax(1) == labels))


def test_trained_models_are_well_above_chance(answers: dict) -> None:
    for model in ["rgb_cnn", "module_keras", "jpeg_input", "rgb_logits_multi"]:
        assert accuracy(answers[f"answer.{model}"], answers["labels"]) >= 0.9, model
    # A few steps of a MobileNet from random weights: better than chance (0.25), answers spread out.
    assert accuracy(answers["answer.mobilenet"], answers["labels"]) >= 0.4
    assert np.median(answers["answer.mobilenet"].max(1)) < 0.95


def test_the_class_is_in_the_colour(repo: Path, answers: dict) -> None:
    """Grey images and BGR channel order lose the class: a server that gets either wrong shows it."""
    rgb_cnn = serving_default(repo, "rgb_cnn")
    images, labels = answers["images"], answers["labels"]
    grey = np.repeat(np.rint(images.mean(axis=-1, keepdims=True)).astype(np.uint8), 3, axis=-1)
    for wrong in (images[..., ::-1], grey):
        assert accuracy(rgb_cnn(images=tf.constant(wrong))["output_0"].numpy(), labels) < 0.5


def test_rgb_logits_multi_outputs_agree(answers: dict) -> None:
    logits, probabilities = answers["answer.rgb_logits_multi.logits"], answers["answer.rgb_logits_multi"]
    np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), probabilities, atol=1e-6)
    assert answers["answer.rgb_logits_multi.embedding"].shape == (64, 16)


def test_jpeg_input_classifies_bytes_as_rgb_cnn_classifies_their_pixels(repo: Path, answers: dict) -> None:
    rgb_cnn = serving_default(repo, "rgb_cnn")
    decoded = np.stack([tf.io.decode_jpeg(b, channels=3).numpy() for b in answers["jpeg"]])
    expected = rgb_cnn(images=tf.constant(decoded))["output_0"].numpy()
    np.testing.assert_allclose(answers["answer.jpeg_input"], expected, atol=1e-5)
    # PNG is lossless: the very answers rgb_cnn gives the original pixels.
    np.testing.assert_allclose(answers["answer.jpeg_input.png"], answers["answer.rgb_cnn"], atol=1e-5)


def test_jpeg_input_resizes_other_sizes_in_its_graph(repo: Path, answers: dict) -> None:
    large = [tf.io.encode_png(image).numpy() for image in answers["images96"][:16]]
    scores = serving_default(repo, "jpeg_input")(image_bytes=tf.constant(large))["probabilities"].numpy()
    assert accuracy(scores, answers["labels"][:16]) >= 0.9


def test_module_keras_fails_in_a_v1_session_but_runs_through_saved_model_load(repo: Path, answers: dict) -> None:
    with pytest.raises(tf.errors.FailedPreconditionError, match=r"Could not find variable .*uninitialized"):
        run_in_v1_session(repo / "module_keras" / "1", answers["images"])
    scores = serving_default(repo, "module_keras")(images=tf.constant(answers["images"]))["probabilities"]
    np.testing.assert_allclose(scores.numpy(), answers["answer.module_keras"], atol=1e-6)


@pytest.mark.parametrize("model", [m for m in MODELS if m != "module_keras"])
def test_other_models_give_the_same_answers_in_a_v1_session(repo: Path, answers: dict, model: str) -> None:
    outputs = run_in_v1_session(repo / model / "1", model_inputs(model, answers))
    scores = outputs["output_0" if "output_0" in outputs else "probabilities"]
    np.testing.assert_allclose(scores, answers[f"answer.{model}"], atol=1e-5)
