"""Calls a tfclassify server with Triton's synchronous gRPC client and prints
what it got as JSON (tests/system/test_oip_api.py checks it). Runs in the project's venv, in a process of its own.

Usage: python sync_checks.py ADDRESS DATA.npz
(DATA.npz: uint8 arrays ``fashion`` [N, 28, 28] and ``digits`` [M, 28, 28]).
"""

import json
import sys

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

address, data_path = sys.argv[1], sys.argv[2]
data = np.load(data_path)
fashion, digits = data["fashion"], data["digits"]
client = grpcclient.InferenceServerClient(address)
stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(address))
out = {}


def infer(model, array, datatype, input_name, outputs=None, version=""):
    tensor = grpcclient.InferInput(input_name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return client.infer(model, [tensor], model_version=version, outputs=outputs)


def error(call):
    try:
        call()
    except InferenceServerException as exc:
        return [exc.status(), exc.message()]
    return None


out["health"] = {
    "live": client.is_server_live(),
    "ready": client.is_server_ready(),
    "fashion": client.is_model_ready("fashion"),
    "fashion_v1": client.is_model_ready("fashion", "1"),
    "fashion_v7": client.is_model_ready("fashion", "7"),
    "nope": client.is_model_ready("nope"),
}
out["server_metadata"] = client.get_server_metadata(as_json=True)
out["fashion_metadata"] = client.get_model_metadata("fashion", as_json=True)
out["digits_metadata"] = client.get_model_metadata("digits", as_json=True)
out["fashion_config"] = client.get_model_config("fashion", as_json=True)["config"]
statistics_before = client.get_inference_statistics("fashion", as_json=True)

# Raw contents (what tritonclient sends), every output.
result = infer("fashion", fashion, "UINT8", "images")
out["fashion_raw"] = {
    "version": result.get_response().model_version,
    "outputs": [o.name for o in result.get_response().outputs],
    "probabilities": result.as_numpy("probabilities").tolist(),
    "classes": result.as_numpy("classes").tolist(),
}
out["fashion_one"] = infer("fashion", fashion[:1], "UINT8", "images", version="1").as_numpy("probabilities").tolist()

# Typed contents, through the package's own generated stub.
request = service_pb2.ModelInferRequest(model_name="fashion", id="typed-1")
tensor = request.inputs.add(name="images", datatype="UINT8", shape=fashion.shape)
tensor.contents.uint_contents.extend(fashion.ravel().tolist())
request.outputs.add(name="probabilities")
response = stub.ModelInfer(request)
out["fashion_typed"] = {
    "id": response.id,
    "probabilities": np.frombuffer(response.raw_output_contents[0], "<f4").reshape(len(fashion), 10).tolist(),
}

# A float model (plain Keras, [N, 784], logits): FP32 raw, FP32 typed, and UINT8 pixels.
(digits_input,) = [t["name"] for t in out["digits_metadata"]["inputs"]]
(digits_output,) = [t["name"] for t in out["digits_metadata"]["outputs"]]
scaled = (digits.reshape(-1, 784) / 255).astype(np.float32)
out["digits_fp32"] = infer("digits", scaled, "FP32", digits_input).as_numpy(digits_output).tolist()
request = service_pb2.ModelInferRequest(model_name="digits")
tensor = request.inputs.add(name=digits_input, datatype="FP32", shape=scaled.shape)
tensor.contents.fp32_contents.extend(scaled.ravel().tolist())
response = stub.ModelInfer(request)
out["digits_fp32_typed"] = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(len(digits), 10).tolist()
out["digits_uint8"] = infer("digits", digits, "UINT8", digits_input).as_numpy(digits_output).tolist()

# Triton's classification extension.
top3 = infer("fashion", fashion[:5], "UINT8", "images", outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=3)])
out["classification"] = [[s.decode() for s in row] for row in top3.as_numpy("probabilities")]

mismatch = service_pb2.ModelInferRequest(model_name="fashion")
mismatch.inputs.add(name="images", datatype="UINT8", shape=[2, 28, 28])
mismatch.raw_input_contents.append(bytes(784))
try:
    stub.ModelInfer(mismatch)
    byte_size = None
except grpc.RpcError as exc:
    byte_size = [str(exc.code()), exc.details()]
out["errors"] = {
    "unknown_model": error(lambda: infer("nope", fashion[:1], "UINT8", "images")),
    "unknown_version": error(lambda: infer("fashion", fashion[:1], "UINT8", "images", version="7")),
    "wrong_datatype": error(lambda: infer("fashion", fashion[:1].astype(np.float32), "FP32", "images")),
    "wrong_input_name": error(lambda: infer("fashion", fashion[:1], "UINT8", "pixels")),
    "wrong_output": error(
        lambda: infer("fashion", fashion[:1], "UINT8", "images", outputs=[grpcclient.InferRequestedOutput("logits")])
    ),
    "wrong_shape": error(lambda: infer("fashion", np.zeros((1, 27, 28), np.uint8), "UINT8", "images")),
    "byte_size": byte_size,
}
out["statistics_before"] = statistics_before
out["statistics_after"] = client.get_inference_statistics("fashion", as_json=True)
client.close()
print(json.dumps(out))
