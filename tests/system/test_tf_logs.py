"""TensorFlow's harmless C++ notices (oneDNN banner, cuInit "error" without a driver, the tf.data NodeDef "error")
stay out of the stderr of every command that imports TensorFlow; ``--log-level DEBUG`` shows them. Real
processes: the notices are written to file descriptor 2 by C++ code, which only a real process shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import FASHION_DIR, tfclassify_cmd

from tfclassify.common.tf_logs import nvidia_driver_present

#: What a CPU-only machine printed before: each looks like a failure, or repeats at every import.
NOTICES = ("failed call to cuInit", "NodeDef mentions attribute use_unbounded_threadpool",
           "oneDNN custom operations are on", "All log messages before absl::InitializeLog()")
ABSL_LINE = re.compile(r"^[IWEF]\d{4} ", re.MULTILINE)


def unfiltered_env() -> dict[str, str]:
    """The environment a user has: conftest quiets TensorFlow's C++ INFO lines for the tests' own processes."""
    return {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}


def test_the_filter_drops_known_notices_and_forwards_every_other_line():
    script = r"""
import os
from tfclassify.common.tf_logs import TensorFlowNoiseFilter
noise = TensorFlowNoiseFilter(gpu_lines_are_noise=True, json_lines=JSON)
noise.start()
os.write(2, b"I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on. You may see ...\n")
os.write(2, b"E0000 00:00:1.0 1 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n")
os.write(2, b"E0000 00:00:1.0 1 kernel.cc:1] a real error\n")
noise.stop()
noise.stop()
os.write(2, b"after stop: failed call to cuInit\n")
print(noise.dropped)
"""
    for json_lines in (False, True):
        result = subprocess.run([sys.executable, "-c", script.replace("JSON", str(json_lines))],
                                capture_output=True, text=True, timeout=60, check=True)
        assert result.stdout == "2\n"
        forwarded, after = result.stderr.splitlines()
        assert "a real error" in forwarded and after == "after stop: failed call to cuInit"
        assert forwarded.startswith('{"time"') == json_lines
        if json_lines:
            assert '"level": "ERROR"' in forwarded and '"logger": "tensorflow"' in forwarded


@pytest.mark.skipif(nvidia_driver_present(), reason="with an NVIDIA driver the CUDA lines are real errors, shown")
def test_train_stderr_has_no_tensorflow_notices_unless_debug(tmp_path):
    small = ("--dataset", "fashion_mnist", "--data-dir", str(FASHION_DIR), "--train-limit", "500", "--epochs", "1")

    def train(repo: str, *extra: str) -> str:
        result = subprocess.run(tfclassify_cmd("train", *small, "--model-repo", str(tmp_path / repo), *extra),
                                capture_output=True, text=True, timeout=600, env=unfiltered_env())
        assert result.returncode == 0, result.stdout + result.stderr
        assert "exported " in result.stdout
        return result.stderr

    quiet = train("quiet")
    assert not [n for n in NOTICES if n in quiet], quiet
    assert not ABSL_LINE.search(quiet), quiet
    # The same run at DEBUG shows them: proof that this TensorFlow prints them here, so the check above means something.
    loud = train("loud", "--log-level", "DEBUG")
    assert [n for n in NOTICES if n in loud], loud
    assert "DEBUG " in loud
