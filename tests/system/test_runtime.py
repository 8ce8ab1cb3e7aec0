"""The model runtime: a SavedModel's graph in a session, on the replica's device. In a child process, since
devices must be configured before TensorFlow starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2
    from tfclassify.server.runtime.devices import configure_devices, resolve_devices
    from tfclassify.server.runtime.repository import VersionDir
    from tfclassify.server.runtime.model_runtime import CALLER_THREAD_MAX_BATCH, load_runtime

    configure_devices(logical_cpu_devices=2)
    (device,) = resolve_devices("cpu:1")
    path = Path(sys.argv[1])
    runtime = load_runtime(VersionDir("fashion", int(path.name), path), device)
    images = np.random.default_rng(0).integers(0, 256, (CALLER_THREAD_MAX_BATCH + 1, 28, 28), dtype=np.uint8)

    # Where the ops really ran: the partition graphs of one traced run, one per device used.
    signature = runtime._signature
    metadata = config_pb2.RunMetadata()
    runtime._session.run(signature.outputs[runtime.output_key].name, {signature.inputs[runtime.input_key].name: images},
                         options=config_pb2.RunOptions(output_partition_graphs=True), run_metadata=metadata)
    ops_by_device = {}
    for graph in metadata.partition_graphs:
        for node in graph.node:
            ops_by_device.setdefault(node.device.rsplit("/", 1)[-1], set()).add(node.op)

    # The session's answers equal those of the TF2 signature function.
    expected = tf.saved_model.load(str(path)).signatures["serving_default"](images=tf.constant(images))
    small, large = runtime.run(images[:1]), runtime.run(images)
    print(json.dumps({
        "device": device, "outputs": sorted(runtime.outputs),
        "ops_by_device": {d: sorted(ops) for d, ops in ops_by_device.items()},
        "small_max_diff": float(np.abs(small["probabilities"] - expected["probabilities"].numpy()[:1]).max()),
        "large_max_diff": float(np.abs(large["probabilities"] - expected["probabilities"].numpy()).max()),
    }))
    runtime.close()
""")


def test_the_graph_runs_on_the_replica_device_and_agrees_with_the_signature_function(model_repo):
    version_dir = model_repo / "fashion" / "1"
    out = subprocess.run([sys.executable, "-c", PROBE, str(version_dir)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["device"] == "/device:CPU:1"
    ops = result["ops_by_device"]
    assert set(ops) == {"device:CPU:0", "device:CPU:1"}, ops
    # The model's ops ran on the replica's device; the default device only fed the input and took the outputs.
    assert set(ops["device:CPU:0"]) <= {"_Arg", "_Retval", "_Send", "_Recv"}, ops
    assert any("MatMul" in op for op in ops["device:CPU:1"]) and any("Softmax" in op for op in ops["device:CPU:1"]), ops
    assert result["outputs"] == ["classes", "probabilities"]
    assert result["small_max_diff"] < 1e-6 and result["large_max_diff"] < 1e-6, result



BOTH_RUNTIMES = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    from tfclassify.server.runtime.repository import VersionDir
    from tfclassify.server.runtime.model_runtime import _load_function_runtime, load_runtime

    path = Path(sys.argv[1])
    version = VersionDir(path.parent.name, int(path.name), path)
    session, function = load_runtime(version), _load_function_runtime(version)
    images = np.random.default_rng(1).integers(0, 256, (300, 28, 28), dtype=np.uint8)
    print(json.dumps({"kinds": [session.runtime_kind, function.runtime_kind],
                      "shapes": [list(session.image_shape), list(function.image_shape)],
                      "outputs": [list(session.outputs), list(function.outputs)],
                      "difference": float(np.abs(session.predict(images) - function.predict(images)).max())}))
""")


def test_the_session_and_the_signature_function_give_the_same_answers(model_repo):
    """Both runtimes on the same version (our trainer's export and a plain Keras export): the same outputs,
    probabilities equal to float32 rounding."""
    for model in ("fashion", "digits"):
        out = subprocess.run([sys.executable, "-c", BOTH_RUNTIMES, str(model_repo / model / "1")],
                             capture_output=True, text=True, timeout=300, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["kinds"] == ["session", "function"], model
        assert result["shapes"][0] == result["shapes"][1] == [28, 28, 1], model
        assert result["outputs"][0] == result["outputs"][1], model
        assert result["difference"] < 1e-5, (model, result["difference"])
