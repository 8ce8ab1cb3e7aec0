"""The normal (non-editable) wheel: its layout, and a base install without TensorFlow."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile

import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
    )
    (path,) = out.glob("tfclassify-*.whl")
    return path


def test_wheel_holds_the_namespaced_packages(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for expected in (
        "tfclassify/v1/classifier_pb2.py",
        "tfclassify/v1/classifier_pb2_grpc.py",
        "tfclassify/v1/classifier.proto",
        "tfclassify/client/cli/score.py",
        "tfclassify/client/datasets/idx.py",
        "tfclassify/server/app.py",
        "tfclassify/trainer/export.py",
    ):
        assert expected in names
    top_level = {n.split("/")[0] for n in names if not n.startswith("tfclassify-")}
    assert top_level == {"tfclassify"}, "nothing generic may land in site-packages"
    assert "tfclassify/__init__.py" not in names, "tfclassify is a namespace package"
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    base = [line for line in metadata.splitlines() if line.startswith("Requires-Dist") and "extra ==" not in line]
    assert base and not any("tensorflow" in line for line in base), base


def test_base_install_is_a_light_client_without_tensorflow(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=600)
    listed = subprocess.run([str(python), "-m", "pip", "list"], capture_output=True, text=True, check=True).stdout
    assert "tensorflow" not in listed.lower()
    code = (
        "import sys; import tfclassify.client, tfclassify.client.cli, tfclassify.client.datasets;"
        "import tfclassify.client.aio, tfclassify.client.scoring, tfclassify.client.inputs.workers;"
        "from tfclassify.client import ClassifierClient;"
        "assert 'tensorflow' not in sys.modules and 'pyarrow' not in sys.modules; print(tfclassify.client.__file__)"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert str(env_dir) in out, "imported from the installed wheel, not the source tree"
    help_text = subprocess.run([str(env_dir / "bin" / "tfclassify"), "score", "--help"], capture_output=True,
                               text=True, check=True).stdout
    assert "--dataset" in help_text and "--images" in help_text and "--resume" in help_text
    merge_help = subprocess.run([str(env_dir / "bin" / "tfclassify"), "merge", "--help"], capture_output=True,
                                text=True, check=True).stdout
    assert "--output" in merge_help
    serve = subprocess.run([str(env_dir / "bin" / "tfclassify"), "serve", "--model-repo", str(tmp_path)],
                           capture_output=True, text=True)
    assert serve.returncode == 1 and "pip install 'tfclassify[server]'" in serve.stderr
