# The two commands of the README: `make demo` and `make test`.
# Each first runs scripts/setup.sh, which installs what is missing of what that command needs:
# `setup-demo` the Fashion-MNIST data and the venv; `setup` that, and what the tests and benchmarks need.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup setup-demo demo check test test-long test-fast train-all bench bench-archive bench-object-store bench-oip bench-peers bench-overload bench-split bench-instructions bench-memory bench-colour bench-http soak fuzz images proto audit clean

setup:
	@VENV=$(VENV) bash scripts/setup.sh test

setup-demo:
	@VENV=$(VENV) bash scripts/setup.sh demo

demo: setup-demo
	@VENV=$(VENV) bash scripts/demo.sh

# ruff and mypy ([tool.ruff], [tool.mypy] in pyproject.toml). mypy reads the packages under the names they are
# installed as (tfclassify.server, ...): build/typecheck/tfclassify links to the folders [tool.setuptools.package-dir]
# maps there.
TYPECHECK_LINKS := client common server trainer ../proto/tfclassify/v1 ../proto/tfclassify/inference
check: setup
	$(PY) -m ruff check .
	@mkdir -p build/typecheck/tfclassify
	@for d in $(TYPECHECK_LINKS); do ln -sfn ../../../$${d#../} build/typecheck/tfclassify/$$(basename $$d); done
	$(PY) -m mypy

# The suite without the long runs (marker long: the soak, fuzzing, fresh-environment installs ...), which
# test-long runs alone.
test: check
	$(PY) -m pytest -q -m 'not long' $(PYTEST_ARGS)

test-long: setup
	$(PY) -m pytest -q -m long $(PYTEST_ARGS)

# The unit tests alone (tests/unit/: no process, no server, no training): seconds, for the edit-and-test loop.
# No set-up step (it would check the machine every time): run `make test` or `make setup` once first.
test-fast:
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

# Every architecture trained in full on Fashion-MNIST with our tuned recipes (about 10 minutes on 2 cores);
# prints accuracy, parameters, seconds per epoch and inference images/s. Models go to $(TRAIN_REPO).
TRAIN_REPO ?= models-full
train-all: setup-demo
	$(VENV)/bin/tfclassify train --dataset fashion_mnist --model-repo $(TRAIN_REPO) --compare all --recipe tuned $(TRAIN_ARGS)

bench: setup
	$(PY) -m bench $(BENCH_ARGS)

bench-archive: setup
	$(PY) -m bench.archive $(BENCH_ARGS)

# Scoring from object storage (a prefix, a zip object; 200,000 objects for memory) against `rclone serve s3` on
# loopback, beside the same local files. Quick: BENCH_ARGS="--images 2000 --big 20000 --rounds 1".
bench-object-store: setup
	$(PY) -m bench.object_store $(BENCH_ARGS)

bench-oip: setup
	$(PY) -m bench.perf_analyzer $(BENCH_ARGS)

# Against NVIDIA Triton (PyTriton, in .venv-triton/ from bench/get_pytriton.sh) on the same model, interleaved
# rounds: single images at 1 and 64 callers and 1,024-image requests as prebuilt bytes, single images again
# through tritonclient.grpc.aio. Quick: BENCH_ARGS="--rounds 1 --seconds 2".
bench-peers: setup
	$(PY) -m bench.peers $(BENCH_ARGS)

bench-overload: setup
	$(PY) -m bench.overload $(BENCH_ARGS)

# Whole worker processes against front ends that hand TensorFlow calls to one inference process.
bench-split: setup
	$(PY) -m bench.split $(BENCH_ARGS)

# The serving path's instructions per single-image request, under valgrind (steady where timings are not).
bench-instructions: setup
	$(PY) -m bench.instructions $(BENCH_ARGS)

# The server's resident memory under 8 concurrent maximum-size (64 MiB) requests: warmed up, peak, a minute after.
bench-memory: setup
	$(PY) -m bench.memory $(BENCH_ARGS)

# Colour models (a 32x32 CNN, MobileNetV3Small at 224x224): in process, scored from pixels and from JPEG photos.
bench-colour: setup
	$(PY) -m bench.colour $(BENCH_ARGS)

# The HTTP/REST port beside gRPC: single images at 64 and 1 callers, 1,024-image requests, each protocol's client.
bench-http: setup
	$(PY) -m bench.http $(BENCH_ARGS)

# 10 minutes of mixed traffic at 80% of capacity through a hot reload, a rollback and a config change.
soak: setup
	$(PY) -m bench.soak $(BENCH_ARGS)

# Hostile requests for all three APIs (hypothesis); prints statuses, RSS and a bystander's worst latency.
fuzz: setup
	$(PY) -m bench.fuzzing $(FUZZ_ARGS)

# Container images built locally with buildah from a debootstrap base (root, Debian; ~1 GB download).
images:
	bash deploy/docker/build-local.sh

# Known vulnerabilities in what we install (pip-audit against PyPI; allow-list: audit-allowlist.txt).
audit: setup
	@VENV=$(VENV) bash scripts/audit.sh

proto: setup
	$(PY) proto/generate.py

clean:
	rm -rf $(VENV) .venv-audit build dist *.egg-info demo-output models-full .pytest_cache
