"""A rehearsal of the bucket-to-bucket scoring Job (deploy/k8s/scoring-from-bucket with its minio component)
without a cluster: each Indexed Job pod's container runs as a local process with the environment the kubelet
gives it (the settings ConfigMap, the MinIO Secret, its completion index), reading the images from a real S3
server on loopback and committing its shard there, against a real tfclassify server; one pod is killed mid-run
and retried; then the merge Job's shell script runs as its container would."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from archives import image_members, read_jsonl, write_tree
from conftest import BIN, FASHION_LABELS, ServerProcess, wait_until
from kubelet import DOCKER, K8S, Pod, container_env, image_config, one, render
from s3server import ACCESS_KEY, SECRET_KEY, S3Server
from test_deploy_k8s_bucket import COMPLETION_INDEX, configmaps, pod_spec

#: The rehearsal's bucket: a folder of the loopback S3 server's root.
BUCKET = "scoring"
#: The bytes index 0's connection to the server carries before it goes dead: the model's metadata (under 500 B)
#: and three requests of four decoded 28x28 images (some 3.2 kB each) but not four. With --in-flight=1 and
#: --decode-workers=0 the scorer holds three chunks at a time, the fourth made once the first is written, so
#: the first three requests are the first three chunks, in whatever order their reads end: the first chunk is
#: answered and committed, and the shard (7 requests) is not done.
BUDGET = 12000


def bucket_steps(folder: Path, settings: dict[str, str], shards: int) -> dict[str, list[dict]]:
    """deploy/k8s/scoring-from-bucket's score and merge set up for MinIO as their comments tell an operator to, in
    a copy of deploy/k8s: `components: [../minio]` added to both kustomizations, each of ``settings`` written where
    its key is (scoring.env, minio.env), completions and parallelism set to ``shards`` in score-job-patch.yaml."""
    steps = folder / "k8s" / "scoring-from-bucket"
    shutil.copytree(K8S, folder / "k8s")
    for step in ("score", "merge"):
        kustomization = steps / step / "kustomization.yaml"
        kustomization.write_text(kustomization.read_text() + "components: [../minio]\n")
    for env_file in (steps / "score" / "scoring.env", steps / "minio" / "minio.env"):
        text = env_file.read_text()
        for key, value in settings.items():
            text = re.sub(rf"^{key}=.*$", lambda _m, line=f"{key}={value}": line, text, flags=re.M)
        env_file.write_text(text)
    patch = steps / "score" / "score-job-patch.yaml"
    patch.write_text(re.sub(r"^(  (?:completions|parallelism):) \d+$", rf"\g<1> {shards}", patch.read_text(),
                            flags=re.M))
    return {step: render(steps / step) for step in ("score", "merge")}


class DeadAfter:
    """A TCP proxy on loopback to ``upstream`` (HOST:PORT) that passes the first ``budget`` bytes its clients send
    and nothing after, while answers to what got through still come back: a scoring pod's connection to the server
    going dead mid-run (a node lost), the pod stuck until it is killed. ``cut`` is set once the budget is spent."""

    def __init__(self, upstream: str, budget: int) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream, self.budget, self.passed = (host, int(port)), budget, 0
        self.cut = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # checks _stop between connections
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, name="dead-after", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while data := src.recv(65536):
                if up:
                    with self._lock:
                        data = data[: max(self.budget - self.passed, 0)]
                        self.passed += len(data)
                        if self.passed >= self.budget:
                            # Set at once: a request cut short gets no answer, and the client may send nothing more.
                            self.cut.set()
                    if not data:
                        return  # the rest is never read: the pod's requests go nowhere
                dst.sendall(data)
        except OSError:  # closed by close()
            pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        for s in self._sockets:
            s.close()


@pytest.fixture()
def s3(tmp_path) -> Iterator[S3Server]:
    """A writable S3 server on loopback (a short directory cache keeps PUTs fast: see S3Server)."""
    (tmp_path / "s3").mkdir()
    server = S3Server(tmp_path / "s3", tmp_path / "rclone.log", dir_cache_time="100ms")
    yield server
    server.stop()


@pytest.fixture()
def pods() -> Iterator[list[subprocess.Popen]]:
    """The pods' processes a test starts (each its own process group): any still running at the end is killed."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def test_the_job_runs_from_bucket_to_bucket_and_a_killed_index_resumes_on_retry(server: ServerProcess, fashion_test,
                                                                               s3, pods, tmp_path):
    """Each index's pod reads a class-folder tree of PNGs (one corrupt) from the bucket and commits its shard there;
    index 0 is SIGKILLed mid-run and its retry, a new pod with the same command, scores only what it had not
    committed; index 1 run again once finished changes nothing; the merge Job's script writes predictions.jsonl
    (every image once, as a local run scores it) and report.json beside the shards; no part is left over and the
    Secret's keys are in no output."""
    members = image_members(fashion_test.images[:40], fashion_test.labels[:40], FASHION_LABELS)
    members.append(("Shirt/truncated.png", members[0][1][: len(members[0][1]) // 2]))
    write_tree(s3.bucket(BUCKET) / "photos", members)
    local = write_tree(tmp_path / "photos", members)
    reference = tmp_path / "local.jsonl"
    done = subprocess.run([str(BIN / "tfclassify"), "score", "--server", server.address, "--model", "fashion",
                           "--images", str(local), "--labels", "folder", "--output", str(reference), "--skipped-ok",
                           "--no-progress"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr

    # What the operator writes into scoring.env and minio.env: the rehearsal's bucket, server and model.
    settings = {"MODEL": "fashion", "IMAGES": f"s3://{BUCKET}/photos/", "OUTPUT_PREFIX": f"s3://{BUCKET}/run-1",
                "SHARDS": "2", "SERVER": server.address, "AWS_ENDPOINT_URL": s3.endpoint}
    docs = bucket_steps(tmp_path, settings, shards=2)
    [config] = configmaps(docs["score"]).values()
    assert {k: config[k] for k in settings} == settings and config["AWS_EC2_METADATA_DISABLED"] == "true"
    assert configmaps(docs["merge"]) == configmaps(docs["score"]), "the merge reads the scoring settings"
    job = one(docs["score"], "Job")["spec"]
    assert job["completionMode"] == "Indexed" and job["completions"] == job["parallelism"] == 2
    [container] = pod_spec(docs["score"])["containers"]
    # The rehearsal's shortening: small requests, one at a time, of images decoded in the scoring process, each
    # answer committed at once, so that a pod stuck after a few answers has committed some of its shard (BUDGET).
    container["args"] += ["--batch-size=4", "--decode-workers=0", "--in-flight=1", "--commit-interval=0"]
    [secret] = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
    secrets = {secret: {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}}
    image = image_config(DOCKER / "Dockerfile.client")
    logs: list[str] = []
    pod_names = itertools.count()

    def start(index: int, server_address: str | None = None) -> subprocess.Popen:
        """A new pod of completion index ``index`` (its own emptyDir), its container run as the kubelet would."""
        env = container_env(container, configmaps(docs["score"]), {COMPLETION_INDEX: str(index)}, secrets)
        env["SERVER"] = server_address or env["SERVER"]
        pod = Pod(tmp_path / "pods" / f"score-{index}-{next(pod_names)}")
        pod.mount(container)
        pods.append(subprocess.Popen(pod.command(container, image, env), env=pod.environ(image, env),
                                     cwd=pod.mounts["/tmp"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True))
        return pods[-1]

    def succeeds(proc: subprocess.Popen) -> str:
        out = proc.communicate(timeout=60)[0]
        logs.append(out)
        assert proc.returncode == 0, out
        return out

    run = s3.bucket(BUCKET) / "run-1"
    parts = run / ".shard-0-of-2.jsonl.parts"

    def committed() -> list[int]:
        """The rows of each part index 0 has committed."""
        names = [p.name for p in parts.iterdir()] if parts.exists() else []
        return [int(m.group(1)) for name in names if (m := re.fullmatch(r"part-\d{6}-(\d+)\.jsonl", name))]

    dead = DeadAfter(server.address, BUDGET)
    first, other = start(0, dead.address), start(1)
    try:
        wait_until(lambda: first.poll() is not None or (dead.cut.is_set() and committed()), timeout=30, interval=0.02)
    finally:
        with contextlib.suppress(ProcessLookupError):  # what the kubelet does to a lost pod's container
            os.killpg(first.pid, signal.SIGKILL)
        killed = first.communicate(timeout=10)[0]
        logs.append(killed)
        dead.close()
    assert first.returncode == -signal.SIGKILL, f"index 0 ended before its connection died: {killed}"
    kept = sum(committed())
    assert not (run / "shard-0-of-2.jsonl").exists()
    retried = succeeds(start(0))  # the Job's retry of index 0: a new pod, the same command
    succeeds(other)
    shard_rows = len(read_jsonl(run / "shard-0-of-2.jsonl"))
    assert 0 < kept < shard_rows, f"killed mid-shard: {kept} of {shard_rows} rows committed"
    assert f"{shard_rows - kept} of them in this run" in retried, retried
    finished = (run / "shard-1-of-2.jsonl").read_bytes()
    assert "is already complete: nothing to resume, nothing changed" in succeeds(start(1))
    assert (run / "shard-1-of-2.jsonl").read_bytes() == finished

    [merge] = pod_spec(docs["merge"])["containers"]
    env = container_env(merge, configmaps(docs["merge"]), secrets=secrets)
    pod = Pod(tmp_path / "pods" / "merge")
    pod.mount(merge)
    argv = pod.command(merge, image, env)
    assert argv[:2] == ["/bin/sh", "-c"]
    done = subprocess.run(argv, env=pod.environ(image, env), cwd=pod.mounts["/tmp"], capture_output=True, text=True,
                          timeout=120)
    logs.append(done.stdout + done.stderr)
    assert done.returncode == 0, logs[-1]
    assert "merged 2 shards" in done.stdout

    rows = read_jsonl(run / "predictions.jsonl")
    by_source = {r.pop("source").removeprefix(settings["IMAGES"]): r for r in rows}
    assert len(by_source) == len(rows) == len(members), "every image exactly once"
    assert by_source == {r.pop("source").removeprefix(f"{local}/"): r for r in read_jsonl(reference)}, \
        "the rows of a local run of the same files"
    report = json.loads((run / "report.json").read_text())
    assert report["num_images"] == len(members) - 1 and report["skipped"] == 1
    objects = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    outputs = ["predictions.jsonl", "shard-0-of-2.jsonl", "shard-1-of-2.jsonl"]
    assert objects == sorted(["report.json", *outputs, *(f"{name}.run.json" for name in outputs)]), \
        "no part left over"
    assert all(json.loads((run / f"{name}.run.json").read_text())["complete"] for name in outputs)
    for text in [*logs, *((run / name).read_text() for name in objects)]:
        assert SECRET_KEY not in text and ACCESS_KEY not in text
