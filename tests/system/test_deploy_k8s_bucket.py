"""The bucket-to-bucket scoring manifests (deploy/k8s/scoring-from-bucket), rendered by the real `kubectl
kustomize` and checked offline as test_deploy_k8s.py checks the others: strict schemas, locked-down pods, and
what the variant is for: each shard reads and writes object URLs the CLI accepts and resumes on retry, no
volume claim, the IAM role on the service account, the MinIO Secret's keys in both Jobs' environment, and a
merge that lists exactly the outputs the scoring pods write."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from kubelet import K8S, container_env, expand, one, render, render_variant
from test_deploy_k8s import validate

from tfclassify.client.cli import build_parser
from tfclassify.common.storage import urls

BUCKET = K8S / "scoring-from-bucket"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
#: What `kubectl create secret` puts in the MinIO Secret (the keys minio/kustomization.yaml documents).
SECRET_KEYS = {"AWS_ACCESS_KEY_ID": "placeholder-id", "AWS_SECRET_ACCESS_KEY": "placeholder-secret"}


@pytest.fixture(scope="module")
def eks() -> dict[str, list[dict]]:
    """The two steps as committed: credentials from the service account's IAM role."""
    return {"score": render(BUCKET / "score"), "merge": render(BUCKET / "merge")}


@pytest.fixture(scope="module")
def minio(tmp_path_factory) -> dict[str, list[dict]]:
    """The two steps with the minio component added to both kustomization.yaml files, as its comment says."""
    k8s = tmp_path_factory.mktemp("minio") / "k8s"
    shutil.copytree(K8S, k8s)
    for step in ("score", "merge"):
        kustomization = k8s / "scoring-from-bucket" / step / "kustomization.yaml"
        kustomization.write_text(kustomization.read_text() + "components: [../minio]\n")
    return {step: render(k8s / "scoring-from-bucket" / step) for step in ("score", "merge")}


def pod_spec(docs: list[dict]) -> dict:
    return one(docs, "Job")["spec"]["template"]["spec"]


def config(docs: list[dict]) -> dict[str, str]:
    return one(docs, "ConfigMap")["data"]


def configmaps(docs: list[dict]) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}


def score_argv(docs: list[dict], index: int, secrets: dict | None = None) -> list[str]:
    """The scoring pod of completion index ``index``: its args as the kubelet expands them."""
    [container] = pod_spec(docs)["containers"]
    env = container_env(container, configmaps(docs), {COMPLETION_INDEX: str(index)}, secrets)
    return [expand(a, env) for a in container["args"]]


def run_merge(docs: list[dict], tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The merge container's command (/bin/sh -c ...) run here with ``env``, a stand-in ``tfclassify`` on the
    PATH that writes the arguments it was given to ``args.json``."""
    [container] = pod_spec(docs)["containers"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "tfclassify"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"json.dump(sys.argv[1:], open({str(tmp_path / 'args.json')!r}, 'w'))\n")
    fake.chmod(0o755)
    argv = [expand(a, env) for a in container["command"] + container["args"]]
    return subprocess.run(argv, env={**env, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
                          capture_output=True, text=True, timeout=30)


def merge_args(docs: list[dict], tmp_path: Path, env: dict[str, str]) -> list[str]:
    done = run_merge(docs, tmp_path, env)
    assert done.returncode == 0, done.stderr
    return json.loads((tmp_path / "args.json").read_text())


def test_the_bucket_variant_validates_and_has_no_shared_volume(eks, minio):
    assert sorted(d["kind"] for d in eks["score"]) == ["ConfigMap", "Job", "ServiceAccount"]
    assert sorted(d["kind"] for d in eks["merge"]) == ["ConfigMap", "Job", "ServiceAccount"]
    assert one(eks["merge"], "Job")["metadata"]["name"] == "tfclassify-merge", "the scoring Job is not applied again"
    [pvc_container] = pod_spec(render(K8S / "scoring"))["containers"]
    for docs in (*eks.values(), *minio.values()):
        validate(docs)
        assert not [d for d in docs if d["kind"] in ("PersistentVolumeClaim", "Secret")], "no claim, no secret"
        pod = pod_spec(docs)
        [container] = pod["containers"]
        [volume] = pod["volumes"]
        assert set(volume) == {"name", "emptyDir"} and volume["emptyDir"]["sizeLimit"], "only an emptyDir, for scratch"
        assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]
        assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert container["securityContext"] == pvc_container["securityContext"]
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]) & set(container["resources"]["limits"])
        # The client image, pinned; it is built with the storage extra (object URLs need obstore).
        assert re.fullmatch(r"[\w.\-/]+/tfclassify-client:0\.1\.0", container["image"]), container["image"]
        for d in docs:
            assert d["metadata"]["labels"]["app.kubernetes.io/component"] == "scoring", d["kind"]
    dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile.client").read_text()
    assert re.search(r'^ARG EXTRAS="storage"$', dockerfile, re.M), "the client image reads object URLs by default"


def test_the_scoring_job_keeps_the_failure_policy_and_one_pod_per_shard(eks):
    job, pvc_job = one(eks["score"], "Job")["spec"], one(render(K8S / "scoring"), "Job")["spec"]
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"] == int(config(eks["score"])["SHARDS"]), "one pod per shard"
    for field in ("backoffLimitPerIndex", "maxFailedIndexes", "podFailurePolicy", "ttlSecondsAfterFinished"):
        assert job[field] == pvc_job[field], field
    pod, pvc_pod = job["template"]["spec"], pvc_job["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == pvc_pod["terminationGracePeriodSeconds"]
    assert pod["containers"][0]["resources"] == pvc_pod["containers"][0]["resources"]


def test_each_shard_reads_the_bucket_and_resumes_its_own_output_there(eks):
    settings = config(eks["score"])
    shards = int(settings["SHARDS"])
    prefix = urls.parse(settings["OUTPUT_PREFIX"])
    assert not prefix.is_prefix, "no trailing slash: OUTPUT_PREFIX/shard-... would hold an empty path segment"
    parser = build_parser()
    outputs = []
    for index in range(shards):
        argv = score_argv(eks["score"], index)
        assert f"--shard={index}/{shards}" in argv and "--resume" in argv and "--skipped-ok" in argv
        args = parser.parse_args(argv)  # the real CLI: every option known, every value accepted
        assert args.command == "score" and args.resume and args.shard == f"{index}/{shards}"
        [images] = args.images
        assert urls.is_object_url(images) and images == settings["IMAGES"]
        assert urls.is_object_url(args.output), "an object URL, not a path under the read-only root"
        output = urls.parse(args.output)
        assert (output.root, output.key.rsplit("/", 1)[0]) == (prefix.root, prefix.key), "under OUTPUT_PREFIX"
        outputs.append(args.output)
    assert len(set(outputs)) == shards, "one writer per output"


def test_the_merge_lists_every_shards_output_and_writes_beside_them(eks, tmp_path):
    settings = config(eks["merge"])
    assert settings == config(eks["score"]), "the merge reads the scoring settings"
    assert one(eks["merge"], "ConfigMap")["metadata"]["name"] == one(eks["score"], "ConfigMap")["metadata"]["name"]
    shards = int(settings["SHARDS"])
    args = merge_args(eks["merge"], tmp_path, settings)
    merge = build_parser().parse_args(args)
    assert merge.command == "merge" and merge.overwrite and merge.skipped_ok
    written = [build_parser().parse_args(score_argv(eks["score"], i)).output for i in range(shards)]
    assert merge.outputs == written, "every shard's output, in order, and nothing else"
    prefix = settings["OUTPUT_PREFIX"]
    assert merge.output == f"{prefix}/predictions.jsonl" and merge.report == [f"{prefix}/report.json"]
    # The shard count is read when the merge runs: other counts list their outputs as well.
    for other in (1, 7):
        args = merge_args(eks["merge"], tmp_path, {**settings, "SHARDS": str(other)})
        assert build_parser().parse_args(args).outputs == [f"{prefix}/shard-{i}-of-{other}.jsonl" for i in range(other)]
    # Without its settings the merge stops before running anything (set -u), never merging "/shard-0-of-4.jsonl".
    (tmp_path / "args.json").unlink()
    done = run_merge(eks["merge"], tmp_path, {k: v for k, v in settings.items() if k != "OUTPUT_PREFIX"})
    assert done.returncode != 0 and "OUTPUT_PREFIX" in done.stderr and not (tmp_path / "args.json").exists()


def test_the_pods_take_the_iam_role_of_their_service_account_and_no_api_token(eks):
    for docs in eks.values():
        account = one(docs, "ServiceAccount")
        assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@/-]+",
                            account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"])
        pod = pod_spec(docs)
        assert pod["serviceAccountName"] == account["metadata"]["name"]
        # EKS's webhook projects its own web-identity token; the Kubernetes API token is never needed.
        assert pod["automountServiceAccountToken"] is False and account["automountServiceAccountToken"] is False
        settings = config(docs)
        assert not {k for k in settings if k.startswith("AWS_")}, "no keys, no endpoint: the role and AWS S3"
        assert not any("secretRef" in source for source in pod["containers"][0]["envFrom"])


def test_the_minio_component_gives_both_jobs_the_secret_keys_and_the_endpoint(minio):
    comment = (BUCKET / "minio" / "kustomization.yaml").read_text()
    docs_md = (ROOT / "docs" / "deployment.md").read_text()
    [secret] = set(re.findall(r"kubectl create secret generic ([\w-]+)", comment))
    for text in (comment, docs_md):
        assert f"kubectl create secret generic {secret}" in text
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(re.findall(r"--from-literal=(\w+)=", text))
    assert config(minio["score"]) == config(minio["merge"])
    endpoint = config(minio["score"])["AWS_ENDPOINT_URL"]
    assert re.fullmatch(r"https?://[\w.-]+(:\d+)?", endpoint), endpoint
    for docs in minio.values():
        [container] = pod_spec(docs)["containers"]
        env = container_env(container, configmaps(docs), {COMPLETION_INDEX: "0"}, {secret: SECRET_KEYS})
        assert {k: env[k] for k in SECRET_KEYS} == SECRET_KEYS, "the Secret's keys, as env vars"
        assert env["AWS_ENDPOINT_URL"] == endpoint
    assert urls.is_object_url(build_parser().parse_args(score_argv(minio["score"], 0, {secret: SECRET_KEYS})).output)


def test_the_tls_client_component_still_applies_to_the_bucket_scoring_job(tmp_path):
    docs = render_variant(tmp_path, {"resources": ["../scoring-from-bucket/score"],
                                     "components": ["../components/tls-client"]})
    validate(docs)
    [container] = pod_spec(docs)["containers"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp", "/tls"}
    assert {"name": "TFCLASSIFY_TLS_CA", "value": "/tls/ca.crt"} in container["env"]
