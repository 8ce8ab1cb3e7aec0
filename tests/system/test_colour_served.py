"""Colour image classifiers from outside the project, served through all three APIs with the answers they give
in process: a Keras RGB CNN (uint8 [N, 32, 32, 3]), keras.applications' MobileNetV3Small (float [N, 96, 96, 3]),
a Keras model in a tf.Module that only the signature-function runtime can run, a model that decodes JPEG/PNG
files in its graph (tf.string [N]), and one with several outputs (tests/make_colour_models.py builds them)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from conftest import ServerProcess, metric_value
from google.protobuf import wrappers_pb2
from make_colour_models import LABELS, load_answers
from PIL import Image
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from tfclassify.client import TfclassifyError
from tfclassify.inference import grpc_service_pb2 as oip
from tfclassify.inference import grpc_service_pb2_grpc as oip_grpc

ATOL = 1e-4
DECLARED = {"scale": 1 / 255, "offset": 0.1, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "channel_order": "BGR"}
#: What the ``cropped`` copy of rgb_cnn declares: ImageNet evaluation's centre crop, with another filter.
GEOMETRY = {"resize": "crop", "crop_fraction": 0.875, "interpolation": "nearest"}


#: A CNN whose signature leaves the image size open (uint8 [None, None, None, 3]), exported with the size its
#: clients resize to declared in tfclassify.json; writes its answers in process on the test batch.
OPEN_SIZE_MODEL = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import keras, numpy as np, tensorflow as tf
    out, batch, answers = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3), dtype="uint8", name="images")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
    model.export(str(out), verbose=False)
    (out / "labels.txt").write_text("red\\ngreen\\nblue\\nyellow\\n")
    (out / "tfclassify.json").write_text(json.dumps({"image_size": [32, 32]}))
    with np.load(batch) as data:
        images = data["images"]
    np.save(answers, tf.saved_model.load(str(out)).signatures["serving_default"](images=tf.constant(images))["output_0"].numpy())
""")


@pytest.fixture(scope="module")
def colour(colour_repo, tmp_path_factory):
    """(server, answers): the colour models served, two more beside them, and their answers in process."""
    folder = tmp_path_factory.mktemp("colour-served")
    repo = folder / "repo"
    shutil.copytree(colour_repo, repo)
    answers = {key.removeprefix("answer."): value for key, value in load_answers(colour_repo.parent).items()}
    shutil.copy(colour_repo.parent / "answers.npz", folder / "answers.npz")
    # The same float model with preprocessing declared that it is not built for: the server must apply exactly it.
    shutil.copytree(repo / "rgb_logits_multi", repo / "declared")
    (repo / "declared" / "1" / "tfclassify.json").write_text(json.dumps({"preprocessing": DECLARED}))
    shutil.copytree(repo / "rgb_cnn", repo / "cropped")
    (repo / "cropped" / "1" / "tfclassify.json").write_text(json.dumps({"preprocessing": GEOMETRY}))
    shutil.copytree(repo / "rgb_logits_multi", repo / "logits_chosen")
    (repo / "logits_chosen" / "1" / "tfclassify.json").write_text(json.dumps({"scores_output": "logits"}))
    subprocess.run([sys.executable, "-c", OPEN_SIZE_MODEL, str(repo / "open_size" / "1"), str(folder / "answers.npz"),
                    str(folder / "open_size.npy")], check=True, capture_output=True)
    answers["open_size"] = np.load(folder / "open_size.npy")
    proc = ServerProcess(repo, folder)
    with proc.client() as client:
        client.wait_for_ready(120)
    yield proc, answers
    assert proc.stop() == 0, proc.log()


@pytest.mark.parametrize("model, images", [("rgb_cnn", "images"), ("mobilenet", "images96"),
                                           ("module_keras", "images"), ("rgb_logits_multi", "images")])
def test_colour_pixels_get_the_answers_the_model_gives_in_process(colour, model, images):
    proc, answers = colour
    with proc.client() as client:
        result = client.classify(answers[images], model, return_probabilities=True, top_k=2)
    np.testing.assert_allclose(result.probabilities, answers[model], atol=ATOL)
    assert result.labels[:3] == [LABELS[c] for c in answers[model].argmax(1)[:3]]
    if model == "rgb_cnn":
        assert np.mean(result.classes == answers["labels"]) > 0.9


def test_encoded_files_are_decoded_in_colour_for_pixel_models(colour):
    proc, answers = colour
    with proc.client() as client:
        from_png = client.classify_encoded(list(answers["png"]), "rgb_cnn", return_probabilities=True)
    np.testing.assert_allclose(from_png.probabilities, answers["rgb_cnn"], atol=ATOL)


def test_a_model_a_session_cannot_run_is_served_by_the_signature_function(colour):
    proc, _ = colour
    with proc.client() as client:
        assert client.get_model_metadata("module_keras").runtime == "function"
        info = client.get_model_metadata("rgb_cnn")
        assert (info.runtime, info.channels, info.input_shape) == ("session", 3, (32, 32, 3))
    text = proc.metrics_text()
    assert metric_value(text, "tfclassify_model_replica_info", model="module_keras", runtime="function") == 1
    assert metric_value(text, "tfclassify_model_replica_info", model="rgb_cnn", runtime="session") == 1
    log = proc.log()
    assert log.count("module_keras version 1: served by the signature-function runtime") == 1
    assert "Could not find variable" in log


def test_a_model_that_decodes_files_in_its_graph_gets_them_untouched(colour):
    proc, answers = colour
    with proc.client() as client:
        jpeg = client.classify_encoded(list(answers["jpeg"]), "jpeg_input", return_probabilities=True)
        png = client.classify_encoded(list(answers["png"]), "jpeg_input", return_probabilities=True)
        info = client.get_model_metadata("jpeg_input")
        assert (info.channels, info.input_dtype, info.input_shape) == (0, "STRING", ())
        with pytest.raises(TfclassifyError) as info:
            client.classify(answers["images"], "jpeg_input")
    np.testing.assert_allclose(jpeg.probabilities, answers["jpeg_input"], atol=ATOL)
    np.testing.assert_allclose(png.probabilities, answers["jpeg_input.png"], atol=ATOL)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details == ("model 'jpeg_input' version 1 takes encoded images (PNG/JPEG files, decoded in "
                                  "its graph); send the files (`encoded`), not pixels")


def test_tensorflow_serving_predict_takes_colour_tensors_and_files(colour):
    proc, answers = colour
    with grpc.insecure_channel(proc.address) as channel:
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "rgb_cnn"
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(answers["images"]))
        scores = tf.make_ndarray(predict(request, timeout=60).outputs["output_0"])
        files = predict_pb2.PredictRequest()
        files.model_spec.name = "jpeg_input"
        files.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(list(answers["jpeg"])))
        from_files = tf.make_ndarray(predict(files, timeout=60).outputs["probabilities"])
        pngs = predict_pb2.PredictRequest()  # files for a pixel model: decoded by the server
        pngs.model_spec.name = "rgb_cnn"
        pngs.inputs["images"].CopyFrom(tf.make_tensor_proto(list(answers["png"])))
        from_pngs = tf.make_ndarray(predict(pngs, timeout=60).outputs["output_0"])
        multi = predict_pb2.PredictRequest()
        multi.model_spec.name = "rgb_logits_multi"
        multi.inputs["images"].CopyFrom(tf.make_tensor_proto(answers["images"].astype(np.float32) / 255))
        outputs = predict(multi, timeout=60).outputs
    np.testing.assert_allclose(scores, answers["rgb_cnn"], atol=ATOL)
    np.testing.assert_allclose(from_files, answers["jpeg_input"], atol=ATOL)
    np.testing.assert_allclose(from_pngs, answers["rgb_cnn"], atol=ATOL)
    np.testing.assert_allclose(tf.make_ndarray(outputs["logits"]), answers["rgb_logits_multi.logits"], atol=ATOL)
    np.testing.assert_allclose(tf.make_ndarray(outputs["embedding"]), answers["rgb_logits_multi.embedding"],
                               atol=ATOL)


TRITON_CHECKS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tritonclient.grpc as triton

    address, answers_path = sys.argv[1], sys.argv[2]
    with np.load(answers_path) as data:
        images, jpeg, png = data["images"], data["jpeg"], data["png"]
    with triton.InferenceServerClient(address) as client:
        pixels = triton.InferInput("images", list(images.shape), "UINT8")
        pixels.set_data_from_numpy(images)
        result = client.infer("rgb_cnn", [pixels])
        # Plain bytes: tritonclient serializes numpy.bytes_ items by their repr.
        files = np.array([bytes(f) for f in jpeg], dtype=object)
        encoded = triton.InferInput("image_bytes", [len(files)], "BYTES")
        encoded.set_data_from_numpy(files)
        from_files = client.infer("jpeg_input", [encoded])
        pngs = np.array([bytes(f) for f in png], dtype=object).reshape(-1, 1)  # [N, 1]: Triton models' files
        png_input = triton.InferInput("images", [len(pngs), 1], "BYTES")
        png_input.set_data_from_numpy(pngs)
        from_pngs = client.infer("rgb_cnn", [png_input])
        metadata = client.get_model_metadata("jpeg_input")
    print(json.dumps({"rgb_cnn": result.as_numpy("output_0").tolist(),
                      "jpeg_input": from_files.as_numpy("probabilities").tolist(),
                      "rgb_cnn_png": from_pngs.as_numpy("output_0").tolist(),
                      "inputs": [[i.name, i.datatype, list(i.shape)] for i in metadata.inputs]}))
""")


def test_tritonclient_infers_colour_pixels_and_files(colour, tmp_path):
    """With Triton's own client, in a process of its own (its protobuf package is ours: one pool each)."""
    proc, answers = colour
    np.savez(tmp_path / "batch.npz", images=answers["images"], jpeg=answers["jpeg"], png=answers["png"])
    out = subprocess.run([sys.executable, "-c", TRITON_CHECKS, proc.address, str(tmp_path / "batch.npz")],
                         capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(result["rgb_cnn"], answers["rgb_cnn"], atol=ATOL)
    np.testing.assert_allclose(result["jpeg_input"], answers["jpeg_input"], atol=ATOL)
    np.testing.assert_allclose(result["rgb_cnn_png"], answers["rgb_cnn"], atol=ATOL)  # files decoded by the server
    assert result["inputs"] == [["image_bytes", "BYTES", [-1]]]


def test_colour_tensors_of_the_wrong_layout_say_what_the_model_takes(colour):
    proc, answers = colour
    with proc.client() as client, pytest.raises(TfclassifyError) as info:
        client.classify(answers["images"][..., :1], "rgb_cnn")
    assert info.value.details == ("images have shape [64, 32, 32, 1]; expected [N, 32, 32, 3] or [N, 3072] (the "
                                  "model takes 3-channel images; these have 1)")


def test_declared_preprocessing_is_applied_and_returned_by_every_api(colour):
    proc, answers = colour
    images = answers["images"]
    expected_input = ((images[..., ::-1].astype(np.float32) * DECLARED["scale"] + DECLARED["offset"])
                      - np.float32(DECLARED["mean"])) / np.float32(DECLARED["std"])
    model = tf.saved_model.load(str(proc_repo(proc) / "declared" / "1")).signatures["serving_default"]
    expected = model(images=tf.constant(expected_input, tf.float32))["probabilities"].numpy()
    with proc.client() as client:
        served = client.classify(images, "declared", return_probabilities=True).probabilities
        ours = client.get_model_metadata("declared").preprocessing
    np.testing.assert_allclose(served, expected, atol=ATOL)
    assert ours["channel_order"] == "BGR" and ours["mean"] == pytest.approx(DECLARED["mean"])
    assert ours["scale"] == pytest.approx(1 / 255) and ours["offset"] == pytest.approx(0.1)
    with grpc.insecure_channel(proc.address) as channel:
        config = oip_grpc.GRPCInferenceServiceStub(channel).ModelConfig(
            oip.ModelConfigRequest(name="declared"), timeout=30).config
        metadata = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(
            get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": "declared"},
                                                           metadata_field=["preprocessing"]), timeout=30)
    declared = json.loads(config.parameters["preprocessing"].string_value)
    value = wrappers_pb2.StringValue()
    assert metadata.metadata["preprocessing"].Unpack(value)
    assert json.loads(value.value) == declared
    assert declared["std"] == pytest.approx(DECLARED["std"]) and declared["channel_order"] == "BGR"


def proc_repo(proc: ServerProcess):
    """The model repository a server process serves (from its command line)."""
    args = proc.proc.args
    return Path(args[args.index("--model-repo") + 1])


def test_an_open_image_size_is_served_at_the_size_declared(colour):
    proc, answers = colour
    with proc.client() as client:
        info = client.get_model_metadata("open_size")
        result = client.classify(answers["images"], "open_size", return_probabilities=True)
    with grpc.insecure_channel(proc.address) as channel:
        metadata = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(
            get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": "open_size"},
                                                           metadata_field=["signature_def"]), timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert metadata.metadata["signature_def"].Unpack(signatures)
    served = signatures.signature_def["serving_default"].inputs["images"].tensor_shape
    assert [d.size for d in served.dim] == [-1, 32, 32, 3]  # the graph's [-1, -1, -1, 3] at the declared size
    assert info.input_shape == (32, 32, 3)
    np.testing.assert_allclose(result.probabilities, answers["open_size"], atol=ATOL)


def test_batches_of_large_images_are_bounded_by_bytes(colour):
    """MobileNet's 96x96x3 float input is 108 KiB an image: 606 fit the 64 MiB a TensorFlow call may take, so
    its batches (and warm-up) stop there rather than at 4,096 images (432 MiB); 32x32 uint8 images keep 4,096."""
    proc, answers = colour
    with grpc.insecure_channel(proc.address) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        mobilenet = stub.ModelConfig(oip.ModelConfigRequest(name="mobilenet"), timeout=30).config
        small = stub.ModelConfig(oip.ModelConfigRequest(name="rgb_cnn"), timeout=30).config
    assert list(mobilenet.dynamic_batching.preferred_batch_size) == [64 * 2**20 // (96 * 96 * 3 * 4)] == [606]
    assert list(small.dynamic_batching.preferred_batch_size) == [4096]
    with proc.client() as client:  # a request larger than one batch is split and answered whole
        images = np.concatenate([answers["images96"]] * 10)
        result = client.classify(images, "mobilenet", return_probabilities=True, timeout=120)
    np.testing.assert_allclose(result.probabilities, np.concatenate([answers["mobilenet"]] * 10), atol=ATOL)


def test_files_a_graph_cannot_decode_or_that_declare_too_many_pixels_are_the_clients_fault(colour):
    proc, answers = colour
    good = [bytes(f) for f in answers["png"][:3]]
    truncated = good[0][: len(good[0]) // 2]  # a valid header: only the model's graph finds it broken
    bomb = io.BytesIO()
    Image.new("1", (5000, 5000)).save(bomb, "PNG")  # 25 megapixels in a few kilobytes
    start = len(proc.log())
    with proc.client() as client, ThreadPoolExecutor(3) as pool:
        calls = [pool.submit(client.classify_encoded, good, "jpeg_input") for _ in range(3)]  # batched alongside
        with pytest.raises(TfclassifyError) as broken:
            client.classify_encoded([*good, truncated], "jpeg_input")
        with pytest.raises(TfclassifyError) as huge:
            client.classify_encoded([bomb.getvalue()], "jpeg_input")
        assert [len(call.result().classes) for call in calls] == [3, 3, 3]
    assert broken.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert broken.value.details.startswith("model 'jpeg_input' could not decode a file:")
    assert huge.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert huge.value.details == "image 0 declares 5000x5000 pixels, over the 16,777,216 accepted per file"
    noisy = [line for line in proc.log()[start:].splitlines() if " ERROR " in line or "Traceback" in line]
    assert noisy == []


def photos(images: np.ndarray) -> list[bytes]:
    """``images`` as the files people score: larger than the model's size and of other aspect ratios, in the
    formats and modes the server decodes (RGB and CMYK JPEG, EXIF-rotated JPEG, RGBA, palette and 16-bit PNG)."""
    files = []
    for i, image in enumerate(images):
        img = Image.fromarray(image).resize((80 + 8 * (i % 3), 50 + 10 * (i % 4)), Image.Resampling.BICUBIC)
        out = io.BytesIO()
        kind = i % 6
        if kind == 0:
            img.save(out, "JPEG", quality=92)
        elif kind == 1:
            img.convert("CMYK").save(out, "JPEG", quality=92)
        elif kind == 2:  # stored on its side, upright per its EXIF orientation (6: rotate 90 clockwise to view)
            exif = Image.Exif()
            exif[0x0112] = 6
            img.transpose(Image.Transpose.ROTATE_90).save(out, "JPEG", quality=92, exif=exif)
        elif kind == 3:
            rgba = img.convert("RGBA")
            rgba.putalpha(200)
            rgba.save(out, "PNG")
        elif kind == 4:
            img.convert("P", palette=Image.Palette.ADAPTIVE).save(out, "PNG")
        else:
            gray16 = (np.asarray(img.convert("L"), np.uint16) * 257)
            Image.fromarray(gray16).save(out, "PNG")
        files.append(out.getvalue())
    return files


@pytest.mark.parametrize("model", ["rgb_cnn", "cropped"])
def test_files_of_any_size_are_decoded_by_the_server_as_clients_prepare_them(colour, model):
    """The server resizes files per the model's declared geometry (stretch by default) with the clients' own
    conversion: the same pixels, so the same answers, as when the client prepares them."""
    from tfclassify.common.image_files import ConversionSpec, decode_image

    proc, answers = colour
    files = photos(answers["images"][:24])
    with proc.client() as client:
        info = client.get_model_metadata(model)
        geometry = {key: info.preprocessing[key] for key in GEOMETRY}
        spec = ConversionSpec(32, 32, "no", channels=3, resize=geometry["resize"],
                              interpolation=geometry["interpolation"] or None,
                              crop_fraction=geometry["crop_fraction"])
        prepared = np.stack([decode_image(f, spec) for f in files])
        by_client = client.classify(prepared, model, return_probabilities=True)
        by_server = client.classify_encoded(files, model, return_probabilities=True)
    expected = GEOMETRY if model == "cropped" else {"resize": "stretch", "crop_fraction": 1.0, "interpolation": ""}
    assert geometry == expected
    np.testing.assert_array_equal(by_server.probabilities, by_client.probabilities)
    rgb = [i for i in range(24) if i % 6 != 5]  # the 16-bit files are grayscale: no colour left to classify
    assert np.mean(by_server.classes[rgb] == answers["labels"][:24][rgb]) >= 0.9
    if model == "cropped":  # the declaration travels in every API's metadata
        with grpc.insecure_channel(proc.address) as channel:
            config = oip_grpc.GRPCInferenceServiceStub(channel).ModelConfig(
                oip.ModelConfigRequest(name=model), timeout=30).config
        assert {k: json.loads(config.parameters["preprocessing"].string_value)[k] for k in GEOMETRY} == GEOMETRY


def test_the_scores_output_can_be_named_in_tfclassify_json(colour):
    proc, answers = colour
    with proc.client() as client:
        info = client.get_model_metadata("logits_chosen")
        result = client.classify(answers["images"], "logits_chosen", return_probabilities=True)
    assert info.output_kind == "logits"  # "probabilities" would be picked by the rule; tfclassify.json named logits
    np.testing.assert_allclose(result.probabilities, answers["rgb_logits_multi"], atol=1e-5)


#: Loads copies of the test models with declarations that do not fit them; prints each load's error.
LOAD_ERRORS = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from tfclassify.server.core.errors import ModelLoadError
    from tfclassify.server.runtime.repository import VersionDir
    from tfclassify.server.runtime.model_runtime import load_runtime
    errors = {}
    for folder in sys.argv[1:]:
        path = Path(folder)
        try:
            load_runtime(VersionDir(path.parent.name, 1, path)).close()
            errors[path.parent.name] = None
        except ModelLoadError as exc:
            errors[path.parent.name] = str(exc).split(": ", 1)[1]
    print(json.dumps(errors))
""")


def test_declarations_that_do_not_fit_the_model_fail_its_load_saying_why(colour_repo, tmp_path):
    cases = {
        "scores_unknown": ("rgb_logits_multi", {"scores_output": "scores"}),
        "scores_not_scores": ("rgb_logits_multi", {"scores_output": "embedding", "output_kind": "logits"}),
        "scores_not_a_name": ("rgb_logits_multi", {"scores_output": ["logits"]}),
        "mean_for_uint8": ("rgb_cnn", {"preprocessing": {"mean": [1, 2, 3], "resize": "pad"}}),
        "crop_for_files": ("jpeg_input", {"preprocessing": {"resize": "crop"}}),
    }
    for name, (model, declared) in cases.items():
        shutil.copytree(colour_repo / model / "1", tmp_path / name / "1")
        (tmp_path / name / "1" / "tfclassify.json").write_text(json.dumps(declared))
    out = subprocess.run([sys.executable, "-c", LOAD_ERRORS, *(str(tmp_path / n / "1") for n in cases)],
                         check=True, capture_output=True, text=True, timeout=300)
    errors = json.loads(out.stdout.splitlines()[-1])
    assert errors["scores_unknown"].startswith("tfclassify.json names scores_output 'scores', which in signature "
                                               "'serving_default' is not one of its outputs {")
    assert errors["scores_not_scores"] == ("labels.txt names 4 classes but the model outputs 16")
    assert errors["scores_not_a_name"] == "tfclassify.json: scores_output must be the name of an output, not ['logits']"
    assert errors["mean_for_uint8"] == ("tfclassify.json declares preprocessing mean, but the signature takes uint8 "
                                        "pixels, which get the pixels as they are: declare scale, offset, mean, std, "
                                        "channel_order for float inputs only")
    assert errors["crop_for_files"] == ("tfclassify.json declares preprocessing, but the signature takes encoded "
                                        "files and decodes them in its graph: declare none")
