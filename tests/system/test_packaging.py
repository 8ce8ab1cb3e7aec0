"""The normal (non-editable) wheel: its layout, a base install without TensorFlow, and installs beside
Triton's client and on the protobuf and grpcio versions we claim."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
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
        "tfclassify/common/datasets/idx.py",
        "tfclassify/common/tensors.py",
        "tfclassify/server/app.py",
        "tfclassify/trainer/export.py",
    ):
        assert expected in names
    # Every module of every folder the packages map to, subpackages included: one left out of pyproject.toml
    # would be missing from the wheel while the checkout (and the editable install) still has it.
    for folder, package in (("client", "client"), ("common", "common"), ("server", "server"), ("trainer", "trainer")):
        for module in (ROOT / folder).rglob("*.py"):
            assert f"tfclassify/{package}/{module.relative_to(ROOT / folder).as_posix()}" in names, module
    top_level = {n.split("/")[0] for n in names if not n.startswith("tfclassify-")}
    assert top_level == {"tfclassify"}, "nothing generic may land in site-packages"
    assert "tfclassify/__init__.py" not in names, "tfclassify is a namespace package"
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    base = [line for line in metadata.splitlines() if line.startswith("Requires-Dist") and "extra ==" not in line]
    assert base and not any("tensorflow" in line for line in base), base


@pytest.mark.slow  # the wheel and three virtual environments (the fixture)
@pytest.mark.long
def test_base_install_is_a_light_client_without_tensorflow(environments, tmp_path):
    """The base install (the wheel, no extras; in the environment that also takes protobuf 7): no TensorFlow,
    no matplotlib, no pyarrow; the client commands work and `serve` says which extra it needs."""
    env_dir = environments["protobuf7"].parent.parent
    python = environments["protobuf7"]
    listed = subprocess.run([str(python), "-m", "pip", "list"], capture_output=True, text=True, check=True).stdout
    assert not {"tensorflow", "matplotlib", "pyarrow"} & {line.split()[0].lower() for line in listed.splitlines()[2:]}
    code = (
        "import sys; import tfclassify.client, tfclassify.client.cli, tfclassify.common.datasets;"
        "import tfclassify.client.aio, tfclassify.client.scoring, tfclassify.client.inputs.workers;"
        "import tfclassify.client.quality.outputs, tfclassify.client.cli.promote, tfclassify.common.model_config;"
        "from tfclassify.client import ClassifierClient;"
        "assert 'tensorflow' not in sys.modules and 'pyarrow' not in sys.modules; print(tfclassify.client.__file__)"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert str(env_dir) in out, "imported from the installed wheel, not the source tree"
    help_text = subprocess.run([str(env_dir / "bin" / "tfclassify"), "score", "--help"], capture_output=True,
                               text=True, check=True).stdout
    assert "--dataset" in help_text and "--images" in help_text and "--resume" in help_text
    for command in ("merge", "report", "compare", "promote", "train"):
        subprocess.run([str(env_dir / "bin" / "tfclassify"), command, "--help"], capture_output=True, check=True)
    serve = subprocess.run([str(env_dir / "bin" / "tfclassify"), "serve", "--model-repo", str(tmp_path)],
                           capture_output=True, text=True)
    assert serve.returncode == 1 and "pip install 'tfclassify[server]'" in serve.stderr


#: Calls a server with our client (and Triton's, when installed) and prints what it got; run in the fresh venvs.
CLIENT_CHECK = """
import json, sys
import grpc, numpy as np
from google import protobuf
from tfclassify.client import ClassifierClient
address = sys.argv[1]
images = np.load(sys.argv[2])
with ClassifierClient(address) as client:
    out = {"protobuf": protobuf.__version__, "grpcio": grpc.__version__, "ready": client.is_server_ready(),
           "classes": client.classify(images, "fashion").classes.tolist()}
try:
    import tritonclient.grpc as triton
except ImportError:
    pass
else:
    tensor = triton.InferInput("images", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images)
    out["triton_classes"] = triton.InferenceServerClient(address).infer("fashion", [tensor]).as_numpy("classes").tolist()
print(json.dumps(out))
"""

#: (what is installed beside the wheel, the protobuf/grpcio versions that must result); pip resolves the rest.
ENVIRONMENTS = {
    "lowest": (["protobuf==6.30.0", "grpcio==1.72.1", "grpcio-health-checking==1.72.1"], ("6.30.0", "1.72.1")),
    "tritonclient": (["tritonclient[grpc]==2.73.0"], ("6.", None)),
    "protobuf7": (["protobuf>=7,<8"], ("7.", None)),
}


@pytest.fixture(scope="module")
def environments(wheel, tmp_path_factory) -> dict[str, Path]:
    """A fresh virtual environment per ENVIRONMENTS entry with the wheel installed (by pip, as a user would),
    built at the same time: pip spends much of an install waiting on files."""
    root = tmp_path_factory.mktemp("environments")

    def build(name: str) -> Path:
        env_dir = root / name
        venv.create(env_dir, with_pip=True)
        python = env_dir / "bin" / "python"
        install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel), *ENVIRONMENTS[name][0]],
                                 capture_output=True, text=True, timeout=600)
        assert install.returncode == 0, install.stderr
        return python

    with ThreadPoolExecutor(len(ENVIRONMENTS)) as pool:
        return dict(zip(ENVIRONMENTS, pool.map(build, ENVIRONMENTS)))


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_the_wheel_installs_and_works_beside_other_clients_and_protobuf_versions(name, environments, server,
                                                                                 fashion_test, tmp_path):
    """The generated code (gencode 6.30.0) on the lowest protobuf and grpcio we claim, with Triton's client in
    one environment (pip's own resolution: protobuf < 7), and on protobuf 7."""
    _, (protobuf, grpcio) = ENVIRONMENTS[name]
    python = str(environments[name])
    images = tmp_path / "images.npy"
    np.save(images, fashion_test.images[:8])
    result = subprocess.run([python, "-c", CLIENT_CHECK, server.address, str(images)], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["protobuf"].startswith(protobuf) and (grpcio is None or got["grpcio"] == grpcio), got
    with server.client() as client:
        expected = client.classify(fashion_test.images[:8], "fashion").classes.tolist()
    assert got["ready"] and got["classes"] == expected
    if name == "tritonclient":
        assert got["triton_classes"] == expected


def test_the_audit_allow_list_must_say_why_each_vulnerability_is_excused(tmp_path):
    # `make audit` itself needs PyPI's per-version JSON API (not reachable from every build machine), so the
    # tests check what it decides before going online: an entry without a reason stops it.
    allowlist = tmp_path / "allow.txt"
    allowlist.write_text("# excused\nPYSEC-2024-1 only in a code path we never call\nGHSA-abcd-efgh-ijkl\n")
    result = subprocess.run(["bash", str(ROOT / "scripts" / "audit.sh")], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "ALLOWLIST": str(allowlist)}, timeout=60)
    assert result.returncode == 1
    assert "GHSA-abcd-efgh-ijkl has no reason" in result.stderr
    for line in (ROOT / "audit-allowlist.txt").read_text().splitlines():
        assert not line.strip() or line.startswith("#") or len(line.split(maxsplit=1)) == 2, line


def test_the_serving_core_imports_without_tensorflow():
    """The batcher, registry, data plane and RPC meter need no TensorFlow (the runtime is a type there only),
    so they can be used and tested apart from a model."""
    code = ("import sys; import tfclassify.server.core.registry, tfclassify.server.core.dataplane, tfclassify.server.apis.meter;"
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
